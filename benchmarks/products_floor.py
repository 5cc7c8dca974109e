"""The floor of a network: its matrix products and convolutions alone, each timed back to back.

Whatever else a step does (activations, the likelihood's reductions, sampling, the optimizer) is
overhead on top of the products every implementation of the same architecture must compute. This
records, in one forward pass, each ``nn.Linear``/``nn.Conv*`` a network runs and the shape of its
input, then times those products alone with their operands hot in cache: the forward product, and
for training also the input gradient (not for a layer that reads the data, which needs none) and
the weight gradient, through the same kernels PyTorch's autograd calls.

Used by ``evaluate_speed.py`` (the decoder's forward products) and ``train_speed.py`` (a conv
model's forward and backward products).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn

PRODUCTS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d)


def best_seconds(fn: Callable[[], object], repeats: int = 5, rounds: int = 3, warmup: int = 1) -> float:
    """Seconds per call: the best, over ``rounds``, of the mean of ``repeats`` back-to-back calls
    (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    best = math.inf
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(repeats):
            fn()
        best = min(best, (time.perf_counter() - started) / repeats)
    return best


def recorded_products(network: nn.Module, run: Callable[[], object]) -> list[tuple[nn.Module, torch.Tensor]]:
    """Each product module ``network`` runs during ``run()``, with a random input of the shape it saw."""
    seen: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_hook(lambda m, args, _out: seen.append((m, torch.randn_like(args[0]))))
             for m in network.modules() if isinstance(m, PRODUCTS)]
    try:
        with torch.no_grad():
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def products_seconds(products: list[tuple[nn.Module, torch.Tensor]], backward: bool = False,
                     reads_data: frozenset[int] = frozenset()) -> float:
    """Seconds of the recorded products, each timed alone: forward only, or forward plus the input
    and weight gradients (the input gradient skipped for the products at positions ``reads_data``)."""
    total = 0.0
    for index, (module, x) in enumerate(products):
        if not backward:
            with torch.inference_mode():
                total += best_seconds(lambda m=module, x=x: m(x))
            continue
        x = x.detach().requires_grad_(index not in reads_data)
        grad_out = torch.randn_like(module(x))

        def step(m: nn.Module = module, x: torch.Tensor = x, g: torch.Tensor = grad_out) -> None:
            m(x).backward(g)
        total += best_seconds(step)
        module.zero_grad(set_to_none=True)
    return total
