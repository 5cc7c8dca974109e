"""How the stochastic layers of a hierarchical VAE connect: one registry entry per wiring.

Both wirings infer and generate top-down. A deterministic path reads x; the top layer's posterior
q(z_L|x) comes from it alone, each layer below from x and the layer above, q(z_l|x, z_{l+1}); the
prior of ``models/priors.py`` sits on z_L and each layer below follows p(z_l|z_{l+1}). They differ
in what the networks share and what the decoder reads:

- ``ladder`` (the Ladder VAE's sharing, Sønderby et al. 2016): one top-down feature t_l = f_l(z_{l+1})
  feeds both p(z_l|z_{l+1}) and q(z_l|x, z_{l+1}), whose heads are linear in [d_l, t_l], with d_l a
  bottom-up path of one block per layer; the decoder reads z_1 only.
- ``hvae`` (Tomczak & Welling's HVAE, the VampPrior paper's ``HVAE_2level.py``, the architecture of
  the published 226.72 nats): separate networks. q(z_L|x) is the one-layer encoder; q(z_l|x, z_{l+1})
  = a joint block on [block(x), block(z_{l+1})]; p(z_l|z_{l+1}) two blocks; the decoder reads every
  layer, p(x|z_1..z_L) = the decoder on [block(z_1), ..., block(z_L)].

A wiring is a :class:`Hierarchy`: it adds its modules to the model (so parameter names stay flat, as
in the saved runs) and builds the posterior and prior :class:`~vaelab.models.latents.Chain` and the
decoder's input. Both wirings share :class:`TopDownPosterior`'s top-down drawing, which returns
the conditionals it met with z (see its docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Distribution

from vaelab.config import ModelConfig
from vaelab.models.latents import Chain, diagonal_normal, sample, MIN_SCALE
from vaelab.models.networks import ARCHITECTURES, Decoder, GatedDense, build_decoder, build_encoder, hidden_block, with_condition

if TYPE_CHECKING:
    from vaelab.models.vae import VAE


def full_precision(t: torch.Tensor) -> torch.Tensor:
    """Network outputs in fp32 when autocast made them bf16/fp16: distributions are computed in full precision."""
    return t.float() if t.dtype in (torch.bfloat16, torch.float16) else t


def gaussian(params: torch.Tensor) -> Distribution:
    """A diagonal Gaussian from ``[..., 2D]``: mean and pre-softplus scale (softplus cannot overflow
    as exp(log-variance) can)."""
    loc, raw_scale = full_precision(params).chunk(2, dim=-1)
    return diagonal_normal(loc, F.softplus(raw_scale) + MIN_SCALE)


def _width(config: ModelConfig) -> int:
    """The width of the hierarchy's blocks: the last hidden layer's."""
    return config.hidden[-1] if config.hidden else 2 * config.latent_dim


def _gated(config: ModelConfig) -> bool:
    return ARCHITECTURES[config.arch].gated


class TopDownPosterior(Chain):
    """q(z|x) = q(z_L|x) prod_l q(z_l|x, z_{l+1}), drawn top-down; a wiring supplies :meth:`layer`.

    Evaluation draws thousands of z per image and then needs the conditionals at exactly those z
    (log q for the importance weights, the KL per layer). Both are per-sample networks, the cost of a
    hierarchy beside its decoder, so :meth:`draw` returns the conditionals it met with the z it drew,
    and each wiring computes what depends on x alone once per image in its constructor. Nothing is
    kept between calls, so ``torch.compile`` traces a chunk of evaluation as one graph.
    """

    def __init__(self, model: VAE, batch_shape: torch.Size, reference: torch.Tensor) -> None:
        self.model = model
        super().__init__((model.latent_dim,) * model.layers, batch_shape)
        self.device, self.dtype = reference.device, full_precision(reference).dtype

    def layer(self, l: int, z_above: torch.Tensor | None) -> Distribution:
        """q(z_l|x, z_{l+1}); ``z_above`` is None for the top layer."""
        raise NotImplementedError

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        zs = z.split(self.layer_sizes, -1)
        top = len(zs) - 1
        return [self.layer(l, None if l == top else zs[l + 1]) for l in range(len(zs))]

    def draw(self, eps: torch.Tensor) -> tuple[torch.Tensor, list[Distribution]]:
        eps_layers = eps.split(self.layer_sizes, -1)
        zs: list[torch.Tensor] = [None] * len(eps_layers)  # type: ignore[list-item]
        layers: list[Distribution] = [None] * len(eps_layers)  # type: ignore[list-item]
        for l in reversed(range(len(eps_layers))):
            q = self.layer(l, None if l == len(eps_layers) - 1 else zs[l + 1])
            layers[l] = q
            zs[l] = q.base_dist.loc + q.base_dist.scale * eps_layers[l]
            if l < len(eps_layers) - 1 and zs[l].shape != zs[l + 1].shape:
                zs[l + 1] = zs[l + 1].expand_as(zs[l])
        return torch.cat(zs, -1), layers

    @property
    def mean(self) -> torch.Tensor:
        """Layer means taken top-down at the means of the layers above (a point, not E_q[z])."""
        return self.reparameterize(torch.zeros(*self.batch_shape, *self.event_shape, device=self.device, dtype=self.dtype))


class TopDownPrior(Chain):
    """p(z) = p(z_L) prod_l p(z_l|z_{l+1}): the configured prior on the top layer, ``layer`` below it."""

    def __init__(self, model: VAE, top: Distribution, layer: Callable[[int, torch.Tensor], Distribution]) -> None:
        self.model, self.top, self.layer = model, top, layer
        super().__init__((model.latent_dim,) * model.layers, torch.Size())
        self.device, self.dtype = model.device, model.dtype

    def conditionals(self, z: torch.Tensor) -> list[Distribution]:
        zs = z.split(self.layer_sizes, -1)
        return [*(self.layer(l, zs[l + 1]) for l in range(len(zs) - 1)), self.top]

    def draw(self, eps: torch.Tensor) -> tuple[torch.Tensor, list[Distribution]]:
        raise NotImplementedError("the top prior may be a mixture: draw with sample_with(n, generator)")

    def sample_with(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        zs = [sample(self.top, n, generator)]
        for l in reversed(range(len(self.layer_sizes) - 1)):
            zs.insert(0, sample(self.layer(l, zs[0]), 1, generator)[0])
        return torch.cat(zs, -1)

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        n = int(torch.Size(sample_shape).numel())
        return self.sample_with(n, None).reshape(*sample_shape, *self.event_shape)


# --- ladder: shared top-down features, linear heads, the decoder reads z_1 --------------------------


def _build_ladder(model: VAE, config: ModelConfig, output_shape: tuple[int, ...], condition_dim: int,
                  shared_classifier: bool) -> Decoder:
    width, gated = _width(config), _gated(config)
    latent, layers = config.latent_dim, config.stochastic_layers
    # d_1 = encoder(x, c): the architecture's features and hidden layers, ending in a hidden block.
    model.encoder_net = build_encoder(config, width, condition_dim, condition_last=shared_classifier,
                                      hidden=config.hidden[:-1])
    model.bottom_up = nn.ModuleList(hidden_block(width, width, gated) for _ in range(layers))  # d_l
    model.top_down = nn.ModuleList(hidden_block(latent, width, gated) for _ in range(layers - 1))  # t_l = f(z_{l+1})
    model.posterior_heads = nn.ModuleList(
        nn.Linear(width if l == layers - 1 else 2 * width, 2 * latent) for l in range(layers)
    )
    model.prior_heads = nn.ModuleList(nn.Linear(width, 2 * latent) for _ in range(layers - 1))
    return build_decoder(config, output_shape, condition_dim)


def _ladder_bottom_up(model: VAE, features: torch.Tensor, condition: torch.Tensor | None) -> list[torch.Tensor]:
    """d_1..d_L from the encoder's features."""
    d = model.encoder_net.from_features(features, condition)
    ds = []
    for block in model.bottom_up:
        d = block(d)
        ds.append(d)
    return ds


