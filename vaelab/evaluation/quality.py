"""Sample quality offline: the classifier Fréchet distance between generated and real test images.

Heusel et al. (2017, "GANs trained by a two time-scale update rule converge to a local Nash
equilibrium") compare two image sets by fitting a Gaussian to each set's features and taking the
Fréchet (2-Wasserstein) distance between the Gaussians,

    d^2 = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2}).

Their FID takes the features from an ImageNet Inception-v3 network, whose weights cannot be
downloaded here (and which sees 8x8 grey digits through a 299x299 RGB resize). vaelab instead
trains a small convolutional classifier on the dataset's own labelled training split and uses its
128-d penultimate layer. The number is therefore *not* FID and not comparable with published FIDs
or across datasets: call it the classifier Fréchet distance. The classifier's test accuracy is
reported with it, as evidence that its features separate what matters in the data.

The classifier is trained once per dataset, image shape and seed, deterministically, and cached as
safetensors plus a JSON sidecar in :func:`classifier_dir`; a missing, stale or corrupt cache entry
is retrained. The classifier always sees the dataset's default split (whatever ``val_size`` a run
used), so every run on a dataset is measured with the same ruler.

What is compared:

- generated: the means of p(x|z) for z from the prior, clamped to [0, 1] - also for models of
  binarised data. A Bernoulli decoder's mean is the probability that a pixel is on, which for
  (dynamically) binarised training data estimates the grey intensity itself; a Bernoulli *draw*
  would add salt-and-pepper noise that the classifier never saw and the score would measure that
  noise rather than the model. Means are also what ``vaelab sample`` shows.
- real: the test split as intensities in [0, 1] (never binarised, for the same reason).
- floor: real *training* images against the same test split. Real data does not score 0 (finite
  samples, and train and test differ a little), so this is the figure a perfect model would reach.

The estimate is biased upwards for small sample sizes (Bińkowski et al. 2018, "Demystifying MMD
GANs"), so only compare figures computed with the same ``n`` on the same dataset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes
from torch import nn
from tqdm.auto import tqdm

from vaelab.data.datasets import Dataset, load_dataset
from vaelab.data.datasets import cache_dir as vaelab_cache_dir
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json
from vaelab.evaluation.latent_gmm import decode_latents, parse_prior, sample_latents
from vaelab.rundir import Run

log = logging.getLogger(__name__)

FORMAT = "vaelab-classifier-2"  # bump when the architecture or training recipe changes
FEATURE_DIM = 128  # width of the penultimate layer whose activations are the features
CLASSIFIER_SEED = 0  # one fixed classifier per dataset, so all runs are measured with the same ruler
BATCH_SIZE = 128
LR = 2e-3
MIN_EPOCHS = 5  # 90.4% test accuracy on Fashion-MNIST after 4
MIN_STEPS = 500  # small datasets (digits: 10 steps per epoch) get more epochs to converge


# ---------------------------------------------------------------------------------------------
# The Fréchet distance


def fit_gaussian(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` of ``features: [N, D]``, in float64."""
    assert features.dim() == 2 and features.shape[0] >= 2, f"need [N >= 2, D] features, got {list(features.shape)}"
    f = features.detach().to("cpu", torch.float64)
    return f.mean(0), torch.cov(f.T).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(s: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix, eigenvalues rounded below 0 clamped to 0."""
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(
    mu1: torch.Tensor, sigma1: torch.Tensor, mu2: torch.Tensor, sigma2: torch.Tensor
) -> float:
    """d^2 = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^{1/2}) between N(mu1, S1) and N(mu2, S2).

    Heusel et al. (2017), eq. 6. S1 S2 is not symmetric, and a generic ``sqrtm`` of it can return
    complex or NaN entries when the covariances are (near-)singular, as ReLU features with dead units
    make them. Only the trace is needed: S1 S2 has the eigenvalues of the symmetric PSD matrix
    M = S1^{1/2} S2 S1^{1/2}, so Tr (S1 S2)^{1/2} = sum_i sqrt(lambda_i(M)), found with two
    symmetric eigendecompositions in float64.
    """
    mu1, sigma1, mu2, sigma2 = (t.to("cpu", torch.float64) for t in (mu1, sigma1, mu2, sigma2))
    root1 = _psd_sqrt(sigma1)
    m = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp(min=0).sqrt().sum()
    d = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return max(float(d), 0.0)  # identical sets give ~ -1e-12 by rounding


def feature_frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a: [N, D]`` and ``b: [M, D]``."""
    return frechet_distance(*fit_gaussian(a), *fit_gaussian(b))


