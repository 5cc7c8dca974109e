"""Drawing images from ``--likelihood bernoulli-ar``: the context at one pixel per step against the whole image.

Sampling an autoregressive likelihood is sequential, one pixel after another. Recomputing the whole
image's context (a convolution over H x W pixels) at each of the H x W steps costs O((H W)^2); computing
it at the one pixel being drawn, from its k x k window, costs O(H W k^2). This times both in one run
on the same decoder outputs (the greedy path of ``.mean``, what pictures show) and checks that they agree.

    python benchmarks/ar_decode.py [--images 16] [--sizes 28 64] [--channels 1]
"""

from __future__ import annotations

import argparse
from functools import partial

import torch

from products_floor import best_seconds
from vaelab.models.autoregressive import CONTEXT_GATES, CausalContext, LocalAutoregressiveBernoulli


def whole_image_greedy_probabilities(p: LocalAutoregressiveBernoulli) -> torch.Tensor:
    """The reference for ``p.mean``: the greedy path, each pixel's probability read off the whole-image logits."""
    shape = p.batch_shape + p.event_shape
    x, probs = p.params.new_zeros(shape), p.params.new_zeros(shape)
    for row in range(shape[-2]):
        for col in range(shape[-1]):
            q = torch.sigmoid(p.logits(x)[..., row, col])
            probs[..., row, col] = q
            x[..., row, col] = (q > 0.5).to(q.dtype)
    return probs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[28, 64])
    parser.add_argument("--channels", type=int, default=1)
    args = parser.parse_args()

    print(f"{args.images} images of {args.channels} channel(s), greedy path; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| image | whole image per pixel (s) | one window per pixel (s) | speed-up | largest difference |")
    print("|---|---|---|---|---|")
    for size in args.sizes:
        torch.manual_seed(0)
        context = CausalContext(args.channels)
        for parameter in context.parameters():
            torch.nn.init.normal_(parameter, std=0.3)
        params = torch.randn(args.images, (1 + CONTEXT_GATES) * args.channels, size, size)
        p = LocalAutoregressiveBernoulli(params, context)
        with torch.inference_mode():
            difference = (whole_image_greedy_probabilities(p) - p.mean).abs().max().item()
            slow = best_seconds(partial(whole_image_greedy_probabilities, p), repeats=1, rounds=2, warmup=0)
            fast = best_seconds(partial(getattr, p, "mean"), repeats=1, rounds=2, warmup=0)
        print(f"| {size}x{size} | {slow:.2f} | {fast:.2f} | {slow / fast:.1f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
