"""The classifier Fréchet distance: closed forms and scipy as oracles for the distance, the digits
classifier's accuracy and cache, and quality figures that rank a trained model above an untrained one."""

from __future__ import annotations

import json
import math
import os
import shutil

import numpy as np
import pytest
import scipy.linalg
import torch

import vaelab
from vaelab.evaluation import quality as q
from vaelab.cli import main
from vaelab.data.datasets import describe_datasets, load_dataset
from vaelab.errors import VaelabError

from .conftest import tiny_settings

# ---------------------------------------------------------------------------------------------
# The distance


def _random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form():
    # For diagonal covariances (S1 S2)^{1/2} = diag(s1 s2), so d^2 = ||mu1 - mu2||^2 + sum (s1 - s2)^2.
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = (torch.randn(6, generator=g, dtype=torch.float64) for _ in range(2))
    s1, s2 = (torch.rand(6, generator=g, dtype=torch.float64) + 0.1 for _ in range(2))
    expected = float((mu1 - mu2).square().sum() + (s1 - s2).square().sum())
    assert q.frechet_distance(mu1, torch.diag(s1**2), mu2, torch.diag(s2**2)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_full_covariances_matches_scipy_sqrtm():
    s1, s2 = _random_cov(8, 1), _random_cov(8, 2)
    mu1, mu2 = torch.zeros(8, dtype=torch.float64), torch.full((8,), 0.5, dtype=torch.float64)
    root = scipy.linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    expected = 8 * 0.25 + np.trace(s1.numpy() + s2.numpy() - 2 * root)
    assert q.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fitted_distance_recovers_closed_form_from_samples():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 2.0, 0.5]) + 1.0
    b = torch.randn(200_000, 3, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0, 1.5])
    expected = 3 * 1.0 + (0.5**2 + 0**2 + 1.0**2)
    assert q.feature_frechet_distance(a, b) == pytest.approx(expected, rel=0.02)


def test_fitted_distance_is_symmetric_zero_on_identical_sets_and_permutation_invariant():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(300, 10, generator=g)
    b = torch.randn(250, 10, generator=g) * 1.3 + 0.2
    d = q.feature_frechet_distance(a, b)
    assert d > 0.5
    assert q.feature_frechet_distance(b, a) == pytest.approx(d, rel=1e-9)
    assert q.feature_frechet_distance(a, a) == pytest.approx(0, abs=1e-9)
    assert q.feature_frechet_distance(a[torch.randperm(300, generator=g)], b) == pytest.approx(d, rel=1e-9)


def test_distance_is_finite_for_singular_covariances():
    # Fewer samples than dimensions and dead (constant) features, as ReLU features of 360 images give.
    g = torch.Generator().manual_seed(5)
    a, b = torch.relu(torch.randn(20, 64, generator=g)), torch.relu(torch.randn(30, 64, generator=g))
    a[:, :10] = 0
    b[:, :10] = 0
    d = q.feature_frechet_distance(a, b)
    assert math.isfinite(d) and d >= 0
    assert q.feature_frechet_distance(a, a) == pytest.approx(0, abs=1e-8)


# ---------------------------------------------------------------------------------------------
# The classifier and its cache


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def digits_cache(tmp_path_factory, digits):
    """A cache root (for $VAELAB_CACHE) holding the digits classifier, trained once for this module."""
    root = tmp_path_factory.mktemp("vaelab-cache")
    q.feature_classifier(digits, cache_dir=root / "classifiers", progress=False)
    return root


def _copy_cache(digits_cache, tmp_path):
    shutil.copytree(digits_cache / "classifiers", tmp_path / "classifiers")
    return tmp_path / "classifiers"


def _count_training(monkeypatch) -> list[int]:
    """Replace training by an untrained network and count the calls: retraining is observable."""
    calls = []

    def fake_train(dataset, seed, epochs, device, progress):
        calls.append(epochs)
        return q.FeatureClassifier(dataset.shape, 10)

    monkeypatch.setattr(q, "train_classifier", fake_train)
    return calls


def test_digits_classifier_is_accurate_and_cached(digits, digits_cache, tmp_path, monkeypatch):
    cache = _copy_cache(digits_cache, tmp_path)
    info = json.loads(next(cache.glob("digits-1x8x8-seed0.json")).read_text())
    assert info["test_accuracy"] > 0.9
    assert info["dataset"] == "digits" and info["shape"] == [1, 8, 8] and info["seed"] == 0
    calls = _count_training(monkeypatch)
    net, loaded = q.feature_classifier(digits, cache_dir=cache, progress=False)
    assert calls == []
    assert loaded["test_accuracy"] == info["test_accuracy"]
    assert q.accuracy(net, digits.test.x, digits.test.y) == pytest.approx(info["test_accuracy"])
    assert q.extract_features(net, digits.test.x[:7]).shape == (7, q.FEATURE_DIM)


@pytest.mark.parametrize("damage", ["truncate weights", "garbage sidecar", "other epochs", "missing weights"])
def test_unusable_cache_is_retrained_and_rewritten(digits, digits_cache, tmp_path, monkeypatch, damage):
    cache = _copy_cache(digits_cache, tmp_path)
    weights, sidecar = cache / "digits-1x8x8-seed0.safetensors", cache / "digits-1x8x8-seed0.json"
    if damage == "truncate weights":
        weights.write_bytes(weights.read_bytes()[:100])
    elif damage == "garbage sidecar":
        sidecar.write_bytes(b"\x00{not json")
    elif damage == "other epochs":
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "epochs": 1}))
    else:
        weights.unlink()
    calls = _count_training(monkeypatch)
    q.feature_classifier(digits, cache_dir=cache, progress=False)
    assert len(calls) == 1
    q.feature_classifier(digits, cache_dir=cache, progress=False)  # the rewritten entry is valid
    assert len(calls) == 1


