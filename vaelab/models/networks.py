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
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vaelab.config import ConfigError, ModelConfig

_KERNEL, _STRIDE, _PADDING = 4, 2, 1  # each conv halves H and W (floor); transposed convs undo it exactly


class GatedDense(nn.Module):
    """h = (W x + b) * sigmoid(V x + c): the gated dense layer of Tomczak & Welling's VampPrior code
    (after Dauphin et al. 2017), one fused product for both halves."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(n_in, 2 * n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activate(self.linear(x))

    @staticmethod
    def activate(pre: torch.Tensor) -> torch.Tensor:
        """The gating of the fused product's output ``[..., 2 n_out]`` (for callers that form the product in parts)."""
        value, gate = pre.chunk(2, dim=-1)
        return value * torch.sigmoid(gate)


def _mlp(widths: list[int], gated: bool = False) -> nn.Sequential:
    """Hidden layers (ReLU after a Linear, or gated) and a plain Linear output layer."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        if i == len(widths) - 2:
            layers.append(nn.Linear(n_in, n_out))
        elif gated:
            layers.append(GatedDense(n_in, n_out))
        else:
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    return nn.Sequential(*layers)


def hidden_block(n_in: int, n_out: int, gated: bool = False) -> nn.Module:
    """One hidden layer with its nonlinearity: a building block of the hierarchical models."""
    return GatedDense(n_in, n_out) if gated else nn.Sequential(nn.Linear(n_in, n_out), nn.ReLU())


def with_condition(h: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
    """``h: [..., F]`` with the condition ``[..., C]`` appended, both broadcast to common leading dims."""
    if condition is None:
        return h
    lead = torch.broadcast_shapes(h.shape[:-1], condition.shape[:-1])
    return torch.cat((h.expand(*lead, h.shape[-1]), condition.expand(*lead, condition.shape[-1])), dim=-1)


class Encoder(nn.Module):
    """x: [..., *input_shape] -> ``features`` -> (append condition) -> dense layers -> [..., out_features]."""

    def __init__(self, features: nn.Module, input_shape: tuple[int, ...], n_features: int,
                 hidden: tuple[int, ...], out_features: int, condition_dim: int, gated: bool = False) -> None:
        super().__init__()
        self.features = features
        self.n_features = n_features
        self.head = _mlp([n_features + condition_dim, *hidden, out_features], gated)
        self.input_shape = tuple(input_shape)
        self.out_features = out_features

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.from_features(self.features_of(x), condition)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder reads from x alone, before the condition joins: ``[..., n_features]``."""
        lead = x.shape[: x.dim() - len(self.input_shape)]
        return self.features(x.reshape(-1, *self.input_shape)).reshape(*lead, self.n_features)

    def from_features(self, h: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """The output given :meth:`features_of` ``h: [..., n_features]`` and the condition ``[..., C]``;
        leading dims broadcast, so M2 reads each example's features once for every class."""
        return self.head(with_condition(h, condition))


class Decoder(nn.Module):
    """z: [..., latent_dim] -> (append condition) -> dense layers -> ``body`` -> [..., *output_shape].

    With ``skip`` (image decoders), z also reaches the output head directly: a linear map of z adds
    one value per output channel at every pixel, a generative skip connection (Dieng et al. 2019). A
    property of the whole image such as an object's colour is then one linear step from z to every
    pixel's likelihood parameters, instead of having to survive the upsampling path, and the model
    learns to code it many epochs sooner (BENCHMARKS.md, colour).
    """

    def __init__(self, head: nn.Module, body: nn.Module, latent_dim: int, output_shape: tuple[int, ...],
                 skip: nn.Linear | None = None) -> None:
        super().__init__()
        self.head = head
        self.body = body
        self.skip = skip
        self.latent_dim = latent_dim
        self.output_shape = tuple(output_shape)

    def forward(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        zc = with_condition(z, condition)
        h = self.head(zc)
        lead = h.shape[:-1]
        out = self.body(h.reshape(-1, h.shape[-1]))
        if self.skip is not None:
            out = out + self.skip(zc.reshape(-1, zc.shape[-1])).reshape(-1, self.output_shape[0], *[1] * (out.dim() - 2))
        return out.reshape(*lead, *self.output_shape)

    def output_layer(self) -> nn.Module:
        """The layer that produces the likelihood's parameters (a Linear or a ConvTranspose2d)."""
        return self.body[-1] if isinstance(self.body, nn.Sequential) else self.head[-1]

    def set_output_bias(self, value: torch.Tensor) -> None:
        """Start the output at ``value: [*output_shape]``; a convolution has one bias per channel: its mean."""
        last = self.output_layer()
        with torch.no_grad():
            if isinstance(last, (nn.ConvTranspose2d, nn.Conv2d)):
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


def mlp_decoder(latent_dim: int, hidden: tuple[int, ...], output_shape: tuple[int, ...], condition_dim: int = 0,
                gated: bool = False) -> Decoder:
    """z (and the condition) -> hidden layers -> the likelihood's parameters (mirror of the encoder)."""
    head = _mlp([latent_dim + condition_dim, *reversed(hidden), math.prod(output_shape)], gated)
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


class UnflattenChannelsLast(nn.Unflatten):
    """``nn.Unflatten`` to feature maps ``[B, C, h, w]`` stored channels-last (NHWC in memory).

    oneDNN's transposed convolutions run about twice as fast on channels-last input as on the default
    layout at the conv decoder's shapes, and a convolution's output keeps its input's layout, so
    converting once here puts the whole body on the fast path; the single-channel output layer then
    reads each pixel's channels as one contiguous row (BENCHMARKS.md, conv). The values are unchanged:
    only their order in memory differs, and parameters keep their names and layout.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).contiguous(memory_format=torch.channels_last)


class SingleChannelConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution to one output channel, as one matrix product and a col2im (``fold``).

    Same parameters and result as :class:`nn.ConvTranspose2d`, a different route: oneDNN runs the
    transposed convolution to a single channel (the last layer of a grey-image decoder) at a fraction
    of its speed on wider ones, while W^T x for every input pixel is an ordinary ``[C_in, k k]``
    product and ``fold`` sums the overlapping k x k blocks into the image. Measured on one thread
    (BENCHMARKS.md, conv): 32 -> 1 channels from 14x14 to 28x28, evaluation forward 2.8x and training
    forward + backward 1.6x faster. To 2 or more channels ``fold`` loses, so only this case uses it.
    """

    def __init__(self, in_channels: int, kernel_size: int, stride: int, padding: int,
                 output_padding: tuple[int, int] = (0, 0)) -> None:
        super().__init__(in_channels, 1, kernel_size, stride, padding, output_padding=output_padding)

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:  # x: [B, C_in, h, w]
        assert output_size is None, "the output size follows from output_padding"
        batch, _, h, w = x.shape
        (kh, kw), (sh, sw), (ph, pw), (oh, ow) = self.kernel_size, self.stride, self.padding, self.output_padding
        size = ((h - 1) * sh - 2 * ph + kh + oh, (w - 1) * sw - 2 * pw + kw + ow)
        blocks = self.weight.reshape(self.in_channels, kh * kw).T @ x.reshape(batch, self.in_channels, h * w)
        return F.fold(blocks, size, self.kernel_size, padding=self.padding, stride=self.stride) + self.bias.view(1, 1, 1, 1)


def _transposed_conv(c_in: int, c_out: int, pad: tuple[int, int]) -> nn.ConvTranspose2d:
    """The stride-2 transposed convolution of the conv decoder, by the fastest route for ``c_out``."""
    if c_out == 1:
        return SingleChannelConvTranspose2d(c_in, _KERNEL, _STRIDE, _PADDING, output_padding=pad)
    return nn.ConvTranspose2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING, output_padding=pad)


def conv_decoder(latent_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...],
                 output_shape: tuple[int, ...], condition_dim: int = 0) -> Decoder:
    """z (and the condition) -> dense layers -> transposed convs back to exactly [C, H, W]."""
    sizes = _check_conv_depth(output_shape, channels)
    h0, w0 = sizes[-1]
    head = nn.Sequential(*_mlp([latent_dim + condition_dim, *reversed(hidden), channels[-1] * h0 * w0]), nn.ReLU())
    layers: list[nn.Module] = [UnflattenChannelsLast(1, (channels[-1], h0, w0))]
    targets = list(reversed(sizes[:-1]))  # sizes to reach, from the deepest layer up to (H, W)
    c_outs = [*reversed(channels[:-1]), output_shape[0]]
    c_in = channels[-1]
    for i, (c_out, (th, tw)) in enumerate(zip(c_outs, targets)):
        ih, iw = sizes[len(channels) - i]
        # A transposed conv gives 2 * in; output_padding adds the row/column a floor division dropped.
        pad = (th - _STRIDE * ih, tw - _STRIDE * iw)
        layers.append(_transposed_conv(c_in, c_out, pad))
        if i < len(channels) - 1:
            layers.append(nn.ReLU())
        c_in = c_out
    return Decoder(head, nn.Sequential(*layers), latent_dim, output_shape)


