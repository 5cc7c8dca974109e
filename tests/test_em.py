"""EM with exact E-steps: monotone log-likelihood, zero ELBO gap, agreement with scikit-learn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from vaelab.em.fit import EM_MODELS, FactorAnalysis, GaussianMixture, fit_em
from vaelab.errors import VaelabError
from vaelab.em.linear_gaussian import LinearGaussianModel

TRUE_MIXTURE = GaussianMixture(
    weights=torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64),
    means=torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]], dtype=torch.float64),
    covariances=torch.tensor(
        [[[1.0, 0.5], [0.5, 1.0]], [[0.5, 0.0], [0.0, 2.0]], [[1.5, -0.7], [-0.7, 1.0]]],
        dtype=torch.float64,
    ),
)


@pytest.fixture(scope="module")
def digits_10d() -> torch.Tensor:
    """UCI digits (ships with scikit-learn) projected on 10 principal components: [1797, 10]."""
    return torch.from_numpy(PCA(n_components=10, random_state=0).fit_transform(load_digits().data))


@pytest.fixture(scope="module")
def fa_data() -> tuple[LinearGaussianModel, torch.Tensor]:
    """2,000 draws from a known 8-dimensional, 2-factor model with unequal noise variances."""
    g = torch.Generator().manual_seed(0)
    truth = LinearGaussianModel(
        weight=torch.randn(8, 2, dtype=torch.float64, generator=g),
        bias=torch.randn(8, dtype=torch.float64, generator=g),
        noise=0.1 + torch.rand(8, dtype=torch.float64, generator=g),
    )
    return truth, truth.sample(2000, generator=g)


@pytest.fixture(scope="module")
def fa_fit(fa_data: tuple[LinearGaussianModel, torch.Tensor]) -> FactorAnalysis:
    """Factor analysis fitted to ``fa_data`` to convergence (tol 1e-10 nats)."""
    _, x = fa_data
    return fit_em(
        x,
        "fa",
        2,
        noise="diag",
        max_iter=2000,
        tol=1e-10,
        generator=torch.Generator().manual_seed(0),
    )


def assert_monotone_with_zero_gap(result: GaussianMixture | FactorAnalysis) -> None:
    """No step lowers log p(x); every recorded ELBO equals it (KL to the posterior is 0)."""
    log_lik = np.array([entry["log_likelihood"] for entry in result.history])
    elbo = np.array([entry["elbo"] for entry in result.history])
    assert np.all(np.diff(log_lik) >= -1e-8 * np.abs(log_lik[1:])), "log-likelihood decreased"
    np.testing.assert_allclose(elbo, log_lik, rtol=1e-10, atol=0)
    assert [entry["iteration"] for entry in result.history] == list(range(len(result.history)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_log_likelihood_never_decreases_and_elbo_touches_it(
    digits_10d: torch.Tensor, covariance: str, seed: int
) -> None:
    result = fit_em(
        digits_10d,
        "gmm",
        6,
        covariance=covariance,
        max_iter=40,
        tol=0.0,
        generator=torch.Generator().manual_seed(seed),
    )
    assert len(result.history) == 41
    assert_monotone_with_zero_gap(result)
    assert result.history[-1]["log_likelihood"] > result.history[0]["log_likelihood"]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("noise", ["diag", "isotropic"])
def test_factor_analysis_log_likelihood_never_decreases_and_elbo_touches_it(
    digits_10d: torch.Tensor, noise: str, seed: int
) -> None:
    result = fit_em(
        digits_10d,
        "fa",
        3,
        noise=noise,
        max_iter=40,
        tol=0.0,
        generator=torch.Generator().manual_seed(seed),
    )
    assert_monotone_with_zero_gap(result)
    assert result.history[-1]["log_likelihood"] > result.history[0]["log_likelihood"]


def test_constant_pixels_are_floored_not_fatal() -> None:
    # Raw digits have pixels that are 0 in every image: their ML noise variance is 0.
    x = torch.from_numpy(load_digits().data)  # [1797, 64]
    result = fit_em(x, "fa", 5, max_iter=20, tol=0.0, generator=torch.Generator().manual_seed(0))
    assert_monotone_with_zero_gap(result)
    assert result.noise.min().item() == 1e-6


def fit_both_gmms(
    x: torch.Tensor, covariance: str, tol: float, max_iter: int
) -> tuple[GaussianMixture, SklearnGaussianMixture]:
    """Ours and scikit-learn's, both started from our k-means++ initialisation."""
    init = fit_em(
        x, "gmm", 5, covariance=covariance, max_iter=0, generator=torch.Generator().manual_seed(0)
    )
    ours = fit_em(x, "gmm", 5, covariance=covariance, max_iter=max_iter, tol=tol, init=init)
    precisions = (
        torch.linalg.inv(init.covariances) if covariance == "full" else 1 / init.covariances
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning when max_iter is reached first
        sklearn = SklearnGaussianMixture(
            n_components=5,
            covariance_type=covariance,
            weights_init=init.weights.numpy(),
            means_init=init.means.numpy(),
            precisions_init=precisions.numpy(),
            tol=tol,
            max_iter=max_iter,
            reg_covar=1e-6,
        ).fit(x.numpy())
    return ours, sklearn


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_converges_to_sklearn_log_likelihood(digits_10d: torch.Tensor, covariance: str) -> None:
    ours, sklearn = fit_both_gmms(digits_10d, covariance, tol=1e-6, max_iter=500)
    assert ours.converged and sklearn.converged_
    assert (
        abs(ours.log_likelihood(digits_10d).mean().item() - sklearn.score(digits_10d.numpy()))
        < 1e-3
    )


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_takes_the_same_steps_as_sklearn(digits_10d: torch.Tensor, covariance: str) -> None:
    # tol=0: both take exactly max_iter M-steps. (With tol > 0 scikit-learn takes one M-step more:
    # it tests the change of the log-likelihood of the parameters before its last M-step.)
    ours, sklearn = fit_both_gmms(digits_10d, covariance, tol=0.0, max_iter=60)
    x = digits_10d.numpy()
    assert abs(ours.log_likelihood(digits_10d).mean().item() - sklearn.score(x)) < 1e-9
    np.testing.assert_allclose(ours.weights.numpy(), sklearn.weights_, rtol=1e-7)
    np.testing.assert_allclose(ours.means.numpy(), sklearn.means_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours.covariances.numpy(), sklearn.covariances_, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(
        ours.predict_proba(digits_10d).numpy(), sklearn.predict_proba(x), atol=1e-9
    )


def test_factor_analysis_converges_to_sklearn_log_likelihood(
    fa_data: tuple[LinearGaussianModel, torch.Tensor], fa_fit: FactorAnalysis
) -> None:
    _, x = fa_data
    ours = fa_fit
    sklearn = SklearnFactorAnalysis(
        n_components=2, tol=1e-10, max_iter=5000, svd_method="lapack"
    ).fit(x.numpy())
    assert ours.converged
    assert abs(ours.log_likelihood(x).mean().item() - sklearn.score(x.numpy())) < 1e-5
    # W is identified only up to a rotation of z; W Wᵀ and ψ are not.
    np.testing.assert_allclose(ours.noise.numpy(), sklearn.noise_variance_, atol=1e-3)
    np.testing.assert_allclose(
        (ours.weight @ ours.weight.T).numpy(),
        sklearn.components_.T @ sklearn.components_,
        atol=1e-3,
    )


def test_ppca_converges_to_the_closed_form_maximum_likelihood(
    fa_data: tuple[LinearGaussianModel, torch.Tensor],
) -> None:
    # Tipping & Bishop 1999 (PRML 12.45-12.46): σ² = mean of the discarded eigenvalues of S, and
    # the fitted covariance keeps S's top-K eigenpairs. scikit-learn's PCA.score is that model.
    _, x = fa_data
    ours = fit_em(
        x,
        "fa",
        2,
        noise="isotropic",
        max_iter=2000,
        tol=1e-10,
        generator=torch.Generator().manual_seed(0),
    )
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.T, correction=0)).flip(0)  # descending: [D]
    assert ours.converged
    torch.testing.assert_close(ours.noise, eigenvalues[2:].mean().expand(8), rtol=1e-5, atol=0)
    assert (
        abs(
            ours.log_likelihood(x).mean().item()
            - PCA(n_components=2).fit(x.numpy()).score(x.numpy())
        )
        < 1e-4
    )


