"""Is the conv decoder's wide transposed convolution slower than the matrix product it amounts to?

The conv decoder's 64 -> 32 channel transposed convolution (kernel 4, stride 2, 7x7 -> 14x14) is most
of a conv model's evaluation. If oneDNN ran it well below matrix-product speed, an exact rerouting
(as ``SingleChannelConvTranspose2d`` does for one output channel) would speed evaluation up without
touching the model. This times, in one run, on the evaluator's chunk of samples:

- ``nn.ConvTranspose2d`` (oneDNN);
- the same layer by phases: each output pixel of a stride-2, kernel-4 transposed convolution reads a
  2x2 window of the input, so gathering every 2x2 window (channels last) and multiplying by the
  kernel's four 2x2 sub-kernels at once is one ``[B * (h+1)(w+1), 4 C_in] @ [4 C_in, 4 C_out]`` product,
  whose four phase blocks interleave into the output (checked equal to the layer);
- that product alone on random operands of the same shapes: the floor of the phase route.

    OMP_NUM_THREADS=1 python benchmarks/transposed_conv_routes.py [--samples 2048] [--c-in 64] [--c-out 32] [--size 7]
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from products_floor import best_seconds

# kernel row for output phase a (0: even rows, 1: odd) and window row u: kh = 3 - a - 2u
_SUB_KERNEL_INDEX = torch.tensor([[3, 1], [2, 0]])


def by_phases(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a kernel-4, stride-2, padding-1 transposed convolution, as one product over
    the input's 2x2 windows: ``x: [B, C_in, h, w] -> [B, C_out, 2h, 2w]``."""
    batch, c_in, h, w = x.shape
    c_out = layer.out_channels
    padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1))  # [B, h+2, w+2, C_in]
    s = padded.stride()
    windows = padded.as_strided((batch, h + 1, w + 1, 2, 2, c_in), (s[0], s[1], s[2], s[1], s[2], s[3]))
    kh = _SUB_KERNEL_INDEX.t().reshape(2, 1, 2, 1).expand(2, 2, 2, 2)  # [u, v, a, b] -> kernel row
    kw = _SUB_KERNEL_INDEX.t().reshape(1, 2, 1, 2).expand(2, 2, 2, 2)  # [u, v, a, b] -> kernel column
    sub_kernels = layer.weight.permute(2, 3, 0, 1)[kh, kw]  # [u, v, a, b, C_in, C_out]
    sub_kernels = sub_kernels.permute(0, 1, 4, 2, 3, 5).reshape(4 * c_in, 4 * c_out)
    phases = (windows.reshape(-1, 4 * c_in) @ sub_kernels).view(batch, h + 1, w + 1, 2, 2, c_out)
    out = x.new_empty(batch, 2 * h, 2 * w, c_out)
    for a in (0, 1):
        for b in (0, 1):
            out[:, a::2, b::2] = phases[:, a : a + h, b : b + w, a, b]
    return (out + layer.bias).permute(0, 3, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048, help="decoder passes per call (an evaluation chunk)")
    parser.add_argument("--c-in", type=int, default=64)
    parser.add_argument("--c-out", type=int, default=32)
    parser.add_argument("--size", type=int, default=7, help="input height and width")
    args = parser.parse_args()

    torch.manual_seed(0)
    layer = nn.ConvTranspose2d(args.c_in, args.c_out, 4, 2, 1)
    x = torch.randn(args.samples, args.c_in, args.size, args.size)
    rows = args.samples * (args.size + 1) ** 2
    windows, sub_kernels = torch.randn(rows, 4 * args.c_in), torch.randn(4 * args.c_in, 4 * args.c_out)
    with torch.inference_mode():
        error = (by_phases(layer, x) - layer(x)).abs().max().item()
        routes = {
            "nn.ConvTranspose2d (oneDNN)": best_seconds(lambda: layer(x)),
            "by phases (gather, one product, interleave)": best_seconds(lambda: by_phases(layer, x)),
            "its product alone": best_seconds(lambda: windows @ sub_kernels),
        }
    multiply_adds = args.size**2 * args.c_in * args.c_out * 16
    print(f"{args.c_in} -> {args.c_out} channels, {args.size}x{args.size} -> {2 * args.size}x{2 * args.size}, "
          f"{args.samples} samples; torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"by phases vs the layer: max difference {error:.1e}")
    reference = routes["nn.ConvTranspose2d (oneDNN)"]
    for name, seconds in routes.items():
        per_sample = seconds / args.samples
        print(f"{name:<46} {per_sample * 1e6:8.1f} us/sample  {multiply_adds / per_sample / 1e9:6.1f} G multiply-adds/s  "
              f"{seconds / reference:5.2f}x the layer")


if __name__ == "__main__":
    main()
