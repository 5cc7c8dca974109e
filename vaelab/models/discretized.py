"""Discretized logistic likelihoods p(x|z) for 8-bit images (PixelCNN++, NVAE).

Salimans et al. (2017), *PixelCNN++*, eq. 2-3; Vahdat & Kautz (2020), *NVAE*, section 4.
An 8-bit image is discrete, so its likelihood should be a probability, not a density: a density on
[0, 1] can grow without bound on data that sits on 256 levels, and its "bits/dim" means nothing.
Data are floats ``x = k / 255`` (k = 0..255); value k owns the bin ``[x - 1/510, x + 1/510]`` of width
1/255 (PixelCNN++'s data scaled to [0, 1] instead of [-1, 1]) and the two edge bins take the whole
tails, so the 256 probabilities sum to one exactly:

    P(x) = sigma((x + 1/510 - mu) / s) - sigma((x - 1/510 - mu) / s)     0 < x < 1
    P(0) = sigma((1/510 - mu) / s),    P(1) = 1 - sigma((1 - 1/510 - mu) / s).

``log_prob`` first snaps values to the nearest level: float32 data cast to float64 lie ~1e-8 off the
grid, enough to shift the bins measurably when s is tiny.

Decoder outputs needed per example (C image channels, M mixture components), along the channel axis:

- :class:`DiscretizedLogistic`: ``2 C`` (loc, log_scale), e.g. 6 for RGB.
- :class:`DiscretizedLogisticMixture`: ``M (1 + 2 C)`` with independent channels, ``M (1 + 2 C + 3)`` =
  ``10 M`` for RGB with PixelCNN++'s channel coupling (:meth:`DiscretizedLogisticMixture.param_channels`).

:func:`bits_per_dim` turns a ``log_prob`` in nats per example into bits per sub-pixel, the unit the
image-modelling literature reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, constraints

LEVELS = 256  # values of an 8-bit sub-pixel
HALF_BIN = 0.5 / (LEVELS - 1)  # 1/510: half the distance between neighbouring levels
# PixelCNN++ and NVAE clamp log s >= -7 on data in [-1, 1]; on [0, 1] every scale halves, so the same
# clamp reads -7 - ln 2. It bounds how sharp one logistic can get: an interior bin holds at most
# tanh(e^7 / 510) = 97.3% of the mass (a floor of 0.04 bits/dim), which keeps log p(x|z) bounded early
# in training when the decoder would otherwise chase infinite likelihood on constant pixels.
LOG_SCALE_MIN = -7.0 - math.log(2.0)
# Means and draws cap log s at 20: a logistic that wide is flat over [0, 1] to within 1e-9, so the cap
# changes no mean or draw, while e^s itself overflows float32 beyond log s = 88 (an unused mixture
# component's scale can drift there, and its mean became inf * 0 = NaN).
LOG_SCALE_MAX = 20.0
# A decoder's log s is bounded above, softly, at 0 (s <= 1: a logistic already wider than the data's
# range). Unbounded, a pixel the decoder cannot yet predict (an object's colour, say, before the latent
# codes it) is fit best by an ever wider logistic that splits its mass between the edge bins; there the
# location's gradient is ~1/s and vanishes, so the model never learns to predict it (log s reached 110).
# Bounded, "0 or 255" is coded by the location, whose gradient stays alive, or by a mixture's weights.
# On 16x16 shapes this took a 3-component mixture from grey reconstructions (val -ELBO 50.3) to the
# right colours (22.2) in the same 15 epochs. Natural images need s far below 1; the bound costs them nothing.
LOG_SCALE_CAP = 0.0


def capped_log_scale(raw: torch.Tensor, cap: float | None = LOG_SCALE_CAP) -> torch.Tensor:
    """A decoder's raw output -> log s <= cap: cap - softplus(cap - raw), the identity well below.
    ``cap=None`` is no bound (the identity): runs saved before the bound existed."""
    return raw if cap is None else cap - F.softplus(cap - raw)


def uncapped_log_scale(log_scale: float, cap: float | None = LOG_SCALE_CAP) -> float:
    """The raw output that :func:`capped_log_scale` maps to ``log_scale`` (< cap)."""
    return log_scale if cap is None else cap - math.log(math.expm1(cap - log_scale))
_LOG_BIN_WIDTH = -math.log(LEVELS - 1)
_LOG1MEXP_SERIES_BELOW = 1e-4  # d below this: log(1 - e^-d) = log d - d/2 to within d^2/24


def _sum_trailing(t: torch.Tensor, n: int) -> torch.Tensor:
    """Sum the last ``n`` dims; ``n = 0`` returns ``t`` (``sum(dim=())`` would sum everything)."""
    return t.sum(dim=tuple(range(-n, 0))) if n else t


def _log1mexp_of_log(log_d: torch.Tensor) -> torch.Tensor:
    """log(1 - e^{-d}) given log d, accurate for every d > 0 (Maechler 2012), finite gradients."""
    d = log_d.exp()
    small = d < _LOG1MEXP_SERIES_BELOW
    d_safe = torch.where(small, torch.ones_like(d), d)
    exact = torch.where(d_safe < math.log(2.0), torch.log(-torch.expm1(-d_safe)), torch.log1p(-torch.exp(-d_safe)))
    return torch.where(small, log_d - d / 2, exact)


def log_bin_prob(x: torch.Tensor, loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) of one discretized logistic, elementwise (PixelCNN++ eq. 2 with one component).

    With a = (x + 1/510 - mu) / s, b = (x - 1/510 - mu) / s and d = a - b = 1 / (255 s), the interior
    mass factorises as sigma(a) - sigma(b) = (1 - e^-d) sigma(a) sigma(-b), so

        log P = log(1 - e^-d) - softplus(-a) - softplus(b),

    three terms computed without cancellation for any mu and s. PixelCNN++ instead subtracts the two
    sigmoids and, where that difference underflows, substitutes the density at the bin centre times
    the bin width; at the smallest scale that substitute is 2.1 nats too low in every such tail bin
    (the density falls e^8.6-fold across one bin), and this exact form needs no such branch. The edge bins keep one factor: log sigma(a) at x = 0, log sigma(-b) at x = 1.
    """
    log_scale = log_scale.clamp_min(LOG_SCALE_MIN)
    inv_scale = torch.exp(-log_scale)
    centred = x - loc
    a = (centred + HALF_BIN) * inv_scale
    b = (centred - HALF_BIN) * inv_scale
    log_cdf_upper = -F.softplus(-a)  # log sigma(a): mass below the bin's upper edge
    log_sf_lower = -F.softplus(b)  # log sigma(-b): mass above the bin's lower edge
    interior = _log1mexp_of_log(_LOG_BIN_WIDTH - log_scale) + log_cdf_upper + log_sf_lower
    return torch.where(x < HALF_BIN, log_cdf_upper, torch.where(x > 1 - HALF_BIN, log_sf_lower, interior))


