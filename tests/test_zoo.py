"""The model zoo is what the README says it is: every run in ``zoo/`` is in the README's table with the
figure its own evaluation file holds, is a complete run without optimizer state within the 8 MB the
likelihood issue allows, and loads, samples and bounds through the public API as it is."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import vaelab

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "zoo"
RUNS = sorted(path.name for path in ZOO.iterdir() if path.is_dir())
ROW = re.compile(r"^\| \[`zoo/([\w-]+)`\]\(zoo/\1\) \| [^|]+ \| ([\d.]+) ± ([\d.]+) \| ([\d.]+) \|$", re.MULTILINE)
EVALUATION = "evaluation-test-K5000.json"
MAX_RUN_BYTES = 8 * 1024**2
README = (ROOT / "README.md").read_text()
README_ROWS = {name: (nll, error) for name, nll, error, _ in ROW.findall(README)}


def test_the_readme_table_lists_every_zoo_run_and_nothing_else() -> None:
    assert RUNS, "zoo/ holds no runs"
    assert sorted(README_ROWS) == RUNS


@pytest.mark.parametrize("name", RUNS)
def test_the_readme_figures_are_the_runs_own_evaluation(name: str) -> None:
    result = json.loads((ZOO / name / EVALUATION).read_text())
    assert (result["n"], result["iw_samples"], result["split"]) == (10_000, 5000, "test")  # the literature's protocol
    assert README_ROWS[name] == (f"{result['nll']:.2f}", f"{result['nll_standard_error']:.2f}")
    commands = re.findall(rf"evaluate zoo/{name} --iw-samples 5000 .*# (?:reproduces )?([\d.]+)", README)
    assert commands in ([], [f"{result['nll']:.2f}"])  # the evaluation command's comment, where there is one


@pytest.mark.parametrize("name", RUNS)
def test_each_run_is_complete_small_and_without_optimizer_state(name: str) -> None:
    files = {path.name for path in (ZOO / name).iterdir()}
    assert {"config.json", "model.safetensors", "metrics.jsonl", "summary.json", EVALUATION} <= files
    assert "training_state.safetensors" not in files
    assert sum((ZOO / name / file).stat().st_size for file in files) <= MAX_RUN_BYTES


@pytest.mark.parametrize("name", RUNS)
def test_each_run_loads_samples_and_bounds_as_it_is(name: str) -> None:
    model = vaelab.load(ZOO / name).model
    images = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert images.shape == (4, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
    x = torch.bernoulli(images)  # images the model finds likely: bounds in the range of the test set's
    result = vaelab.evaluate(model, x, iw_samples=32, seed=0)
    assert result["nll"] <= result["negative_elbo"] + 1e-3  # IW_K >= ELBO
    assert 0 < result["nll"] < 784 * 0.6932  # better than a fair coin per pixel
