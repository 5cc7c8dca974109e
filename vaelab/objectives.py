"""Training objectives, as free functions returning per-example terms in nats.

The evidence lower bound (Kingma & Welling 2014, eq. 3; the seed's derivation):

    log p(x) >= ELBO(x) = E_q(z|x)[log p(x|z)] - KL(q(z|x) || p(z)),

with the gap log p(x) - ELBO(x) = KL(q(z|x) || p(z|x)). :func:`elbo` estimates the first term with
one reparameterised sample z = mu + sigma * eps and computes the KL in closed form. Conventions used
everywhere in vaelab: ``loss`` is the negative ELBO, ``rec`` the reconstruction term
-E_q[log p(x|z)] and ``kl`` the KL term, all ``[B]`` (sums over data and latent dimensions, one value
per example); trainers take the batch mean of ``loss``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.distributions import Distribution, Independent, Normal

from vaelab.model import VAE


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
    m_q, s_q = q.base_dist.loc, q.base_dist.scale
    m_p, s_p = p.base_dist.loc, p.base_dist.scale
    per_dim = torch.log(s_p / s_q) + (s_q.square() + (m_q - m_p).square()) / (2 * s_p.square()) - 0.5
    return per_dim.sum(-1)


def reparameterize(q: Distribution, generator: torch.Generator | None = None, samples: int | None = None) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): ``[B, D]``, or ``[samples, B, D]`` when ``samples`` is set.

    Written out (instead of ``q.rsample()``) so that an explicit ``generator`` makes runs reproducible.
    """
    shape = q.mean.shape if samples is None else (samples, *q.mean.shape)
    eps = torch.randn(shape, generator=generator, device=q.mean.device, dtype=q.mean.dtype)
    return q.mean + q.stddev * eps


def elbo(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None) -> ElboTerms:
    """One-sample ELBO terms for a batch ``x: [B, *input_shape]``."""
    q = model.encode(x)
    z = reparameterize(q, generator)  # [B, D]
    rec = -model.decode(z).log_prob(x)  # [B]
    kl = gaussian_kl(q, model.prior)  # [B]
    return ElboTerms(loss=rec + kl, rec=rec, kl=kl)
