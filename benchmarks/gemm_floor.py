"""The fp32 GEMM floor of one training epoch: the matrix products of an MLP VAE, timed back to back.

A training step of an MLP VAE is, at its core, three matrix products per ``nn.Linear``: the forward
product X W^T, the input gradient dY W (not needed for the first layer, whose input is data) and the
weight gradient dY^T X (a transposed operand, which BLAS runs slower). Everything else (activations,
the loss, Adam) is overhead on top. This script times exactly those products, with the shapes and
memory layouts autograd uses, on this machine and thread count, and multiplies by the steps of an
epoch: no implementation of the same model can be faster than that in fp32.

    python benchmarks/gemm_floor.py [--batch 128] [--examples 55000]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

CLASSIC_LAYERS = ((784, 400), (400, 40), (20, 400), (400, 784))  # encoder then decoder (in, out)


def _time(fn, repeats: int = 200, rounds: int = 5) -> float:
    """Seconds per call: the best, over ``rounds`` rounds, of the mean of ``repeats`` back-to-back calls."""
    for _ in range(20):
        fn()
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def gemm_seconds_per_step(batch: int, layers: tuple[tuple[int, int], ...] = CLASSIC_LAYERS) -> dict[str, float]:
    """Seconds of the forward, input-gradient and weight-gradient products of one step, per kind."""
    totals = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0}
    for index, (n_in, n_out) in enumerate(layers):
        x = torch.randn(batch, n_in)
        w = torch.randn(n_out, n_in)
        b = torch.randn(n_out)
        dy = torch.randn(batch, n_out)
        totals["forward"] += _time(lambda: torch.addmm(b, x, w.t()))
        if index != 0:  # the first encoder layer reads the data: no gradient for its input
            totals["input_grad"] += _time(lambda: torch.mm(dy, w))
        totals["weight_grad"] += _time(lambda: torch.mm(dy.t(), x))
    return totals


def epoch_floor(batch: int, examples: int, layers: tuple[tuple[int, int], ...] = CLASSIC_LAYERS) -> tuple[float, dict[str, float]]:
    """(seconds per epoch of GEMMs alone, the per-step split by kind)."""
    parts = gemm_seconds_per_step(batch, layers)
    return sum(parts.values()) * math.ceil(examples / batch), parts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--examples", type=int, default=55000)
    args = parser.parse_args()
    floor, parts = epoch_floor(args.batch, args.examples)
    steps = math.ceil(args.examples / args.batch)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {steps} steps")
    for kind, seconds in parts.items():
        print(f"  {kind:<12} {seconds * 1e3:.3f} ms/step")
    print(f"GEMM floor: {floor:.2f} s/epoch")


if __name__ == "__main__":
    main()
