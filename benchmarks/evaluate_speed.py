"""Importance-weighted NLL: vaelab's evaluator against its floor and against the per-image loop, in one run.

The per-image loop is how common VAE libraries estimate the NLL (pythae's ``get_nll``, for one): for
each test image, repeat it ``sample_batch`` times, encode, draw one z per copy, decode, and collect the
log-weights block by block. vaelab encodes each image once and decodes the K samples of 256 images
as one batch, chunked to a fixed memory bound. Both compute the same estimator from the same model;
the script checks that their NLLs agree within Monte-Carlo error and prints the time per image.
vaelab's evaluator is timed uncompiled and compiled (``compile=True``), alternating, the best of
``--repeats`` runs each; the compiler's time is the first compiled run's, reported apart.

    python benchmarks/evaluate_speed.py RUN [--iw-samples 1000] [--images 10000] [--loop-images 100]

The loop is timed on the first ``--loop-images`` images only (it is slow) and scaled per image.

Two floors, each timed back to back with the operands hot, times the chunks the same images and K
need. The decoder floor: the decoder's matrix products and convolutions (every ``nn.Linear``/``nn.Conv*``
of the decoder, at the shapes one of the evaluator's sample chunks gives them). The network floor:
every product of every network the evaluator runs — once per batch of images (the encoder on x, a
VampPrior's encoder on its pseudo-inputs) and once per chunk of samples (the decoder, and for a
hierarchy the networks of q(z1|x, z2) and p(z1|z2), which run at each sample: work the decoder floor
does not count). For a one-layer model the two differ by the encoder, run once per image. Everything
else (activations, the likelihood's reductions, sampling, a mixture prior's log-sum-exp) is overhead
on top of them.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch.distributions import Distribution

from products_floor import products_seconds, recorded_products
import vaelab
from vaelab.bounds.estimator import evaluation_terms_at
from vaelab.data.pipeline import load_data
from vaelab.evaluation.evidence import EXAMPLES_PER_BATCH, chunk_samples


def evaluation_chunks(model: vaelab.VAE, images: int, iw_samples: int) -> tuple[int, int]:
    """The images per batch and the samples per chunk ``vaelab.evaluate`` uses for ``images`` x ``iw_samples``."""
    batch = min(images, EXAMPLES_PER_BATCH)
    return batch, chunk_samples(model, batch, iw_samples)


def decoder_floor(model: vaelab.VAE, images: int, iw_samples: int) -> float:
    """Seconds of the decoder's products alone for ``images`` x ``iw_samples`` samples, chunked as
    ``vaelab.evaluate`` chunks them."""
    batch, chunk = evaluation_chunks(model, images, iw_samples)
    z = torch.randn(chunk * batch, model.latent_size, device=model.device, dtype=model.dtype)
    condition = torch.zeros(chunk * batch, model.condition_dim) if model.conditional else None
    reads = model.decoder_input(z)  # an HVAE's decoder reads every layer
    per_chunk = products_seconds(recorded_products(model, lambda: model.decoder_net(reads, condition)))
    return per_chunk * (images / batch) * (iw_samples / chunk)


def network_floor(model: vaelab.VAE, x: torch.Tensor, iw_samples: int) -> float:
    """Seconds of every network product the evaluator runs for the images ``x`` x ``iw_samples``
    samples: those run once per batch of images (q(z|x) and p(z)) and those run once per chunk of
    samples (reparameterising q at the chunk's noise, then p(x|z) and the layers' log-densities)."""
    images = x.shape[0]
    batch, chunk = evaluation_chunks(model, images, iw_samples)
    first = x[:batch].to(model.device)
    condition = torch.zeros(batch, model.condition_dim) if model.conditional else None
    q_and_p: dict[str, Distribution] = {}
    once = recorded_products(model, lambda: q_and_p.update(q=model.encode(first, condition), p=model.prior_for(condition)))
    q, p = q_and_p["q"], q_and_p["p"]
    eps = torch.randn(chunk, batch, model.latent_size, device=model.device, dtype=model.dtype)
    per_chunk = recorded_products(model, lambda: evaluation_terms_at(model, first, condition, q, p, eps))
    return (products_seconds(once) + products_seconds(per_chunk) * (iw_samples / chunk)) * (images / batch)


@torch.no_grad()
def per_image_nll(model: vaelab.VAE, x: torch.Tensor, iw_samples: int, sample_batch: int) -> torch.Tensor:
    """IW_K NLL image by image, re-encoding each block of repeated copies: ``[N]``."""
    out = []
    for image in x:
        log_w = []
        for start in range(0, iw_samples, sample_batch):
            repeated = image.unsqueeze(0).expand(min(sample_batch, iw_samples - start), *image.shape)
            q = model.encode(repeated)
            z = q.sample()
            log_w.append(model.decode(z).log_prob(repeated) + model.prior.log_prob(z) - q.log_prob(z))
        out.append(-(torch.logsumexp(torch.cat(log_w), 0) - math.log(iw_samples)))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory")
    parser.add_argument("--iw-samples", type=int, default=1000)
    parser.add_argument("--images", type=int, default=10_000, help="test images for vaelab's evaluator")
    parser.add_argument("--loop-images", type=int, default=100, help="test images for the per-image loop (>= 1)")
    parser.add_argument("--sample-batch", type=int, default=100, help="copies per block in the loop")
    parser.add_argument("--repeats", type=int, default=2, help="runs of the evaluator each way, the best reported")
    args = parser.parse_args()
    if min(args.images, args.loop_images, args.iw_samples, args.sample_batch, args.repeats) < 1:
        parser.error("--images, --loop-images, --iw-samples, --sample-batch and --repeats must be >= 1")

    run = vaelab.load(args.run)
    test = load_data(run.config).test.x

    floor = decoder_floor(run.model, min(args.images, test.shape[0]), args.iw_samples)
    networks = network_floor(run.model, test[: args.images], args.iw_samples)
    started = time.perf_counter()
    loop_nll = per_image_nll(run.model, test[: args.loop_images], args.iw_samples, args.sample_batch)
    loop_per_image = (time.perf_counter() - started) / args.loop_images

    ours_subset = vaelab.evaluate(run.model, test[: args.loop_images], args.iw_samples, compile=False)
    images = test[: args.images]
    compiling = vaelab.evaluate(run.model, images, args.iw_samples, progress=True, compile=True)
    uncompiled_runs, compiled_runs = [], []
    for _ in range(args.repeats):  # alternating, so that a slow spell of the machine hits both
        uncompiled_runs.append(vaelab.evaluate(run.model, images, args.iw_samples, progress=True, compile=False))
        compiled_runs.append(vaelab.evaluate(run.model, images, args.iw_samples, progress=True, compile=True))
    result = min(uncompiled_runs, key=lambda run_result: run_result["seconds"])
    compiled = min(compiled_runs, key=lambda run_result: run_result["seconds"])
    ours_per_image = result["seconds"] / result["n"]

    print(f"K = {args.iw_samples}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"NLL on the first {args.loop_images} images: per-image loop {loop_nll.mean():.2f}, vaelab {ours_subset['nll']:.2f}")
    print(f"vaelab on {result['n']} images: NLL {result['nll']:.4f} nats, {result['seconds']:.1f} s; "
          f"compiled: NLL {compiled['nll']:.4f}, {compiled['seconds']:.1f} s "
          f"({compiling['seconds']:.1f} s the first time, compiling included): {result['seconds'] / compiled['seconds']:.2f}x; "
          f"best of {args.repeats} each")
    print(f"decoder floor (its products back to back) for the same samples: {floor:.1f} s; "
          f"vaelab takes {result['seconds'] / floor:.2f}x the floor, compiled {compiled['seconds'] / floor:.2f}x")
    print(f"network floor (every network product the evaluator runs, back to back): {networks:.1f} s; "
          f"vaelab takes {result['seconds'] / networks:.2f}x it, compiled {compiled['seconds'] / networks:.2f}x")
    print(f"seconds per image: per-image loop {loop_per_image:.4f}, vaelab {ours_per_image:.4f}")
    print(f"speed-up: {loop_per_image / ours_per_image:.1f}x "
          f"(loop extrapolated to {result['n']} images: {loop_per_image * result['n']:.0f} s)")


if __name__ == "__main__":
    main()
