"""Training objectives, as free functions returning per-example terms in nats.

The evidence lower bound (Kingma & Welling 2014, eq. 3; the seed's derivation):

    log p(x) >= ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),

with the gap log p(x) - ELBO(x) = KL(q(z|x) || p(z|x)). :func:`elbo` estimates the first term with
one reparameterised sample z = mu + sigma * eps and computes the KL in closed form. Conventions used
everywhere in vaelab: ``loss`` is the negative ELBO, ``rec`` the reconstruction term
-E_q[log p(x|z)] and ``kl`` the KL term, all ``[B]`` (sums over data and latent dimensions, one value
per example); trainers take the batch mean of ``loss``. For a conditional VAE every term is
conditioned on c and the bound is on log p(x|c).

What training minimises (:class:`Objective`, :func:`objective_sums`):

- ``elbo``: the negative ELBO above;
- ``beta``: rec + beta * KL (Higgins et al. 2017): beta > 1 trades reconstruction for a more
  factorised code, beta < 1 the reverse; beta = 1 is the ELBO;
- either of them with a linear KL warm-up (the KL weight grows from 0 over the first epochs; Bowman
  et al. 2016, Sønderby et al. 2016) and free bits (Kingma et al. 2016, eq. 15: the batch-mean KL of
  each latent dimension is penalised only above ``free_bits`` nats, so no dimension is pushed to
  collapse onto the prior). Both guard against posterior collapse; both change the objective, so
  vaelab always *reports* the plain ELBO terms beside it;
- ``iwae``: the importance-weighted bound IW_K = log (1/K) sum_k p(x, z_k) / q(z_k|x) (Burda et al.
  2016), tighter than the ELBO for K > 1 and equal to it (in expectation) at K = 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, Normal

from vaelab.models.vae import VAE

_LOG_2PI = math.log(2.0 * math.pi)


@dataclass(frozen=True)
class ElboTerms:
    """Per-example terms ``[B]``: ``loss = rec + kl`` = negative ELBO (nats)."""

    loss: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor


def gaussian_kl(q: Distribution, p: Distribution) -> torch.Tensor:
    """KL(q || p) for diagonal Gaussians (``Independent(Normal, 1)``), summed over the event: ``[B]``.

    Closed form (Kingma & Welling 2014, Appendix B, for any diagonal p):
    KL = sum_d [ log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2 ].
    """
    assert isinstance(q, Independent) and isinstance(q.base_dist, Normal), "q must be a diagonal Gaussian"
    assert isinstance(p, Independent) and isinstance(p.base_dist, Normal), "p must be a diagonal Gaussian"
    return diagonal_gaussian_kl(q.base_dist.loc, q.base_dist.scale, p.base_dist.loc, p.base_dist.scale).sum(-1)


def diagonal_gaussian_kl(m_q: torch.Tensor, s_q: torch.Tensor, m_p: torch.Tensor, s_p: torch.Tensor) -> torch.Tensor:
    """The closed form above, per dimension (no sum), on plain tensors of means and scales."""
    return torch.log(s_p / s_q) + (s_q.square() + (m_q - m_p).square()) / (2 * s_p.square()) - 0.5


def reparameterize(q: Distribution, generator: torch.Generator | None = None, samples: int | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): ``[B, D]``, or ``[samples, B, D]`` when ``samples`` is set.

    Written out (instead of ``q.rsample()``) so that an explicit ``generator`` makes runs reproducible.
    """
    loc, scale = q.mean, q.stddev
    shape = loc.shape if samples is None else (samples, *loc.shape)
    eps = torch.randn(shape, generator=generator, device=loc.device, dtype=loc.dtype)
    return loc + scale * eps


def elbo(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None, c: torch.Tensor | None = None) -> ElboTerms:
    """One-sample ELBO terms for a batch ``x: [B, *input_shape]`` (given c for conditional models)."""
    q = model.encode(x, c)
    z = reparameterize(q, generator)  # [B, D]
    rec = -model.decode(z, c).log_prob(x)  # [B]
    kl = gaussian_kl(q, model.prior)  # [B]
    return ElboTerms(loss=rec + kl, rec=rec, kl=kl)


