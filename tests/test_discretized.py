"""Discretized logistic likelihoods against a slow reference: the logistic built by torch.distributions
(a Uniform pushed through the inverse sigmoid and an affine map), its CDF integrated over each of the
256 bins one value at a time; normalisation, gradients, samples and the bits/dim helper."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import AffineTransform, SigmoidTransform, TransformedDistribution, Uniform

from vaelab.models.discretized import (
    LOG_SCALE_CAP,
    LOG_SCALE_MIN,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    bits_per_dim,
    capped_log_scale,
    uncapped_log_scale,
)

F64 = torch.float64
LEVELS = torch.arange(256, dtype=F64) / 255  # the 256 values an 8-bit sub-pixel takes


def _logistic(loc: float, scale: float) -> TransformedDistribution:
    base = Uniform(torch.tensor(0.0, dtype=F64), torch.tensor(1.0, dtype=F64), validate_args=False)
    return TransformedDistribution(base, [SigmoidTransform().inv, AffineTransform(loc, scale)], validate_args=False)


def reference_probs(loc: float, log_scale: float) -> torch.Tensor:
    """P(k/255) for k = 0..255 [256]: the logistic CDF differenced over each bin, tails to the edge bins.

    Bins right of ``loc`` use the mirrored logistic (1 - F(t) = F_mirror(-t)) so that tail bins are a
    difference of two small numbers, not of two numbers near one.
    """
    scale = math.exp(max(log_scale, LOG_SCALE_MIN))
    lo = LEVELS - 1 / 510
    hi = LEVELS + 1 / 510
    lo[0], hi[-1] = -math.inf, math.inf
    left, mirror = _logistic(loc, scale), _logistic(-loc, scale)
    below = left.cdf(hi) - left.cdf(lo)
    above = mirror.cdf(-lo) - mirror.cdf(-hi)
    return torch.where(LEVELS < loc, below, above)


def reference_mixture_log_prob(logit_probs, loc, log_scale, coeffs, x) -> torch.Tensor:
    """log p(x) of one example, a loop over pixels and components; shapes [M, H, W], [M, C, H, W], [C, H, W]."""
    weights = torch.softmax(logit_probs, 0)
    total = 0.0
    for i in range(x.shape[1]):
        for j in range(x.shape[2]):
            p = 0.0
            for m in range(loc.shape[0]):
                mu = loc[m, :, i, j].clone()
                if coeffs is not None:
                    alpha, beta, gamma = torch.tanh(coeffs[m, :, i, j])
                    mu[1] += alpha * x[0, i, j]
                    mu[2] += beta * x[0, i, j] + gamma * x[1, i, j]
                term = weights[m, i, j]
                for c in range(x.shape[0]):
                    k = int(round(x[c, i, j].item() * 255))
                    term = term * reference_probs(mu[c].item(), log_scale[m, c, i, j].item())[k]
                p = p + term
            total = total + math.log(p)
    return torch.tensor(total, dtype=F64)


def _grid_values(dist_cls, *params, event_ndims: int = 1):
    """log P of all 256 levels for a one-value distribution: params [1], evaluated at [256, 1]."""
    return dist_cls(*(p.expand(256, *p.shape) for p in params), event_ndims=event_ndims).log_prob(LEVELS[:, None])


def _chi_square_ok(counts: torch.Tensor, probs: torch.Tensor) -> bool:
    """Loose goodness of fit: bins with expected count >= 5 kept, the rest pooled into one."""
    n = counts.sum()
    expected = n * probs
    big = expected >= 5
    observed = torch.cat([counts[big], counts[~big].sum().reshape(1)])
    expected = torch.cat([expected[big], expected[~big].sum().reshape(1)]).clamp_min(1e-9)
    stat = ((observed - expected).square() / expected).sum().item()
    df = len(observed) - 1
    return stat < df + 6 * math.sqrt(2 * df)


EXTREME_LOG_SCALES = [-30.0, LOG_SCALE_MIN, -5.0, 0.0, 5.0, 30.0, 100.0]


@given(
    st.floats(-3.0, 4.0) | st.sampled_from([0.0, 1.0, 0.5 / 255, 1 - 0.5 / 255, -100.0, 100.0]),
    st.floats(-12.0, 8.0) | st.sampled_from(EXTREME_LOG_SCALES),
    st.sampled_from([torch.float32, F64]),
)
@settings(max_examples=60, deadline=None)
def test_probabilities_sum_to_one(loc, log_scale, dtype):
    params = torch.tensor([loc], dtype=dtype), torch.tensor([log_scale], dtype=dtype)
    log_p = _grid_values(DiscretizedLogistic, *params)
    assert log_p.shape == (256,)
    assert abs(log_p.double().exp().sum().item() - 1) < 1e-5


# Beyond log s = 6 the reference's CDF difference cancels to nothing (d = 1/(255 s) < 1e-5).
@given(st.floats(-1.0, 2.0), st.floats(-12.0, 6.0) | st.sampled_from(EXTREME_LOG_SCALES[:-2]))
@settings(max_examples=40, deadline=None)
def test_each_level_matches_reference(loc, log_scale):
    ours = _grid_values(DiscretizedLogistic, torch.tensor([loc], dtype=F64), torch.tensor([log_scale], dtype=F64))
    reference = reference_probs(loc, log_scale).log()
    finite = reference > -600  # the reference underflows beyond; ours must then be as small
    torch.testing.assert_close(ours[finite], reference[finite], atol=1e-4, rtol=1e-6)
    assert (ours[~finite] < -600).all()


def test_float32_levels_in_float64_still_sum_to_one():
    """Data loaded as float32 k/255 and cast to float64 are snapped back onto the float64 grid."""
    levels = (torch.arange(256, dtype=torch.float32) / 255).to(F64)[:, None]
    d = DiscretizedLogistic(torch.full((256, 1), 0.5, dtype=F64), torch.full((256, 1), LOG_SCALE_MIN, dtype=F64), 1)
    assert abs(d.log_prob(levels).exp().sum().item() - 1) < 1e-12


def test_very_wide_logistic_matches_its_density():
    """At s = e^30 each interior bin holds density * width = (1/4s) (1/255), the edge bins half each."""
    log_p = _grid_values(DiscretizedLogistic, torch.tensor([0.5], dtype=F64), torch.tensor([30.0], dtype=F64))
    torch.testing.assert_close(log_p[1:-1], torch.full((254,), -math.log(4 * 255) - 30, dtype=F64))
    torch.testing.assert_close(log_p[[0, -1]].exp(), torch.full((2,), 0.5, dtype=F64))


@given(st.integers(0, 10_000))
@settings(max_examples=15, deadline=None)
def test_log_prob_per_example_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 2, 2)  # [B, C, H, W]
    loc = torch.rand(shape, generator=g, dtype=F64)
    log_scale = torch.rand(shape, generator=g, dtype=F64) * 6 - 6  # keeps the reference above 1e-300
    x = torch.randint(0, 256, shape, generator=g).to(F64) / 255
    x[0, 0, 0] = torch.tensor([0.0, 1.0])  # both edge bins
    ours = DiscretizedLogistic(loc, log_scale, event_ndims=3).log_prob(x)
    per_dim = [reference_probs(m.item(), s.item())[round(v.item() * 255)].log() for m, s, v in zip(loc.flatten(), log_scale.flatten(), x.flatten())]
    reference = torch.stack(per_dim).reshape(shape).sum((1, 2, 3))
    assert ours.shape == (2,)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=0)
    ours32 = DiscretizedLogistic(loc.float(), log_scale.float(), event_ndims=3).log_prob(x.float())
    torch.testing.assert_close(ours32.double(), reference, atol=1e-3, rtol=1e-5)


def test_log_scale_clamp_bounds_the_sharpest_bin():
    loc = torch.tensor([128 / 255], dtype=F64)
    at_clamp = DiscretizedLogistic(loc, torch.tensor([LOG_SCALE_MIN], dtype=F64), 1).log_prob(loc)
    below = DiscretizedLogistic(loc, torch.tensor([-50.0], dtype=F64), 1).log_prob(loc)
    assert at_clamp == below
    # PixelCNN++'s -7 on [-1, 1]: the centre bin holds tanh(e^7 / 510) of the mass.
    torch.testing.assert_close(at_clamp.exp(), torch.tensor(math.tanh(math.exp(7) / 510), dtype=F64))


def test_batch_and_sample_shapes():
    loc = torch.rand(4, 3, 5, 6)
    d = DiscretizedLogistic(loc, torch.zeros(3, 1, 1), event_ndims=3)  # one log-scale per channel
    assert d.batch_shape == (4,) and d.event_shape == (3, 5, 6)
    assert d.sample((7,)).shape == (7, 4, 3, 5, 6)
    assert d.log_prob(d.sample((7,))).shape == (7, 4)  # K samples of x -> [K, B]
    assert d.mean.shape == (4, 3, 5, 6)


def test_mixture_of_one_component_is_the_single_logistic():
    g = torch.Generator().manual_seed(0)
    loc = torch.rand(2, 3, 4, 4, generator=g, dtype=F64)
    log_scale = torch.rand(2, 3, 4, 4, generator=g, dtype=F64) * 6 - 7
    x = torch.randint(0, 256, (2, 3, 4, 4), generator=g).to(F64) / 255
    single = DiscretizedLogistic(loc, log_scale, 3)
    logits = torch.randn(2, 1, 4, 4, generator=g, dtype=F64)
    for coeffs in (None, torch.zeros(2, 1, 3, 4, 4, dtype=F64)):
        mixture = DiscretizedLogisticMixture(logits, loc[:, None], log_scale[:, None], 3, coeffs)
        torch.testing.assert_close(mixture.log_prob(x), single.log_prob(x))
        torch.testing.assert_close(mixture.mean, single.mean)


@given(st.integers(0, 10_000), st.sampled_from([-30.0, -6.0, -3.0, 0.0, 6.0]))
@settings(max_examples=25, deadline=None)
def test_one_channel_mixture_sums_to_one(seed, log_scale_shift):
    g = torch.Generator().manual_seed(seed)
    m = 3
    logits = torch.randn(m, 1, generator=g, dtype=F64) * 3
    loc = torch.rand(m, 1, 1, generator=g, dtype=F64) * 1.6 - 0.3
    log_scale = torch.randn(m, 1, 1, generator=g, dtype=F64) + log_scale_shift
    d = DiscretizedLogisticMixture(logits.expand(256, m, 1), loc.expand(256, m, 1, 1), log_scale.expand(256, m, 1, 1), 2)
    log_p = d.log_prob(LEVELS.reshape(256, 1, 1))  # data [256, C=1, W=1]
    assert abs(log_p.exp().sum().item() - 1) < 1e-5


def _rgb_pixel(seed: int, m: int = 3, log_scale_range=(-6.0, -2.0)):
    """One RGB pixel's mixture parameters: logits [M, 1, 1], loc/log_scale/coeffs [M, 3, 1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low, high = log_scale_range
    return (
        torch.randn(m, 1, 1, generator=g, dtype=F64),
        torch.rand(m, 3, 1, 1, generator=g, dtype=F64) * 1.2 - 0.1,
        torch.rand(m, 3, 1, 1, generator=g, dtype=F64) * (high - low) + low,
        torch.randn(m, 3, 1, 1, generator=g, dtype=F64) * 2,
    )


