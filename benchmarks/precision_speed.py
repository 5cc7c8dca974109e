"""Training steps in bfloat16 autocast (``--precision bf16``) against float32, in one process.

On a CPU with native bfloat16 (AVX512-BF16, AMX) oneDNN runs the networks' products in bf16 while
the likelihood and the latent densities stay in fp32; without it bf16 is emulated and slow (vaelab
warns). Two copies of a model, same initial weights, train on the same batches of random binary
images; epochs of ``--steps`` steps alternate between them after one warm-up epoch each, and the
milliseconds per step of every timed epoch are printed with the ratio of the medians, so machine noise
hits both alike.

    python benchmarks/precision_speed.py [--model conv-hvae|hvae-vamp|vae] [--epochs 3] [--steps 40]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from tqdm import tqdm

from vaelab.config import ModelConfig, TrainConfig
from vaelab.models.vae import VAE
from vaelab.training.epoch import BatchObjective, TrainingData, objective_schedule, train_epoch
from vaelab.training.optimizer import make_optimizer

# The zoo's models (benchmarks/zoo.sh), each with its batch size.
MODELS: dict[str, tuple[dict, int]] = {
    "conv-hvae": ({"arch": "conv", "channels": (32, 64), "hidden": (300,), "stochastic_layers": 2, "hierarchy": "hvae"}, 100),
    "hvae-vamp": ({"arch": "gated", "hidden": (300, 300), "stochastic_layers": 2, "hierarchy": "hvae", "prior": "vamp:500"}, 200),
    "vae": ({"arch": "gated", "hidden": (300, 300)}, 100),
}


def _model(overrides: dict) -> tuple[VAE, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent_dim=40, likelihood="bernoulli", input_shape=(1, 28, 28), **overrides))
    return model, make_optimizer(model, 1e-3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="conv-hvae")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of each (after one warm-up)")
    parser.add_argument("--steps", type=int, default=40, help="steps per epoch")
    args = parser.parse_args()
    if min(args.epochs, args.steps) < 1:
        parser.error("--epochs and --steps must be >= 1")
    overrides, batch = MODELS[args.model]
    x = torch.bernoulli(torch.full((batch * args.steps, 1, 28, 28), 0.3), generator=torch.Generator().manual_seed(0))
    data = TrainingData(x=x, c=None, dynamic_binarize=False, label_weight=0.0)
    schedule, bar = objective_schedule(TrainConfig()), tqdm(disable=True)
    runs = {precision: _model(overrides) for precision in ("fp32", "bf16")}
    steps = {precision: BatchObjective(model, data, precision) for precision, (model, _) in runs.items()}
    times: dict[str, list[float]] = {precision: [] for precision in runs}
    losses: dict[str, float] = {}
    for epoch in range(args.epochs + 1):
        for precision, (model, optimizer) in runs.items():
            started = time.perf_counter()
            metrics = train_epoch(model, optimizer, data, batch, torch.Generator().manual_seed(epoch), schedule, 1, None,
                                  bar, batch_objective=steps[precision])
            if epoch > 0:  # epoch 0 warms up
                times[precision].append((time.perf_counter() - started) / args.steps * 1e3)
            losses[precision] = metrics["negative_elbo"]
    native = torch.ops.mkldnn._is_mkldnn_bf16_supported()
    print(f"{args.model}, batch {batch}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"native bfloat16: {'yes' if native else 'no (emulated)'}")
    for precision, values in times.items():
        print(f"{precision}: ms/step {' '.join(f'{v:.1f}' for v in values)}; train -ELBO of the last epoch {losses[precision]:.2f}")
    print(f"bf16 speed-up (median fp32 / median bf16): {statistics.median(times['fp32']) / statistics.median(times['bf16']):.2f}x")


if __name__ == "__main__":
    main()
