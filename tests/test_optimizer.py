"""Adam's moments stay out of float32's subnormal range, which x86 CPUs compute on a slow path."""

from __future__ import annotations

import torch

import vaelab
from vaelab import rundir
from vaelab.training.optimizer import flush_subnormal_moments, make_optimizer

from .conftest import tiny_settings


def _subnormal(value: torch.Tensor) -> torch.Tensor:
    return (value.abs() < torch.finfo(value.dtype).tiny) & (value != 0)


def test_flushing_zeroes_the_subnormal_moments_and_nothing_else() -> None:
    weights = torch.nn.Linear(3, 2)
    optimizer = make_optimizer(weights, 1e-3)
    weights(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = optimizer.state[weights.weight]
    state["exp_avg"][0, 0] = 1e-40  # subnormal
    state["exp_avg_sq"][1, 2] = 3e-42
    state["exp_avg"][0, 1] = 0.0
    before = {name: value.clone() for name, value in state.items()}
    assert flush_subnormal_moments(optimizer) == 2
    assert state["exp_avg"][0, 0] == 0 and state["exp_avg_sq"][1, 2] == 0
    for name, value in state.items():
        untouched = ~_subnormal(before[name])
        assert torch.equal(value[untouched], before[name][untouched]), name
    assert flush_subnormal_moments(optimizer) == 0


def test_a_checkpoint_never_carries_subnormal_moments_even_after_resuming_an_older_one(tmp_path) -> None:
    """Hidden unit 0 of the encoder is made dead (its bias far below zero), so its incoming weights get
    no gradient and their moments only decay: subnormal values put there, as an older vaelab's
    checkpoint could hold them, stay subnormal through an epoch unless they are flushed."""
    run = vaelab.train(out=tmp_path / "run", progress=False, **tiny_settings(epochs=1))
    state = rundir.load_training_state(run.path)
    names = [name for name, _ in run.model.named_parameters()]
    assert names[:2] == ["encoder_net.head.0.weight", "encoder_net.head.0.bias"]
    state.model["encoder_net.head.0.bias"][0] = -1e6
    for name in ("exp_avg", "exp_avg_sq"):
        state.optimizer["state"][0][name][0] = 1e-40  # the dead unit's incoming weights
    rundir.save_training_state(run.path, state)
    vaelab.train(resume=run.path, epochs=2, progress=False)
    resumed = rundir.load_training_state(run.path)
    assert resumed.epoch == 2 and resumed.model["encoder_net.head.0.bias"][0] < -1e5  # still dead
    assert not any(_subnormal(value).any() for values in resumed.optimizer["state"].values()
                   for name, value in values.items() if name != "step")
