"""Latent distributions as the estimator sees them: one or several stochastic layers.

A posterior q(z|x, c) and a prior p(z) are ``torch.distributions.Distribution`` objects over the
whole latent vector z ``[..., latent_size]``. A one-layer model's are diagonal Gaussians (a prior may
also be a mixture). A hierarchical model's z is its layers concatenated, bottom layer first,
z = (z_1, ..., z_L), and its q and p are *chains*: products of conditionals, sampled top-down,

    q(z|x) = q(z_L|x) prod_l q(z_l|z_{l+1}, x),    p(z) = p(z_L) prod_l p(z_l|z_{l+1}).

A chain exposes :meth:`Chain.conditionals`, the factor of every layer at a given z, so the KL can be
taken layer by layer: in closed form where both factors are diagonal Gaussians, as a one-sample
Monte-Carlo term log q(z_l|.) - log p(z_l|.) where not (a mixture prior). The helpers here treat a
plain distribution as a chain of one layer, so the estimator has a single code path.
"""

from __future__ import annotations

import math

import torch
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

MIN_SCALE = 1e-5  # floor on a Gaussian layer's standard deviation: keeps log sigma finite


def diagonal_normal(loc: torch.Tensor, scale: torch.Tensor) -> Independent:
    """N(loc, diag scale^2) with event ``[D]`` (no argument validation: the hot path)."""
    return Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)


# Rows of z per block of the mixture's log-density: evaluation hands it ~40,000 samples at once, and
# the [N, M] intermediates of one block (1,024 x 500 float64: 4 MB) stay in cache between the passes
# over them (product, cast, max, shift, exp, sum) instead of streaming ~170 MB through memory seven times.
_MIXTURE_BLOCK_ROWS = 1024
_LOG_SUM_EXP_FLOOR = 80.0  # e^-80 = 1.8e-34: above float32's denormals (< 1.2e-38), negligible beside 1


class DiagonalGaussianMixture(MixtureSameFamily):
    """sum_m pi_m N(mu_m, diag sigma_m^2) over z ``[..., D]``, with log p(z) as one matrix product.

    ``MixtureSameFamily.log_prob`` broadcasts z against every component, ``[N, M, D]`` elementwise
    work forward and backward: for a VampPrior of 500 components it cost 4x the rest of a training
    step. Expanding the square, log N(z; mu_m, sigma_m) = z^2 . (-lambda_m / 2) + z . (mu lambda)_m
    + c_m with lambda = 1/sigma^2, so every component's log-density plus log pi_m is one ``[N, 2D + 1]
    x [2D + 1, M]`` product of the features [z^2, z, 1]. The terms of the expansion can be large and
    cancel (a component with sigma = 0.01 far from z), so the product is taken in float64, where the
    cancellation costs nothing measurable. Its result is exact to float64 and of the size of a
    log-density, so a float32 z gets its log-sum-exp over the M components in float32: the ``[N, M]``
    elementwise passes then move half the bytes (evaluation at K = 5000 spent more on them than on the
    product).
    """

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        component = self.component_distribution.base_dist
        assert component.loc.dim() == 2 and self.mixture_distribution.logits.dim() == 1, \
            "one mixture shared by every z: components [M, D], weights [M] (no batch of mixtures)"
        loc, scale = component.loc.double(), component.scale.double()  # [M, D]
        precision = scale.pow(-2)
        constant = -0.5 * (loc.pow(2) * precision).sum(-1) - scale.log().sum(-1) - 0.5 * loc.shape[-1] * math.log(2 * math.pi)
        log_pi = torch.log_softmax(self.mixture_distribution.logits.double(), -1)
        weights = torch.cat((-0.5 * precision, loc * precision, (constant + log_pi).unsqueeze(-1)), -1)  # [M, 2D + 1]
        flat = z.reshape(-1, z.shape[-1])
        rows = [_mixture_log_prob_rows(block, weights) for block in flat.split(_MIXTURE_BLOCK_ROWS)]
        return (rows[0] if len(rows) == 1 else torch.cat(rows)).reshape(z.shape[:-1])


