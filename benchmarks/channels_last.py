"""A conv decoder's convolutions at evaluation's shapes: the default layout against vaelab's channels-last.

oneDNN picks its kernels by memory layout, and channels-last (NHWC) is its native one on many CPUs,
so vaelab's conv decoder stores its feature maps channels-last (``UnflattenChannelsLast``) and routes
a transposed convolution to one channel through a matrix product and ``fold``. This records every
convolution of a run's decoder at the shapes one of the evaluator's sample chunks gives it (inputs in
the layout vaelab runs them in), then times, in one run and alternating, each one as vaelab runs it
against torch's own module on the default (NCHW) layout, and checks that both give the same values.
The conversion to channels-last, which the decoder pays once per chunk, is timed on its own.

    python benchmarks/channels_last.py RUN [--iw-samples 5000]
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from evaluate_speed import evaluation_chunks
from products_floor import best_seconds, recorded_products
import vaelab

CONVOLUTIONS = (nn.Conv2d, nn.ConvTranspose2d)


def _default_layout_copy(module: nn.Module) -> nn.Module:
    """The same convolution as torch's own module, in the default layout (vaelab routes a transposed
    convolution to one channel through ``fold``)."""
    if isinstance(module, nn.ConvTranspose2d):
        copy = nn.ConvTranspose2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                  module.padding, output_padding=module.output_padding)
    else:
        copy = nn.Conv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride, module.padding)
    copy.load_state_dict({name: value.contiguous() for name, value in module.state_dict().items()})
    return copy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory of a conv model")
    parser.add_argument("--iw-samples", type=int, default=5000)
    args = parser.parse_args()

    model = vaelab.load(args.run).model
    batch, chunk = evaluation_chunks(model, 256, args.iw_samples)
    z = torch.randn(chunk * batch, model.latent_size, device=model.device, dtype=model.dtype)
    reads = model.decoder_input(z)
    products = [(m, x) for m, x in recorded_products(model, lambda: model.decoder_net(reads, None)) if isinstance(m, CONVOLUTIONS)]
    if not products:
        raise SystemExit(f"{args.run}: its decoder has no convolutions")
    print(f"{chunk * batch} samples per chunk; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| layer | input | default layout (NCHW), torch's module ms | vaelab (channels-last, its route) ms | speed-up | largest difference |")
    print("|---|---|---|---|---|---|")
    totals = [0.0, 0.0]
    with torch.inference_mode():
        for module, x in products:
            nchw_module, nchw_x = _default_layout_copy(module), x.contiguous()
            difference = (module(x) - nchw_module(nchw_x)).abs().max().item()
            nchw = best_seconds(lambda m=nchw_module, x=nchw_x: m(x))
            ours = best_seconds(lambda m=module, x=x: m(x))
            totals[0] += nchw
            totals[1] += ours
            name = f"{type(module).__name__} {module.in_channels}->{module.out_channels}"
            print(f"| {name} | {list(x.shape[1:])} | {1e3 * nchw:.1f} | {1e3 * ours:.1f} | {nchw / ours:.2f}x | {difference:.1e} |")
        first = products[0][1].contiguous()
        conversion = best_seconds(lambda: first.contiguous(memory_format=torch.channels_last))
    print(f"| all convolutions | | {1e3 * totals[0]:.1f} | {1e3 * totals[1]:.1f} (+{1e3 * conversion:.1f} to convert the first input) "
          f"| {totals[0] / (totals[1] + conversion):.2f}x | |")

if __name__ == "__main__":
    main()
