"""Test negative ELBO of the classic VAE after 10 epochs on Fashion-MNIST: vaelab against the
pytorch/examples loop, trained in the same run on the same machine.

vaelab trains through its public API with the classic settings (the same as
``vaelab train --dataset fashion-mnist --arch mlp --hidden 400 --latent-dim 20 --likelihood bernoulli
--binarize none --batch-size 128 --lr 1e-3 --epochs 10``) on 55,000 training images (5,000 are held
out for validation). The tutorial loop trains on all 60,000, as pytorch/examples does. Both are
scored the same way on the official 10,000 test images: binary cross-entropy on intensities plus the
analytic KL, one z sample per image, nats per image (pytorch/examples' own test loss).

    python benchmarks/classic_quality.py [--epochs 10] [--skip-tutorial] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from train_speed import OneImageAtATime, TutorialVAE, tutorial_epoch

import vaelab
from vaelab.data.datasets import load_dataset


@torch.no_grad()
def tutorial_test_loss(model: TutorialVAE, test: torch.Tensor) -> float:
    model.eval()
    total = 0.0
    for batch in test.split(1000):
        recon, mu, logvar = model(batch)
        total += F.binary_cross_entropy(recon, batch.view(-1, 784), reduction="sum").item()
        total += (-0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())).item()
    return total / len(test)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--skip-tutorial", action="store_true", help="only train vaelab's model")
    parser.add_argument("--out", type=Path, help="vaelab run directory (default: a temporary one)")
    args = parser.parse_args()

    out = args.out or Path(tempfile.mkdtemp(prefix="vaelab-classic-")) / "run"
    run = vaelab.train(
        out=out, dataset="fashion-mnist", arch="mlp", hidden=(400,), latent_dim=20, likelihood="bernoulli",
        binarize="none", batch_size=128, lr=1e-3, epochs=args.epochs, seed=0,
    )
    summary = json.loads((run.path / "summary.json").read_text())
    seconds = sum(m["seconds"] for m in run.metrics)
    print(f"vaelab: test -ELBO {summary['test_negative_elbo']:.2f} nats/image (rec {summary['test_rec']:.2f}, "
          f"KL {summary['test_kl']:.2f}) after {args.epochs} epochs, {seconds / args.epochs:.2f} s/epoch; run in {run.path}")

    if not args.skip_tutorial:
        data = load_dataset("fashion-mnist", download=False, val_size=1)
        train_images = torch.cat([data.train.x, data.val.x])  # all 60,000, as pytorch/examples uses
        raw = (train_images.squeeze(1) * 255).round().to(torch.uint8)
        torch.manual_seed(0)
        model = TutorialVAE()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loader = DataLoader(OneImageAtATime(raw), batch_size=128, shuffle=True)
        for _ in range(args.epochs):
            tutorial_epoch(model, optimizer, loader)
        print(f"pytorch/examples loop: test loss {tutorial_test_loss(model, data.test.x):.2f} nats/image after {args.epochs} epochs")


if __name__ == "__main__":
    main()