@given(st.integers(0, 10_000))
@settings(max_examples=10, deadline=None)
def test_rgb_mixture_matches_reference(seed):
    g = torch.Generator().manual_seed(seed)
    m = 3
    logits = torch.randn(2, m, 2, 2, generator=g, dtype=F64) * 2
    loc = torch.rand(2, m, 3, 2, 2, generator=g, dtype=F64) * 1.2 - 0.1
    log_scale = torch.rand(2, m, 3, 2, 2, generator=g, dtype=F64) * 5 - 6
    coeffs = torch.randn(2, m, 3, 2, 2, generator=g, dtype=F64) * 2
    x = torch.randint(0, 256, (2, 3, 2, 2), generator=g).to(F64) / 255
    x[0, :, 0, 0] = 0.0
    x[1, :, 1, 1] = 1.0
    d = DiscretizedLogisticMixture(logits, loc, log_scale, 3, coeffs)
    assert d.batch_shape == (2,) and d.event_shape == (3, 2, 2)
    reference = torch.stack([reference_mixture_log_prob(logits[b], loc[b], log_scale[b], coeffs[b], x[b]) for b in range(2)])
    torch.testing.assert_close(d.log_prob(x), reference, atol=1e-4, rtol=0)


def test_rgb_mixture_marginals_sum_to_one():
    """The joint over 256^3 colours, summed over (G, B) for fixed R, is the R marginal sum_m pi_m P(r|m)
    (so G given R and B given R, G each sum to one within every component); those marginals sum to one.
    Checked for the edge values and a few inside, not all 256 values of R (16.7M evaluations)."""
    logits, loc, log_scale, coeffs = _rgb_pixel(1)
    d = DiscretizedLogisticMixture(logits, loc, log_scale, 3, coeffs)
    weights = torch.softmax(logits[:, 0, 0], 0)
    marginal_r = sum(weights[m] * reference_probs(loc[m, 0, 0, 0].item(), log_scale[m, 0, 0, 0].item()) for m in range(3))
    assert abs(marginal_r.sum().item() - 1) < 1e-12
    gb = torch.cartesian_prod(LEVELS, LEVELS)  # [65536, 2]
    for k in (0, 255, round(loc[0, 0, 0, 0].clamp(0, 1).item() * 255), 100):
        x = torch.cat([torch.full((len(gb), 1), k / 255, dtype=F64), gb], 1).reshape(-1, 3, 1, 1)
        torch.testing.assert_close(d.log_prob(x).exp().sum(), marginal_r[k], atol=1e-9, rtol=1e-6)


