"""Oracle tests for the linear-Gaussian model, whose evidence and posterior are exact."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.decomposition import FactorAnalysis as SklearnFactorAnalysis
from torch.distributions import MultivariateNormal, Normal, kl_divergence

from vaelab.errors import VaelabError
from vaelab.em.linear_gaussian import LinearGaussianModel, analytic_elbo

SETTINGS = settings(max_examples=25, deadline=None)


def random_model(d: int, k: int, seed: int, isotropic: bool = False) -> LinearGaussianModel:
    """W entries in N(0, 1), b in N(0, 1), noise variances in [0.1, 1.1]."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, k, dtype=torch.float64, generator=g)
    bias = torch.randn(d, dtype=torch.float64, generator=g)
    noise = 0.1 + torch.rand(() if isotropic else (d,), dtype=torch.float64, generator=g)
    return LinearGaussianModel(weight=weight, bias=bias, noise=noise)


def random_gaussian(n: int, k: int, seed: int) -> MultivariateNormal:
    """A Gaussian q(z) per example that is not the posterior: batch [n], event [k]."""
    g = torch.Generator().manual_seed(seed)
    loc = torch.randn(n, k, dtype=torch.float64, generator=g)
    scale_tril = torch.randn(n, k, k, dtype=torch.float64, generator=g).tril(-1)
    scale_tril = scale_tril + torch.diag_embed(
        0.2 + torch.rand(n, k, dtype=torch.float64, generator=g)
    )
    return MultivariateNormal(loc, scale_tril=scale_tril)


dims = st.integers(min_value=1, max_value=6)
seeds = st.integers(min_value=0, max_value=2**31 - 1)


@SETTINGS
@given(d=dims, seed=seeds, isotropic=st.booleans())
def test_log_evidence_matches_numerical_integration_over_z(
    d: int, seed: int, isotropic: bool
) -> None:
    # K = 1: log p(x) = log ∫ p(x|z) p(z) dz by the trapezoid rule on a fine grid of z.
    model = random_model(d, 1, seed, isotropic)
    x = model.sample(4, generator=torch.Generator().manual_seed(seed))  # [4, D]
    z = torch.linspace(-12, 12, 12001, dtype=torch.float64)[:, None]  # [G, 1]
    log_joint = model.decode(z).log_prob(x[:, None, :]) + Normal(0.0, 1.0).log_prob(
        z[:, 0]
    )  # [4, G]
    log_integral = torch.logsumexp(log_joint, dim=1) + math.log(z[1, 0] - z[0, 0])
    torch.testing.assert_close(model.log_evidence(x), log_integral, rtol=0, atol=1e-8)


