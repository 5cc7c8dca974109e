"""torch.compile of the networks against eager, the classic model, in one process.

Two copies of the 784-400-20 model train on the same 120 batches of 128 random images; epochs
alternate between them after one warm-up epoch each (which includes compiling), and the milliseconds
per step of every timed epoch are printed, so machine noise hits both alike.

    python benchmarks/compile_speed.py [--epochs 4]
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from vaelab.config import ModelConfig, TrainConfig
from vaelab.training.epoch import TrainingData, objective_schedule, train_epoch
from vaelab.models.vae import VAE
from vaelab.training.optimizer import make_optimizer

STEPS = 120


def _model(compiled: bool) -> tuple[VAE, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = VAE(ModelConfig(hidden=(400,), latent_dim=20, input_shape=(1, 28, 28)))
    if compiled:
        for network in model.children():
            network.compile()
    return model, make_optimizer(model, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    x = torch.rand(128 * STEPS, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    data = TrainingData(x=x, c=None, dynamic_binarize=False, label_weight=0.0)
    schedule, bar = objective_schedule(TrainConfig()), tqdm(disable=True)
    runs = {"eager": _model(False), "compiled": _model(True)}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for epoch in range(args.epochs + 1):
        for name, (model, optimizer) in runs.items():
            started = time.perf_counter()
            train_epoch(model, optimizer, data, 128, torch.Generator().manual_seed(0), schedule, 1, None, bar)
            if epoch > 0:  # epoch 0 warms up (and compiles)
                times[name].append((time.perf_counter() - started) / STEPS * 1e3)
    for name, values in times.items():
        print(f"{name}: ms/step {' '.join(f'{v:.2f}' for v in values)}")


if __name__ == "__main__":
    main()