class _LadderPosterior(TopDownPosterior):
    """The ladder's q: the part of each layer's head that reads d_l (the head is linear in [d_l, t_l])
    is applied once per image, not once per sample."""

    def __init__(self, model: VAE, ds: list[torch.Tensor]) -> None:
        super().__init__(model, ds[0].shape[:-1], ds[0])
        self.ds = ds
        width = ds[0].shape[-1]
        self.head_of_d = [  # W_d d_l + b for the layers below the top, whose heads also read t_l
            F.linear(d, head.weight[:, :width], head.bias) for d, head in zip(ds[:-1], model.posterior_heads[:-1])
        ]

    def layer(self, l: int, z_above: torch.Tensor | None) -> Distribution:
        model = self.model
        if z_above is None:
            return gaussian(model.posterior_heads[l](self.ds[l]))
        t = model.top_down[l](z_above)
        head = model.posterior_heads[l]
        return gaussian(F.linear(t, head.weight[:, self.ds[l].shape[-1]:]) + self.head_of_d[l])


def _ladder_prior_layer(model: VAE) -> Callable[[int, torch.Tensor], Distribution]:
    return lambda l, z_above: gaussian(model.prior_heads[l](model.top_down[l](z_above)))


# --- hvae: Tomczak & Welling's separate networks, the decoder reads every layer -------------------


class _JointBlock(nn.Module):
    """The joint block of q(z_l|x, z_{l+1}): a hidden block on [h_x, h_z] whose first product is split,
    so that its h_x half (one per image) is applied once per image and only the h_z half per sample."""

    def __init__(self, width: int, gated: bool) -> None:
        super().__init__()
        self.block = hidden_block(2 * width, width, gated)
        self.width = width

    def linear(self) -> nn.Linear:
        return self.block.linear if isinstance(self.block, GatedDense) else self.block[0]

    def of_x(self, h_x: torch.Tensor) -> torch.Tensor:
        """W_x h_x + b: the per-image half."""
        linear = self.linear()
        return F.linear(h_x, linear.weight[:, : self.width], linear.bias)

    def forward(self, x_part: torch.Tensor, h_z: torch.Tensor) -> torch.Tensor:
        pre = F.linear(h_z, self.linear().weight[:, self.width:]) + x_part
        return GatedDense.activate(pre) if isinstance(self.block, GatedDense) else torch.relu(pre)


