"""Conv VAE widths on binarised Fashion-MNIST: the likelihood each reaches and what its evaluation costs.

Evaluating a conv model at K = 5000 on all 10,000 test images is 5 x 10^7 decoder passes, and the
decoder's products are already the work (``evaluate_speed.py``: the transposed convolutions run at
matrix-product speed), so the evaluation time is set by the decoder's multiply-adds per sample. This
script trains the conv model at each ``--widths`` (channels of its two stride-2 convolutions, the
dense layer sized to match) with the same data, seed and epochs, evaluates each on the same test
images, and prints, in one run: the decoder's multiply-adds per
sample, the NLL (and the image-by-image difference from the first width's), and the projected time
of the full protocol (K = 5000, 10,000 images) on this machine from the measured speed of the
importance-weighted pass (``vaelab.evaluate``'s own, in its batches of images).

    python benchmarks/conv_width.py --epochs 10 --images 1000 --iw-samples 1000 --widths 32,64 16,32
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from torch import nn

from products_floor import recorded_products
import vaelab
from vaelab.data.pipeline import load_data
from vaelab.evaluation.evidence import EXAMPLES_PER_BATCH, chunk_samples, importance_weighted_terms

FULL_IMAGES, FULL_K = 10_000, 5_000


def decoder_multiply_adds(model: vaelab.VAE) -> int:
    """Multiply-adds of one decoder pass (one z -> the likelihood's parameters): every product module
    ``products_floor.recorded_products`` sees, counted from the input it was given."""
    z = torch.zeros(1, model.latent_dim, device=model.device)
    total = 0
    for module, x in recorded_products(model.decoder_net, lambda: model.decoder_net(z)):
        if isinstance(module, nn.Linear):
            total += module.in_features * module.out_features
        elif isinstance(module, nn.ConvTranspose2d):  # each input value writes c_out k k outputs
            total += x[0].numel() * module.weight[0].numel()
        else:  # a convolution: each output value reads c_in k k inputs
            with torch.no_grad():
                total += module(x)[0].numel() * module.weight[0].numel()
    return total


@torch.no_grad()
def per_image_nll(model: vaelab.VAE, x: torch.Tensor, iw_samples: int, batch: int = EXAMPLES_PER_BATCH) -> torch.Tensor:
    """IW_K NLL of each image, ``[N]``, with importance samples from one seeded generator, so that two
    models' figures on the same images can be compared image by image (a paired difference)."""
    model.eval()
    generator = torch.Generator().manual_seed(0)
    chunk = chunk_samples(model, batch, iw_samples)
    return torch.cat([-importance_weighted_terms(model, x[i : i + batch], iw_samples, generator, chunk)["iw"]
                      for i in range(0, x.shape[0], batch)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", nargs="+", default=["32,64", "16,32"], help="channels per model, comma-separated")
    parser.add_argument("--hidden", type=int, default=256, help="the dense layer between z and the convolutions")
    parser.add_argument("--latent-dim", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--images", type=int, default=1000, help="the first N test images")
    parser.add_argument("--iw-samples", type=int, default=1000, help="K of the importance-weighted NLL")
    args = parser.parse_args()

    rows = []
    with tempfile.TemporaryDirectory() as runs:
        for i, width in enumerate(args.widths):
            channels = tuple(int(c) for c in width.split(","))
            started = time.perf_counter()
            run = vaelab.train(dataset="fashion-mnist", binarize="dynamic", arch="conv", channels=channels,
                               hidden=(args.hidden,), latent_dim=args.latent_dim, epochs=args.epochs, seed=0,
                               out=f"{runs}/{i}", progress=False)
            train_seconds = time.perf_counter() - started
            test = load_data(run.config).test.x[: args.images]
            started = time.perf_counter()
            nll = per_image_nll(run.model, test, args.iw_samples)
            eval_seconds = time.perf_counter() - started
            full = eval_seconds * (FULL_IMAGES / len(test)) * (FULL_K / args.iw_samples)
            rows.append((width, decoder_multiply_adds(run.model), train_seconds, eval_seconds, full, nll))

    print(f"binarised Fashion-MNIST, conv --hidden {args.hidden} --latent-dim {args.latent_dim}, {args.epochs} epochs, "
          f"seed 0; NLL: K = {args.iw_samples} on the first {args.images} test images; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'channels':<10} {'decoder MACs':>13} {'train s':>8} {'NLL':>8} {'± s.e.':>7} {'eval s':>7} "
          f"{'full protocol, min':>19}")
    for width, macs, train_seconds, eval_seconds, full, nll in rows:
        print(f"{width:<10} {macs:>13,} {train_seconds:>8.0f} {nll.mean():>8.2f} {nll.std() / nll.numel() ** 0.5:>7.2f} "
              f"{eval_seconds:>7.1f} {full / 60:>19.1f}")
    print(f"full protocol = K {FULL_K} on {FULL_IMAGES:,} images at the speed measured here, this many threads")
    reference = rows[0]
    for width, *_, nll in rows[1:]:
        difference = nll - reference[-1]  # the same images: the spread of the difference, not of each NLL
        print(f"NLL {width} - {reference[0]}, image by image: {difference.mean():+.2f} "
              f"± {difference.std() / difference.numel() ** 0.5:.2f} (s.e. of the paired difference)")


if __name__ == "__main__":
    main()
