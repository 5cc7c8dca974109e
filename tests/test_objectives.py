"""The ELBO and its KL term against independent references: torch.distributions' KL, and the exact
evidence of a linear-Gaussian model (a VAE whose decoder is linear with fixed Gaussian noise is
probabilistic PCA, so log p(x) is known in closed form)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, MultivariateNormal, Normal, kl_divergence

from vaelab.config import ModelConfig
from vaelab.em.linear_gaussian import LinearGaussianModel, analytic_elbo
from vaelab.models.vae import VAE
from vaelab.bounds.estimator import elbo
from vaelab.models.latents import gaussian_kl_per_dim, reparameterize, sample


def _diag_gaussian(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    return Independent(Normal(loc, scale), 1)


@given(st.integers(0, 10_000), st.booleans())
@settings(max_examples=40, deadline=None)
def test_gaussian_kl_matches_torch(seed, standard_prior):
    g = torch.Generator().manual_seed(seed)
    q = _diag_gaussian(torch.randn(6, 5, generator=g, dtype=torch.float64), torch.rand(6, 5, generator=g, dtype=torch.float64) * 3 + 1e-3)
    if standard_prior:
        p = _diag_gaussian(torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64))
    else:
        p = _diag_gaussian(torch.randn(5, generator=g, dtype=torch.float64), torch.rand(5, generator=g, dtype=torch.float64) + 0.1)
    per_dim = gaussian_kl_per_dim(q, p)
    assert per_dim.shape == (6, 5)
    torch.testing.assert_close(per_dim, kl_divergence(q.base_dist, p.base_dist))  # each dimension's KL
    ours = per_dim.sum(-1)
    assert ours.shape == (6,)
    torch.testing.assert_close(ours, kl_divergence(q, p))


def test_reparameterize_has_the_distribution_of_q():
    q = _diag_gaussian(torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 3.0]]))
    z = sample(q, 200_000, torch.Generator().manual_seed(0))  # [S, 1, 2]
    assert z.shape == (200_000, 1, 2)
    torch.testing.assert_close(z.mean(0), q.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), q.stddev, atol=0.03, rtol=0)
    # With the caller's noise, the sample is z = mu + sigma * eps exactly.
    eps = torch.randn(200_000, 1, 2, generator=torch.Generator().manual_seed(0))
    z = reparameterize(q, eps)
    torch.testing.assert_close(z, q.mean + q.stddev * eps)
    torch.testing.assert_close(z.mean(0), q.mean, atol=0.03, rtol=0)
    torch.testing.assert_close(z.std(0), q.stddev, atol=0.03, rtol=0)


def _linear_vae(data_dim: int, latent_dim: int, sigma: float) -> VAE:
    """hidden=() makes both networks linear; with a fixed-sigma Gaussian this is PPCA's model."""
    config = ModelConfig(arch="mlp", hidden=(), latent_dim=latent_dim, likelihood="gaussian",
                         gaussian_scale=sigma, input_shape=(data_dim,))
    torch.manual_seed(0)
    return VAE(config).double()


def _as_linear_gaussian(model: VAE, sigma: float) -> LinearGaussianModel:
    layer = model.decoder_net.head[0]  # the decoder's single Linear: x_mean = W z + b
    return LinearGaussianModel(layer.weight.detach(), layer.bias.detach(), torch.tensor(sigma**2, dtype=torch.float64))


def _mc_elbo(model: VAE, x: torch.Tensor, samples: int) -> torch.Tensor:
    """Average of vaelab's one-sample ELBO over many draws: [N]."""
    g = torch.Generator().manual_seed(1)
    repeated = x.repeat(samples, 1)
    return -elbo(model, repeated, g).negative_elbo.reshape(samples, -1).mean(0)