def test_gradients_finite_at_extreme_parameters():
    values = torch.tensor([-100.0, -1.0, 0.0, 0.5, 1.0, 2.0, 100.0])
    log_scales = torch.tensor([-100.0, LOG_SCALE_MIN, -3.0, 0.0, 10.0, 80.0, 200.0])
    loc, log_scale = torch.meshgrid(values, log_scales, indexing="ij")
    loc = loc.reshape(-1, 1).clone().requires_grad_()
    log_scale = log_scale.reshape(-1, 1).clone().requires_grad_()
    for x in (0.0, 1 / 255, 0.5, 254 / 255, 1.0):
        target = torch.full_like(loc, x)
        lp = DiscretizedLogistic(loc, log_scale, 1).log_prob(target)
        loc_grad, scale_grad = torch.autograd.grad(lp.sum(), (loc, log_scale))
        assert torch.isfinite(lp).all() and torch.isfinite(loc_grad).all() and torch.isfinite(scale_grad).all(), x

    m = 2
    logits = torch.tensor([[1e4, -1e4], [0.0, 0.0]]).reshape(2, m, 1).requires_grad_()
    mloc = torch.tensor([-50.0, 50.0]).reshape(1, m, 1, 1).expand(2, m, 3, 1).clone().requires_grad_()
    mscale = torch.tensor([-100.0, 100.0]).reshape(1, m, 1, 1).expand(2, m, 3, 1).clone().requires_grad_()
    coeffs = torch.full((2, m, 3, 1), 1e3).requires_grad_()
    x = torch.tensor([[0.0, 0.5, 1.0], [1.0, 0.0, 0.5]]).reshape(2, 3, 1)
    lp = DiscretizedLogisticMixture(logits, mloc, mscale, 2, coeffs).log_prob(x)
    grads = torch.autograd.grad(lp.sum(), (logits, mloc, mscale, coeffs))
    assert torch.isfinite(lp).all() and all(torch.isfinite(g_).all() for g_ in grads)


