"""Hierarchical VAEs against exact answers.

A two-layer VAE whose generative path is made linear-Gaussian has a closed-form evidence:
z_2 ~ N(0, I), z_1 | z_2 ~ N(C z_2 + d, diag s^2), x | z_1 ~ N(V z_1 + e, sigma^2 I) gives
p(x) = N(V d + e, V (C C^T + diag s^2) V^T + sigma^2 I). With the model's own (imperfect) top-down
posterior, the estimator must give ELBO <= IW_K <= log p(x), with IW_K -> log p(x) as K grows.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import MultivariateNormal

from vaelab.bounds.estimator import elbo, iwae_bound, log_mean_exp, log_weights
from vaelab.config import ModelConfig
from vaelab.models.latents import (
    MIN_SCALE,
    Chain,
    follow_prior_below,
    layer_kls,
    layer_of,
    reparameterize,
    sample,
    sampled_and_closed_form_kls,
)
from vaelab.models.vae import VAE

SIGMA = 0.7
GATE_OPEN = 40.0  # sigmoid(40) = 1 - 4e-18: a gated layer with this gate is exactly linear in float64


def linear_gaussian_hvae(seed: int) -> tuple[VAE, MultivariateNormal]:
    """A 2-layer VAE (latent 2 per layer, x in R^3) whose p(x) is Gaussian, and that p(x)."""
    torch.manual_seed(seed)
    config = ModelConfig(arch="gated", hidden=(), latent_dim=2, likelihood="gaussian", gaussian_scale=SIGMA,
                         stochastic_layers=2, input_shape=(3,))
    model = VAE(config).double()
    with torch.no_grad():
        linear, head = model.top_down[0].linear, model.prior_heads[0]
        linear.weight[4:].zero_()
        linear.bias[4:] = GATE_OPEN  # t = (W z_2 + b) * sigmoid(40): linear
        head.weight[2:].zero_()  # constant scale of p(z_1|z_2)
        head.bias[2:] = torch.tensor([0.3, -0.5], dtype=torch.float64)
        w1, a = linear.weight[:4], head.weight[:2]
        c_matrix = a @ w1  # [2, 2]
        d = a @ linear.bias[:4] + head.bias[:2]
        s = F.softplus(head.bias[2:]) + MIN_SCALE
        decoder = model.decoder_net.head[0]
        v, e = decoder.weight, decoder.bias
        mean = v @ d + e
        covariance = v @ (c_matrix @ c_matrix.T + torch.diag(s**2)) @ v.T + SIGMA**2 * torch.eye(3, dtype=torch.float64)
    return model, MultivariateNormal(mean, covariance)


def fit_posterior(model: VAE, x: torch.Tensor, steps: int = 40) -> None:
    """Train only the inference networks on the ELBO of ``x`` (the generative model stays exact), so
    that q is close enough to p(z|x) for IW_K to converge at a testable K."""
    inference = [*model.encoder_net.parameters(), *model.bottom_up.parameters(), *model.posterior_heads.parameters()]
    optimizer = torch.optim.Adam(inference, lr=0.02)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        optimizer.zero_grad()
        elbo(model, x.expand(16, *x.shape).reshape(-1, x.shape[-1]), generator).negative_elbo.mean().backward()
        optimizer.step()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_elbo_below_iw_below_exact_evidence_and_iw_converges(seed: int) -> None:
    model, marginal = linear_gaussian_hvae(seed)
    x = marginal.sample((5,)) + 0.3
    fit_posterior(model, x)  # a q close to, but not at, p(z|x)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        exact = marginal.log_prob(x)
        log_w = log_weights(model, x, 200_000, generator)  # [K, 5]
        sampled_elbo = log_w.mean(0)
        iw_10 = log_mean_exp(log_w.reshape(20_000, 10, 5).transpose(0, 1)).mean(0)  # mean of 20k draws of IW_10
        iw_all = log_mean_exp(log_w)
        repeated = x.expand(40_000, *x.shape).reshape(-1, x.shape[-1])
        closed_form_elbo = -elbo(model, repeated, generator).negative_elbo.reshape(40_000, 5).mean(0)
    assert bool((sampled_elbo <= iw_10).all()) and bool((iw_10 < exact).all())
    assert float((exact - sampled_elbo).min()) > 0.005  # the bound is loose enough for the ordering to mean something
    torch.testing.assert_close(closed_form_elbo, sampled_elbo, atol=0.03, rtol=0)  # same expectation
    torch.testing.assert_close(iw_all, exact, atol=0.02, rtol=0)


def test_the_posterior_and_prior_are_chains_whose_log_prob_is_the_sum_of_their_layers() -> None:
    model, _ = linear_gaussian_hvae(0)
    x = torch.randn(4, 3, dtype=torch.float64)
    with torch.no_grad():
        q, p = model.encode(x), model.prior
        assert isinstance(q, Chain) and isinstance(p, Chain) and q.event_shape == (4,)
        z = sample(q, 7, torch.Generator().manual_seed(0))  # [7, 4, 4]
        manual = sum(layer.log_prob(z_l) for layer, z_l in zip(q.conditionals(z), z.split(2, -1)))
        torch.testing.assert_close(q.log_prob(z), manual)
        # the mean of log w is the sampled ELBO; the log-mean-exp is IW_K
        log_w = log_weights(model, x, 3, torch.Generator().manual_seed(1))
        assert log_w.shape == (3, 4)


def test_ancestral_prior_samples_have_the_layered_moments() -> None:
    model, marginal = linear_gaussian_hvae(1)
    with torch.no_grad():
        z = sample(model.prior, 200_000, torch.Generator().manual_seed(0))
        x_mean = model.decode(z).mean.mean(0)
    torch.testing.assert_close(x_mean, marginal.mean, atol=0.02, rtol=0)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 10_000), samples=st.sampled_from([1, 4, 32]))
def test_iw_bound_never_exceeds_the_exact_evidence_in_expectation(seed: int, samples: int) -> None:
    model, marginal = linear_gaussian_hvae(seed)
    x = marginal.sample((3,))
    with torch.no_grad():
        iw = torch.stack([iwae_bound(model, x, samples, torch.Generator().manual_seed(r)) for r in range(200)]).mean(0)
    assert bool((iw <= marginal.log_prob(x) + 0.1).all())
    assert math.isfinite(float(iw.sum()))


def test_a_change_in_the_top_layer_moves_the_layer_below_by_the_priors_conditional_mean() -> None:
    """follow_prior_below on the linear-Gaussian model, where E p(z_1|z_2) = C z_2 + d exactly."""
    model, _ = linear_gaussian_hvae(3)
    with torch.no_grad():
        linear, head = model.top_down[0].linear, model.prior_heads[0]
        c_matrix = head.weight[:2] @ linear.weight[:4]
        prior = model.prior
        before = torch.randn(4, dtype=torch.float64)  # (z_1, z_2)
        after = before.repeat(3, 1)
        after[:, 2] += torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64)  # z_2's first coordinate
        moved = follow_prior_below(prior, before, after, layer_of(prior, 2))
        expected_z1 = before[:2] + (after[:, 2:] - before[2:]) @ c_matrix.T
        torch.testing.assert_close(moved[:, :2], expected_z1)
        torch.testing.assert_close(moved[:, 2:], after[:, 2:])  # the changed layer itself is kept
        assert torch.equal(follow_prior_below(prior, before, before.clone(), 1), before)  # no change, no move
        assert torch.equal(follow_prior_below(prior, before, after, 0), after)  # the bottom layer: nothing below
    assert [layer_of(prior, d) for d in range(4)] == [0, 0, 1, 1]


def test_a_traversal_of_a_top_layer_dimension_changes_the_picture(monkeypatch) -> None:
    """The decoder reads z_1 only: before follow_prior_below a top-layer row decoded one image."""
    from vaelab.evaluation.latents import LatentSummary
    from vaelab.views import plots

    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="mlp", hidden=(16,), latent_dim=2, likelihood="bernoulli", stochastic_layers=2,
                            input_shape=(1, 6, 6)))
    top = 3  # the second coordinate of z_2
    variance = torch.zeros(4)
    variance[top] = 1.0
    decoded: list[torch.Tensor] = []
    real = plots.decode_means
    monkeypatch.setattr(plots, "decode_means", lambda *args: decoded.append(real(*args)) or decoded[-1])
    figure = plots.traversal_figure(model, torch.zeros(4), LatentSummary(torch.zeros(5, 4), torch.ones(4), variance),
                                    rows=1, steps=5)
    (images,) = decoded  # [5, 1, 6, 6]: the row of the top-layer dimension
    assert (images[1:] - images[0]).abs().amax() > 1e-3
    assert figure.axes[0].get_yticklabels()[0].get_text().startswith("z4")


@pytest.mark.parametrize("prior", ["standard", "mog:3"])
def test_one_pass_gives_both_the_sampled_and_the_closed_form_layer_kls(prior: str) -> None:
    """The evaluator's single pass equals the two calls of layer_kls it replaces."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(arch="mlp", hidden=(8,), latent_dim=3, likelihood="bernoulli", stochastic_layers=2,
                            prior=prior, input_shape=(5,)))
    x = torch.bernoulli(torch.rand(4, 5))
    with torch.no_grad():
        q, p = model.encode(x), model.prior
        z = reparameterize(q, torch.randn(6, 4, model.latent_size))
        sampled, closed = sampled_and_closed_form_kls(q, p, z)
        for got, want in zip(sampled, layer_kls(q, p, z, closed_form=False)):
            torch.testing.assert_close(got, want)
        for got, want in zip(closed, layer_kls(q, p, z, closed_form=True)):
            torch.testing.assert_close(got, want.sum(-1) if want.dim() == 3 else want)
