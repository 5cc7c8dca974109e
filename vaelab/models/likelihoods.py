"""Observation models p(x|z): distributions over a whole example, factorised over its dimensions.

The decoder network outputs parameters (logits or means) shaped like the data; the classes below turn
them into a :class:`torch.distributions.Distribution` whose ``log_prob(x)`` sums over every data
dimension and returns one number per example (``[B]``, or ``[K, B]`` for K latent samples). This
``log_prob`` is the only place a likelihood is written: the ELBO, the importance-weighted bound and
every evaluator call it.

Which one to pick:

- ``bernoulli``: for binary data (``--binarize static|dynamic``). On grey intensities in [0, 1] its
  ``log_prob`` is minus the binary cross-entropy, which is *not* a normalised density over [0, 1]:
  the number is comparable to pytorch/examples' loss, not to a likelihood. vaelab says so in logs.
- ``bernoulli-ar``: for binary images, a Bernoulli per pixel that also reads the pixels before it in
  raster order (a 7x7 causal window, linear or with ``context_hidden`` units, ``autoregressive.py``): a local autoregressive decoder, still an
  exact probability, whose context is computed once per image however many latents are decoded.
  Drawing an image is sequential; pictures show each pixel's probability along the greedy path.
- ``cbernoulli``: the continuous Bernoulli (Loaiza-Ganem & Cunningham, 2019), the properly normalised
  density on [0, 1] with the same logits parameterisation.
- ``gaussian``: N(x; mean, sigma^2) per dimension, sigma fixed or learned (one shared value);
  ``gaussian-pixel``: a sigma per dimension, predicted by the decoder. Densities of continuous
  values: their bits/dim are not code lengths.
- ``dlogistic``: for 8-bit images (values k/255), the discretized logistic of PixelCNN++ with a
  location and scale per pixel and channel; ``dlogistic-mix``: the mixture of M such logistics per
  pixel (``--mixture-components``), with PixelCNN++'s coupling of R, G and B on colour images
  (``discretized.py``). Both are probabilities of the 256 levels, so bits/dim are code lengths,
  comparable with PNG's. :func:`choose_likelihood` picks a default from the data.

Each name in :data:`LIKELIHOODS` is a :class:`Likelihood` module (it may own parameters, such as the
learned sigma) that builds the distribution from the decoder's outputs. To add a likelihood, subclass
it and add an entry: the CLI's choices and the config's validation read the dict.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution, constraints

from vaelab.config import ConfigError, ModelConfig
from vaelab.models.autoregressive import CONTEXT_GATES, CausalContext, LocalAutoregressiveBernoulli
from vaelab.models.discretized import LEVELS, DiscretizedLogistic, DiscretizedLogisticMixture, uncapped_log_scale

# |logit| below this uses a Taylor expansion of the continuous Bernoulli normaliser and mean (0/0 at 0).
_CB_TAYLOR_BELOW = 1e-3
_LOG_2PI = math.log(2.0 * math.pi)


class FactorisedLikelihood(Distribution):
    """Base: a per-dimension distribution whose event is the whole example (``event_ndims`` trailing dims)."""

    arg_constraints: dict = {}
    has_rsample = False

    def __init__(self, params: torch.Tensor, event_ndims: int) -> None:
        self.event_ndims = event_ndims
        split = params.dim() - event_ndims
        super().__init__(params.shape[:split], params.shape[split:], validate_args=False)

    def _sum_event(self, per_dim: torch.Tensor) -> torch.Tensor:
        return per_dim.sum(dim=tuple(range(-self.event_ndims, 0)))


class BernoulliLikelihood(FactorisedLikelihood):
    """Independent Bernoulli per dimension with ``logits``; ``log_prob`` = -BCE, computed on logits."""

    support = constraints.boolean

    def __init__(self, logits: torch.Tensor, event_ndims: int) -> None:
        self.logits = logits
        super().__init__(logits, event_ndims)

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # log p(x|l) = x l - log(1 + e^l) = x l - softplus(l), summed per example. Two fused reductions
        # instead of binary_cross_entropy_with_logits's several elementwise passes: about a quarter
        # faster, and the same number up to float rounding (a test holds it to torch.distributions).
        return self._sum_event(value * self.logits) - self._sum_event(F.softplus(self.logits))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        probs = self.mean.expand(torch.Size(sample_shape) + self.logits.shape)
        return torch.bernoulli(probs, generator=generator)


class GaussianLikelihood(FactorisedLikelihood):
    """Independent N(loc, scale^2) per dimension; ``scale`` broadcasts (a learned or fixed scalar)."""

    support = constraints.real

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, event_ndims: int) -> None:
        self.loc = loc
        self.scale = scale
        super().__init__(loc, event_ndims)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        z = (value - self.loc) / self.scale
        per_dim = -0.5 * z.square() - torch.log(self.scale) - 0.5 * _LOG_2PI
        return self._sum_event(per_dim)

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.loc.shape
        noise = torch.randn(shape, generator=generator, device=self.loc.device, dtype=self.loc.dtype)
        return self.loc + self.scale * noise


def continuous_bernoulli_log_normalizer(logits: torch.Tensor) -> torch.Tensor:
    """log C(lambda) of the continuous Bernoulli, written in the logit eta = log(lambda / (1 - lambda)).

    C(lambda) = 2 atanh(1 - 2 lambda) / (1 - 2 lambda) simplifies to C = eta / tanh(eta / 2), so
    log C = log|eta| - log|tanh(eta / 2)|; near eta = 0 (0/0) we use log 2 + eta^2 / 12.
    """
    small = logits.abs() < _CB_TAYLOR_BELOW
    safe = torch.where(small, torch.ones_like(logits), logits)
    exact = torch.log(safe.abs()) - torch.log(torch.tanh(safe / 2).abs())
    taylor = math.log(2.0) + logits.square() / 12.0
    return torch.where(small, taylor, exact)


class ContinuousBernoulliLikelihood(FactorisedLikelihood):
    """Continuous Bernoulli per dimension (Loaiza-Ganem & Cunningham 2019), a density on [0, 1].

    log p(x | eta) = x log lambda + (1 - x) log(1 - lambda) + log C(lambda) = -BCE(eta, x) + log C(eta).
    """

    support = constraints.unit_interval

    def __init__(self, logits: torch.Tensor, event_ndims: int) -> None:
        self.logits = logits
        super().__init__(logits, event_ndims)

    @property
    def mean(self) -> torch.Tensor:
        """E[x] = 1 / (1 - exp(-eta)) - 1 / eta, which tends to 1/2 + eta/12 at eta = 0."""
        eta = self.logits
        small = eta.abs() < _CB_TAYLOR_BELOW
        safe = torch.where(small, torch.ones_like(eta), eta)
        exact = -1.0 / torch.expm1(-safe) - 1.0 / safe
        return torch.where(small, 0.5 + eta / 12.0, exact)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        logits, value = torch.broadcast_tensors(self.logits, value)
        per_dim = -F.binary_cross_entropy_with_logits(logits, value, reduction="none")
        return self._sum_event(per_dim + continuous_bernoulli_log_normalizer(logits))

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Inverse CDF: x = log1p(u (e^eta - 1)) / eta, rearranged to stay finite for large |eta|."""
        eta = self.logits.expand(torch.Size(sample_shape) + self.logits.shape)
        u = torch.rand(eta.shape, generator=generator, device=eta.device, dtype=eta.dtype)
        small = eta.abs() < _CB_TAYLOR_BELOW
        safe = torch.where(small, torch.ones_like(eta), eta)
        positive = (safe + torch.log(u + (1 - u) * torch.exp(-safe.clamp_min(0)))) / safe
        negative = torch.log1p(u * torch.expm1(safe.clamp_max(0))) / safe
        return torch.where(small, u, torch.where(safe > 0, positive, negative)).clamp(0.0, 1.0)