class ResidualBlock(nn.Module):
    """x + conv3x3(relu(conv3x3(relu(x)))): a pre-activation residual block (He et al. 2016) at a
    fixed resolution and width. The second conv starts at zero, so each block starts as the identity
    and a deep stack trains from the start like a shallow one (Goyal et al. 2017's zero-init)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, C, H, W]
        return x + self.conv2(torch.relu(self.conv1(torch.relu(x))))


def resnet_features(input_shape: tuple[int, ...], channels: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    """x: [C, H, W] -> per width c in ``channels``: a stride-2 conv to c, a residual block -> ReLU,
    flatten: the module and its number of outputs (the dense bottleneck to z follows in the Encoder)."""
    sizes = _check_conv_depth(input_shape, channels)
    layers: list[nn.Module] = []
    for c_in, c_out in zip((input_shape[0], *channels[:-1]), channels):
        layers += [nn.Conv2d(c_in, c_out, _KERNEL, _STRIDE, _PADDING), ResidualBlock(c_out)]
    layers += [nn.ReLU(), nn.Flatten()]
    return nn.Sequential(*layers), channels[-1] * sizes[-1][0] * sizes[-1][1]


def resnet_decoder(latent_dim: int, channels: tuple[int, ...], hidden: tuple[int, ...],
                   output_shape: tuple[int, ...], condition_dim: int = 0) -> Decoder:
    """The mirror of :func:`resnet_features`: z (and the condition) -> dense layers -> per width, deepest
    first: a residual block, nearest-neighbour upsampling to the encoder's size one level up, a conv3x3
    to the next width -> a 1x1 conv head with ``output_shape[0]`` channels at exactly [H, W]: the
    likelihood's parameters for every data channel, read from each pixel's features (a 3x3 head would
    cost 9 times as much where the outputs are many, 10 M for a mixture on RGB)."""
    sizes = _check_conv_depth(output_shape, channels)
    h0, w0 = sizes[-1]
    head = nn.Sequential(*_mlp([latent_dim + condition_dim, *reversed(hidden), channels[-1] * h0 * w0]), nn.ReLU())
    layers: list[nn.Module] = [nn.Unflatten(1, (channels[-1], h0, w0))]
    widths = list(reversed(channels))  # deepest first
    for i, c_in in enumerate(widths):
        c_out = widths[i + 1] if i + 1 < len(widths) else channels[0]
        target = sizes[len(channels) - 1 - i]  # the size before the matching stride-2 conv
        layers += [ResidualBlock(c_in), nn.Upsample(size=target, mode="nearest"), nn.Conv2d(c_in, c_out, 3, padding=1)]
    layers += [nn.ReLU(), nn.Conv2d(channels[0], output_shape[0], 1)]
    skip = nn.Linear(latent_dim + condition_dim, output_shape[0])
    nn.init.zeros_(skip.weight)  # starts as the plain decoder; the output bias stays the data-dependent one
    nn.init.zeros_(skip.bias)
    return Decoder(head, nn.Sequential(*layers), latent_dim, output_shape, skip)


@dataclass(frozen=True)
class Architecture:
    """An encoder/decoder family: what reads x into features, and what maps z back to parameters."""

    features: Callable[[tuple[int, ...], ModelConfig], tuple[nn.Module, int]]  # x -> [n_features]
    decoder: Callable[[ModelConfig, tuple[int, ...], int], Decoder]  # (config, output shape, condition dim)
    gated: bool = False  # hidden dense layers are gated (Tomczak's GatedDense) instead of ReLU
    images_only: bool = False
    reads: tuple[str, ...] = ()  # model settings only this family reads (a new run refuses them changed under another)


ARCHITECTURES: dict[str, Architecture] = {
    "mlp": Architecture(
        features=lambda shape, config: (nn.Flatten(), math.prod(shape)),
        decoder=lambda config, shape, cond: mlp_decoder(config.latent_dim, config.hidden, shape, cond),
    ),
    "gated": Architecture(
        features=lambda shape, config: (nn.Flatten(), math.prod(shape)),
        decoder=lambda config, shape, cond: mlp_decoder(config.latent_dim, config.hidden, shape, cond, gated=True),
        gated=True,
    ),
    "conv": Architecture(
        features=lambda shape, config: conv_features(shape, config.channels),
        decoder=lambda config, shape, cond: conv_decoder(config.latent_dim, config.channels, config.hidden, shape, cond),
        images_only=True,
        reads=("channels",),
    ),
    "resnet": Architecture(
        features=lambda shape, config: resnet_features(shape, config.channels),
        decoder=lambda config, shape, cond: resnet_decoder(config.latent_dim, config.channels, config.hidden, shape, cond),
        images_only=True,
        reads=("channels",),
    ),
}


def build_encoder(config: ModelConfig, out_features: int, condition_dim: int = 0, condition_last: bool = False,
                  hidden: tuple[int, ...] | None = None) -> Encoder:
    """An encoder of ``config.arch`` reading x (and a condition vector): q(z|x, c), q(y|x), ...

    ``condition_last`` moves the hidden dense layers into ``features``, so that the condition joins
    only at the output layer and everything before it reads x alone (a classifier can then share it).
    ``hidden`` replaces ``config.hidden`` (the hierarchical models' bottom-up path).
    """
    assert config.input_shape is not None, "input_shape is filled in from the data before building"
    shape = tuple(config.input_shape)
    arch = ARCHITECTURES[config.arch]
    features, n_features = arch.features(shape, config)
    hidden = config.hidden if hidden is None else hidden
    if condition_last and hidden:
        features = nn.Sequential(features, nn.Sequential(_mlp([n_features, *hidden]), nn.ReLU()))
        n_features, hidden = hidden[-1], ()
    return Encoder(features, shape, n_features, hidden, out_features, condition_dim, arch.gated)


def build_decoder(config: ModelConfig, output_shape: tuple[int, ...], condition_dim: int = 0) -> Decoder:
    """The decoder of ``config.arch``: z (and a condition vector) to the likelihood's parameters,
    ``output_shape`` (the data shape, times the parameters per value on the first axis)."""
    return ARCHITECTURES[config.arch].decoder(config, tuple(output_shape), condition_dim)