def test_elbo_equals_closed_form_and_stays_below_the_exact_evidence():
    sigma = 0.7
    model = _linear_vae(data_dim=6, latent_dim=2, sigma=sigma)
    exact = _as_linear_gaussian(model, sigma)
    x = exact.sample(8, generator=torch.Generator().manual_seed(2)) + 0.3
    with torch.no_grad():
        q = model.encode(x)
        q_full = MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
        closed_form = analytic_elbo(exact, x, q_full)
        estimate = _mc_elbo(model, x, samples=20_000)
    log_px = exact.log_evidence(x)
    torch.testing.assert_close(estimate, closed_form, atol=0.05, rtol=0)
    assert (closed_form < log_px).all()
    # The gap is exactly KL(q(z|x) || p(z|x)).
    torch.testing.assert_close(log_px - closed_form, kl_divergence(q_full, exact.posterior(x)))


def test_training_the_elbo_closes_the_gap_to_the_evidence():
    sigma = 0.5
    truth = LinearGaussianModel(
        torch.randn(6, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64),
        torch.zeros(6, dtype=torch.float64), torch.tensor(sigma**2, dtype=torch.float64))
    x = truth.sample(512, generator=torch.Generator().manual_seed(4))
    model = _linear_vae(6, 2, sigma)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(5)

    def gap() -> float:
        with torch.no_grad():
            q = model.encode(x)
            q_full = MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
            exact = _as_linear_gaussian(model, sigma)
            return (exact.log_evidence(x) - analytic_elbo(exact, x, q_full)).mean().item()

    before = gap()
    for _ in range(1500):
        optimizer.zero_grad()
        elbo(model, x, g).negative_elbo.mean().backward()
        optimizer.step()
    after = gap()
    assert after >= 0
    assert after < 0.1 * before


def test_elbo_terms_add_up():
    model = VAE(ModelConfig(likelihood="bernoulli", hidden=(16,), latent_dim=3, input_shape=(1, 8, 8)))
    x = torch.rand(10, 1, 8, 8)
    terms = elbo(model, x, torch.Generator().manual_seed(0))
    assert terms.negative_elbo.shape == terms.rec.shape == terms.kl.shape == (10,)
    torch.testing.assert_close(terms.negative_elbo, terms.rec + terms.kl)
    assert (terms.kl >= 0).all()


@pytest.mark.parametrize("likelihood", ["bernoulli", "cbernoulli", "gaussian"])
def test_elbo_is_reproducible_with_a_generator(likelihood):
    model = VAE(ModelConfig(hidden=(16,), latent_dim=3, likelihood=likelihood, input_shape=(1, 8, 8)))
    x = torch.rand(4, 1, 8, 8)
    a = elbo(model, x, torch.Generator().manual_seed(7)).negative_elbo
    b = elbo(model, x, torch.Generator().manual_seed(7)).negative_elbo
    assert torch.equal(a, b)


@pytest.mark.parametrize("likelihood", ["bernoulli", "cbernoulli", "gaussian"])
def test_training_sums_equal_the_reference_elbo(likelihood):
    """The fused hot-loop version computes the same number as the one obvious ELBO."""
    from vaelab.bounds.objectives import Objective, objective_sums

    model = VAE(ModelConfig(hidden=(16,), latent_dim=3, likelihood=likelihood, input_shape=(1, 8, 8)))
    x = torch.bernoulli(torch.full((6, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(0))
    reference = elbo(model, x, torch.Generator().manual_seed(9))
    eps = torch.randn(1, 6, 3, generator=torch.Generator().manual_seed(9))
    sums = objective_sums(model, x, None, eps, Objective())
    torch.testing.assert_close(sums.rec, reference.rec.sum())
    torch.testing.assert_close(sums.kl, reference.kl.sum())
    torch.testing.assert_close(sums.objective, reference.negative_elbo.sum())
    # Both against the textbook terms: -log p(x|mu + sigma eps) and torch.distributions' KL to the prior.
    with torch.no_grad():
        q = model.encode(x)
        z = q.mean + q.stddev * eps[0]
        rec = -model.decode(z).log_prob(x)
        kl = kl_divergence(q, model.prior)
    torch.testing.assert_close(sums.rec.detach(), rec.sum())
    torch.testing.assert_close(sums.kl.detach(), kl.sum())
