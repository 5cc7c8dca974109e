"""Per-example evaluations and `vaelab compare`: each image's NLL is kept beside the evaluation's
JSON, and two runs are paired image by image, checked against numpy on the same numbers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import vaelab
from tests.conftest import tiny_settings
from vaelab.cli import main
from vaelab.data.pipeline import load_data
from vaelab.evaluation.comparison import (compare_runs, example_fingerprints, find_per_example, per_example_path,
                                          read_per_example)
from vaelab.evaluation.evidence import evaluate, evaluate_run, evaluation_path

K = 20


@pytest.fixture(scope="module")
def two_runs(trained_run, tmp_path_factory):
    """Copies of the shared digits run (A) and a second, differently seeded run (B)."""
    root = tmp_path_factory.mktemp("compare")
    a = root / "a"
    shutil.copytree(trained_run.path, a)
    b = root / "b"
    vaelab.train(out=b, progress=False, **tiny_settings(seed=1))
    return a, b


def test_evaluate_keeps_each_examples_figures_and_fingerprint(two_runs):
    a, _ = two_runs
    result = evaluate_run(a, iw_samples=K, limit=40)
    path = per_example_path(evaluation_path(a, "test", K, 40))
    assert result["per_example_file"] == path.name
    saved = read_per_example(path)
    assert len(saved) == 40
    assert saved.nll.mean().item() == pytest.approx(result["nll"], abs=1e-5)
    assert saved.negative_elbo.mean().item() == pytest.approx(result["negative_elbo"], abs=1e-4)
    x = load_data(vaelab.load(a).config).test.x[:40]
    assert torch.equal(saved.fingerprint, example_fingerprints(x))
    assert "per_example" not in json.loads(evaluation_path(a, "test", K, 40).read_text())


def test_fingerprints_tell_images_apart():
    x = torch.zeros(3, 1, 4, 4)
    x[1, 0, 2, 3] = 1.0
    prints = example_fingerprints(x)
    assert prints[0] == prints[2] and prints[0] != prints[1]
    assert torch.equal(example_fingerprints(x.to(torch.uint8)), prints)  # values, not storage dtype


def test_the_api_gives_per_example_figures_only_when_asked(trained_run):
    x = load_data(trained_run.config).test.x[:8]
    assert "per_example" not in evaluate(trained_run.model, x, iw_samples=4)
    per = evaluate(trained_run.model, x, iw_samples=4, per_example=True)["per_example"]
    assert per["nll"].shape == per["negative_elbo"].shape == (8,)


def test_paired_difference_matches_numpy_over_the_common_prefix(two_runs):
    a, b = two_runs
    evaluate_run(a, iw_samples=K)  # the whole test split (360 digits)
    evaluate_run(b, iw_samples=K, limit=100)
    assert find_per_example(a, "test", K).name == f"evaluation-test-K{K}.per-example.safetensors"
    result = compare_runs(a, b, iw_samples=K)
    assert result["n"] == 100
    nll_a = read_per_example(find_per_example(a, "test", K)).nll.numpy()[:100]
    nll_b = read_per_example(find_per_example(b, "test", K)).nll.numpy()
    delta = nll_b - nll_a
    assert result["nll"]["difference"] == pytest.approx(delta.mean())
    assert result["nll"]["paired_standard_error"] == pytest.approx(delta.std(ddof=1) / np.sqrt(100))
    assert result["nll"]["unpaired_standard_error"] == pytest.approx(np.sqrt((nll_a.var(ddof=1) + nll_b.var(ddof=1)) / 100))
    assert result["nll"]["b_lower_fraction"] == pytest.approx((delta < 0).mean())
    same = compare_runs(a, a, iw_samples=K)
    assert same["nll"]["difference"] == 0.0 and same["nll"]["paired_standard_error"] == 0.0


def test_compare_cli_prints_the_paired_difference(two_runs, capsys):
    a, b = two_runs
    evaluate_run(a, iw_samples=K, limit=30)
    evaluate_run(b, iw_samples=K, limit=30)
    assert main(["compare", str(a), str(b), "--iw-samples", str(K), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] >= 30 and set(result["nll"]) >= {"a", "b", "difference", "paired_standard_error"}
    assert main(["compare", str(a), str(b), "--iw-samples", str(K)]) == 0
    out = capsys.readouterr().out
    assert "B - A" in out and "paired" in out


def _fails_with(capsys, argv, *fragments):
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


def test_compare_refuses_missing_corrupt_and_mismatched_evaluations(two_runs, tmp_path, capsys):
    a, b = two_runs
    _fails_with(capsys, ["compare", str(a), str(b), "--iw-samples", "7"], "no per-example evaluation", "--iw-samples 7")
    _fails_with(capsys, ["compare", str(a), str(tmp_path / "nowhere")], "no such run directory")
    # A per-example file whose fingerprints say other images were scored.
    c = tmp_path / "c"
    shutil.copytree(b, c)
    for run in (a, c):  # its own evaluations, so that the test does not depend on the order tests run in
        evaluate_run(run, iw_samples=K, limit=30)
    path = find_per_example(c, "test", K)
    saved = read_per_example(path)
    save_file({"nll": saved.nll, "negative_elbo": saved.negative_elbo, "fingerprint": saved.fingerprint + 1}, path)
    _fails_with(capsys, ["compare", str(a), str(c), "--iw-samples", str(K)], "scored different images", "example 0")
    # Tensors that are not a per-example file, and bytes that are not safetensors.
    save_file({"nll": saved.nll}, path)
    _fails_with(capsys, ["compare", str(a), str(c), "--iw-samples", str(K)], str(path), "not a per-example")
    path.write_bytes(b"\x00" * 20)
    _fails_with(capsys, ["compare", str(a), str(c), "--iw-samples", str(K)], str(path), "safetensors")
