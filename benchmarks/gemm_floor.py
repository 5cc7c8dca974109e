"""The fp32 GEMM floor of one training epoch: the matrix products of an MLP VAE, timed back to back.

A training step of an MLP VAE is, at its core, three matrix products per ``nn.Linear``: the forward
product X W^T, the input gradient dY W (not needed for the first layer, whose input is data) and the
weight gradient dY^T X (a transposed operand, which BLAS runs slower). Everything else (activations,
the loss, Adam) is overhead on top. This script times exactly those products, with the shapes and
memory layouts autograd uses, on this machine and thread count, and multiplies by the steps of an
epoch: no implementation of the same model can be faster than that in fp32.

Back to back, every product finds its operands hot in cache. A training loop cannot: each step reads
a fresh batch, feeds each product the previous one's output, and must then update every weight (the
optimizer reads and writes the parameters, gradients and its moments, which evicts the weights from
the caches). :func:`loop_seconds_per_step` times that least any loop must do: the same products in
step order on shuffled batches of a data tensor, with and without one fused Adam update of a
parameter vector of the model's size; no activations, loss or autograd.

    python benchmarks/gemm_floor.py [--batch 128] [--examples 55000]
"""

from __future__ import annotations

import argparse
import math
import time
from functools import partial

import torch

from products_floor import best_seconds

CLASSIC_LAYERS = ((784, 400), (400, 40), (20, 400), (400, 784))  # encoder then decoder (in, out)


def _time(fn) -> float:
    """Seconds per call of a small product: many calls per round, after a warm-up."""
    return best_seconds(fn, repeats=200, rounds=5, warmup=20)


def gemm_seconds_per_step(batch: int, layers: tuple[tuple[int, int], ...] = CLASSIC_LAYERS) -> dict[str, float]:
    """Seconds of the forward, input-gradient and weight-gradient products of one step, per kind."""
    totals = {"forward": 0.0, "input_grad": 0.0, "weight_grad": 0.0}
    for index, (n_in, n_out) in enumerate(layers):
        x = torch.randn(batch, n_in)
        w = torch.randn(n_out, n_in)
        b = torch.randn(n_out)
        dy = torch.randn(batch, n_out)
        totals["forward"] += _time(partial(torch.addmm, b, x, w.t()))
        if index != 0:  # the first encoder layer reads the data: no gradient for its input
            totals["input_grad"] += _time(partial(torch.mm, dy, w))
        totals["weight_grad"] += _time(partial(torch.mm, dy.t(), x))
    return totals


def loop_seconds_per_step(batch: int, examples: int, layers: tuple[tuple[int, int], ...] = CLASSIC_LAYERS,
                          rounds: int = 3) -> dict[str, float]:
    """Seconds per step of the bare minimum of a training loop: {"gemms": the products in step order,
    "gemms_adam": the same plus a fused Adam update}; each the best of ``rounds`` passes over the data."""
    data = torch.rand(examples, layers[0][0])
    weights = [torch.randn(n_out, n_in) * 0.01 for n_in, n_out in layers]
    biases = [torch.zeros(n_out) for _, n_out in layers]
    flat = torch.nn.Parameter(torch.zeros(sum(w.numel() + b.numel() for w, b in zip(weights, biases))))
    flat.grad = torch.randn_like(flat) * 1e-3
    adam = torch.optim.Adam([flat], lr=1e-3, fused=True)
    latent = layers[2][0]

    def step(x: torch.Tensor) -> None:  # forward, then backward from the output layer down; no gradient for x
        h1 = torch.addmm(biases[0], x, weights[0].t())
        e = torch.addmm(biases[1], h1, weights[1].t())
        z = e[:, :latent]
        h3 = torch.addmm(biases[2], z, weights[2].t())
        out = torch.addmm(biases[3], h3, weights[3].t())
        torch.mm(out.t(), h3)
        dh3 = torch.mm(out, weights[3])
        torch.mm(dh3.t(), z)
        dz = torch.mm(dh3, weights[2])
        de = torch.cat((dz, dz), 1)
        torch.mm(de.t(), h1)
        torch.mm(torch.mm(de, weights[1]).t(), x)

    result = {}
    for name, with_adam in (("gemms", False), ("gemms_adam", True)):
        best = math.inf
        for _ in range(rounds):
            order = torch.randperm(examples)
            started = time.perf_counter()
            steps = 0
            for start in range(0, examples - batch + 1, batch):
                step(data[order[start : start + batch]])
                if with_adam:
                    adam.step()
                steps += 1
            best = min(best, (time.perf_counter() - started) / steps)
        result[name] = best
    return result


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
    loop = loop_seconds_per_step(args.batch, args.examples)
    for name, seconds in loop.items():
        print(f"in a loop, {name}: {seconds * steps:.2f} s/epoch ({seconds * steps / floor:.2f}x the floor)")


if __name__ == "__main__":
    main()
