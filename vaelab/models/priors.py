"""Priors p(z) on the (top) latent layer: modules, so that a learned prior trains with the model.

Each entry of :data:`PRIORS` takes its argument from the spec (``vamp:500`` -> ``VampPrior(500)``)
and, called with the model, returns a ``torch.distributions.Distribution`` with event ``[D]``:

- ``standard``: N(0, I) (Kingma & Welling 2014); the KL against a Gaussian q is in closed form.
- ``mog:K``: a learned mixture of K diagonal Gaussians, sum_k pi_k N(mu_k, diag s_k^2).
- ``vamp:K``: the VampPrior (Tomczak & Welling 2018, eq. 9), p(z) = 1/K sum_k q(z|u_k), the mixture
  of the encoder's own posteriors at K learned pseudo-inputs u_k, which approximates the aggregate
  posterior that maximises the ELBO (their eq. 7).

A mixture has no closed-form KL against q: the bounds take log q(z) - log p(z) at the sampled z
(``models/latents.py``), and importance weights use log p(z) exactly. To add a prior, subclass
:class:`Prior` and add it to :data:`PRIORS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from vaelab.errors import VaelabError
from vaelab.models.latents import MIN_SCALE, diagonal_gaussian_mixture, diagonal_normal


class Prior(nn.Module):
    """Base: ``forward(model)`` -> p(z) with event ``[latent_dim]``."""

    reads_encoder = False  # p(z) is built from the encoder (the VampPrior): unconditional models only
    takes_components = False  # the spec may say how many mixture components (``mog:10``)

    def __init__(self, latent_dim: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.latent_dim = latent_dim

    def initialise(self, x: torch.Tensor) -> None:
        """Called once before training with a sample of training data ``x: [N, ...]``."""


class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, latent_dim: int, input_shape: tuple[int, ...]) -> None:
        super().__init__(latent_dim, input_shape)
        # Buffers follow ``.to(device)``; not saved (they are not learned).
        self.register_buffer("loc", torch.zeros(latent_dim), persistent=False)
        self.register_buffer("scale", torch.ones(latent_dim), persistent=False)

    def forward(self, model: nn.Module) -> Distribution:
        return diagonal_normal(self.loc, self.scale)


class MixtureOfGaussians(Prior):
    """p(z) = sum_k softmax(w)_k N(mu_k, diag softplus(r_k)^2), every parameter learned."""

    takes_components = True

    def __init__(self, latent_dim: int, input_shape: tuple[int, ...], components: int = 10) -> None:
        super().__init__(latent_dim, input_shape)
        generator = torch.Generator().manual_seed(components)
        self.logits = nn.Parameter(torch.zeros(components))
        self.means = nn.Parameter(torch.randn(components, latent_dim, generator=generator))
        self.raw_scales = nn.Parameter(torch.full((components, latent_dim), 0.5413))  # softplus -> 1.0

    def forward(self, model: nn.Module) -> Distribution:
        return diagonal_gaussian_mixture(self.logits, self.means, F.softplus(self.raw_scales) + MIN_SCALE)


class VampPrior(Prior):
    """p(z) = 1/K sum_k q(z|u_k) with learned pseudo-inputs u_k in the data's range [0, 1].

    As in Tomczak & Welling's code the pseudo-inputs pass through a hard tanh onto [0, 1]; they start
    at randomly chosen training images (their ``use_training_data_init``) plus a little noise.
    """

    reads_encoder = True
    takes_components = True

    def __init__(self, latent_dim: int, input_shape: tuple[int, ...], components: int = 500) -> None:
        super().__init__(latent_dim, input_shape)
        generator = torch.Generator().manual_seed(components)
        self.pseudo_inputs = nn.Parameter(0.05 + 0.01 * torch.randn(components, *input_shape, generator=generator))

    @torch.no_grad()
    def initialise(self, x: torch.Tensor) -> None:
        generator = torch.Generator().manual_seed(0)
        pick = torch.randint(x.shape[0], (self.pseudo_inputs.shape[0],), generator=generator)
        noise = 0.01 * torch.randn(self.pseudo_inputs.shape, generator=generator)
        self.pseudo_inputs.copy_(x.cpu()[pick].reshape(self.pseudo_inputs.shape) + noise.clamp(-0.02, 0.02))

    def forward(self, model: nn.Module) -> Distribution:
        u = F.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        q = model.top_posterior(u)  # [K] components q(z_top|u_k)
        uniform = torch.zeros(u.shape[0], device=u.device, dtype=q.mean.dtype)
        return diagonal_gaussian_mixture(uniform, q.base_dist.loc, q.base_dist.scale)


PRIORS: dict[str, type[Prior]] = {
    "standard": StandardNormal,
    "mog": MixtureOfGaussians,
    "vamp": VampPrior,
}


def parse_prior(spec: str) -> tuple[str, int | None]:
    """``"vamp:500"`` -> ("vamp", 500); ``"standard"`` -> ("standard", None); errors name ``prior``."""
    if not isinstance(spec, str):
        raise VaelabError(f"prior: expected a name such as standard, mog:10 or vamp:500, got {spec!r}")
    name, sep, arg = spec.partition(":")
    if name not in PRIORS:
        raise VaelabError(f"prior: expected one of {', '.join(PRIORS)} (e.g. mog:10, vamp:500), got {spec!r}")
    if not sep:
        return name, None
    if not PRIORS[name].takes_components:
        raise VaelabError(f"prior: {name} has no components to count, got {spec!r}")
    if not arg.isdigit() or not 1 <= int(arg) <= 100_000:
        raise VaelabError(f"prior: {name}:K needs a number of components K in 1..100000, got {spec!r}")
    return name, int(arg)


def build_prior(spec: str, latent_dim: int, input_shape: tuple[int, ...]) -> Prior:
    name, components = parse_prior(spec)
    if components is None:
        return PRIORS[name](latent_dim, input_shape)
    return PRIORS[name](latent_dim, input_shape, components)
