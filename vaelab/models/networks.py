"""Encoder and decoder networks: plain ``nn.Module``s from tensors to distribution parameters.

Encoders map data ``[..., *input_shape]`` (plus an optional condition vector ``[..., C]``) to
``[..., out_features]``: mean and pre-softplus scale of q(z|x, c), or class logits of q(y|x).
Decoders map ``z: [..., latent_dim]`` (plus the condition) to parameters shaped like the data
``[..., *output_shape]`` (logits or means of p(x|z, c)). Any number of leading batch dimensions is
accepted, so the importance-weighted bound can decode ``z: [K, B, latent_dim]`` in one call with a
condition of shape ``[B, C]``. A conditional VAE (Sohn et al. 2015) differs from a plain one only in
that the condition vector is concatenated to the input of the first dense layer of both networks.
The probabilistic meaning of the outputs lives in ``model.py`` and ``likelihoods.py``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vaelab.config import ConfigError, ModelConfig

_KERNEL, _STRIDE, _PADDING = 4, 2, 1  # each conv halves H and W (floor); transposed convs undo it exactly


def _mlp(widths: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _with_condition(h: torch.Tensor, condition: torch.Tensor | None, lead: torch.Size) -> torch.Tensor:
    """``h: [N, F]`` with the condition ``[..., C]`` (broadcast to the leading dims ``lead``) appended."""
    if condition is None:
        return h
    condition = condition.expand(*lead, condition.shape[-1])
    return torch.cat((h, condition.reshape(h.shape[0], -1)), dim=-1)


class Encoder(nn.Module):
    """x: [..., *input_shape] -> ``features`` -> (append condition) -> dense layers -> [..., out_features]."""

    def __init__(self, features: nn.Module, input_shape: tuple[int, ...], n_features: int,
                 hidden: tuple[int, ...], out_features: int, condition_dim: int) -> None:
        super().__init__()
        self.features = features
        self.n_features = n_features
        self.head = _mlp([n_features + condition_dim, *hidden, out_features])
        self.input_shape = tuple(input_shape)
        self.out_features = out_features

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_features(self.features_of(x), condition)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads from x alone, before the condition joins: ``[..., n_features]``."""
        lead = x.shape[: x.dim() - len(self.input_shape)]
        return self.features(x.reshape(-1, *self.input_shape)).reshape(*lead, self.n_features)

    def from_features(self, h: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The output given :meth:`features_of` ``h: [..., n_features]`` and the condition."""
        lead = h.shape[:-1]
        h = h.reshape(-1, self.n_features)
        return self.head(_with_condition(h, condition, lead)).reshape(*lead, self.out_features)


class Decoder(nn.Module):
    """z: [..., latent_dim] -> (append condition) -> dense layers -> ``body`` -> [..., *output_shape]."""

    def __init__(self, head: nn.Module, body: nn.Module, latent_dim: int, output_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.head = head
        self.body = body
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        lead = z.shape[:-1]
        h = self.head(_with_condition(z.reshape(-1, self.latent_dim), condition, lead))
        return self.body(h).reshape(*lead, *self.output_shape)

    def output_layer(self) -> nn.Module:
        """The layer that produces the likelihood's parameters (a Linear or a ConvTranspose2d)."""
        return self.body[-1] if isinstance(self.body, nn.Sequential) else self.head[-1]

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Start the output at ``value: [*output_shape]``; a transposed conv has one bias per channel: its mean."""
        last = self.output_layer()
        with torch.no_grad():
            if isinstance(last, nn.ConvTranspose2d):
                last.bias.copy_(value.mean(dim=(-2, -1)))
            else:
                last.bias.copy_(value.reshape(-1))


def conv_feature_sizes(height: int, width: int, n_layers: int) -> list[tuple[int, int]]:
    """Spatial size before each stride-2 conv and after the last: [(H, W), (H//2, W//2), ...]."""
    sizes = [(height, width)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h + 2 * _PADDING - _KERNEL) // _STRIDE + 1, (w + 2 * _PADDING - _KERNEL) // _STRIDE + 1))
    return sizes


def mlp_decoder(latent_dim: int, hidden: tuple[int, ...], output_shape: tuple[int, ...], condition_dim: int = 0) -> Decoder:
    """z (and the condition) -> hidden ReLU layers -> the data shape (mirror of the encoder)."""
    head = _mlp([latent_dim + condition_dim, *reversed(hidden), math.prod(output_shape)])
    return Decoder(head, nn.Identity(), latent_dim, output_shape)


def _check_conv_depth(input_shape: tuple[int, ...], channels: tuple[int, ...]) -> list[tuple[int, int]]:
    _, h, w = input_shape
    sizes = conv_feature_sizes(h, w, len(channels))
    if min(sizes[-1]) < 1:
        raise ConfigError(
            "channels", f"{len(channels)} stride-2 convolutions are too many for {h}x{w} images; use fewer channels"
        )
    return sizes


def conv_features(input_shape: tuple[int, ...], channels: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """x: [C, H, W] -> stride-2 convs (ReLU) -> flatten: the module and its number of outputs."""
    sizes = _check_conv_depth(input_shape, channels)
    layers: list[nn.Module] = []
    for c_in, c_out in zip((input_shape[0], *channels[:-1]), channels):
        layers += [nn.Conv2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING), nn.ReLU()]
    layers.append(nn.Flatten())
    return nn.Sequential(*layers), channels[-1] * sizes[-1][0] * sizes[-1][1]


def conv_decoder(latent_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...],
                 output_shape: tuple[int, ...], condition_dim: int = 0) -> Decoder:
    """z (and the condition) -> dense layers -> transposed convs back to exactly [C, H, W]."""
    sizes = _check_conv_depth(output_shape, channels)
    h0, w0 = sizes[-1]
    head = nn.Sequential(*_mlp([latent_dim + condition_dim, *reversed(hidden), channels[-1] * h0 * w0]), nn.ReLU())
    layers: list[nn.Module] = [nn.Unflatten(1, (channels[-1], h0, w0))]
    targets = list(reversed(sizes[:-1]))  # sizes to reach, from the deepest layer up to (H, W)
    c_outs = [*reversed(channels[:-1]), output_shape[0]]
    c_in = channels[-1]
    for i, (c_out, (th, tw)) in enumerate(zip(c_outs, targets)):
        ih, iw = sizes[len(channels) - i]
        # A transposed conv gives 2 * in; output_padding adds the row/column a floor division dropped.
        pad = (th - _STRIDE * ih, tw - _STRIDE * iw)
        layers.append(nn.ConvTranspose2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING, output_padding=pad))
        if i < len(channels) - 1:
            layers.append(nn.ReLU())
        c_in = c_out
    return Decoder(head, nn.Sequential(*layers), latent_dim, output_shape)


def build_encoder(config: ModelConfig, out_features: int, condition_dim: int = 0, condition_last: bool = False) -> Encoder:
    """An encoder of ``config.arch`` reading x (and a condition vector): q(z|x, c), q(y|x), ...

    ``condition_last`` moves the hidden dense layers into ``features``, so that the condition joins
    only at the output layer and everything before it reads x alone (a classifier can then share it).
    """
    assert config.input_shape is not None, "input_shape is filled in from the data before building"
    shape = tuple(config.input_shape)
    features, n_features = conv_features(shape, config.channels) if config.arch == "conv" else (nn.Flatten(), math.prod(shape))
    hidden = config.hidden
    if condition_last and hidden:
        features = nn.Sequential(features, nn.Sequential(_mlp([n_features, *hidden]), nn.ReLU()))
        n_features, hidden = hidden[-1], ()
    return Encoder(features, shape, n_features, hidden, out_features, condition_dim)


def build_decoder(config: ModelConfig, condition_dim: int = 0) -> Decoder:
    """The decoder of ``config.arch``: z (and a condition vector) to the parameters of p(x|z, c)."""
    assert config.input_shape is not None, "input_shape is filled in from the data before building"
    shape = tuple(config.input_shape)
    if config.arch == "conv":
        return conv_decoder(config.latent_dim, config.channels, config.hidden, shape, condition_dim)
    return mlp_decoder(config.latent_dim, config.hidden, shape, condition_dim)