def test_factor_analysis_is_the_linear_gaussian_model(
    fa_data: tuple[LinearGaussianModel, torch.Tensor],
) -> None:
    _, x = fa_data
    result = fit_em(x, "fa", 2, max_iter=5, generator=torch.Generator().manual_seed(0))
    model = result.as_linear_gaussian()
    torch.testing.assert_close(model.bias, x.mean(0))
    torch.testing.assert_close(result.log_likelihood(x), model.log_evidence(x))
    assert result.history[-1]["log_likelihood"] == pytest.approx(
        model.log_evidence(x).mean().item(), rel=1e-12
    )


def test_gmm_recovers_a_known_mixture() -> None:
    x = TRUE_MIXTURE.sample(6000, generator=torch.Generator().manual_seed(0))
    fit = fit_em(x, "gmm", 3, max_iter=200, tol=1e-8, generator=torch.Generator().manual_seed(1))
    order = [int(torch.cdist(mean[None], fit.means).argmin()) for mean in TRUE_MIXTURE.means]
    assert sorted(order) == [0, 1, 2]
    torch.testing.assert_close(fit.weights[order], TRUE_MIXTURE.weights, rtol=0, atol=0.02)
    torch.testing.assert_close(fit.means[order], TRUE_MIXTURE.means, rtol=0, atol=0.1)
    torch.testing.assert_close(fit.covariances[order], TRUE_MIXTURE.covariances, rtol=0, atol=0.15)


