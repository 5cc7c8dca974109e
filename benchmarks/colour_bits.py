"""Test bits/dim of vaelab models on the generated ``shapes`` dataset beside PNG and lossless WebP.

Every figure is computed on the same test images in this run: the models' negative log-likelihood
(importance-weighted bound with ``--iw-samples`` K, default 100: a small K, so the model's figure is an
upper bound a larger K would lower a little) in bits per sub-pixel, and the bytes of each test image
stored as its own PNG or lossless WebP file (``vaelab/evaluation/codecs.py``). Ratios < 1 mean the
model codes the images in fewer bits than the codec.

    OMP_NUM_THREADS=1 python benchmarks/colour_bits.py --epochs 10
    OMP_NUM_THREADS=1 python benchmarks/colour_bits.py --epochs 2 --test-images 200   # a quick check
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

import vaelab
from vaelab.data.datasets import load_dataset
from vaelab.evaluation.codecs import png_bits_per_dim, webp_bits_per_dim

MODELS = {  # name -> settings for vaelab.train
    "resnet, dlogistic-mix M=5": {"arch": "resnet", "likelihood": "dlogistic-mix", "mixture_components": 5},
    "conv, dlogistic": {"arch": "conv", "likelihood": "dlogistic"},
    "conv, bernoulli": {"arch": "conv", "likelihood": "bernoulli"},
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--iw-samples", type=int, default=100, help="K of the importance-weighted NLL (default 100)")
    parser.add_argument("--test-images", type=int, default=1000, help="the first N test images (at most 1000)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    args = parser.parse_args(argv)

    test = load_dataset("shapes").test
    x = test.x[: args.test_images]
    images = np.round(x.numpy() * 255).astype(np.uint8)  # [N, 3, 32, 32], exactly the stored levels
    rows = [("PNG (one file per image)", png_bits_per_dim(images), None), ("WebP lossless", webp_bits_per_dim(images), None)]
    png = rows[0][1]
    with tempfile.TemporaryDirectory() as runs:
        for name in args.models:
            started = time.perf_counter()
            run = vaelab.train(dataset="shapes", epochs=args.epochs, batch_size=args.batch_size,
                               channels=tuple(args.channels), hidden=(256,), latent_dim=args.latent_dim,
                               out=f"{runs}/{len(rows)}", progress=False, **MODELS[name])
            result = vaelab.evaluate(run.model, x, iw_samples=args.iw_samples)
            seconds = time.perf_counter() - started
            rows.append((f"vaelab {name}, {args.epochs} epochs", result["bits_per_dim"], seconds))

    print(f"shapes test set: {len(x)} images 3x32x32; model NLL = IW bound with K = {args.iw_samples}")
    print(f"{'coder':<46} {'bits/dim':>9} {'/ PNG':>7} {'/ WebP':>7} {'seconds':>8}")
    webp = rows[1][1]
    for name, bits, seconds in rows:
        print(f"{name:<46} {bits:>9.4f} {bits / png:>7.3f} {bits / webp:>7.3f} {'' if seconds is None else f'{seconds:8.0f}':>8}")


if __name__ == "__main__":
    main()