# ---------------------------------------------------------------------------------------------
# The feature classifier


class FeatureClassifier(nn.Module):
    """[conv3x3(16) -> 2x2 max-pool] -> [conv3x3(32) -> 2x2 max-pool] -> 7x7 average -> dense(128) = features -> classes.

    Works for any image size and channel count: each max-pool only happens while the image is at
    least 14 pixels a side (28x28 is pooled to 14x14 and 7x7, 8x8 digits not at all) and an
    adaptive average pool fixes the 7x7 grid the dense layer sees.
    """

    def __init__(self, shape: tuple[int, ...], n_classes: int) -> None:
        super().__init__()
        c, h, w = shape
        side = min(h, w)
        layers: list[nn.Module] = []
        for c_in, c_out in ((c, 16), (16, 32)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if side >= 14:
                layers.append(nn.MaxPool2d(2))
                side //= 2
        layers += [nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(32 * 7 * 7, FEATURE_DIM), nn.ReLU()]
        self.features = nn.Sequential(*layers)  # x: [B, C, H, W] -> [B, FEATURE_DIM]
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[B, n_classes]``."""
        return self.head(self.features(x))


@torch.no_grad()
def extract_features(net: FeatureClassifier, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Penultimate-layer activations ``[N, FEATURE_DIM]`` of ``x: [N, C, H, W]``, on the CPU."""
    net.eval()
    device = next(net.parameters()).device
    return torch.cat([net.features(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(x), batch_size)])


@torch.no_grad()
def accuracy(net: FeatureClassifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Fraction of ``x`` whose most likely class is ``y``."""
    net.eval()
    device = next(net.parameters()).device
    correct = sum(
        int((net(x[i : i + batch_size].to(device)).argmax(1).cpu() == y[i : i + batch_size]).sum())
        for i in range(0, len(x), batch_size)
    )
    return correct / len(x)


def _n_classes(dataset: Dataset) -> int:
    return len(dataset.classes) if dataset.classes else int(dataset.train.y.max()) + 1


def classifier_epochs(n_train: int, batch_size: int = BATCH_SIZE) -> int:
    """At least MIN_EPOCHS passes and at least MIN_STEPS optimizer steps."""
    return max(MIN_EPOCHS, math.ceil(MIN_STEPS / math.ceil(n_train / batch_size)))


def train_classifier(
    dataset: Dataset,
    seed: int = CLASSIFIER_SEED,
    epochs: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FeatureClassifier:
    """Fit a :class:`FeatureClassifier` to the labelled training split with Adam and cross-entropy.

    Batches are slices of one shuffled in-memory tensor; ``seed`` fixes the initial weights and the
    order, without touching the global random state.
    """
    x, y = dataset.train.x.to(device), dataset.train.y.to(device)
    epochs = classifier_epochs(len(x)) if epochs is None else epochs
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureClassifier(dataset.shape, _n_classes(dataset))
    net.to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=LR)
    generator = torch.Generator(device=device).manual_seed(seed)
    bar = tqdm(total=epochs * len(x), unit="img", unit_scale=True, disable=not progress, dynamic_ncols=True,
               desc=f"feature classifier ({dataset.name})")
    with bar:
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator, device=x.device)
            for start in range(0, len(x), BATCH_SIZE):
                batch = order[start : start + BATCH_SIZE]
                loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update(len(batch))
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return net.eval()


# ---------------------------------------------------------------------------------------------
# The cache


def classifier_dir() -> Path:
    """``classifiers/`` in vaelab's cache (``$VAELAB_CACHE``, ``$XDG_CACHE_HOME/vaelab`` or ``~/.cache/vaelab``)."""
    return vaelab_cache_dir() / "classifiers"


def _cache_stem(dataset: Dataset, seed: int) -> str:
    """``<dataset>-<C>x<H>x<W>-seed<seed>``; a path-like dataset name becomes its stem plus a hash."""
    name = dataset.name
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        name = f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(name).stem)}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return f"{name}-{'x'.join(map(str, dataset.shape))}-seed{seed}"


