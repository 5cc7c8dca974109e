"""Run directories written by earlier releases (real runs committed in tests/fixtures: release 0.1's
format 1, and format 2) load under today's names and give the same numbers they gave then."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import vaelab
from vaelab.data.pipeline import load_data

FIXTURES = Path(__file__).parent / "fixtures"
EXPECTED = json.loads((FIXTURES / "release-0.1-expected.json").read_text())


@pytest.mark.parametrize("name", ["mlp", "gaussian", "m2"])
def test_release_0_1_runs_load_and_compute_what_they_computed_then(name: str) -> None:
    run = vaelab.load(FIXTURES / f"release-0.1-{name}")
    test = load_data(run.config).test
    x, c = test.x[:16], (test.y[:16] if name == "m2" else None)
    with torch.no_grad():
        q = run.model.encode(x, c)
        log_px = run.model.decode(q.mean, c).log_prob(x)
        kl = torch.distributions.kl_divergence(q, run.model.prior)
    torch.testing.assert_close(log_px, torch.tensor(EXPECTED[name]["log_px_at_mean"]), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, torch.tensor(EXPECTED[name]["kl_closed_form"]), rtol=1e-5, atol=1e-5)
    if name == "m2":
        assert run.model.classify(test.x[:64]).logits.argmax(-1).tolist() == EXPECTED[name]["q_y_argmax"]


def test_release_0_1_metrics_read_under_todays_names() -> None:
    run = vaelab.load(FIXTURES / "release-0.1-mlp")
    assert {"train_negative_elbo", "val_negative_elbo"} <= set(run.metrics[0])
    assert not any(key.endswith("_loss") for key in run.metrics[0])


def test_the_learned_sigma_of_release_0_1_moved_into_the_likelihood() -> None:
    run = vaelab.load(FIXTURES / "release-0.1-gaussian")
    assert "likelihood.log_sigma" in run.model.state_dict()


def test_evaluating_a_release_0_1_run_matches_its_figures(tmp_path: Path) -> None:
    copy = tmp_path / "run"
    shutil.copytree(FIXTURES / "release-0.1-mlp", copy)
    result = vaelab.evaluate(vaelab.load(copy).model, load_data(vaelab.load(copy).config).test.x[:64], iw_samples=50, seed=0)
    assert result["nll"] == pytest.approx(EXPECTED["mlp"]["nll"], abs=1e-3)


EXPECTED_0_2 = json.loads((FIXTURES / "release-0.2-expected.json").read_text())["resnet-dlogistic-mix"]


def test_a_format_2_resnet_run_computes_what_it_computed_then() -> None:
    """A run saved by the code before format 3 (tests/fixtures/release-0.2-resnet, numbers from that
    code): its decoder has no skip from z (the upgrade adds zeros) and its 8-bit likelihood had no
    bound on log s (its config reads ``log_scale_cap = None``)."""
    run = vaelab.load(FIXTURES / "release-0.2-resnet")
    assert run.config.model.log_scale_cap is None
    assert not run.model.decoder_net.skip.weight.any()
    x = load_data(run.config).test.x[:8]
    with torch.no_grad():
        q = run.model.encode(x)
        p = run.model.decode(q.mean)
        torch.testing.assert_close(p.log_prob(x), torch.tensor(EXPECTED_0_2["log_px_at_mean"]), rtol=1e-5, atol=1e-3)
        torch.testing.assert_close(p.mean[:2].flatten(), torch.tensor(EXPECTED_0_2["mean_at_mean"]), rtol=1e-5, atol=1e-5)
        kl = torch.distributions.kl_divergence(q, run.model.prior)
    torch.testing.assert_close(kl, torch.tensor(EXPECTED_0_2["kl_closed_form"]), rtol=1e-5, atol=1e-5)
    assert vaelab.evaluate(run.model, x, iw_samples=20, seed=0)["nll"] == pytest.approx(EXPECTED_0_2["nll"], abs=1e-3)


def test_new_runs_bound_the_log_scale_and_save_the_bound(tmp_path: Path) -> None:
    from vaelab.data.shapes import write_shapes_npz

    write_shapes_npz(tmp_path / "shapes.npz", 100, size=16, seed=0)
    vaelab.train(dataset=str(tmp_path / "shapes.npz"), arch="resnet", channels=(4,), hidden=(), latent_dim=2,
                 likelihood="dlogistic", epochs=1, out=tmp_path / "run", progress=False)
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["log_scale_cap"] == 0.0
    assert vaelab.load(tmp_path / "run").config.model.log_scale_cap == 0.0