def _build_hvae(model: VAE, config: ModelConfig, output_shape: tuple[int, ...], condition_dim: int,
                shared_classifier: bool) -> Decoder:
    width, gated = _width(config), _gated(config)
    latent, layers = config.latent_dim, config.stochastic_layers
    model.encoder_net = build_encoder(config, 2 * latent, condition_dim, condition_last=shared_classifier)  # q(z_L|x)
    reads_x = model.encoder_net.n_features + condition_dim
    model.posterior_x = nn.ModuleList(hidden_block(reads_x, width, gated) for _ in range(layers - 1))
    model.posterior_z = nn.ModuleList(hidden_block(latent, width, gated) for _ in range(layers - 1))
    model.posterior_joint = nn.ModuleList(_JointBlock(width, gated) for _ in range(layers - 1))
    model.posterior_heads = nn.ModuleList(nn.Linear(width, 2 * latent) for _ in range(layers - 1))
    model.prior_nets = nn.ModuleList(
        nn.Sequential(hidden_block(latent, width, gated), hidden_block(width, width, gated), nn.Linear(width, 2 * latent))
        for _ in range(layers - 1)
    )
    model.decoder_inputs = nn.ModuleList(hidden_block(latent, width, gated) for _ in range(layers))
    # the decoder proper reads the L blocks' outputs and keeps the last hidden layer (Tomczak's joint block)
    joint = dataclasses.replace(config, latent_dim=layers * width, hidden=config.hidden[-1:])
    return build_decoder(joint, output_shape, condition_dim)


class _HVAEPosterior(TopDownPosterior):
    """The HVAE's q: q(z_L|x) is the encoder's output; below it, each layer's joint block reads a block of
    x (applied once per image, with its half of the joint product) and a block of the sampled z_{l+1}."""

    def __init__(self, model: VAE, features: torch.Tensor, condition: torch.Tensor | None) -> None:
        top = model.encoder_net.from_features(features, condition)
        super().__init__(model, top.shape[:-1], top)
        self.top = top
        reads = with_condition(features, condition)
        self.joint_of_x = [joint.of_x(block(reads)) for block, joint in zip(model.posterior_x, model.posterior_joint)]

    def layer(self, l: int, z_above: torch.Tensor | None) -> Distribution:
        model = self.model
        if z_above is None:
            return gaussian(self.top)
        h = model.posterior_joint[l](self.joint_of_x[l], model.posterior_z[l](z_above))
        return gaussian(model.posterior_heads[l](h))


def _hvae_prior_layer(model: VAE) -> Callable[[int, torch.Tensor], Distribution]:
    return lambda l, z_above: gaussian(model.prior_nets[l](z_above))


def _hvae_decoder_input(model: VAE, z: torch.Tensor) -> torch.Tensor:
    return torch.cat([block(z_l) for block, z_l in zip(model.decoder_inputs, z.split(model.latent_dim, -1))], -1)


@dataclass(frozen=True)
class Hierarchy:
    """A wiring of L > 1 stochastic layers."""

    # adds the modules to the model and returns its decoder: (model, config, output shape, condition dim, shared classifier)
    build: Callable[[VAE, ModelConfig, tuple[int, ...], int, bool], Decoder]
    posterior: Callable[[VAE, torch.Tensor, torch.Tensor | None], TopDownPosterior]  # (features of x, condition)
    top_posterior: Callable[[VAE, torch.Tensor], Distribution]  # q(z_L|x) from the features of x, no condition
    prior_layer: Callable[[VAE], Callable[[int, torch.Tensor], Distribution]]  # p(z_l|z_{l+1})
    decoder_input: Callable[[VAE, torch.Tensor], torch.Tensor]  # z: [..., L D] -> what the decoder reads


HIERARCHIES: dict[str, Hierarchy] = {
    "ladder": Hierarchy(
        build=_build_ladder,
        posterior=lambda model, features, c: _LadderPosterior(model, _ladder_bottom_up(model, features, c)),
        top_posterior=lambda model, features: gaussian(model.posterior_heads[-1](_ladder_bottom_up(model, features, None)[-1])),
        prior_layer=_ladder_prior_layer,
        decoder_input=lambda model, z: z[..., : model.latent_dim],
    ),
    "hvae": Hierarchy(
        build=_build_hvae,
        posterior=_HVAEPosterior,
        top_posterior=lambda model, features: gaussian(model.encoder_net.from_features(features, None)),
        prior_layer=_hvae_prior_layer,
        decoder_input=_hvae_decoder_input,
    ),
}