def test_factor_analysis_recovers_a_known_model(
    fa_data: tuple[LinearGaussianModel, torch.Tensor], fa_fit: FactorAnalysis
) -> None:
    truth, _ = fa_data
    fit = fa_fit
    torch.testing.assert_close(fit.noise, truth.psi, rtol=0.25, atol=0.05)
    torch.testing.assert_close(
        fit.weight @ fit.weight.T, truth.weight @ truth.weight.T, rtol=0, atol=0.25
    )


class MultivariateNormalDensity:
    """N(x; μ, Σ) written out from the formula, independent of torch.distributions."""

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor) -> None:
        self.mean, self.precision = mean, torch.linalg.inv(covariance)
        self.norm = math.sqrt((2 * math.pi) ** mean.shape[0] * torch.linalg.det(covariance).item())

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        diff = x - self.mean
        return torch.exp(-0.5 * ((diff @ self.precision) * diff).sum(1)) / self.norm


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_gmm_log_likelihood_is_log_sum_exp_of_component_densities(covariance: str) -> None:
    x = TRUE_MIXTURE.sample(50, generator=torch.Generator().manual_seed(0))
    fit = fit_em(
        x, "gmm", 2, covariance=covariance, max_iter=3, generator=torch.Generator().manual_seed(0)
    )
    full = fit.covariances if covariance == "full" else torch.diag_embed(fit.covariances)
    densities = torch.stack(
        [
            w * MultivariateNormalDensity(m, c)(x)
            for w, m, c in zip(fit.weights, fit.means, full, strict=True)
        ],
        dim=1,
    )  # [N, K]
    torch.testing.assert_close(fit.log_likelihood(x), densities.sum(1).log())
    torch.testing.assert_close(fit.predict_proba(x), densities / densities.sum(1, keepdim=True))


