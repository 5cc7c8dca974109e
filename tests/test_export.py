"""`vaelab export`: a copy of a trained model to share, without training state, optionally float16."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import vaelab
from tests.conftest import directory_snapshot
from vaelab.cli import main
from vaelab.evaluation.evidence import evaluate_run
from vaelab.rundir import MODEL, TRAINING_STATE, export_run


@pytest.fixture(scope="module")
def evaluated_run(trained_run, tmp_path_factory):
    """A copy of the shared digits run with one evaluation (JSON and per-example file) in it."""
    run = tmp_path_factory.mktemp("export") / "run"
    shutil.copytree(trained_run.path, run)
    evaluate_run(run, iw_samples=8, limit=30)
    return run


def test_export_copies_the_model_and_its_evaluations_and_no_training_state(evaluated_run, tmp_path):
    before = directory_snapshot(evaluated_run)
    out = tmp_path / "shared"
    written = export_run(evaluated_run, out)
    names = {p.name for p in out.iterdir()}
    assert names == set(written)
    assert TRAINING_STATE not in names and "samples.png" not in names
    assert {"config.json", MODEL, "metrics.jsonl", "summary.json", "evaluation-test-first30-K8.json",
            "evaluation-test-first30-K8.per-example.safetensors"} <= names
    original, copy = vaelab.load(evaluated_run), vaelab.load(out)
    for (name, a), (_, b) in zip(original.model.state_dict().items(), copy.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert copy.metrics == original.metrics
    assert directory_snapshot(evaluated_run) == before  # the source is only read


def test_a_half_export_stores_float16_that_loads_as_the_rounded_float32_model(evaluated_run, tmp_path):
    out = tmp_path / "half"
    written = export_run(evaluated_run, out, half=True)
    assert not [name for name in written if name.startswith("evaluation-")]  # they describe the float32 weights
    stored = load_file(out / MODEL)
    assert {t.dtype for t in stored.values()} == {torch.float16}
    assert (out / MODEL).stat().st_size < 0.6 * (evaluated_run / MODEL).stat().st_size
    original, copy = vaelab.load(evaluated_run), vaelab.load(out)
    for name, weight in original.model.state_dict().items():
        loaded = copy.model.state_dict()[name]
        assert loaded.dtype == torch.float32
        assert torch.equal(loaded, weight.half().float()), name
    x = torch.rand(5, 1, 8, 8).bernoulli()
    with torch.no_grad():  # the rounded model is nearly the same model
        torch.testing.assert_close(copy.model.decode(copy.model.encode(x).mean).logits,
                                   original.model.decode(original.model.encode(x).mean).logits, atol=0.05, rtol=0.01)
    assert main(["evaluate", str(out), "--iw-samples", "8", "--limit", "30", "--json", "--no-progress"]) == 0


def test_export_never_overwrites_and_refuses_weights_float16_cannot_hold(evaluated_run, tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", str(evaluated_run), str(taken)]) == 2
    err = capsys.readouterr().err.strip()
    assert "already exists" in err and str(taken) in err and len(err.splitlines()) == 1
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]

    large = tmp_path / "large"
    shutil.copytree(evaluated_run, large)
    weights = load_file(large / MODEL)
    name = next(iter(weights))
    weights[name][..., 0] = 1e6
    save_file(weights, large / MODEL, metadata={"format": "vaelab-model-1"})
    with pytest.raises(vaelab.VaelabError, match=f"{name}.*float16's range"):
        export_run(large, tmp_path / "large-half", half=True)
    assert not (tmp_path / "large-half").exists()
    assert main(["export", str(large), str(tmp_path / "large-full")]) == 0  # float32 holds it