class Likelihood(nn.Module):
    """A registry entry: turns decoder outputs into p(x|z) and may own parameters (a learned sigma).

    ``params_per_value`` is how many decoder outputs each data value needs (stacked on the first data
    axis: channels for images, features for tabular data); a likelihood whose outputs are not a
    multiple of the channels (a mixture shared by a pixel's channels) overrides
    :meth:`output_channels` instead. ``discrete`` says whether ``log_prob`` is a probability of the
    data's discrete values, so that -log2 p(x) / D is a code length in bits/dim. ``reads`` names the
    model settings only this likelihood reads (a new run refuses them changed under another likelihood).
    """

    params_per_value = 1
    discrete = False
    unit_interval = True  # models data in [0, 1] (the data pipeline checks it)
    reads: tuple[str, ...] = ()

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        raise NotImplementedError

    def output_channels(self, channels: int) -> int:
        """Decoder outputs along the first data axis for data with ``channels`` there."""
        return self.params_per_value * channels

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        """The decoder output at which p(x|z) has mean ``data_mean`` (its initial bias), output-shaped."""
        p = data_mean.clamp(1e-3, 1 - 1e-3)
        return torch.log(p) - torch.log1p(-p)

    def describe(self, binarize: str, binary_data: bool = False) -> str | None:
        """A warning when this likelihood is not a normalised density of the data as prepared."""
        return None