def test_samples_lie_on_the_grid_and_follow_the_probabilities():
    params = [(0.5, -4.0), (0.0, -3.0), (1.02, -5.0), (0.3, LOG_SCALE_MIN), (0.7, 1.0)]
    loc = torch.tensor([[p[0]] for p in params], dtype=F64)
    log_scale = torch.tensor([[p[1]] for p in params], dtype=F64)
    n = 20_000
    x = DiscretizedLogistic(loc, log_scale, 1).sample((n,), generator=torch.Generator().manual_seed(0))
    assert x.shape == (n, len(params), 1)
    k = x * 255
    assert torch.equal(k, k.round()) and x.min() >= 0 and x.max() <= 1
    assert torch.equal(x, k.round() / 255)  # bitwise the levels the data loader makes (uint8 / 255)
    for i, (mu, ls) in enumerate(params):
        counts = torch.bincount(k[:, i, 0].round().long(), minlength=256).to(F64)
        assert _chi_square_ok(counts, reference_probs(mu, ls)), params[i]


def test_coupled_mixture_samples_follow_the_joint():
    logits, loc, log_scale, coeffs = _rgb_pixel(2, m=2, log_scale_range=(-6.0, -5.0))
    loc[0, 0] = 0.0  # R of one component sits on the edge bin
    d = DiscretizedLogisticMixture(logits, loc, log_scale, 3, coeffs)
    n = 40_000
    x = d.sample((n,), generator=torch.Generator().manual_seed(1))  # [n, 3, 1, 1]
    assert x.shape == (n, 3, 1, 1)
    codes = (x.reshape(n, 3) * 255).round().long()
    triples, counts = torch.unique(codes, dim=0, return_counts=True)
    probs = d.log_prob(triples.to(F64).reshape(-1, 3, 1, 1) / 255).exp()
    rest = 1 - probs.sum()  # colours never drawn
    assert _chi_square_ok(torch.cat([counts.to(F64), torch.zeros(1, dtype=F64)]), torch.cat([probs, rest.reshape(1)]))


