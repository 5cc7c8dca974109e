"""Compiled evaluation (``evaluate(compile=True)``): the same estimator as the uncompiled one, up to
float rounding, for every kind of model; it follows the weights it is given and falls back when the
compiler fails."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch

from vaelab.cli import main
from vaelab.config import ModelConfig
from vaelab.evaluation import evidence
from vaelab.evaluation.evidence import chunk_terms, compiles_by_default, evaluate
from vaelab.models.vae import VAE

MODELS = {
    "mlp": {},
    "gated hierarchy, VampPrior": {"arch": "gated", "stochastic_layers": 2, "hierarchy": "hvae", "prior": "vamp:5"},
    "conv": {"arch": "conv", "channels": (4, 8)},
    "gated hierarchy, local autoregressive Bernoulli": {"arch": "gated", "stochastic_layers": 2, "hierarchy": "hvae",
                                                        "prior": "vamp:5", "likelihood": "bernoulli-ar"},
}


def _model(**overrides) -> VAE:
    torch.manual_seed(0)
    config = ModelConfig(**{"hidden": (16,), "latent_dim": 3, "likelihood": "bernoulli", "input_shape": (1, 8, 8),
                            **overrides})
    model = VAE(config).eval()
    if config.likelihood == "bernoulli-ar":  # a context that speaks: it starts silent
        torch.nn.init.normal_(model.likelihood.context.window.weight)
    return model


def _images(n: int = 20) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("overrides", MODELS.values(), ids=MODELS.keys())
def test_compiled_equals_uncompiled(overrides):
    model, x = _model(**overrides), _images()
    eager = evaluate(model, x, iw_samples=30, seed=3, compile=False)
    compiled = evaluate(model, x, iw_samples=30, seed=3, compile=True)
    assert compiled["compiled"] and not eager["compiled"]
    for key in ("nll", "negative_elbo", "kl", "rec"):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-4), key
    assert compiled["kl_per_layer"] == pytest.approx(eager["kl_per_layer"], abs=1e-4)


@pytest.mark.parametrize("overrides", MODELS.values(), ids=MODELS.keys())
def test_a_chunk_of_samples_traces_as_one_graph(overrides):
    """A graph break (Python the tracer cannot follow, such as a cache keyed on a tensor's identity)
    splits the chunk into regions run one after another, with no fusion across them: a hierarchy's
    chunk once ran as ten."""
    model, x = _model(**overrides), _images()
    torch._dynamo.reset()
    with torch.no_grad():
        q, p = model.encode(x, None), model.prior_for(None)
        explained = torch._dynamo.explain(chunk_terms)(model, x, None, q, p, torch.randn(7, x.shape[0], model.latent_size))
    assert explained.graph_break_count == 0, [reason.reason for reason in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_evaluation_follows_changed_weights():
    """A compiled graph must not keep the weights it first saw (as inductor's "freezing" would):
    evaluating, training on, and evaluating again in one process gives the new model's figures."""
    model, x = _model(), _images()
    before = evaluate(model, x, iw_samples=10, compile=True)["nll"]
    with torch.no_grad():
        for parameter in model.decoder_net.parameters():
            parameter.mul_(1.5)
    after = evaluate(model, x, iw_samples=10, compile=True)["nll"]
    assert after == pytest.approx(evaluate(model, x, iw_samples=10, compile=False)["nll"], abs=1e-4)
    assert abs(after - before) > 0.1


def test_a_failing_compiler_falls_back_to_the_same_figures(monkeypatch, caplog):
    def failing(*_args, **_kwargs):
        def step(*_a, **_k):
            raise RuntimeError("no C++ compiler found\nlong details")
        return step

    model, x = _model(), _images()
    eager = evaluate(model, x, iw_samples=10, compile=False)
    monkeypatch.setattr(torch, "compile", failing)
    with caplog.at_level(logging.WARNING, logger="vaelab.evaluation.evidence"):
        result = evaluate(model, x, iw_samples=10, compile=True)
    assert "torch.compile failed (no C++ compiler found); evaluating uncompiled" in caplog.text
    assert not result["compiled"]
    assert result["nll"] == eager["nll"]


def test_compiles_by_default_only_where_the_compiler_pays(monkeypatch):
    assert compiles_by_default(10_000, 5000)
    assert not compiles_by_default(1000, 1000)
    compiled: list[object] = []

    def recording(function, **_kwargs):
        compiled.append(function)
        return function

    monkeypatch.setattr(torch, "compile", recording)
    model, x = _model(), _images()
    assert not evaluate(model, x, iw_samples=10)["compiled"]
    assert not compiled
    monkeypatch.setattr(evidence, "COMPILE_MIN_SAMPLES", 20 * 10)  # this process's examples x K
    assert evaluate(model, x, iw_samples=10)["compiled"]
    assert compiled == [chunk_terms]


@pytest.mark.parametrize("flag, expected", [("--compile", True), ("--no-compile", False)])
def test_cli_compile_flag(trained_run, tmp_path, monkeypatch, capsys, flag, expected):
    monkeypatch.setattr(torch, "compile", lambda function, **_kwargs: function)  # the flag's plumbing, not the compiler
    run = tmp_path / "run"
    shutil.copytree(trained_run.path, run)
    assert main(["evaluate", str(run), "--iw-samples", "5", "--limit", "30", "--json", "--no-progress", flag]) == 0
    assert json.loads(capsys.readouterr().out)["compiled"] is expected
