"""Encoder and decoder networks: plain ``nn.Module``s from tensors to distribution parameters.

Encoders map data ``[..., *input_shape]`` to ``[..., 2 * latent_dim]`` (mean and pre-softplus scale of
q(z|x)); decoders map ``z: [..., latent_dim]`` to parameters shaped like the data ``[..., *input_shape]``
(logits or means of p(x|z)). Any number of leading batch dimensions is accepted, so the importance-
weighted bound can decode ``z: [K, B, latent_dim]`` in one call. The probabilistic meaning of these
outputs lives in ``model.py`` and ``likelihoods.py``.
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


class _LeadingDims(nn.Module):
    """Runs ``body`` on ``[N, *in_shape]`` after folding any leading dims of the input into N."""

    def __init__(self, body: nn.Module, in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.body = body
        self.in_shape = tuple(in_shape)
        self.out_shape = tuple(out_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[: x.dim() - len(self.in_shape)]
        y = self.body(x.reshape(-1, *self.in_shape))
        return y.reshape(*lead, *self.out_shape)


class MLPEncoder(_LeadingDims):
    """x: [..., *input_shape] -> flattened -> hidden ReLU layers -> [..., 2 * latent_dim]."""

    def __init__(self, input_shape: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int) -> None:
        body = nn.Sequential(nn.Flatten(), *_mlp([math.prod(input_shape), *hidden, 2 * latent_dim]))
        super().__init__(body, input_shape, (2 * latent_dim,))


class MLPDecoder(_LeadingDims):
    """z: [..., latent_dim] -> hidden ReLU layers -> [..., *output_shape] (mirror of the encoder)."""

    def __init__(self, latent_dim: int, hidden: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        body = nn.Sequential(*_mlp([latent_dim, *reversed(hidden), math.prod(output_shape)]))
        super().__init__(body, (latent_dim,), output_shape)

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Set the last layer's bias to ``value: [*output_shape]`` (one bias per output dimension)."""
        with torch.no_grad():
            self.body[-1].bias.copy_(value.reshape(-1))


def conv_feature_sizes(height: int, width: int, n_layers: int) -> list[tuple[int, int]]:
    """Spatial size before each stride-2 conv and after the last: [(H, W), (H//2, W//2), ...]."""
    sizes = [(height, width)]
    for _ in range(n_layers):
        h, w = sizes[-1]
        sizes.append(((h + 2 * _PADDING - _KERNEL) // _STRIDE + 1, (w + 2 * _PADDING - _KERNEL) // _STRIDE + 1))
    return sizes


class ConvEncoder(_LeadingDims):
    """x: [..., C, H, W] -> stride-2 convs (ReLU) -> dense hidden layers -> [..., 2 * latent_dim]."""

    def __init__(self, input_shape: tuple[int, ...], channels: tuple[int, ...], hidden: tuple[int, ...], latent_dim: int) -> None:
        c, h, w = input_shape
        sizes = conv_feature_sizes(h, w, len(channels))
        if min(sizes[-1]) < 1:
            raise ConfigError(
                "channels", f"{len(channels)} stride-2 convolutions are too many for {h}x{w} images; use fewer channels"
            )
        layers: list[nn.Module] = []
        for c_in, c_out in zip((c, *channels[:-1]), channels):
            layers += [nn.Conv2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING), nn.ReLU()]
        features = channels[-1] * sizes[-1][0] * sizes[-1][1]
        layers += [nn.Flatten(), *_mlp([features, *hidden, 2 * latent_dim])]
        super().__init__(nn.Sequential(*layers), input_shape, (2 * latent_dim,))


class ConvDecoder(_LeadingDims):
    """z: [..., latent_dim] -> dense layers -> transposed convs back to exactly [..., C, H, W]."""

    def __init__(self, latent_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...], output_shape: tuple[int, ...]) -> None:
        c, h, w = output_shape
        sizes = conv_feature_sizes(h, w, len(channels))
        h0, w0 = sizes[-1]
        layers: list[nn.Module] = [_mlp([latent_dim, *reversed(hidden), channels[-1] * h0 * w0]), nn.ReLU()]
        layers.append(nn.Unflatten(1, (channels[-1], h0, w0)))
        targets = list(reversed(sizes[:-1]))  # sizes to reach, from the deepest layer up to (H, W)
        c_outs = [*reversed(channels[:-1]), c]
        c_in = channels[-1]
        for i, (c_out, (th, tw)) in enumerate(zip(c_outs, targets)):
            ih, iw = sizes[len(channels) - i]
            # A transposed conv gives 2 * in; output_padding adds the row/column a floor division dropped.
            pad = (th - _STRIDE * ih, tw - _STRIDE * iw)
            layers.append(nn.ConvTranspose2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING, output_padding=pad))
            if i < len(channels) - 1:
                layers.append(nn.ReLU())
            c_in = c_out
        super().__init__(nn.Sequential(*layers), (latent_dim,), output_shape)

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Set the last layer's bias from ``value: [C, H, W]``; a conv has one bias per channel: its mean."""
        with torch.no_grad():
            self.body[-1].bias.copy_(value.mean(dim=(-2, -1)))


def build_networks(config: ModelConfig) -> tuple[nn.Module, nn.Module]:
    """The encoder and decoder networks named by ``config.arch``, sized for ``config.input_shape``."""
    assert config.input_shape is not None, "input_shape is filled in from the data before building"
    shape = tuple(config.input_shape)
    if config.arch == "conv":
        return (
            ConvEncoder(shape, config.channels, config.hidden, config.latent_dim),
            ConvDecoder(config.latent_dim, config.channels, config.hidden, shape),
        )
    return (
        MLPEncoder(shape, config.hidden, config.latent_dim),
        MLPDecoder(config.latent_dim, config.hidden, shape),
    )
