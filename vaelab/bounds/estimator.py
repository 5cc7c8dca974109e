"""The one estimator every bound in vaelab is built on.

For K samples z_k ~ q(z|x, c), drawn by reparameterisation from the caller's noise, the log
importance weights are (Burda et al. 2016, eq. 8)

    log w_k = log p(x, z_k | c) - log q(z_k | x, c) = log p(x|z_k, c) - [log q(z_k|x, c) - log p(z_k)].

Their mean is an unbiased estimate of the ELBO (Kingma & Welling 2014, eq. 3),
E_q[log p(x|z)] - KL(q(z|x) || p(z)); their log-mean-exp is the importance-weighted bound IW_K, which
rises to log p(x) as K grows; the gap of the ELBO is KL(q(z|x) || p(z|x)). :func:`bound_terms`
returns the two parts separately: the reconstruction term log p(x|z_k) and the KL part of each
stochastic layer. With ``closed_form_kl`` a layer whose q and p factors are diagonal Gaussians gives
its KL in closed form per dimension (the K = 1 training ELBO, lower variance); otherwise the layer
gives log q - log p at the sample, which is what importance weights need.

Everything else is arithmetic on these terms: the training objectives (``objectives.py``), the M2
and missing-covariate bounds (``missing.py``) and the evaluator's NLL (``evaluation/evidence.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.distributions import Distribution

from vaelab.models.latents import draw, layer_kls, layer_sizes, sampled_and_closed_form_kls
from vaelab.models.vae import VAE


@dataclass(frozen=True)
class BoundTerms:
    """Per sample and example: ``log_px_z: [K, ...]``; ``layer_kl``: one tensor per stochastic layer,
    bottom first, ``[K, ..., D_l]`` (closed form per dimension) or ``[K, ...]`` (log q - log p)."""

    log_px_z: torch.Tensor
    layer_kl: tuple[torch.Tensor, ...]
    layer_sizes: tuple[int, ...]

    def kl_of_layer(self, layer: int) -> torch.Tensor:
        """The KL part of one layer summed over its dimensions: ``[K, ...]``."""
        kl = self.layer_kl[layer]
        return kl.sum(-1) if kl.dim() > self.log_px_z.dim() else kl

    @property
    def kl(self) -> torch.Tensor:
        """Every layer's KL part: ``[K, ...]``."""
        return sum(self.kl_of_layer(layer) for layer in range(len(self.layer_kl)))

    @property
    def log_weights(self) -> torch.Tensor:
        """log w_k ``[K, ...]`` (sampled KL); with closed-form layers, the per-sample ELBO instead."""
        return self.log_px_z - self.kl


def bound_terms(
    model: VAE, x: torch.Tensor, c: torch.Tensor | None, eps: torch.Tensor, closed_form_kl: bool = False
) -> BoundTerms:
    """The estimator's terms for ``x: [B, ...]`` with the noise ``eps: [K, B, latent_size]``.

    ``eps`` broadcasts against q's batch shape (M2 passes ``[K, 1, B, D]`` with a condition per class
    ``[Y, B, ...]``), so the caller decides the randomness: a seeded generator, or the rows of one
    draw that every process of a distributed run shares.
    """
    q = model.encode(x, c)
    z, q_layers = draw(q, eps)  # z: [K, ..., latent_size]
    log_px_z = model.decode(z, c).log_prob(x)  # [K, ...]
    return BoundTerms(log_px_z, tuple(layer_kls(q_layers, model.prior_for(c), z, closed_form_kl)), layer_sizes(q))


def evaluation_terms_at(
    model: VAE, x: torch.Tensor, c: torch.Tensor | None, q: Distribution, p: Distribution, eps: torch.Tensor,
) -> tuple[BoundTerms, list[torch.Tensor]]:
    """What the evaluator needs at the samples of q = q(z|x, c) drawn from the noise ``eps``, with
    p = p(z|c), from one decode and one pass over the latent conditionals: the importance-weight terms
    (:func:`bound_terms`' with log q - log p in every layer) and each layer's KL ``[K, ...]`` to report,
    in closed form where both factors are Gaussian. The evaluator draws many chunks of samples from one
    q and p, so the encoder, and a prior that is itself a network (the VampPrior), run once per batch,
    not per chunk."""
    z, q_layers = draw(q, eps)
    log_px_z = model.decode(z, c).log_prob(x)  # [K, ...]
    sampled, closed = sampled_and_closed_form_kls(q_layers, p, z)
    return BoundTerms(log_px_z, tuple(sampled), layer_sizes(q)), closed


def log_mean_exp(log_w: torch.Tensor) -> torch.Tensor:
    """log (1/K) sum_k exp(log_w_k) over the first axis: IW_K from ``log_w: [K, ...]``."""
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def standard_noise(model: VAE, batch: int, samples: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """eps ~ N(0, I) of shape ``[samples, batch, latent_size]`` on the model's device."""
    return torch.randn(samples, batch, model.latent_size, generator=generator, device=model.device, dtype=model.dtype)


def log_weights(model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None,
                c: torch.Tensor | None = None) -> torch.Tensor:
    """log w_k = log p(x, z_k | c) - log q(z_k | x, c) for z_k ~ q(z|x, c): ``[samples, B]``."""
    return bound_terms(model, x, c, standard_noise(model, x.shape[0], samples, generator)).log_weights


def iwae_bound(model: VAE, x: torch.Tensor, samples: int, generator: torch.Generator | None = None,
               c: torch.Tensor | None = None) -> torch.Tensor:
    """IW_K(x) ``[B]``: equals the ELBO in expectation at K = 1 and tends to log p(x) as K grows."""
    return log_mean_exp(log_weights(model, x, samples, generator, c))


@dataclass(frozen=True)
class ElboTerms:
    """Per-example terms ``[B]``: ``negative_elbo = rec + kl`` (nats), lower is better."""

    negative_elbo: torch.Tensor
    rec: torch.Tensor
    kl: torch.Tensor


def elbo(model: VAE, x: torch.Tensor, generator: torch.Generator | None = None, c: torch.Tensor | None = None) -> ElboTerms:
    """One-sample ELBO terms of a batch ``x: [B, ...]``, the KL in closed form where it exists."""
    terms = bound_terms(model, x, c, standard_noise(model, x.shape[0], 1, generator), closed_form_kl=True)
    rec, kl = -terms.log_px_z[0], terms.kl[0]
    return ElboTerms(negative_elbo=rec + kl, rec=rec, kl=kl)