def test_log_evidence_matches_sklearn_factor_analysis_with_the_same_parameters() -> None:
    model = random_model(d=7, k=3, seed=0)
    x = model.sample(500, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sklearn_fa = SklearnFactorAnalysis(n_components=3, max_iter=1).fit(x.numpy())
    sklearn_fa.components_ = model.weight.T.numpy()  # sklearn stores Wᵀ: [K, D]
    sklearn_fa.mean_ = model.bias.numpy()
    sklearn_fa.noise_variance_ = model.psi.numpy()
    expected = torch.from_numpy(sklearn_fa.score_samples(x.numpy()))
    torch.testing.assert_close(model.log_evidence(x), expected, rtol=1e-12, atol=1e-10)


@SETTINGS
@given(d=dims, k=st.integers(1, 4), seed=seeds, isotropic=st.booleans())
def test_bayes_rule_holds_at_any_z_with_the_exact_posterior(
    d: int, k: int, seed: int, isotropic: bool
) -> None:
    # log p(x) = log p(x|z) + log p(z) − log p(z|x) for every z, because p(z|x) is exact.
    model = random_model(d, k, seed, isotropic)
    g = torch.Generator().manual_seed(seed)
    x = model.sample(5, generator=g)  # [5, D]
    z = 2 * torch.randn(5, k, dtype=torch.float64, generator=g)  # anywhere, not only near the mode
    rhs = model.decode(z).log_prob(x) + model.prior.log_prob(z) - model.posterior(x).log_prob(z)
    torch.testing.assert_close(model.log_evidence(x), rhs, rtol=1e-10, atol=1e-9)


@SETTINGS
@given(d=dims, k=st.integers(1, 4), seed=seeds, isotropic=st.booleans())
def test_elbo_of_any_gaussian_is_below_the_evidence_by_its_kl_to_the_posterior(
    d: int, k: int, seed: int, isotropic: bool
) -> None:
    # PRML 9.70: log p(x) − ELBO(q) = KL(q ‖ p(z|x)) ≥ 0, zero for the exact posterior.
    model = random_model(d, k, seed, isotropic)
    x = model.sample(6, generator=torch.Generator().manual_seed(seed))
    q = random_gaussian(6, k, seed + 1)
    log_px = model.log_evidence(x)
    elbo = analytic_elbo(model, x, q)
    assert bool((elbo <= log_px + 1e-10).all())
    torch.testing.assert_close(
        log_px - elbo, kl_divergence(q, model.posterior(x)), rtol=1e-8, atol=1e-8
    )
    torch.testing.assert_close(
        analytic_elbo(model, x, model.posterior(x)), log_px, rtol=1e-10, atol=1e-9
    )


@pytest.mark.parametrize("exact", [True, False], ids=["posterior", "other-q"])
def test_analytic_elbo_matches_monte_carlo_reconstruction_minus_analytic_kl(exact: bool) -> None:
    # Kingma & Welling eq. 7 estimator: mean of log p(x|z^(l)), z^(l) ~ q, minus KL(q ‖ p(z)).
    model = random_model(d=5, k=2, seed=3)
    g = torch.Generator().manual_seed(4)
    x = model.sample(3, generator=g)  # [3, D]
    q = model.posterior(x) if exact else random_gaussian(3, 2, seed=5)
    samples = 200_000
    eps = torch.randn(samples, 3, 2, dtype=torch.float64, generator=g)
    z = q.mean + (q.scale_tril @ eps[..., None]).squeeze(-1)  # reparameterised z ~ q: [L, 3, K]
    log_lik = model.decode(z.reshape(-1, 2)).log_prob(x.repeat(samples, 1)).reshape(samples, 3)
    standard_normal = MultivariateNormal(
        torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    )
    monte_carlo = log_lik.mean(0) - kl_divergence(q, standard_normal)  # [3]
    standard_error = log_lik.std(0) / math.sqrt(samples)
    assert bool(((analytic_elbo(model, x, q) - monte_carlo).abs() < 5 * standard_error).all())


def test_distribution_shapes_match_the_vae_interface() -> None:
    model = random_model(d=5, k=2, seed=0)
    x = torch.zeros(7, 5, dtype=torch.float64)
    z = torch.zeros(7, 2, dtype=torch.float64)
    assert (model.prior.batch_shape, model.prior.event_shape) == ((), (2,))
    assert (model.posterior(x).batch_shape, model.posterior(x).event_shape) == ((7,), (2,))
    assert (model.decode(z).batch_shape, model.decode(z).event_shape) == ((7,), (5,))
    assert model.decode(z).log_prob(x).shape == (7,)
    assert model.log_evidence(x).shape == (7,)


def test_isotropic_noise_scalar_equals_the_same_value_repeated() -> None:
    ppca = random_model(d=4, k=2, seed=0, isotropic=True)
    as_vector = LinearGaussianModel(weight=ppca.weight, bias=ppca.bias, noise=ppca.noise.repeat(4))
    x = ppca.sample(10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ppca.log_evidence(x), as_vector.log_evidence(x))


def test_samples_have_the_marginal_mean_and_covariance() -> None:
    model = random_model(d=3, k=2, seed=0)
    x = model.sample(200_000, generator=torch.Generator().manual_seed(0)).numpy()
    marginal = model.marginal()
    np.testing.assert_allclose(x.mean(0), marginal.mean.numpy(), atol=0.02)
    np.testing.assert_allclose(np.cov(x.T), marginal.covariance_matrix.numpy(), atol=0.05)


@pytest.mark.parametrize(
    ("weight_shape", "bias_shape", "noise_shape", "noise_value"),
    [
        ((3,), (3,), (3,), 1.0),
        ((3, 2), (2,), (3,), 1.0),
        ((3, 2), (3,), (2,), 1.0),
        ((3, 2), (3,), (3,), 0.0),
    ],
    ids=["weight-1d", "bias-wrong-dim", "noise-wrong-dim", "noise-zero"],
)
def test_invalid_parameters_raise_vaelab_error(
    weight_shape: tuple[int, ...],
    bias_shape: tuple[int, ...],
    noise_shape: tuple[int, ...],
    noise_value: float,
) -> None:
    with pytest.raises(VaelabError):
        LinearGaussianModel(
            weight=torch.ones(weight_shape),
            bias=torch.zeros(bias_shape),
            noise=torch.full(noise_shape, noise_value),
        )