@given(st.floats(-40.0, 40.0), st.floats(-12.0, 12.0) | st.sampled_from(EXTREME_LOG_SCALES[:-1]))
@settings(max_examples=60, deadline=None)
def test_mean_is_the_expectation_within_half_a_bin(loc, log_scale):
    """E[x] = sum_k P(k/255) k/255 from the reference; includes centres far outside [0, 1] with wide
    scales, where most mass sits in the two edge bins (the clamped centre would say 0 or 1)."""
    single = DiscretizedLogistic(torch.tensor([loc], dtype=F64), torch.tensor([log_scale], dtype=F64), 1)
    expectation = (reference_probs(loc, log_scale) * LEVELS).sum().item()
    assert abs(single.mean.item() - expectation) <= 0.5 / 255 + 1e-9


def test_mean_of_a_wide_far_logistic_is_between_the_edges():
    # mu = -27, s = e^4.5: about 42% of the mass at 255 and 58% at 0, so E[x] is near 0.42, not 0.
    d = DiscretizedLogistic(torch.tensor([-27.0]), torch.tensor([4.5]), 1)
    expectation = (reference_probs(-27.0, 4.5) * LEVELS).sum().item()
    assert abs(d.mean.item() - expectation) < 2e-3 and 0.35 < expectation < 0.5


@pytest.mark.parametrize("log_scale", [30.0, 89.0, 110.0])
def test_means_and_draws_of_a_logistic_too_wide_for_float32_are_finite(log_scale):
    """An unused mixture component's log scale drifted to 110 in training (e^110 overflows float32):
    its mean was inf * 0 = NaN and poisoned the reconstruction. Flat over [0, 1], its mean is 1/2."""
    loc = torch.tensor([0.3, -5.0, 40.0])
    d = DiscretizedLogistic(loc, torch.full((3,), log_scale), 1)
    assert torch.allclose(d.mean, torch.full((3,), 0.5), atol=1e-6)
    assert torch.isfinite(d.sample((50,))).all()
    log_scales = torch.tensor([-3.0, log_scale])[None, :, None, None, None].expand(1, 2, 3, 1, 1)  # [B, M, C, H, W]
    mix = DiscretizedLogisticMixture(torch.tensor([4.0, 0.0])[None, :, None, None], torch.zeros(1, 2, 3, 1, 1),
                                     log_scales, 3, torch.zeros(1, 2, 3, 1, 1))
    assert torch.isfinite(mix.mean).all() and torch.isfinite(mix.sample((20,))).all()


