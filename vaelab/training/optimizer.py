"""The optimizer of a training run: Adam, and the upkeep of its moment estimates.

Weights whose gradients are zero or nearly so (the networks of inactive latent units, a dead ReLU's
inputs) see Adam's moments decay geometrically: m by 0.9 and v by 0.999 a step. Within tens of
epochs millions of them sit in float32's subnormal range (below 1.2e-38), which x86 CPUs compute on a
slow microcode path: a conv HVAE resumed after 214 epochs held 3.9 M subnormal moments among 6.9 M and
its steps took 1.8x as long as with those values flushed (BENCHMARKS.md, training speed). Once an epoch
they are set to zero, a change far below anything Adam's update can resolve (its eps is 1e-8).
"""

from __future__ import annotations

import torch


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam, as the fused single kernel where this torch supports it on the model's device."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


@torch.no_grad()
def flush_subnormal_moments(optimizer: torch.optim.Optimizer) -> int:
    """Set the optimizer's floating-point state tensors' subnormal values to zero; how many there were."""
    flushed = 0
    for state in optimizer.state.values():
        for name, value in state.items():
            if name == "step" or not torch.is_tensor(value) or not value.is_floating_point():
                continue
            tiny = value.abs() < torch.finfo(value.dtype).tiny
            tiny &= value != 0
            flushed += int(tiny.sum())
            value.masked_fill_(tiny, 0.0)
    return flushed