@pytest.mark.parametrize(
    ("model", "options"),
    [("gmm", {"covariance": "full"}), ("gmm", {"covariance": "diag"}), ("fa", {"noise": "diag"})],
    ids=["gmm-full", "gmm-diag", "fa"],
)
def test_parameters_round_trip_through_safetensors(tmp_path, model: str, options: dict) -> None:
    x = TRUE_MIXTURE.sample(200, generator=torch.Generator().manual_seed(0))
    fit = fit_em(x, model, 2, max_iter=5, generator=torch.Generator().manual_seed(0), **options)
    save_file(fit.to_tensors(), tmp_path / "params.safetensors")
    loaded = type(fit).from_tensors(load_file(tmp_path / "params.safetensors"))
    assert fit.to_tensors().keys() == loaded.to_tensors().keys()
    for name, tensor in fit.to_tensors().items():
        torch.testing.assert_close(loaded.to_tensors()[name], tensor, rtol=0, atol=0)
    torch.testing.assert_close(loaded.log_likelihood(x), fit.log_likelihood(x), rtol=0, atol=0)


@pytest.mark.parametrize("model", ["gmm", "fa"])
def test_sample_is_reproducible_and_matches_the_model_mean(model: str) -> None:
    x = TRUE_MIXTURE.sample(2000, generator=torch.Generator().manual_seed(0))
    fit = fit_em(x, model, 2, max_iter=20, generator=torch.Generator().manual_seed(0))
    first = fit.sample(100_000, generator=torch.Generator().manual_seed(7))
    again = fit.sample(100_000, generator=torch.Generator().manual_seed(7))
    assert first.shape == (100_000, 2)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    model_mean = fit.weights @ fit.means if model == "gmm" else fit.bias
    torch.testing.assert_close(first.mean(0), model_mean, rtol=0, atol=0.05)


def test_init_is_honoured_and_max_iter_zero_returns_it() -> None:
    x = TRUE_MIXTURE.sample(300, generator=torch.Generator().manual_seed(0))
    start = fit_em(
        x, "gmm", 3, covariance="diag", max_iter=0, generator=torch.Generator().manual_seed(0)
    )
    again = fit_em(x, "gmm", 3, covariance="diag", max_iter=0, init=start)
    assert len(again.history) == 1 and not again.converged
    for name, tensor in start.to_tensors().items():
        torch.testing.assert_close(again.to_tensors()[name], tensor, rtol=0, atol=0)


def test_em_models_names_both_fitters() -> None:
    assert sorted(EM_MODELS) == ["fa", "gmm"]


@pytest.mark.parametrize(
    ("x", "model", "components", "options"),
    [
        (torch.randn(20, 2), "hmm", 2, {}),
        (torch.randn(20, 2), "gmm", 0, {}),
        (torch.randn(20, 2), "gmm", 21, {}),
        (torch.tensor([[0.0, 1.0], [math.nan, 0.0], [1.0, 1.0]]), "gmm", 2, {}),
        (torch.tensor([[0.0, math.inf], [1.0, 0.0], [1.0, 1.0]]), "fa", 1, {}),
        (torch.randn(20), "gmm", 2, {}),
        (torch.randn(20, 2), "gmm", 2, {"covariance": "spherical"}),
        (torch.randn(20, 2), "fa", 1, {"noise": "full"}),
        (torch.zeros(20, 2), "gmm", 2, {}),
        (torch.randn(20, 2), "gmm", 3, {"init": TRUE_MIXTURE, "covariance": "diag"}),
    ],
    ids=[
        "unknown-model",
        "k-zero",
        "k-above-n",
        "nan",
        "inf",
        "not-2d",
        "bad-covariance",
        "bad-noise",
        "one-distinct-point",
        "init-mismatch",
    ],
)
def test_user_errors_raise_vaelab_error(
    x: torch.Tensor, model: str, components: int, options: dict
) -> None:
    with pytest.raises(VaelabError):
        fit_em(x, model, components, **options)