def test_means():
    from vaelab.models.discretized import logistic_mean

    logits, loc, log_scale, coeffs = _rgb_pixel(3)
    d = DiscretizedLogisticMixture(logits, loc, log_scale, 3, coeffs)
    alpha, beta, gamma = torch.tanh(coeffs).unbind(1)
    r = logistic_mean(loc[:, 0], log_scale[:, 0])
    g = logistic_mean(loc[:, 1] + alpha * r, log_scale[:, 1])
    b = logistic_mean(loc[:, 2] + beta * r + gamma * g, log_scale[:, 2])
    weights = torch.softmax(logits, 0)
    torch.testing.assert_close(d.mean, (weights[:, None] * torch.stack([r, g, b], 1)).sum(0))
    # Without coupling the mixture's mean is the weighted expectation of its components.
    plain = DiscretizedLogisticMixture(logits, loc, log_scale, 3)
    per_component = torch.stack([
        torch.stack([(reference_probs(loc[m, c, 0, 0].item(), log_scale[m, c, 0, 0].item()) * LEVELS).sum()
                     for c in range(3)]) for m in range(loc.shape[0])
    ])  # [M, 3]
    expected = (weights[:, 0, 0, None] * per_component).sum(0)
    assert (plain.mean[:, 0, 0] - expected).abs().max() <= 0.5 / 255 + 1e-9
    # Away from the edges, with a scale well above the bin width, the mean is E[x].
    single = DiscretizedLogistic(torch.tensor([0.4], dtype=F64), torch.tensor([-4.0], dtype=F64), 1)
    expectation = (reference_probs(0.4, -4.0) * LEVELS).sum()
    assert abs(single.mean.item() - expectation.item()) < 1e-3


def test_from_params_layout():
    assert DiscretizedLogistic.param_channels(3) == 6
    assert DiscretizedLogisticMixture.param_channels(3, 10, coupled=True) == 100  # PixelCNN++'s 10 M
    assert DiscretizedLogisticMixture.param_channels(1, 5, coupled=False) == 15
    params = torch.randn(2, 6, 4, 4)
    d = DiscretizedLogistic.from_params(params, 3)
    assert torch.equal(d.loc, params[:, :3]) and torch.equal(d.log_scale, capped_log_scale(params[:, 3:]))

    m, c = 2, 3
    params = torch.randn(2, DiscretizedLogisticMixture.param_channels(c, m, coupled=True), 4, 4)
    mix = DiscretizedLogisticMixture.from_params(params, 3, components=m, coupled=True)
    assert mix.event_shape == (3, 4, 4) and mix.components == m
    assert torch.equal(mix.logit_probs, params[:, :m])
    assert torch.equal(mix.loc[:, 1, 2], params[:, m + 1 * c + 2])  # component 1, channel B
    assert torch.equal(mix.log_scale[:, 0, 1], capped_log_scale(params[:, m + m * c + 1]))
    assert torch.equal(mix.coeffs[:, 1, 0], params[:, m + 2 * m * c + 3])
    with pytest.raises(AssertionError):
        DiscretizedLogisticMixture.from_params(torch.randn(2, 7, 4, 4), 3, components=2, coupled=False)


def test_the_decoders_log_scale_is_capped_softly_at_zero():
    """At most s = 1 (wider than the data's range), the identity well below it, and the inverse
    used for the starting output maps back."""
    raw = torch.tensor([-30.0, -8.0, -2.0, 0.0, 5.0, 110.0])
    log_scale = capped_log_scale(raw)
    assert (log_scale <= LOG_SCALE_CAP).all() and log_scale[-1] > LOG_SCALE_CAP - 1e-6
    torch.testing.assert_close(log_scale[:2], raw[:2], atol=4e-4, rtol=0)
    assert (log_scale.diff() >= 0).all() and log_scale[-2] > log_scale[-3]  # still a monotone map of the decoder's output
    assert abs(capped_log_scale(torch.tensor(uncapped_log_scale(-2.0))).item() + 2.0) < 1e-6


def test_bits_per_dim():
    d = 3 * 8 * 8
    uniform = torch.tensor([-d * math.log(256.0)], dtype=F64)  # 1/256 for every sub-pixel
    torch.testing.assert_close(bits_per_dim(uniform, d), torch.tensor([8.0], dtype=F64))
    # A single pixel's level distribution: its entropy in bits is the expected bits/dim.
    probs = reference_probs(0.5, -2.0)
    lp = DiscretizedLogistic(torch.full((256, 1), 0.5, dtype=F64), torch.full((256, 1), -2.0, dtype=F64), 1).log_prob(LEVELS[:, None])
    entropy_bits = -(probs * probs.log2()).sum()
    torch.testing.assert_close((probs * bits_per_dim(lp, 1)).sum(), entropy_bits)
    assert entropy_bits < 8
