"""``vaelab em`` end to end on the embedded digits: the files it writes, the EM invariants they
record (monotone log-likelihood, ELBO = log-likelihood after each E-step), parameters that reload to
the same model, and one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vaelab.em import run as em_run
from vaelab.cli import main
from vaelab.data.datasets import load_dataset
from vaelab.em.fit import FactorAnalysis, GaussianMixture


def _fails_with(capsys, argv: list[str], *fragments: str) -> None:
    status = main(argv)
    err = capsys.readouterr().err.strip()
    assert status == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def digits_x() -> torch.Tensor:
    """The training split of digits as the command sees it: [1257, 64] float64."""
    train = load_dataset("digits").train
    return train.x.reshape(len(train), -1).double()


@pytest.mark.parametrize("model, cls, n_images", [("gmm", GaussianMixture, 3), ("fa", FactorAnalysis, 4)])
def test_em_end_to_end(tmp_path, capsys, digits_x, model, cls, n_images):
    out = tmp_path / "em"
    argv = ["em", "--dataset", "digits", "--model", model, "--components", "3", "--max-iter", "8", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in (em_run.CONFIG, em_run.PARAMS, em_run.HISTORY, em_run.HISTORY_PLOT, em_run.COMPONENTS):
        assert (out / name).is_file(), name
    assert json.loads((out / em_run.CONFIG).read_text())["components"] == 3

    history = [json.loads(line) for line in (out / em_run.HISTORY).read_text().splitlines()]
    assert [h["iteration"] for h in history] == list(range(len(history)))
    log_lik = torch.tensor([h["log_likelihood"] for h in history], dtype=torch.float64)
    elbo = torch.tensor([h["elbo"] for h in history], dtype=torch.float64)
    assert bool((log_lik.diff() >= -1e-9).all()), log_lik  # EM never lowers log p(x) (PRML §9.4)
    torch.testing.assert_close(elbo, log_lik, rtol=0, atol=1e-8)

    fitted = cls.from_tensors(load_file(out / em_run.PARAMS))
    assert fitted.log_likelihood(digits_x).mean().item() == pytest.approx(history[-1]["log_likelihood"], abs=1e-9)
    final = history[-1]["log_likelihood"]
    assert f"{final:.3f} nats/example, {final / 64:.4f} nats/dimension" in printed
    # A 2x2 grid of 8x8 cells at x7: GMM's 3 means leave the last cell blank, FA's mean + 3 loadings fill it.
    grid = np.asarray(Image.open(out / em_run.COMPONENTS))  # [2 * 56 + 3 * 2, same]
    assert grid.shape == (118, 118)
    assert bool((grid[60:116, 60:116] == 255).all()) == (n_images == 3)

def test_limit_subsamples_reproducibly(tmp_path):
    runs = [em_run.run_em("digits", "gmm", 2, tmp_path / name, max_iter=3, limit=100, seed=1) for name in "ab"]
    torch.testing.assert_close(runs[0].means, runs[1].means, rtol=0, atol=0)
    assert json.loads((tmp_path / "a" / em_run.CONFIG).read_text())["limit"] == 100


def test_refuses_non_empty_out(tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    _fails_with(capsys, ["em", "--dataset", "digits", "--model", "gmm", "--components", "2", "--out", str(out)],
                str(out), "not empty")
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "flags, fragments",
    [
        (["--model", "gmm", "--components", "0"], ["--components", ">= 1"]),
        (["--model", "gmm", "--components", "5000"], ["--components", "1257"]),
        (["--model", "vq", "--components", "2"], ["--model"]),
        (["--model", "fa", "--components", "2", "--covariance", "full"], ["--covariance"]),
        (["--model", "gmm", "--components", "2", "--limit", "0"], ["--limit"]),
        (["--model", "gmm", "--components", "2", "--max-iter", "-1"], ["--max-iter"]),
    ],
)
def test_bad_values_are_one_line_errors(tmp_path, capsys, flags, fragments):
    out = tmp_path / "out"
    _fails_with(capsys, ["em", "--dataset", "digits", *flags, "--out", str(out)], *fragments)
    assert not out.exists()
