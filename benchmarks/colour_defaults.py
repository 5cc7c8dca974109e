"""What a new user gets from ``vaelab train --dataset FOLDER`` on colour images, epoch by epoch.

Issue 14's experiment, re-runnable: a folder of 3,000 32x32 RGB shapes in class sub-folders (flat
colours on black, ``vaelab/data/shapes.py``), trained with vaelab's defaults (architecture, likelihood
chosen from the data, epochs, batch size, learning rate); ``--epochs`` and ``--arch`` set one
each, to see what more or fewer epochs and another architecture give. After every epoch the model reconstructs 600 images it never saw and the
script prints:

- **colour error**: mean |reconstructed - true| object colour over each object's mask, in [0, 1],
  beside predicting the grey of each colour (what a colour-blind model does);
- **shape IoU**: intersection over union of the true object mask and the reconstructed one (pixels
  whose brightest channel exceeds 0.5), beside the IoU of a blob: the mask of the mean object;
- **shape accuracy**: the fraction of reconstructions whose drawn mask's nearest neighbour (Hamming
  distance) in a bank of 30,000 other generated masks has the right shape (circle, square or
  triangle): blobs in the right place score near chance (1/3), sharp corners and tips near the
  accuracy of the true masks themselves, printed as the ceiling;
- **pixel error**: mean |reconstruction - image| over all sub-pixels (a blurry edge costs here).

    OMP_NUM_THREADS=1 python benchmarks/colour_defaults.py
    OMP_NUM_THREADS=1 python benchmarks/colour_defaults.py --epochs 10 --arch resnet --picture resnet.png
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

import vaelab
from vaelab.data.shapes import ShapesData, make_shapes, write_shapes_folder
from vaelab.training.callbacks import Callback
from vaelab.views.images import reconstruction_grid, save_image

UNSEEN_SEED = 99  # the training folder uses seed 0; these images are drawn apart from it
BANK_SEED, BANK_SIZE = 7, 30_000  # the masks that name a drawn mask's shape


class ShapeNamer:
    """Names the shape of a binary mask by its nearest neighbour among many generated masks."""

    def __init__(self, size: int) -> None:
        bank = make_shapes(BANK_SIZE, size=size, seed=BANK_SEED)
        self.masks = torch.from_numpy(bank.masks).reshape(BANK_SIZE, -1).float()
        self.labels = torch.from_numpy(bank.labels)

    def __call__(self, masks: torch.Tensor) -> torch.Tensor:
        """``masks: [N, S, S]`` bool -> shape labels ``[N]``."""
        m = masks.reshape(len(masks), -1).float()
        # Hamming distance = |a| + |b| - 2 a.b, as one product against the whole bank
        distance = m.sum(1, keepdim=True) + self.masks.sum(1) - 2 * m @ self.masks.T
        return self.labels[distance.argmin(1)]


def mean_iou(drawn: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean intersection over union of ``drawn`` (``[N, S, S]`` or one ``[S, S]`` for all) and ``masks: [N, S, S]``."""
    union = (drawn | masks).sum((1, 2)).clamp_min(1)
    return ((drawn & masks).sum((1, 2)) / union).mean().item()


def reconstruction_scores(model: torch.nn.Module, data: ShapesData, namer: ShapeNamer) -> dict[str, float]:
    """Colour error, shape IoU, shape accuracy and pixel error of the model's reconstructions of ``data``."""
    x = torch.from_numpy(data.images).float() / 255
    masks = torch.from_numpy(data.masks)
    with torch.inference_mode():
        reconstruction = model.reconstruct(x)
    weights = masks[:, None].float()
    colour = (reconstruction * weights).sum((2, 3)) / weights.sum((2, 3))
    truth = torch.from_numpy(data.rgb).float() / 255
    drawn = reconstruction.amax(1) > 0.5
    return {
        "colour_error": (colour - truth).abs().mean().item(),
        "shape_iou": mean_iou(drawn, masks),
        "shape_accuracy": (namer(drawn) == torch.from_numpy(data.labels)).float().mean().item(),
        "pixel_error": (reconstruction - x).abs().mean().item(),
    }