class Bernoulli(Likelihood):
    """For binary data; ``log_prob`` is a probability of the bits (``discrete``)."""

    discrete = True

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return BernoulliLikelihood(params, event_ndims)

    def describe(self, binarize: str, binary_data: bool = False) -> str | None:
        if binarize == "none" and not binary_data:
            return ("bernoulli likelihood on grey intensities: its log_prob is minus the binary cross-entropy, "
                    "not a normalised likelihood (use --binarize dynamic, or --likelihood cbernoulli)")
        return None


class LocalAutoregressiveBernoulliLikelihood(Bernoulli):
    """For binary images: a Bernoulli per pixel that also reads the pixels before it (``autoregressive.py``);
    the decoder gives ``1 + M`` values per pixel, the causal context network is this module's own."""

    params_per_value = 1 + CONTEXT_GATES
    reads = ("context_hidden",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        shape = config.input_shape
        if shape is not None and len(shape) != 3:
            raise ConfigError("likelihood", f"bernoulli-ar reads each pixel's neighbours: it needs images [C, H, W], "
                                            f"not data of shape {list(shape)} (use bernoulli)")
        self.context = CausalContext(shape[0] if shape is not None else 1, hidden=config.context_hidden)

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return LocalAutoregressiveBernoulli(params, self.context)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        """The data's marginal as the factorised part; no latent modulation of the context yet."""
        gates = data_mean.new_zeros(CONTEXT_GATES * data_mean.shape[0], *data_mean.shape[1:])
        return torch.cat((super().output_bias(data_mean), gates), dim=0)


class ContinuousBernoulli(Likelihood):
    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return ContinuousBernoulliLikelihood(params, event_ndims)


class Gaussian(Likelihood):
    """N(x; mean, sigma^2) with one sigma for every dimension: fixed (``--gaussian-scale``) or learned."""

    unit_interval = False
    reads = ("gaussian_scale",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.fixed_scale = config.gaussian_scale
        if config.gaussian_scale is None:
            self.log_sigma = nn.Parameter(torch.zeros(()))

    def scale(self, like: torch.Tensor) -> torch.Tensor:
        return like.new_tensor(self.fixed_scale) if self.fixed_scale is not None else self.log_sigma.exp()

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return GaussianLikelihood(params, self.scale(params), event_ndims)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        return data_mean


class PixelGaussian(Likelihood):
    """N(x; mean, sigma^2) with a sigma for every dimension, predicted by the decoder with the mean
    (softplus of its second output half, floored at 1e-3 so that log p stays bounded)."""

    params_per_value = 2
    unit_interval = False

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        loc, raw = params.chunk(2, dim=-event_ndims)
        return GaussianLikelihood(loc, F.softplus(raw) + 1e-3, event_ndims)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        return torch.cat((data_mean, torch.full_like(data_mean, -1.0)), dim=0)  # sigma ~ 0.31 at the start


# Where the 8-bit likelihoods start: s = e^-2 ~ 0.14, a logistic whose standard deviation
# (pi s / sqrt 3 ~ 0.25) spans a quarter of [0, 1]: wide enough that no pixel starts improbable,
# narrow enough that the decoder's location already matters. The decoder's raw output for it is
# what the soft bound on log s maps to -2.
_START_LOG_SCALE = -2.0


def _binarised_warning(binarize: str) -> str | None:
    if binarize == "none":
        return None
    return ("8-bit likelihood on binarised data: it spreads probability over 256 levels the data never take "
            "(bits/dim stay code lengths, but --likelihood bernoulli fits binary data)")


class DLogistic(Likelihood):
    """The discretized logistic per sub-pixel (PixelCNN++ eq. 2, one component): the decoder gives a
    location and a log-scale per pixel and channel, ``[loc (C) | log_scale (C)]`` on the channel axis."""

    params_per_value = 2
    discrete = True
    reads = ("log_scale_cap",)

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.log_scale_cap = config.log_scale_cap

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        return DiscretizedLogistic.from_params(params, event_ndims, self.log_scale_cap)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        start = uncapped_log_scale(_START_LOG_SCALE, self.log_scale_cap)
        return torch.cat((data_mean, torch.full_like(data_mean, start)), dim=0)

    def describe(self, binarize: str, binary_data: bool = False) -> str | None:
        return _binarised_warning(binarize)


class DLogisticMixture(Likelihood):
    """A mixture of M discretized logistics per pixel, one component shared by the pixel's channels
    (PixelCNN++, NVAE); on 3-channel data G depends on R and B on R and G within a component (eq. 3).
    The decoder gives ``M (1 + 2 C)`` outputs per pixel, ``10 M`` for RGB (``param_channels``)."""

    discrete = True
    reads = ("mixture_components", "log_scale_cap")

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        self.components = config.mixture_components
        self.log_scale_cap = config.log_scale_cap

    def output_channels(self, channels: int) -> int:
        return DiscretizedLogisticMixture.param_channels(channels, self.components, coupled=channels == 3)

    def forward(self, params: torch.Tensor, event_ndims: int) -> Distribution:
        # M (1 + 2 C) is an odd multiple of M, 10 M an even one: the count says whether the data are RGB.
        coupled = params.shape[-event_ndims] == self.output_channels(3)
        return DiscretizedLogisticMixture.from_params(params, event_ndims, components=self.components, coupled=coupled,
                                                      cap=self.log_scale_cap)

    def output_bias(self, data_mean: torch.Tensor) -> torch.Tensor:
        """Every component at the data mean with the starting scale, equal weights, no coupling:
        ``[logit_probs (M) | loc (M C) | log_scale (M C) | coeffs (3 M, RGB only)]``."""
        m, channels, rest = self.components, data_mean.shape[0], data_mean.shape[1:]
        blocks = [
            data_mean.new_zeros(m, *rest),
            data_mean.repeat(m, *([1] * len(rest))),  # component-major, as from_params reads it
            data_mean.new_full((m * channels, *rest), uncapped_log_scale(_START_LOG_SCALE, self.log_scale_cap)),
        ]
        if channels == 3:
            blocks.append(data_mean.new_zeros(3 * m, *rest))
        return torch.cat(blocks, dim=0)

    def describe(self, binarize: str, binary_data: bool = False) -> str | None:
        return _binarised_warning(binarize)


LIKELIHOODS: dict[str, type[Likelihood]] = {
    "bernoulli": Bernoulli,
    "bernoulli-ar": LocalAutoregressiveBernoulliLikelihood,
    "cbernoulli": ContinuousBernoulli,
    "gaussian": Gaussian,
    "gaussian-pixel": PixelGaussian,
    "dlogistic": DLogistic,
    "dlogistic-mix": DLogisticMixture,
}


def build_likelihood(config: ModelConfig) -> Likelihood:
    return LIKELIHOODS[config.likelihood](config)


def parameter_shape(likelihood: Likelihood, data_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The decoder's output shape: the data shape with the first axis ``output_channels`` long."""
    return (likelihood.output_channels(data_shape[0]), *data_shape[1:])


_GRID_TOLERANCE = 1e-3  # of a level: float32 k/255 times 255 lies within ~3e-5 of k
_GRID_CHUNK = 4096  # examples per block: bounds the temporaries of the grid check


def _levels_used(x: torch.Tensor) -> int | None:
    """How many of the 256 levels k/255 the values of ``x`` (in [0, 1]) take; None if any is off the grid."""
    used = torch.zeros(LEVELS, dtype=torch.bool, device=x.device)
    for block in x.split(_GRID_CHUNK):
        scaled = block.to(torch.float32) * (LEVELS - 1)
        nearest = scaled.round()
        if bool(((scaled - nearest).abs() > _GRID_TOLERANCE).any()):
            return None
        used |= torch.bincount(nearest.long().flatten(), minlength=LEVELS) > 0
    return int(used.sum())


def choose_likelihood(x_train: torch.Tensor, binarize: str) -> tuple[str, str]:
    """A default likelihood for training data ``x_train: [N, *shape]`` prepared with ``binarize``:
    ``(name, reason)``, the reason one sentence for the run's log.

    Binarised or binary data -> ``bernoulli`` (a probability of the bits). 8-bit images (``[C, H, W]``
    examples whose values all lie on the grid k/255, taking more than two levels) -> ``dlogistic-mix``,
    a probability of the 256 levels. Anything else -> ``bernoulli``, as before this choice existed,
    the reason saying the data are not 8-bit; except data outside [0, 1], which no Bernoulli can
    model: ``gaussian``.
    """
    if binarize != "none":
        return "bernoulli", f"the data are binarised (--binarize {binarize}): bernoulli is their probability"
    x = x_train.detach()
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        return "gaussian", f"the data range over [{lo:.3g}, {hi:.3g}], outside [0, 1]: a gaussian density"
    if bool(((x == 0) | (x == 1)).all()):
        return "bernoulli", "the data are binary (0 and 1 only): bernoulli is their probability"
    levels = _levels_used(x)
    if levels is not None and levels > 2 and x.dim() == 4:
        return "dlogistic-mix", (
            f"8-bit images ({levels} levels k/255, shape {list(x.shape[1:])}): a discretized logistic mixture, "
            "whose bits/dim are code lengths"
        )
    if levels is None:
        what = "not 8-bit (values off the grid k/255)"
    elif levels <= 2:
        what = f"not 8-bit images: they take only {levels} level(s)"
    else:
        what = f"8-bit values but not images [C, H, W] (shape {list(x.shape[1:])})"
    return "bernoulli", (
        f"the data are {what}: bernoulli as before, whose log_prob on grey values is minus the "
        "binary cross-entropy (see --likelihood cbernoulli or gaussian)"
    )