def _data_fingerprint(dataset: Dataset) -> str:
    """sha256 of the training and test tensors: user data edited in place invalidates the cache."""
    digest = hashlib.sha256()
    for t in (dataset.train.x, dataset.train.y, dataset.test.x, dataset.test.y):
        digest.update(t.contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_cached(weights: Path, sidecar: Path, expected: dict[str, Any]) -> tuple[FeatureClassifier, dict[str, Any]] | None:
    """The cached classifier if both files exist, agree with ``expected`` and load; else None."""
    if not (weights.is_file() and sidecar.is_file()):
        return None
    try:
        info = json.loads(sidecar.read_text(encoding="utf-8"))
        data = weights.read_bytes()
        if not isinstance(info, dict) or any(info.get(k) != v for k, v in expected.items()):
            raise ValueError("it was made for other data or by another vaelab version")
        if info.get("weights_sha256") != hashlib.sha256(data).hexdigest():
            raise ValueError("the weights do not match the sidecar")
        net = FeatureClassifier(tuple(info["shape"]), info["n_classes"])
        net.load_state_dict(load_safetensors_bytes(data), strict=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        log.warning("%s: unusable cached classifier (%s); retraining", weights, exc)
        return None
    return net.eval(), info


def feature_classifier(
    dataset: Dataset,
    seed: int = CLASSIFIER_SEED,
    cache_dir: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """The dataset's feature classifier and its sidecar record (``test_accuracy``, ``epochs``, ...).

    Loaded from ``cache_dir`` (default :func:`classifier_dir`) when a valid entry exists, otherwise
    trained with ``seed`` and written there atomically: weights first, then the sidecar that vouches
    for them (it carries their sha256).
    """
    if len(dataset.shape) != 3:
        raise VaelabError(f"{dataset.name}: the classifier Fréchet distance needs images, got data of shape {list(dataset.shape)}")
    if dataset.train.y is None or dataset.test.y is None:
        raise VaelabError(
            f"{dataset.name}: the classifier Fréchet distance needs class labels to train its feature "
            "classifier (use a folder with one sub-folder per class, or an .npz file with y)"
        )
    directory = Path(cache_dir) if cache_dir is not None else classifier_dir()
    stem = _cache_stem(dataset, seed)
    weights, sidecar = directory / f"{stem}.safetensors", directory / f"{stem}.json"
    expected = {
        "format": FORMAT,
        "dataset": dataset.name,
        "shape": list(dataset.shape),
        "n_classes": _n_classes(dataset),
        "seed": seed,
        "epochs": classifier_epochs(len(dataset.train)),
        "data_sha256": _data_fingerprint(dataset),
    }
    cached = _load_cached(weights, sidecar, expected)
    if cached is not None:
        net, info = cached
        return net.to(device), info
    log.info("training the feature classifier for %s (once; cached in %s)", dataset.name, directory)
    net = train_classifier(dataset, seed=seed, epochs=expected["epochs"], device=device, progress=progress)
    info = {**expected, "test_accuracy": accuracy(net, dataset.test.x, dataset.test.y)}
    data = save_safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
                                  metadata={"format": FORMAT})
    atomic_write_bytes(weights, data)
    atomic_write_json(sidecar, {**info, "weights_sha256": hashlib.sha256(data).hexdigest()})
    return net, info


# ---------------------------------------------------------------------------------------------
# Quality of a run


@torch.no_grad()
def generate(run: Run, n: int, prior: str, generator: torch.Generator, batch_size: int = 1000) -> torch.Tensor:
    """Means of p(x|z) for ``n`` latents z from ``prior``, clamped to [0, 1]: ``[n, C, H, W]`` on the CPU.

    ``prior`` is a spec of :func:`vaelab.evaluation.latent_gmm.sample_latents`: ``model`` (the model's
    N(0, I)) or ``gmm:K`` (a mixture fitted to the encoded training set). A label-conditional model
    draws its classes from the uniform p(y); a covariate model decodes at the training mean.
    """
    run.model.eval()
    z = sample_latents(run, prior, n, generator)  # [n, latent_dim]
    c, _ = run.model.condition.sample_conditions(run.model, n, generator=generator)
    return torch.cat([
        decode_latents(run, z[i : i + batch_size], None if c is None else c[i : i + batch_size]).clamp(0, 1).cpu()
        for i in range(0, n, batch_size)
    ])


def quality(
    run: Run,
    n: int = 10000,
    prior: str = "model",
    seed: int = 0,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """The classifier Fréchet distance of ``n`` samples of ``run`` to the test split, and its floor.

    Returns ``classifier_frechet_distance`` (lower is better), ``train_test_frechet_distance`` (the
    same measure for ``n_reference`` real training images: the floor), ``classifier_test_accuracy``
    and the settings (``dataset``, ``prior``, ``n``, ``n_reference``, ``n_test``, ``seed``). ``seed``
    fixes the latents and the choice of training images; the classifier is always the cached one.
    """
    if n < 2:
        raise VaelabError(f"n: a covariance needs at least 2 samples, got {n}")
    parse_prior(prior)  # a bad spec fails before the classifier is trained
    data = run.config.data
    dataset = load_dataset(data.dataset, data_dir=data.data_dir)
    if dataset.shape != tuple(run.config.model.input_shape):
        raise VaelabError(
            f"{data.dataset}: images of shape {list(dataset.shape)}, but the run was trained on "
            f"{list(run.config.model.input_shape)}"
        )
    device = run.model.device
    net, info = feature_classifier(dataset, cache_dir=cache_dir, device=device, progress=progress)

    test_stats = fit_gaussian(extract_features(net, dataset.test.x))
    samples = generate(run, n, prior, torch.Generator(device=device).manual_seed(seed))
    chosen = torch.randperm(len(dataset.train), generator=torch.Generator().manual_seed(seed))[:n]
    return {
        "dataset": dataset.name,
        "prior": prior,
        "n": n,
        "seed": seed,
        "classifier_frechet_distance": frechet_distance(*fit_gaussian(extract_features(net, samples)), *test_stats),
        "train_test_frechet_distance": frechet_distance(*fit_gaussian(extract_features(net, dataset.train.x[chosen])), *test_stats),
        "n_reference": len(chosen),
        "n_test": len(dataset.test),
        "classifier_test_accuracy": info["test_accuracy"],
        "epochs_trained": run.metrics[-1]["epoch"] if run.metrics else None,  # the report marks older results stale
    }


def quality_path(run_dir: str | os.PathLike, prior: str) -> Path:
    """``<run>/quality-<prior>.json``, the prior spec made file-name safe (``gmm:10`` -> ``gmm-10``)."""
    return Path(run_dir) / f"quality-{re.sub(r'[^A-Za-z0-9_.-]+', '-', prior)}.json"


def save_quality(run_dir: str | os.PathLike, result: dict[str, Any]) -> Path:
    """Write a :func:`quality` result atomically to :func:`quality_path`; returns the path."""
    path = quality_path(run_dir, result["prior"])
    atomic_write_json(path, result)
    return path
