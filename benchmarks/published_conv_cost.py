"""What the published ConvHVAE's generative network costs per sample here, beside vaelab's models.

The ConvHVAE of Tomczak & Welling's VampPrior code (models/convHVAE_2level.py; the Exemplar VAE
paper's 225.38 nats on binarised Fashion-MNIST is that architecture) decodes through four gated 3x3
convolutions of 64 channels at full 28x28 resolution. Every importance sample of the literature's
evaluation (K = 5000 for each of the 10,000 test images: 5 x 10^7 samples) runs its generative path
p(z1|z2) and p(x|z1, z2) once. This builds that path layer for layer (gated layers as in the
reference: a value and a gate network each), times it against vaelab's conv HVAE and gated-MLP HVAE
generative paths in the same run (the same chunk of samples, inference mode), and projects the
protocol's evaluation and the forward passes of one training epoch from the per-sample times.

    OMP_NUM_THREADS=2 python benchmarks/published_conv_cost.py
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import nn

from products_floor import best_seconds
from vaelab.config import ModelConfig
from vaelab.models.vae import VAE

LATENT, WIDTH, SHAPE = 40, 300, (1, 28, 28)
PROTOCOL_SAMPLES = 10_000 * 5000
EPOCH_IMAGES = 50_000


class Gated(nn.Module):
    """h(x) * sigmoid(g(x)) with separate value and gate layers, as the reference's GatedDense/GatedConv2d."""

    def __init__(self, make: type[nn.Module], *args: int) -> None:
        super().__init__()
        self.h, self.g = make(*args), make(*args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.h(x) * torch.sigmoid(self.g(x))


class PublishedConvHVAEGenerator(nn.Module):
    """p(z1|z2) and p(x|z1, z2) of the reference ConvHVAE for 28x28 binary images."""

    def __init__(self) -> None:
        super().__init__()
        self.p_z1 = nn.Sequential(Gated(nn.Linear, LATENT, WIDTH), Gated(nn.Linear, WIDTH, WIDTH))
        self.p_z1_heads = nn.Linear(WIDTH, 2 * LATENT)
        self.from_z1, self.from_z2 = Gated(nn.Linear, LATENT, WIDTH), Gated(nn.Linear, LATENT, WIDTH)
        self.joint = Gated(nn.Linear, 2 * WIDTH, math.prod(SHAPE))
        self.convs = nn.Sequential(Gated(nn.Conv2d, 1, 64, 3, 1, 1),
                                   *(Gated(nn.Conv2d, 64, 64, 3, 1, 1) for _ in range(3)))
        self.p_x = nn.Conv2d(64, 1, 1)

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The parameters of p(z1|z2) and of p(x|z1, z2)."""
        h = self.joint(torch.cat((self.from_z1(z1), self.from_z2(z2)), -1)).view(-1, *SHAPE)
        return self.p_z1_heads(self.p_z1(z2)), self.p_x(self.convs(h))


def vaelab_generator(arch: str) -> tuple[nn.Module, str]:
    """vaelab's 2-layer HVAE of ``arch``: p(z1|z2) (top-down block and prior head) and the decoder."""
    config = ModelConfig(arch=arch, hidden=(300,) if arch == "conv" else (300, 300), latent_dim=LATENT,
                         stochastic_layers=2, likelihood="bernoulli", input_shape=SHAPE)
    model = VAE(config).eval()

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()  # registers only the generative path's modules: their parameters are counted
            self.top_down, self.prior_head, self.decoder = model.top_down[0], model.prior_heads[0], model.decoder_net

        def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.prior_head(self.top_down(z2)), self.decoder(z1)

    flags = "--arch conv --channels 32 64 --hidden 300" if arch == "conv" else "--arch gated --hidden 300 300"
    return Generator(), f"vaelab 2-layer HVAE, {flags} --latent-dim 40"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunk", type=int, default=1024, help="samples per timed forward pass (default: 1024)")
    args = parser.parse_args()
    torch.manual_seed(0)
    z1, z2 = torch.randn(args.chunk, LATENT), torch.randn(args.chunk, LATENT)
    rows = [(PublishedConvHVAEGenerator().eval(), "published ConvHVAE (Tomczak & Welling's code)"),
            vaelab_generator("conv"), vaelab_generator("gated")]
    print(f"threads: {torch.get_num_threads()}, chunk: {args.chunk} samples, forward in inference mode")
    print("| generative path | its parameters | us per sample | protocol evaluation (5e7 samples), projected "
          "| forward passes of one 50k-image epoch |")
    print("|---|---|---|---|---|")
    for network, name in rows:
        with torch.inference_mode():
            seconds = best_seconds(lambda n=network: n(z1, z2), repeats=2, rounds=3) / args.chunk
        params = sum(p.numel() for p in network.parameters())
        print(f"| {name} | {params / 1e6:.2f} M | {seconds * 1e6:.1f} | {PROTOCOL_SAMPLES * seconds / 3600:.1f} h "
              f"| {EPOCH_IMAGES * seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()