def baselines(data: ShapesData, namer: ShapeNamer) -> dict[str, float]:
    """The colour error of predicting grey, the IoU of the mean object's mask (a centred blob), and the
    shape accuracy of the true masks (the most a reconstruction can score)."""
    truth = torch.from_numpy(data.rgb).float() / 255
    masks = torch.from_numpy(data.masks)
    blob = masks.float().mean(0) > 0.5
    return {
        "colour_error": (truth.mean(1, keepdim=True) - truth).abs().mean().item(),
        "shape_iou": mean_iou(blob, masks),
        "shape_accuracy": (namer(masks) == torch.from_numpy(data.labels)).float().mean().item(),
    }


class ScoreEveryEpoch(Callback):
    """Prints the reconstruction scores on the unseen images after each epoch, with the time so far."""

    def __init__(self, data: ShapesData, namer: ShapeNamer) -> None:
        self.data = data
        self.namer = namer
        self.started = time.perf_counter()
        self.rows: list[dict[str, Any]] = []

    def on_epoch(self, epoch: int, record: dict[str, Any], model: torch.nn.Module) -> None:
        was_training = model.training
        model.eval()
        scores = reconstruction_scores(model, self.data, self.namer)
        model.train(was_training)
        row = {"epoch": epoch, "seconds": time.perf_counter() - self.started, **scores}
        self.rows.append(row)
        print(f"{epoch:>5} {row['seconds']:>8.0f} {scores['colour_error']:>12.3f} {scores['shape_iou']:>9.3f} "
              f"{scores['shape_accuracy']:>14.3f} {scores['pixel_error']:>11.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="default: vaelab's (3,000 steps here)")
    parser.add_argument("--arch", default=None, help="an architecture other than the default (e.g. resnet)")
    parser.add_argument("--likelihood", default=None,
                        help="a likelihood other than auto's (e.g. dlogistic-mix, what auto picks for 8-bit photos)")
    parser.add_argument("--images", type=int, default=3000, help="training folder size (default 3,000)")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (default 32)")
    parser.add_argument("--picture", type=Path, help="write the last epoch's reconstructions of 32 unseen images here")
    args = parser.parse_args(argv)

    unseen = make_shapes(600, size=args.size, seed=UNSEEN_SEED)
    namer = ShapeNamer(args.size)
    floor = baselines(unseen, namer)
    settings = {name: value for name, value in (("arch", args.arch), ("likelihood", args.likelihood)) if value is not None}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shapes"
        write_shapes_folder(folder, args.images, size=args.size, seed=0)
        print(f"{args.images} {args.size}x{args.size} RGB shapes in class folders; vaelab defaults"
              f"{''.join(f' --{k} {v}' for k, v in settings.items())}; 600 unseen images")
        print(f"grey colour error {floor['colour_error']:.3f}; IoU of a centred blob {floor['shape_iou']:.3f}; "
              f"shape accuracy of the true masks {floor['shape_accuracy']:.3f} (chance 0.333)")
        print(f"{'epoch':>5} {'seconds':>8} {'colour error':>12} {'shape IoU':>9} {'shape accuracy':>14} {'pixel error':>11}")
        run = vaelab.train(dataset=str(folder), epochs=args.epochs, out=Path(tmp) / "run", progress=False,
                           callbacks=[ScoreEveryEpoch(unseen, namer)], **settings)
        print(f"model: arch {run.config.model.arch}, likelihood {run.config.model.likelihood}, "
              f"latent {run.config.model.latent_dim}, hidden {list(run.config.model.hidden)}")
        if args.picture is not None:
            x = torch.from_numpy(unseen.images[:32]).float() / 255
            with torch.inference_mode():
                save_image(reconstruction_grid(x, run.model.reconstruct(x), scale=3), args.picture)


if __name__ == "__main__":
    main()
