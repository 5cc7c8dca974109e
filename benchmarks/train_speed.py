"""Seconds per training epoch: vaelab's loop against a tutorial-style loop, in one run, as a ratio.

Both train the classic VAE (784-400-20, Bernoulli likelihood on intensities, Adam lr 1e-3, batch
128) on the same Fashion-MNIST training images. The tutorial loop is what pytorch/examples' VAE
does: a ``torch.utils.data.Dataset`` that converts one image at a time (uint8 -> float tensor, as
torchvision's ``ToTensor``), a shuffling ``DataLoader``, a log-variance encoder, sigmoid outputs and
``F.binary_cross_entropy``. vaelab's is :func:`vaelab.training.epoch.train_epoch` on an in-memory tensor.
Epochs alternate between the two loops so that drifts in machine load hit both alike; the figure
per loop is its median epoch. The same run then times the GEMM floor and the least a training loop
must do (``gemm_floor.py``).

The conv part (``--conv-epochs``, 0 to skip) does the same for vaelab's conv model (two stride-2
convolutions 32-64, dense 400, latent 20, transposed convolutions back) against a tutorial-style loop
over the same architecture (the DataLoader above, sigmoid outputs and ``F.binary_cross_entropy``),
epochs alternating, and times the conv model's floor (``products_floor.py``: its convolutions and
matrix products, forward and backward, back to back). Both models' test losses after the same epochs
are printed: a faster loop must not be a worse model.

    python benchmarks/train_speed.py [--epochs 3] [--conv-epochs 1] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from gemm_floor import epoch_floor, loop_seconds_per_step
from products_floor import products_seconds, recorded_products
from vaelab.config import ModelConfig, TrainConfig
from vaelab.bounds.estimator import standard_noise
from vaelab.bounds.objectives import objective_sums
from vaelab.data.datasets import load_dataset
from vaelab.evaluation.evidence import elbo_averages
from vaelab.models.vae import VAE
from vaelab.training.epoch import TrainingData, objective_schedule, train_epoch
from vaelab.training.optimizer import make_optimizer


class OneImageAtATime(torch.utils.data.Dataset):
    """What torchvision's ``MNIST(transform=ToTensor())`` does per item: a PIL image from the uint8
    array, then ToTensor's conversion (array -> [1, H, W] tensor -> float / 255)."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images  # [N, 28, 28] uint8

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        picture = Image.fromarray(self.images[index].numpy(), mode="L")
        array = torch.from_numpy(np.array(picture, np.uint8, copy=True))
        return array.view(picture.size[1], picture.size[0], 1).permute(2, 0, 1).contiguous().float().div(255)


class TutorialVAE(nn.Module):
    """pytorch/examples vae/main.py's model, verbatim in structure."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def tutorial_epoch(model: TutorialVAE, optimizer: torch.optim.Optimizer, loader: DataLoader) -> None:
    model.train()
    for batch in loader:
        optimizer.zero_grad()
        recon, mu, logvar = model(batch)
        bce = F.binary_cross_entropy(recon, batch.view(-1, 784), reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        (bce + kld).backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per loop (default: 3)")
    parser.add_argument("--conv-epochs", type=int, default=1, help="timed epochs of the conv model (default: 1)")
    parser.add_argument("--data-dir", help="parent folder of fashion-mnist/")
    args = parser.parse_args()

    dataset = load_dataset("fashion-mnist", data_dir=args.data_dir, download=False)
    images = dataset.train.x  # [N, 1, 28, 28] float in [0, 1]
    raw = (images.squeeze(1) * 255).round().to(torch.uint8)

    torch.manual_seed(0)
    tutorial = TutorialVAE()
    tutorial_opt = torch.optim.Adam(tutorial.parameters(), lr=1e-3)
    loader = DataLoader(OneImageAtATime(raw), batch_size=128, shuffle=True)

    ours = VAE(ModelConfig(arch="mlp", hidden=(400,), latent_dim=20, likelihood="bernoulli", input_shape=(1, 28, 28)))
    ours_opt = make_optimizer(ours, 1e-3)
    generator = torch.Generator().manual_seed(0)
    bar = tqdm(disable=True)
    data = TrainingData(x=images, c=None, dynamic_binarize=False, label_weight=0.0)
    objective_at = objective_schedule(TrainConfig())

    times: dict[str, list[float]] = {"tutorial": [], "vaelab": []}
    for epoch in range(args.epochs):
        started = time.perf_counter()
        tutorial_epoch(tutorial, tutorial_opt, loader)
        times["tutorial"].append(time.perf_counter() - started)
        started = time.perf_counter()
        train_epoch(ours, ours_opt, data, 128, generator, objective_at, epoch + 1, None, bar)
        times["vaelab"].append(time.perf_counter() - started)
        print(f"epoch {epoch + 1}: tutorial {times['tutorial'][-1]:.2f} s, vaelab {times['vaelab'][-1]:.2f} s", flush=True)

    floor, _ = epoch_floor(128, len(raw))
    steps = math.ceil(len(raw) / 128)
    loop = {name: seconds * steps for name, seconds in loop_seconds_per_step(128, len(raw)).items()}
    tutorial_s, vaelab_s = statistics.median(times["tutorial"]), statistics.median(times["vaelab"])
    print(f"examples per epoch: {len(raw)}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"median s/epoch: tutorial loop {tutorial_s:.2f}, vaelab {vaelab_s:.2f}, fp32 GEMM floor {floor:.2f}")
    print(f"least a loop must do, s/epoch: the GEMMs in step order {loop['gemms']:.2f}, plus fused Adam {loop['gemms_adam']:.2f}")
    print(f"speed-up over the tutorial loop: {tutorial_s / vaelab_s:.2f}x; vaelab / GEMM floor: {vaelab_s / floor:.2f}x; "
          f"vaelab / (GEMMs + Adam in a loop): {vaelab_s / loop['gemms_adam']:.2f}x; "
          f"tutorial / (GEMMs + Adam in a loop): {tutorial_s / loop['gemms_adam']:.2f}x")
    if args.conv_epochs:
        conv_comparison(raw, data, dataset.test.x, args.conv_epochs)


class TutorialConvVAE(nn.Module):
    """vaelab's conv architecture written the tutorial way: log-variance head, sigmoid outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 64, 4, 2, 1), nn.ReLU(),
                                     nn.Flatten(), nn.Linear(64 * 7 * 7, 400), nn.ReLU())
        self.mu, self.logvar = nn.Linear(400, 20), nn.Linear(400, 20)
        self.decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 64 * 7 * 7), nn.ReLU(),
                                     nn.Unflatten(1, (64, 7, 7)), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 1, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.decoder(z)), mu, logvar