def _mixture_log_prob_rows(z: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log p(z) ``[N]`` of the rows ``z: [N, D]`` from the mixture's expansion ``weights: [M, 2D + 1]``."""
    flat = z.double()
    features = torch.cat((flat.pow(2), flat, torch.ones_like(flat[:, :1])), -1)  # [N, 2D + 1]
    log_components = (features @ weights.T).to(z.dtype)  # [N, M]: log pi_m + log N(z; mu_m, sigma_m)
    # log-sum-exp with the max held constant (its gradient cancels exactly), and each term at most
    # e^80 below the largest: a float32 exp() that lands in the denormal range runs a slow path
    # (5x the whole sum here), and terms that small change neither the sum nor its gradient.
    top = log_components.detach().amax(-1, keepdim=True)
    shifted = (log_components - top).clamp(min=-_LOG_SUM_EXP_FLOOR)
    return top.squeeze(-1) + shifted.exp().sum(-1).log()


def diagonal_gaussian_mixture(logits: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor) -> DiagonalGaussianMixture:
    """The mixture with weights softmax(logits ``[M]``) of N(loc_m, diag scale_m^2) (``[M, D]``)."""
    return DiagonalGaussianMixture(Categorical(logits=logits, validate_args=False), diagonal_normal(loc, scale),
                                   validate_args=False)


def is_diagonal_normal(dist: Distribution) -> bool:
    return isinstance(dist, Independent) and isinstance(dist.base_dist, Normal)


class Chain(Distribution):
    """Base of hierarchical q and p: z is the layers concatenated, bottom first (sizes ``layer_sizes``)."""

    arg_constraints: dict = {}
    has_rsample = True

    def __init__(self, layer_sizes: tuple[int, ...], batch_shape: torch.Size) -> None:
        self.layer_sizes = tuple(layer_sizes)
        super().__init__(batch_shape, torch.Size([sum(layer_sizes)]), validate_args=False)

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        """The factor of every layer given the layers above it in ``z``, bottom first."""
        raise NotImplementedError

    def draw(self, eps: torch.Tensor) -> tuple[torch.Tensor, list[Distribution]]:
        """z from standard-normal noise ``eps: [..., latent_size]``, sampled top-down, and the factor of
        every layer met on the way (bottom first): the same as :meth:`conditionals` at that z, without
        running the networks again."""
        raise NotImplementedError

    def reparameterize(self, eps: torch.Tensor) -> torch.Tensor:
        """z from standard-normal noise ``eps: [..., latent_size]``, sampled top-down."""
        return self.draw(eps)[0]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return sum(d.log_prob(z_l) for d, z_l in zip(self.conditionals(z), split_layers(self, z)))

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape + self.event_shape
        return self.reparameterize(torch.randn(shape, device=self.device, dtype=self.dtype))

    def sample_with(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """n draws ``[n, *batch, latent_size]`` from an explicit generator (reproducible sampling)."""
        shape = (n, *self.batch_shape, *self.event_shape)
        return self.reparameterize(torch.randn(shape, generator=generator, device=self.device, dtype=self.dtype))


def layer_sizes(dist: Distribution) -> tuple[int, ...]:
    return dist.layer_sizes if isinstance(dist, Chain) else (dist.event_shape[-1],)


def split_layers(dist: Distribution, z: torch.Tensor) -> list[torch.Tensor]:
    """``z: [..., latent_size]`` as its layers, bottom first."""
    return list(z.split(layer_sizes(dist), dim=-1))


def conditionals(dist: Distribution, z: torch.Tensor) -> list[Distribution]:
    return dist.conditionals(z) if isinstance(dist, Chain) else [dist]


def layer_of(dist: Distribution, dim: int) -> int:
    """The layer (0 = bottom) that coordinate ``dim`` of the latent vector belongs to."""
    ends = torch.tensor(layer_sizes(dist)).cumsum(0)
    return int((ends <= dim).sum())


def follow_prior_below(prior: Distribution, before: torch.Tensor, after: torch.Tensor, layer: int) -> torch.Tensor:
    """``after``, a code that differs from ``before: [D]`` only in ``layer`` and above (``[..., D]``),
    with each layer below moved top-down by as much as the prior's conditional mean E p(z_l|z_{l+1})
    moves between the two codes.

    The decoder reads z_1 alone, so changing an upper layer of a hierarchical code and decoding shows
    nothing. Moving the layers below by the prior's shift makes the change reach the image, while
    whatever ``before`` holds beyond the prior's mean (its own details) is kept: ``after == before``
    is returned unchanged. A one-layer prior has nothing below.
    """
    if not isinstance(prior, Chain) or layer == 0:
        return after
    sizes = prior.layer_sizes
    moved = after.clone()
    for l in reversed(range(layer)):
        shift = prior.conditionals(moved)[l].mean - prior.conditionals(before)[l].mean
        start = sum(sizes[:l])
        moved[..., start : start + sizes[l]] += shift
    return moved


def draw(q: Distribution, eps: torch.Tensor) -> tuple[torch.Tensor, list[Distribution]]:
    """z = mu + sigma * eps (or a chain's top-down version) and q's factor of every layer at that z,
    bottom first: what the KL terms need, from the one pass that drew z. Written out, not
    ``q.rsample()``, so that the caller's noise (from a seeded generator, shared across processes)
    decides the sample. ``eps: [K, ..., D]`` broadcasts against q's batch shape."""
    if isinstance(q, Chain):
        return q.draw(eps)
    assert is_diagonal_normal(q), "a posterior is a diagonal Gaussian or a Chain"
    return q.base_dist.loc + q.base_dist.scale * eps, [q]


def reparameterize(q: Distribution, eps: torch.Tensor) -> torch.Tensor:
    """z alone of :func:`draw`."""
    return draw(q, eps)[0]


def sample(dist: Distribution, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """n draws ``[n, *batch, D]`` of a prior or posterior, reproducibly from ``generator``.

    ``torch.distributions`` samplers take no generator; this covers the families vaelab builds:
    diagonal Gaussians, mixtures of them (component first, then the Gaussian), and chains.
    """
    if isinstance(dist, Chain):
        return dist.sample_with(n, generator)
    if isinstance(dist, MixtureSameFamily):
        probs = dist.mixture_distribution.probs  # [..., M]
        flat = probs.reshape(-1, probs.shape[-1])
        picks = torch.multinomial(flat, n, replacement=True, generator=generator).T  # [n, prod(batch)]
        picks = picks.reshape(n, *probs.shape[:-1])
        component = dist.component_distribution
        loc, scale = component.base_dist.loc, component.base_dist.scale  # [..., M, D]
        index = picks[..., None, None].expand(*picks.shape, 1, loc.shape[-1])
        loc = torch.gather(loc.expand(n, *loc.shape), -2, index).squeeze(-2)
        scale = torch.gather(scale.expand(n, *scale.shape), -2, index).squeeze(-2)
        eps = torch.randn(loc.shape, generator=generator, device=loc.device, dtype=loc.dtype)
        return loc + scale * eps
    assert is_diagonal_normal(dist), f"cannot sample {type(dist).__name__} with a generator"
    loc, scale = dist.base_dist.loc, dist.base_dist.scale
    shape = (n, *dist.batch_shape, *dist.event_shape)
    eps = torch.randn(shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + scale * eps


def gaussian_kl_per_dim(q: Independent, p: Independent) -> torch.Tensor:
    """KL(q || p) per dimension for diagonal Gaussians (Kingma & Welling 2014, Appendix B):
    log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2, shape ``[..., D]``."""
    m_q, s_q = q.base_dist.loc, q.base_dist.scale
    m_p, s_p = p.base_dist.loc, p.base_dist.scale
    return torch.log(s_p / s_q) + (s_q.square() + (m_q - m_p).square()) / (2 * s_p.square()) - 0.5


def sampled_and_closed_form_kls(q_layers: list[Distribution], p: Distribution,
                                z: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Both of :func:`layer_kls`' answers from one pass over the conditionals (whose networks are the
    cost of a hierarchical model, and a mixture prior's log p(z) that of a VampPrior): each layer's
    log q - log p at ``z`` ``[K, ...]``, and its KL ``[K, ...]`` in closed form, summed over its
    dimensions, where both factors are diagonal Gaussians, else that same sampled term. ``q_layers``
    are the posterior's factors at z, as :func:`draw` returns them."""
    sampled, closed = [], []
    for q_l, p_l, z_l in zip(q_layers, conditionals(p, z), split_layers(p, z)):
        ratio = q_l.log_prob(z_l) - p_l.log_prob(z_l)
        sampled.append(ratio)
        gaussian = is_diagonal_normal(q_l) and is_diagonal_normal(p_l)
        closed.append(gaussian_kl_per_dim(q_l, p_l).sum(-1).expand_as(ratio) if gaussian else ratio)
    return sampled, closed


def layer_kls(q_layers: list[Distribution], p: Distribution, z: torch.Tensor, closed_form: bool) -> list[torch.Tensor]:
    """The KL of each layer at the sample ``z: [K, ..., D]``, bottom first, from the posterior's
    factors at z (``q_layers``, as :func:`draw` returns them).

    With ``closed_form`` a layer whose q and p factors are both diagonal Gaussians gives its KL per
    dimension ``[K, ..., D_l]`` (exact given the layers above, whose sample is in z); any other layer,
    and every layer without ``closed_form``, gives log q(z_l|.) - log p(z_l|.) ``[K, ...]``: the exact
    log density ratio that importance weights need.
    """
    kls = []
    for q_l, p_l, z_l in zip(q_layers, conditionals(p, z), split_layers(p, z)):
        if closed_form and is_diagonal_normal(q_l) and is_diagonal_normal(p_l):
            kl = gaussian_kl_per_dim(q_l, p_l)
            kls.append(kl.expand(*z_l.shape[:-1], kl.shape[-1]))
        else:
            kls.append(q_l.log_prob(z_l) - p_l.log_prob(z_l))
    return kls
