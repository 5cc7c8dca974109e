"""A mixture prior's log p(z) at evaluation's sizes: in one pass over all rows against blocks of rows.

The evaluator scores ~40,000 samples per chunk (256 images x the samples that fit its memory
bound), so a VampPrior's log-density makes a [40,000, 500] float64 product and then passes over it
(cast, max, shift, exp, sum): ~170 MB streamed through memory per pass in one piece, a few MB that
stay in cache when taken in blocks of rows. Same values either way (each row is independent); this
times both in one run.

    python benchmarks/mixture_blocks.py [--rows 40000] [--components 500] [--dim 40]
"""

from __future__ import annotations

import argparse

import torch

from products_floor import best_seconds
from vaelab.models import latents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000, help="samples scored at once (an evaluation chunk)")
    parser.add_argument("--components", type=int, default=500)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--blocks", type=int, nargs="+", default=[256, 1024, 4096])
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(args.components, generator=g)
    loc = torch.randn(args.components, args.dim, generator=g)
    scale = 0.1 + torch.rand(args.components, args.dim, generator=g)
    z = torch.randn(args.rows, args.dim, generator=g)
    mixture = latents.diagonal_gaussian_mixture(logits, loc, scale)
    chosen = latents._MIXTURE_BLOCK_ROWS
    timings, values = {}, {}
    with torch.inference_mode():
        for rows in [args.rows, *args.blocks]:
            latents._MIXTURE_BLOCK_ROWS = rows
            values[rows] = mixture.log_prob(z)
            timings[rows] = best_seconds(lambda: mixture.log_prob(z), repeats=3, rounds=3)
    latents._MIXTURE_BLOCK_ROWS = chosen
    print(f"log p(z) of {args.rows} samples, {args.components} components, {args.dim} dims; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; vaelab's block: {chosen} rows")
    print("| rows per block | ms | speed-up over one pass | largest difference |")
    print("|---|---|---|---|")
    for rows, seconds in timings.items():
        label = f"{rows} (one pass)" if rows == args.rows else str(rows)
        difference = (values[rows] - values[args.rows]).abs().max().item()
        print(f"| {label} | {1e3 * seconds:.1f} | {timings[args.rows] / seconds:.2f}x | {difference:.1e} |")


if __name__ == "__main__":
    main()
