"""A Bernoulli likelihood whose pixels also read the pixels decoded before them: a local autoregressive decoder.

A factorised p(x|z) must put every correlation between pixels into z, and a few dozen latents cannot
hold the fine detail of a binarised image (where an edge falls, its speckle), so the factorised VAE
pays for it in every pixel. PixelCNN decoders (van den Oord et al. 2016; PixelVAE, Gulrajani et al.
2017) let each pixel also condition on the pixels before it in raster order; even one masked layer
closes much of the gap. Here that context is deliberately small and *additive* so that it costs
almost nothing where users wait:

    p(x|z) = prod_i Bernoulli(x_i | sigmoid(a_i(z) + h_0i(x_<i) + sum_m b_mi(z) h_mi(x_<i)))

``a`` and ``b_1..b_M`` are the decoder's outputs (``1 + M`` values per pixel), ``h`` a small causal
function of the image itself: a ``k x k`` convolution masked to the pixels above and to the left
(PixelCNN's type-A mask), by default linear, or with ``hidden`` ELU units per pixel between that
convolution and a 1x1 read-out (still causal: the read-out mixes values at the same pixel only,
each of which read earlier pixels only). h reads x, not z: importance sampling draws K latents per
image but computes h once per image, and the K decodes only add ``M`` products per pixel. The log
probability stays exact (one pass, every pixel's context is observed data); drawing an image is
sequential, pixel by pixel.

Channels are modelled each in its own raster order (a grouped convolution): a pixel of channel c reads
earlier pixels of channel c only, a valid factorisation for any number of channels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import constraints

# The context's size, fixed so that it stays cheap: the causal window of a 7x7 kernel holds 24 earlier
# pixels (three rows above, three to the left), and M = 2 latent-modulated terms. h is linear in the
# window unless ``hidden`` is set: on the MLP VAE a hidden layer of 16 units bought 1 nat of bound after
# 8 epochs for 1.7x the epoch time; on the conv HVAE 32 units bought 0.30 nats of likelihood at the
# protocol (115 epochs) for ~1.2x (BENCHMARKS.md), since there the rest of the decoder dominates the step.
CONTEXT_KERNEL = 7
CONTEXT_GATES = 2


def causal_mask(kernel: int) -> torch.Tensor:
    """``[kernel, kernel]``: 1 at the offsets before the centre in raster order (rows above; left in its row)."""
    mask = torch.ones(kernel, kernel)
    mask[kernel // 2, kernel // 2:] = 0
    mask[kernel // 2 + 1:, :] = 0
    return mask


def combine(params: torch.Tensor, h: torch.Tensor, axis: int) -> torch.Tensor:
    """The logit a + h_0 + sum_m b_m h_m, for the decoder's terms ``[a | b_1..b_M]`` and the context's ``[h_0..h_M]``
    laid out along ``axis``: the one formula both scoring (every pixel at once) and drawing (one pixel) use."""
    a, b = params.select(axis, 0), params.narrow(axis, 1, params.shape[axis] - 1)
    return a + h.select(axis, 0) + (b * h.narrow(axis, 1, h.shape[axis] - 1)).sum(axis)


class CausalContext(nn.Module):
    """h(x): ``[..., C, H, W]`` -> ``[..., 1 + M, C, H, W]``, each value a function of earlier pixels of its channel.

    ``hidden = 0``: the masked window's linear function. ``hidden > 0``: ``hidden`` ELU units per pixel and
    channel read the window, and a 1x1 read-out turns them into the ``1 + M`` values (a one-hidden-layer
    network on the window, what PixelCNN's first layers compute, without their depth).
    """

    def __init__(self, channels: int, kernel: int = CONTEXT_KERNEL, gates: int = CONTEXT_GATES, hidden: int = 0) -> None:
        super().__init__()
        self.channels, self.outputs, self.hidden = channels, 1 + gates, hidden
        self.window = nn.Conv2d(channels, channels * (hidden or self.outputs), kernel, padding=kernel // 2,
                                groups=channels)
        self.readout = nn.Conv2d(channels * hidden, channels * self.outputs, 1, groups=channels) if hidden else None
        self.register_buffer("mask", causal_mask(kernel), persistent=False)
        with torch.no_grad():  # h_0 starts at 0: the model starts as the factorised Bernoulli it extends
            last = self.readout if hidden else self.window
            last.weight.view(channels, self.outputs, -1)[:, 0].zero_()
            last.bias.view(channels, self.outputs)[:, 0].zero_()
            if not hidden:  # the linear context starts with no bias at all (the gates' too), as it always has
                self.window.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead, image = x.shape[:-3], x.shape[-3:]
        flat = x.reshape(-1, *image).to(self.window.weight.dtype)
        h = F.conv2d(flat, self.window.weight * self.mask, self.window.bias, padding=self.window.padding,
                     groups=self.channels)  # [N, C * width, H, W], channel-major
        if self.readout is not None:
            h = self.readout(F.elu(h))
        return h.view(*lead, self.channels, self.outputs, *image[1:]).transpose(-4, -3)

    def at_pixel(self, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
        """h at one pixel, as a function of its ``k x k`` window of the zero-padded image ``[..., C, k, k]``
        (what the convolution sees there) -> ``[..., 1 + M, C]`` in ``dtype``; the weights are prepared
        once here, not at each of the H x W pixels a drawing visits."""
        kernel = self.window.kernel_size[0]
        weight = (self.window.weight * self.mask).view(self.channels, -1, kernel, kernel).to(dtype)
        bias = self.window.bias.view(self.channels, -1).T.to(dtype)
        if self.readout is None:
            return lambda window: torch.einsum("...ckl,cokl->...oc", window, weight) + bias
        readout = self.readout.weight.view(self.channels, self.outputs, self.hidden).to(dtype)
        readout_bias = self.readout.bias.view(self.channels, self.outputs).T.to(dtype)
        return lambda window: torch.einsum(
            "...jc,coj->...oc", F.elu(torch.einsum("...ckl,cokl->...oc", window, weight) + bias), readout) + readout_bias


class LocalAutoregressiveBernoulli(torch.distributions.Distribution):
    """p(x|z) above for decoder outputs ``params: [..., (1 + M) C, H, W]`` laid out ``[a | b_1 | ... | b_M]``."""

    arg_constraints: dict = {}
    support = constraints.boolean
    has_rsample = False

    def __init__(self, params: torch.Tensor, context: CausalContext) -> None:
        self.context = context
        self.params = params.unflatten(-3, (context.outputs, context.channels))  # [..., 1 + M, C, H, W]
        super().__init__(params.shape[:-3], self.params.shape[-3:], validate_args=False)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each pixel's logit given its earlier pixels in ``x`` (which broadcasts against the batch)."""
        return combine(self.params, self.context(x).to(self.params.dtype), axis=-4)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """Exact: each pixel's context is the observed data, so it is the factorised Bernoulli at these logits
        (the same two reductions as ``likelihoods.BernoulliLikelihood``, which imports this module)."""
        logits = self.logits(value)
        return (value * logits).sum((-3, -2, -1)) - F.softplus(logits).sum((-3, -2, -1))

    @property
    def mean(self) -> torch.Tensor:
        """Not tractable for an autoregressive model; what pictures show instead: each pixel's probability
        along the greedy path (every earlier pixel set to its likelier value). Deterministic."""
        return self._decode(lambda p: (p > 0.5).to(p.dtype))[1]

    def sample(self, sample_shape=torch.Size(), generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral draws, pixel by pixel in raster order: ``[*sample_shape, *batch, C, H, W]``."""
        expanded = self.expand(torch.Size(sample_shape) + self.batch_shape)
        return expanded._decode(lambda p: torch.bernoulli(p, generator=generator))[0]

    def expand(self, batch_shape, _instance=None) -> LocalAutoregressiveBernoulli:
        shape = torch.Size(batch_shape) + self.params.shape[-4:]
        return LocalAutoregressiveBernoulli(self.params.expand(shape).flatten(-4, -3), self.context)

    @torch.no_grad()
    def _decode(self, choose) -> tuple[torch.Tensor, torch.Tensor]:
        """Fill x in raster order with ``choose(probability)``; returns x and the probabilities used.

        Each step computes the context at one pixel only, from its ``k x k`` window of the zero-padded image
        (what the convolution sees there), so decoding costs O(H W k^2) rather than a whole convolution per pixel.
        """
        shape = self.batch_shape + self.event_shape
        kernel, pad = self.context.window.kernel_size[0], self.context.window.padding[0]
        context_at = self.context.at_pixel(self.params.dtype)
        padded = self.params.new_zeros(*shape[:-2], shape[-2] + 2 * pad, shape[-1] + 2 * pad)
        probs = self.params.new_zeros(shape)
        for row in range(shape[-2]):
            for col in range(shape[-1]):
                window = padded[..., row:row + kernel, col:col + kernel]  # [..., C, k, k], centred on the pixel
                h = context_at(window)  # [..., 1 + M, C]
                pixel = self.params[..., :, :, row, col]  # [..., 1 + M, C]: a, b_1..b_M
                p = torch.sigmoid(combine(pixel, h, axis=-2))
                probs[..., row, col] = p
                padded[..., row + pad, col + pad] = choose(p)
        return padded[..., pad:pad + shape[-2], pad:pad + shape[-1]], probs