def to_levels(x: torch.Tensor) -> torch.Tensor:
    """Round continuous values to the nearest of the 256 levels k/255; beyond [0, 1] to the edge bins."""
    return torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1) / (LEVELS - 1)


class _PerExample(Distribution):
    """Base: a distribution over whole examples, the last ``event_ndims`` dims of ``like``.

    (The same contract as ``likelihoods.FactorisedLikelihood``; this module stays below
    ``likelihoods.py``, which registers these classes, so it does not import it.)
    """

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, like: torch.Tensor, event_ndims: int) -> None:
        self.event_ndims = event_ndims
        split = like.dim() - event_ndims
        super().__init__(like.shape[:split], like.shape[split:], validate_args=False)


def logistic_mean(loc: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """E[x] of the discretized logistic, to within half a bin (1/510), elementwise.

    Its value is the level nearest to clamp(Y, 0, 1), Y ~ Logistic(mu, s), so E[x] is within 1/510 of
    E[clamp(Y, 0, 1)] = int_0^1 P(Y > t) dt = s (softplus(mu / s) - softplus((mu - 1) / s)). With
    a = mu / s, b = a - d, d = 1 / s, the bracket is log1p(sigma(b) expm1(d)), which does not cancel
    when s is large (then both softplus values are near log 2). Unlike the clamped centre mu, this
    sees the mass a wide logistic puts in the edge bins: a decoder that codes a saturated pixel as
    "0 or 255" with a centre far outside [0, 1] gets a mean between the two, not 0.
    """
    log_scale = log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX)
    scale = log_scale.exp()
    d = torch.exp(-log_scale)
    a = loc * d
    b = a - d
    wide = d < 1.0
    gap = torch.where(wide, torch.log1p(torch.sigmoid(b) * torch.expm1(d.clamp_max(1.0))), F.softplus(a) - F.softplus(b))
    return (scale * gap).clamp(0.0, 1.0)