def tutorial_conv_loss(model: TutorialConvVAE, batch: torch.Tensor) -> torch.Tensor:
    recon, mu, logvar = model(batch)
    bce = F.binary_cross_entropy(recon, batch, reduction="sum")
    return bce - 0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


@torch.no_grad()
def tutorial_conv_test_loss(model: TutorialConvVAE, test: torch.Tensor) -> float:
    model.eval()
    torch.manual_seed(1234)
    total = sum(tutorial_conv_loss(model, test[i : i + 500]).item() for i in range(0, len(test), 500))
    model.train()
    return total / len(test)


def conv_floor_per_step(model: VAE, batch: torch.Tensor) -> float:
    """Seconds of the conv model's products, forward and backward, for one training step."""
    def one_step() -> None:
        objective_sums(model, batch, None, standard_noise(model, batch.shape[0]), objective_schedule(TrainConfig())(1.0))
    products = recorded_products(model, one_step)
    return products_seconds(products, backward=True, reads_data=frozenset({0}))  # the first conv reads x


def conv_comparison(raw: torch.Tensor, data: TrainingData, test: torch.Tensor, epochs: int) -> None:
    """vaelab's conv model against the tutorial-style loop over the same architecture, and its floor."""
    torch.manual_seed(0)
    tutorial = TutorialConvVAE()
    tutorial_opt = torch.optim.Adam(tutorial.parameters(), lr=1e-3)
    loader = DataLoader(OneImageAtATime(raw), batch_size=128, shuffle=True)
    model = VAE(ModelConfig(arch="conv", channels=(32, 64), hidden=(400,), latent_dim=20, likelihood="bernoulli",
                            input_shape=(1, 28, 28)))
    optimizer = make_optimizer(model, 1e-3)
    generator = torch.Generator().manual_seed(0)
    objective_at = objective_schedule(TrainConfig())
    times: dict[str, list[float]] = {"tutorial": [], "vaelab": []}
    for epoch in range(epochs):
        started = time.perf_counter()
        for batch in loader:
            tutorial_opt.zero_grad()
            tutorial_conv_loss(tutorial, batch).backward()
            tutorial_opt.step()
        times["tutorial"].append(time.perf_counter() - started)
        started = time.perf_counter()
        train_epoch(model, optimizer, data, 128, generator, objective_at, epoch + 1, None, tqdm(disable=True))
        times["vaelab"].append(time.perf_counter() - started)
        print(f"conv epoch {epoch + 1}: tutorial {times['tutorial'][-1]:.2f} s, vaelab {times['vaelab'][-1]:.2f} s", flush=True)
    floor = conv_floor_per_step(model, data.x[:128]) * math.ceil(len(raw) / 128)
    tutorial_s, vaelab_s = statistics.median(times["tutorial"]), statistics.median(times["vaelab"])
    ours_test = elbo_averages(model, test, 500, torch.Generator().manual_seed(1234))["negative_elbo"]
    print(f"conv model, median s/epoch: tutorial loop {tutorial_s:.2f}, vaelab {vaelab_s:.2f}, "
          f"its products back to back {floor:.2f}")
    print(f"conv speed-up over the tutorial loop: {tutorial_s / vaelab_s:.2f}x; vaelab / floor: {vaelab_s / floor:.2f}x; "
          f"tutorial / floor: {tutorial_s / floor:.2f}x")
    print(f"conv test loss after {epochs} epochs (nats, BCE on intensities + KL): "
          f"tutorial {tutorial_conv_test_loss(tutorial, test):.2f}, vaelab {ours_test:.2f}")


if __name__ == "__main__":
    main()