@dataclass(frozen=True)
class Objective:
    """What one training step minimises; ``kl_weight`` already includes any warm-up factor."""

    kind: str = "elbo"  # elbo | beta | iwae
    kl_weight: float = 1.0
    free_bits: float = 0.0  # nats per latent dimension (batch mean) left unpenalised
    samples: int = 1  # importance samples K (iwae); 1 otherwise

    def noise_shape(self, batch: int, noise_dim: int) -> tuple[int, int, int]:
        """Shape of the standard-normal noise one step needs: ``[K, B, noise_dim]``."""
        return (self.samples, batch, noise_dim)


@dataclass(frozen=True)
class BatchSums:
    """Batch totals (scalars): what is minimised, and the plain ELBO terms reported beside it."""

    objective: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor


def penalised_kl(kl_per_dim: torch.Tensor, objective: Objective) -> torch.Tensor:
    """The KL term an objective pays for ``kl_per_dim: [B, D]``: weighted, with the free-bits floor.

    Free bits (Kingma et al. 2016): sum_d max(lambda, mean_batch KL_d), times the batch size so that it
    adds to batch totals like the other terms.
    """
    if objective.free_bits > 0:
        batch = kl_per_dim.shape[0]
        kl = kl_per_dim.mean(0).clamp(min=objective.free_bits).sum() * batch
    else:
        kl = kl_per_dim.sum()
    return objective.kl_weight * kl


def objective_sums(model: VAE, x: torch.Tensor, condition: torch.Tensor | None, eps: torch.Tensor, objective: Objective) -> BatchSums:
    """Batch totals of the training objective for ``x: [B, ...]`` with the noise ``eps: [K, B, D]``.

    ``condition`` is the condition *vector* (:meth:`VAE.condition_vector`) or None. The noise is drawn
    by the caller so that a distributed step can give each process its rows of the same draw. For
    ``elbo``/``beta`` this is exactly :func:`elbo` (a test holds them equal) on plain tensors, with no
    distribution objects for q and one fused sum for log p(x|z): the hot path of training.
    """
    loc, scale = model.posterior_params(x, condition)  # [B, D] each
    kl_per_dim = diagonal_gaussian_kl(loc, scale, model.prior_loc, model.prior_scale)  # [B, D]
    kl = kl_per_dim.sum()
    if objective.kind != "iwae":
        z = loc + scale * eps[0]
        rec = -model.likelihood(z, condition).total_log_prob(x)
        return BatchSums(rec + penalised_kl(kl_per_dim, objective), rec, kl)
    z = loc + scale * eps  # [K, B, D]
    log_px_z = model.likelihood(z, condition).log_prob(x)  # [K, B]
    log_w = log_px_z + standard_normal_log_prob(z) - diagonal_normal_log_prob_of_noise(eps, scale)
    iw = torch.logsumexp(log_w, dim=0) - math.log(objective.samples)  # [B]
    return BatchSums(-iw.sum(), -log_px_z.mean(0).sum(), kl)


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dimension."""
    return -0.5 * (z.square().sum(-1) + z.shape[-1] * _LOG_2PI)


def diagonal_normal_log_prob_of_noise(eps: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """log q(z|x) at z = mu + sigma * eps, from eps itself: log N(eps; 0, I) - sum log sigma."""
    return standard_normal_log_prob(eps) - torch.log(scale).sum(-1)


def log_importance_weights(
    model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None
) -> torch.Tensor:
    """log w_k = log p(x, z_k | c) - log q(z_k|x, c) for z_k ~ q(z|x, c): ``[samples, B]``.

    All K samples of the batch go through the decoder as one ``[K, B, D]`` batch. Their log-mean-exp
    is the importance-weighted bound IW_K (Burda et al. 2016, eq. 8); their mean is the ELBO.
    """
    q = model.encode(x, c)
    z = reparameterize(q, generator, samples)  # [K, B, D]
    return model.decode(z, c).log_prob(x) + model.prior.log_prob(z) - q.log_prob(z)


def iwae_bound(
    model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None, c: torch.Tensor | None = None
) -> torch.Tensor:
    """IW_K(x) = log (1/K) sum_k w_k: ``[B]``; equals the ELBO in expectation at K = 1, tends to log p(x)."""
    log_w = log_importance_weights(model, x, samples, generator, c)
    return torch.logsumexp(log_w, dim=0) - math.log(samples)