def _logistic_noise(shape: torch.Size, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard logistic draws logit(u), u ~ U[0, 1); u = 0 gives -inf, which lands in bin 0 exactly."""
    u = torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
    return torch.logit(u)


class DiscretizedLogistic(_PerExample):
    """One discretized logistic per sub-pixel, independent across channels and pixels.

    ``loc``, ``log_scale``: ``[..., C, H, W]`` (any ``event_ndims >= 1`` trailing dims form the example;
    ``log_scale`` may broadcast, e.g. one learned value per channel). ``log_scale`` is clamped at
    :data:`LOG_SCALE_MIN`. ``log_prob(x)`` returns nats per example, ``[...]``.
    """

    support = constraints.unit_interval  # only the 256 levels k/255 carry mass

    def __init__(self, loc: torch.Tensor, log_scale: torch.Tensor, event_ndims: int) -> None:
        assert event_ndims >= 1, "the example needs at least one event dim"
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        super().__init__(self.loc, event_ndims)

    @staticmethod
    def param_channels(channels: int) -> int:
        """Decoder outputs per example along the channel axis: loc and log_scale per image channel."""
        return 2 * channels

    @classmethod
    def from_params(cls, params: torch.Tensor, event_ndims: int, cap: float | None = LOG_SCALE_CAP) -> DiscretizedLogistic:
        """Split decoder outputs ``[..., 2C, H, W]`` into loc ``[..., :C]`` and log_scale ``[..., C:]``
        (through :func:`capped_log_scale`)."""
        loc, log_scale = params.chunk(2, dim=-event_ndims)
        return cls(loc, capped_log_scale(log_scale, cap), event_ndims)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] to within half a bin (:func:`logistic_mean`)."""
        return logistic_mean(self.loc, self.log_scale)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return _sum_trailing(log_bin_prob(to_levels(value), self.loc, self.log_scale), self.event_ndims)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact draws on the 256 levels: a continuous logistic draw rounded to its bin."""
        shape = torch.Size(sample_shape) + self.loc.shape
        scale = self.log_scale.clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
        return to_levels(self.loc + scale * _logistic_noise(shape, self.loc, generator))


def _couple(loc: torch.Tensor, coeffs: torch.Tensor, dim: int, finish: Callable[[torch.Tensor, int], torch.Tensor]) -> torch.Tensor:
    """PixelCNN++ eq. 3 run forwards: r = f(mu_r), g = f(mu_g + alpha r), b = f(mu_b + beta r + gamma g).

    ``loc``, ``coeffs``: ``[..., 3, *S]`` with the channel axis at ``dim``; ``f(centre, channel)`` = ``finish``.
    """
    mu_r, mu_g, mu_b = loc.unbind(dim)
    alpha, beta, gamma = coeffs.unbind(dim)
    r = finish(mu_r, 0)
    g = finish(mu_g + alpha * r, 1)
    b = finish(mu_b + beta * r + gamma * g, 2)
    return torch.stack([r, g, b], dim)


class DiscretizedLogisticMixture(_PerExample):
    """A mixture of M discretized logistics per pixel (PixelCNN++ eq. 2-3, NVAE's decoder).

    One mixture component is chosen per pixel and shared by its channels, so channels are dependent
    even without ``coeffs``. Shapes, for data ``[..., C, H, W]`` and ``event_ndims = 3``:

    - ``logit_probs``: ``[..., M, H, W]``, unnormalised log mixture weights;
    - ``loc``, ``log_scale``: ``[..., M, C, H, W]`` (``log_scale`` clamped at :data:`LOG_SCALE_MIN`);
    - ``coeffs`` (optional, RGB only): ``[..., M, 3, H, W]``, unconstrained; squashed by tanh to
      (alpha, beta, gamma) in (-1, 1) and used as mu_g + alpha r, mu_b + beta r + gamma g (eq. 3),
      so G depends on R and B on R and G within a component.

    More generally the data are ``[..., C, *S]`` with ``event_ndims = 1 + len(S)``; M sits just before
    the channel axis of ``loc``. ``log_prob(x)`` returns nats per example, ``[...]``.
    """

    support = constraints.unit_interval

    def __init__(
        self,
        logit_probs: torch.Tensor,
        loc: torch.Tensor,
        log_scale: torch.Tensor,
        event_ndims: int,
        coeffs: torch.Tensor | None = None,
    ) -> None:
        assert event_ndims >= 1, "the example needs at least one event dim (the channels)"
        self.channel_dim = -event_ndims  # of loc and of the data; also M's dim in logit_probs
        self.component_dim = -event_ndims - 1  # M's dim in loc, log_scale, coeffs
        self.loc, self.log_scale = torch.broadcast_tensors(loc, log_scale)
        self.logit_probs = logit_probs
        self.coeffs = coeffs
        without_channels = self.loc.select(self.channel_dim, 0).shape
        assert logit_probs.shape == without_channels, f"logit_probs {tuple(logit_probs.shape)} != {tuple(without_channels)}"
        if coeffs is not None:
            assert self.loc.shape[self.channel_dim] == 3, "channel coupling needs 3 channels (RGB)"
            assert coeffs.shape == self.loc.shape, f"coeffs {tuple(coeffs.shape)} != {tuple(self.loc.shape)}"
        super().__init__(self.loc.select(self.component_dim, 0), event_ndims)

    @property
    def components(self) -> int:
        return self.loc.shape[self.component_dim]

    @staticmethod
    def param_channels(channels: int, components: int, coupled: bool) -> int:
        """Decoder outputs per example along the channel axis: M weights, M C locs, M C log-scales and,
        if ``coupled``, 3 M coefficients. PixelCNN++'s RGB case is ``10 M``."""
        return components * (1 + 2 * channels + (3 if coupled else 0))

    @classmethod
    def from_params(
        cls, params: torch.Tensor, event_ndims: int, *, components: int, coupled: bool,
        cap: float | None = LOG_SCALE_CAP,
    ) -> DiscretizedLogisticMixture:
        """Split decoder outputs ``[..., P, H, W]``, ``P = param_channels(C, M, coupled)``, laid out as
        ``[logit_probs (M) | loc (M*C) | log_scale (M*C) | coeffs (3*M)]``, each block component-major;
        the log-scales through :func:`capped_log_scale`."""
        dim, m = -event_ndims, components
        per_component, rest = divmod(params.shape[dim], m)
        channels, odd = divmod(per_component - 1 - (3 if coupled else 0), 2)
        assert rest == 0 and odd == 0 and channels >= 1, f"{params.shape[dim]} outputs fit no C for M={m}, coupled={coupled}"
        sizes = [m, m * channels, m * channels] + ([3 * m] if coupled else [])
        logit_probs, loc, log_scale, *coeffs = params.split(sizes, dim)
        unflat = [t.unflatten(dim, (m, t.shape[dim] // m)) for t in (loc, log_scale, *coeffs)]
        return cls(logit_probs, unflat[0], capped_log_scale(unflat[1], cap), event_ndims, unflat[2] if coupled else None)

    def _log_weights(self) -> torch.Tensor:
        return F.log_softmax(self.logit_probs, dim=self.channel_dim)  # [..., M, *S]

    @property
    def mean(self) -> torch.Tensor:
        """E[x] per component (:func:`logistic_mean`, within half a bin), weighted by the mixture
        probabilities. With channel coupling G and B are shifted by the means of the earlier channels
        in place of their values (NVAE's plug-in, with means instead of clamped centres), so there
        E[x] is approximate: exact where the coefficients are 0 or R and G are nearly certain."""
        if self.coeffs is None:
            centres = logistic_mean(self.loc, self.log_scale)
        else:
            log_scales = self.log_scale.unbind(self.channel_dim)
            centres = _couple(self.loc, torch.tanh(self.coeffs), self.channel_dim,
                              lambda centre, channel: logistic_mean(centre, log_scales[channel]))
        weights = self._log_weights().exp().unsqueeze(self.channel_dim)  # [..., M, 1, *S]
        return (weights * centres).sum(self.component_dim)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log sum_m pi_m prod_c P(x_c | mu_mc, s_mc) per pixel (eq. 2-3), summed over the pixels."""
        x = to_levels(value).unsqueeze(self.component_dim)  # [..., 1, C, *S]
        loc = self.loc
        if self.coeffs is not None:
            alpha, beta, gamma = torch.tanh(self.coeffs).unbind(self.channel_dim)
            r, g, _ = x.unbind(self.channel_dim)
            shift_g, shift_b = alpha * r, beta * r + gamma * g  # [..., M, *S]
            loc = loc + torch.stack([torch.zeros_like(shift_g), shift_g, shift_b], self.channel_dim)
        per_component = log_bin_prob(x, loc, self.log_scale).sum(self.channel_dim)  # [..., M, *S]
        per_pixel = torch.logsumexp(self._log_weights() + per_component, dim=self.channel_dim)  # [..., *S]
        return _sum_trailing(per_pixel, self.event_ndims - 1)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Exact draws on the 256 levels: a component per pixel (Gumbel-max), then R, G, B in turn, each
        rounded to its level before it shifts the next channel's centre (what ``log_prob`` conditions on;
        PixelCNN++'s sampler shifts by the unrounded values)."""
        sample_shape = torch.Size(sample_shape)
        logits = self.logit_probs.expand(sample_shape + self.logit_probs.shape)
        u = torch.rand(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
        chosen = torch.argmax(logits - torch.log(-torch.log(u)), dim=self.channel_dim, keepdim=True)  # [..., 1, *S]
        full = sample_shape + self.loc.shape
        index = chosen.unsqueeze(self.channel_dim).expand(full[: self.component_dim] + (1,) + full[self.channel_dim :])

        def pick(t: torch.Tensor) -> torch.Tensor:  # [..., M, C, *S] -> [..., C, *S], the chosen component
            return t.expand(full).gather(self.component_dim, index).squeeze(self.component_dim)

        scale = pick(self.log_scale).clamp(LOG_SCALE_MIN, LOG_SCALE_MAX).exp()
        noisy = pick(self.loc) + scale * _logistic_noise(scale.shape, scale, generator)
        if self.coeffs is None:
            return to_levels(noisy)
        return _couple(noisy, torch.tanh(pick(self.coeffs)), self.channel_dim, lambda value, _: to_levels(value))


def bits_per_dim(log_prob: torch.Tensor, num_dims: int) -> torch.Tensor:
    """Bits per sub-pixel, -log p(x) / (D ln 2), from ``log_prob`` in nats per example.

    ``D = C H W`` (``likelihood.event_shape.numel()``). For a discrete likelihood such as the ones
    above this is a code length: 8 bits/dim is what storing raw bytes costs, and a negative ELBO in
    place of -log p(x) gives an upper bound.
    """
    return -log_prob / (num_dims * math.log(2.0))
