"""Training steps with Adam's moments as a checkpoint holds them against the same moments flushed.

Moments of weights that get no gradient decay into float32's subnormal range, where x86 CPUs take a
slow path. vaelab now zeroes them once an epoch (``vaelab/training/optimizer.py``); a checkpoint
written before that holds them, and so did every long run's optimizer in memory. This loads RUN's
training state, counts its subnormal moments and times, alternating, steps of batch ``--batch-size``
from the moments as loaded and from a flushed copy.

    python benchmarks/subnormal_moments.py RUN [--steps 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch

import vaelab
from vaelab import rundir
from vaelab.bounds.estimator import bound_terms, standard_noise
from vaelab.data.pipeline import load_data
from vaelab.training.optimizer import flush_subnormal_moments, make_optimizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory with a training_state.safetensors")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()

    run = vaelab.load(args.run)
    state = rundir.load_training_state(Path(args.run))
    x = load_data(run.config).train.x[: args.batch_size].to(run.model.device)
    models, optimizers = {}, {}
    for label in ("as loaded", "flushed"):
        models[label] = copy.deepcopy(run.model).train()
        optimizers[label] = make_optimizer(models[label], state.optimizer["param_groups"][0]["lr"])
        optimizers[label].load_state_dict(copy.deepcopy(state.optimizer))
    flushed = flush_subnormal_moments(optimizers["flushed"])
    total = sum(v.numel() for s in optimizers["flushed"].state.values() for k, v in s.items() if k != "step")

    def steps(label: str) -> float:
        model, optimizer = models[label], optimizers[label]
        started = time.perf_counter()
        for _ in range(args.steps):
            loss = -bound_terms(model, x, None, standard_noise(model, x.shape[0])).log_weights.mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - started) / args.steps

    best = {label: float("inf") for label in models}
    for _ in range(args.rounds):
        for label in models:
            best[label] = min(best[label], steps(label))
    print(f"{args.run}: {flushed:,} of {total:,} moment values subnormal; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, batch {args.batch_size}")
    print(f"ms per step: as loaded {1e3 * best['as loaded']:.1f}, flushed {1e3 * best['flushed']:.1f} "
          f"({best['as loaded'] / best['flushed']:.2f}x)")


if __name__ == "__main__":
    main()
