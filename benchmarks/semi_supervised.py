"""Missing covariates on Fashion-MNIST: M2 with few labels, and imputing continuous covariates.

Part 1 (labels, Kingma et al. 2014): for each number of labels N, train M2 (``--condition label
--labelled N``) and report the test error of its q(y|x); train the *same* classifier network on the N
labelled examples alone (same examples, same dynamic binarisation, Adam) and report its test error.

Part 2 (continuous covariates, Ramchandran et al. 2022): an ``.npz`` made from Fashion-MNIST with two
covariates computed from each image, so that they are truly predictable from x: ``brightness``
(mean pixel intensity) and ``height`` (fraction of image rows holding a pixel above 0.3). Half of the
training covariates are hidden (``--missing-frac 0.5``); after training, every test covariate is
hidden and imputed by q(c|x), against imputing the training mean.

Run: ``python benchmarks/semi_supervised.py [--labels 100 600 1000] [--epochs 10]``
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import vaelab
from vaelab.data.datasets import binarize, load_dataset
from vaelab.evaluation.imputation import impute_labels, impute_run
from vaelab.models.networks import build_encoder
from vaelab.data.pipeline import load_data

MODEL = {"dataset": "fashion-mnist", "hidden": (400,), "latent_dim": 20, "binarize": "dynamic", "batch_size": 128}


def supervised_only(run: vaelab.Run, steps: int, seed: int = 0) -> float:
    """Test error of q(y|x)'s network trained on the run's labelled examples alone."""
    data = load_data(run.config)
    keep = data.train.y >= 0
    x, y = data.train.x[keep], data.train.y[keep]
    torch.manual_seed(seed)
    net = build_encoder(run.config.model, len(run.config.model.class_names))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    batch = min(128, x.shape[0])
    for _ in range(steps):
        rows = torch.randint(x.shape[0], (batch,), generator=generator)
        loss = F.cross_entropy(net(binarize(x[rows], generator)), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        predicted = net(data.test.x).argmax(-1)
    return 1 - (predicted == data.test.y).float().mean().item()


def label_part(labels: list[int], epochs: int, out: Path) -> list[dict]:
    rows = []
    for n in labels:
        started = time.perf_counter()
        run = vaelab.train(out=out / f"m2-{n}", progress=False, condition="label", labelled=n,
                           epochs=epochs, **MODEL)
        seconds = time.perf_counter() - started
        test = load_data(run.config).test
        m2_error = 1 - (impute_labels(run.model, test.x) == test.y).float().mean().item()
        alone = supervised_only(run, steps=2000)
        row = {"labels": n, "m2_test_error": m2_error, "supervised_only_test_error": alone,
               "m2_train_seconds": seconds, "epochs": epochs}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def covariate_npz(path: Path) -> None:
    """Fashion-MNIST (train + test, in file order) with brightness and height as covariates."""
    ds = load_dataset("fashion-mnist")
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])  # [70000, 1, 28, 28]
    brightness = x.mean(dim=(1, 2, 3))
    height = (x.amax(dim=(1, 3)) > 0.3).float().mean(-1)
    np.savez(path, x=(x[:, 0] * 255).round().to(torch.uint8).numpy(),
             c=torch.stack((brightness, height), 1).numpy(), c_names=np.array(["brightness", "height"]))


def covariate_part(epochs: int, out: Path) -> dict:
    npz = out / "fashion-covariates.npz"
    covariate_npz(npz)
    run = vaelab.train(out=out / "covariates", progress=False, condition="covariates",
                       missing_frac=0.5, epochs=epochs, **{**MODEL, "dataset": str(npz)})
    report = impute_run(run.path, "test", hide_frac=1.0, device="cpu")
    print(json.dumps(report), flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=int, nargs="*", default=[100, 600, 1000])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--skip-covariates", action="store_true")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        label_part(args.labels, args.epochs, out)
        if not args.skip_covariates:
            covariate_part(args.epochs, out)


if __name__ == "__main__":
    main()
