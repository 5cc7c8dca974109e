"""Each likelihood's log_prob against torch.distributions, and the continuous Bernoulli's normaliser
against numerical integration."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Bernoulli, ContinuousBernoulli, Independent, Normal

from vaelab.models.likelihoods import (
    BernoulliLikelihood,
    ContinuousBernoulliLikelihood,
    GaussianLikelihood,
    continuous_bernoulli_log_normalizer,
)

SHAPE = (5, 1, 4, 3)  # [B, C, H, W]


def _logits(seed: int, scale: float = 4.0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


@given(st.integers(0, 10_000))
@settings(max_examples=25, deadline=None)
def test_bernoulli_matches_torch(seed):
    logits = _logits(seed)
    x = torch.bernoulli(torch.full(SHAPE, 0.5, dtype=torch.float64), generator=torch.Generator().manual_seed(seed + 1))
    ours = BernoulliLikelihood(logits, event_ndims=3).log_prob(x)
    reference = Independent(Bernoulli(logits=logits), 3).log_prob(x)
    assert ours.shape == (5,)
    torch.testing.assert_close(ours, reference)


@given(st.integers(0, 10_000), st.floats(0.05, 3.0))
@settings(max_examples=25, deadline=None)
def test_gaussian_matches_torch(seed, sigma):
    loc = _logits(seed, 1.0)
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    scale = torch.tensor(sigma, dtype=torch.float64)
    ours = GaussianLikelihood(loc, scale, event_ndims=3).log_prob(x)
    reference = Independent(Normal(loc, scale.expand(SHAPE)), 3).log_prob(x)
    torch.testing.assert_close(ours, reference)


@given(st.integers(0, 10_000), st.sampled_from([1e-5, 1e-2, 1.0, 8.0]))
@settings(max_examples=25, deadline=None)
def test_continuous_bernoulli_matches_torch(seed, scale):
    logits = _logits(seed, scale)
    x = torch.rand(SHAPE, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    ours = ContinuousBernoulliLikelihood(logits, event_ndims=3)
    reference = Independent(ContinuousBernoulli(logits=logits), 3)
    # torch switches to a Taylor expansion in a wider band around 1/2, hence the loose tolerance.
    torch.testing.assert_close(ours.log_prob(x), reference.log_prob(x), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ours.mean, reference.mean, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("eta", [-30.0, -5.0, -0.3, -1e-4, 0.0, 2e-4, 0.7, 4.0, 25.0])
def test_continuous_bernoulli_normaliser_by_integration(eta):
    """C(lambda) is defined by integral_0^1 lambda^x (1 - lambda)^(1 - x) dx = 1 / C(lambda)."""
    x = torch.linspace(0, 1, 200_001, dtype=torch.float64)
    eta_t = torch.tensor(eta, dtype=torch.float64)
    log_unnormalised = -torch.nn.functional.binary_cross_entropy_with_logits(eta_t.expand_as(x), x, reduction="none")
    integral = torch.trapezoid(torch.exp(log_unnormalised), x)
    expected = -torch.log(integral)
    assert continuous_bernoulli_log_normalizer(eta_t).item() == pytest.approx(expected.item(), abs=1e-7)


@pytest.mark.parametrize("eta", [-6.0, -0.5, 0.0, 1e-4, 0.5, 6.0])
def test_continuous_bernoulli_density_integrates_to_one_and_samples_match_mean(eta):
    logits = torch.full((1,), eta, dtype=torch.float64)
    dist = ContinuousBernoulliLikelihood(logits, event_ndims=1)
    x = torch.linspace(0, 1, 100_001, dtype=torch.float64).unsqueeze(-1)
    assert torch.trapezoid(dist.log_prob(x).exp(), x.squeeze(-1)).item() == pytest.approx(1.0, abs=1e-6)
    draws = dist.sample((200_000,), generator=torch.Generator().manual_seed(0))
    assert draws.min() >= 0 and draws.max() <= 1
    # Monte-Carlo mean within 5 standard errors of the exact mean (variance <= 1/12 on [0, 1]).
    assert abs(draws.mean().item() - dist.mean.item()) < 5 * math.sqrt(1 / 12 / 200_000)


def test_bernoulli_sample_is_binary_and_reproducible():
    dist = BernoulliLikelihood(_logits(0), event_ndims=3)
    a = dist.sample(generator=torch.Generator().manual_seed(3))
    b = dist.sample(generator=torch.Generator().manual_seed(3))
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b)


def test_log_prob_accepts_leading_sample_dimension():
    """Decoding z: [K, B, D] gives batch [K, B]; log_prob(x: [B, ...]) broadcasts to [K, B]."""
    logits = torch.randn(7, *SHAPE)
    x = torch.bernoulli(torch.full(SHAPE, 0.5))
    assert BernoulliLikelihood(logits, 3).log_prob(x).shape == (7, 5)
    assert ContinuousBernoulliLikelihood(logits, 3).log_prob(x).shape == (7, 5)
    assert GaussianLikelihood(logits, torch.tensor(0.5), 3).log_prob(x).shape == (7, 5)