def test_training_is_reproducible_from_the_seed(digits):
    a = q.train_classifier(digits, seed=7, epochs=1, progress=False)
    b = q.train_classifier(digits, seed=7, epochs=1, progress=False)
    c = q.train_classifier(digits, seed=8, epochs=1, progress=False)
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert not torch.equal(a.head.weight, c.head.weight)


def test_classifier_works_for_rgb_images_of_another_size():
    net = q.FeatureClassifier((3, 32, 32), 5)
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 5)
    assert net.features(torch.rand(2, 3, 32, 32)).shape == (2, q.FEATURE_DIM)


def test_data_without_labels_or_not_images_is_a_user_error(tmp_path):
    np.savez(tmp_path / "unlabelled.npz", x=np.random.default_rng(0).random((40, 8, 8)))
    with pytest.raises(VaelabError, match="needs class labels"):
        q.feature_classifier(load_dataset(str(tmp_path / "unlabelled.npz")), cache_dir=tmp_path)
    np.savez(tmp_path / "tabular.npz", x=np.random.default_rng(0).random((40, 5)), y=np.arange(40) % 2)
    with pytest.raises(VaelabError, match="needs images"):
        q.feature_classifier(load_dataset(str(tmp_path / "tabular.npz")), cache_dir=tmp_path)


def test_cache_directory_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "c"))
    assert q.classifier_dir() == tmp_path / "c" / "classifiers"
    monkeypatch.delenv("VAELAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert q.classifier_dir() == tmp_path / "xdg" / "vaelab" / "classifiers"


@pytest.mark.slow
@pytest.mark.skipif(
    not any(i["name"] == "fashion-mnist" and i["found"] for i in describe_datasets()),
    reason="Fashion-MNIST not installed",
)
def test_fashion_mnist_classifier_reaches_90_percent(tmp_path):
    _, info = q.feature_classifier(load_dataset("fashion-mnist"), cache_dir=tmp_path, progress=False)
    assert info["test_accuracy"] > 0.9


# ---------------------------------------------------------------------------------------------
# Quality of runs


def test_quality_of_a_tiny_run_is_above_the_real_data_floor(trained_run, digits_cache):
    result = q.quality(trained_run, n=1000, cache_dir=digits_cache / "classifiers", progress=False)
    assert result["dataset"] == "digits" and result["prior"] == "model" and result["n"] == 1000
    assert result["n_reference"] == 1000 and result["n_test"] == 360
    assert result["classifier_test_accuracy"] > 0.9
    d, floor = result["classifier_frechet_distance"], result["train_test_frechet_distance"]
    assert math.isfinite(d) and 0 < floor < d
    again = q.quality(trained_run, n=1000, cache_dir=digits_cache / "classifiers", progress=False)
    assert again == result  # seeded: the same figures every time


def test_quality_with_a_fitted_latent_mixture(trained_run, digits_cache, tmp_path):
    shutil.copytree(trained_run.path, tmp_path / "run")  # the mixture is cached in the run directory
    run = vaelab.load(tmp_path / "run")
    cache = digits_cache / "classifiers"
    result = q.quality(run, n=500, prior="gmm:3", cache_dir=cache, progress=False)
    assert result["prior"] == "gmm:3" and math.isfinite(result["classifier_frechet_distance"])
    assert q.save_quality(run.path, result) == tmp_path / "run" / "quality-gmm-3.json"
    with pytest.raises(VaelabError, match="gmm:K"):
        q.quality(run, n=500, prior="mixture", cache_dir=cache, progress=False)


def test_longer_training_scores_better(tmp_path, digits_cache):
    settings = tiny_settings(hidden=(64,), latent_dim=8)
    barely = vaelab.train(out=tmp_path / "barely", progress=False, **{**settings, "epochs": 1})
    longer = vaelab.train(out=tmp_path / "longer", progress=False, **{**settings, "epochs": 40})
    cache = digits_cache / "classifiers"
    d_barely = q.quality(barely, n=1000, cache_dir=cache, progress=False)["classifier_frechet_distance"]
    d_longer = q.quality(longer, n=1000, cache_dir=cache, progress=False)["classifier_frechet_distance"]
    assert d_longer < 0.7 * d_barely


def test_cli_quality_json_and_summary(trained_run, digits_cache, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained_run.path, run_dir)
    monkeypatch.setenv("VAELAB_CACHE", str(digits_cache))
    assert main(["quality", str(run_dir), "-n", "500", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("classifier_frechet_distance", "train_test_frechet_distance", "classifier_test_accuracy",
                "n", "prior", "dataset", "seed"):
        assert key in result
    assert result["n"] == 500 and result["prior"] == "model"
    assert json.loads((run_dir / "quality-model.json").read_text()) == result
    assert main(["quality", str(run_dir), "-n", "500", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "classifier Fréchet distance" in out and f"{result['classifier_frechet_distance']:.2f}" in out


def test_cli_quality_rejects_bad_input(tmp_path, capsys):
    status = main(["quality", str(tmp_path / "nowhere")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and len(err.splitlines()) == 1 and "no such run directory" in err
    os.makedirs(tmp_path / "r")
    assert main(["quality", str(tmp_path / "r"), "-n", "1"]) == 2
    assert "at least 2" in capsys.readouterr().err
