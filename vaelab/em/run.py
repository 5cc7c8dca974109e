"""``vaelab em``: fit a Gaussian mixture or factor analysis to a dataset by EM, and write what it found.

The classical latent-variable models are the baselines a VAE should be held against: EM fits them
with exact E-steps (Bishop, PRML ch. 9; §12.2.4 for factor analysis), so their log-likelihood is
exact and their ELBO touches it after every E-step (PRML 9.70), where a VAE's bound keeps a gap.

An output directory holds (every file written atomically):

- ``config.json``: the arguments of :func:`run_em`;
- ``params.safetensors``: the fitted parameters (``GaussianMixture`` / ``FactorAnalysis.to_tensors``);
- ``history.jsonl``: one ``{"iteration", "log_likelihood", "elbo"}`` per E-step, nats per example;
- ``history.png``: both curves per iteration;
- ``components.png`` (image data only): the GMM component means, or the FA mean image followed by
  the loadings (columns of W), each min-max normalised.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from safetensors.torch import save as save_safetensors_bytes

from vaelab.config import ConfigError
from vaelab.data.datasets import load_dataset
from vaelab.em.fit import COVARIANCE_TYPES, EM_MODELS, EMResult, FactorAnalysis, fit_em
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from vaelab.views.images import image_grid, save_figure, save_image

log = logging.getLogger(__name__)

CONFIG = "config.json"
PARAMS = "params.safetensors"
HISTORY = "history.jsonl"
HISTORY_PLOT = "history.png"
COMPONENTS = "components.png"


@dataclass
class EMConfig:
    """The arguments of one ``vaelab em`` run, saved as ``config.json``."""

    dataset: str  # digits | mnist | fashion-mnist, or a path to an image folder / .npz file
    model: str  # gmm: Gaussian mixture; fa: factor analysis (diagonal noise)
    components: int  # K: mixture components (gmm) or latent factors (fa)
    data_dir: str | None = None  # parent folder of <name>/ searched first for named datasets
    covariance: str = "diag"  # gmm only: full is O(K D^3) per iteration and singular for constant pixels
    max_iter: int = 100  # at most this many M-steps
    tol: float = 1e-3  # stop when the mean log-likelihood changes by less (nats per example)
    seed: int = 0  # seeds the --limit subsample and the initialisation
    limit: int | None = None  # fit on this many random training examples (None: all)

    def __post_init__(self) -> None:
        if self.model not in EM_MODELS:
            raise ConfigError("model", f"expected one of {sorted(EM_MODELS)}, got {self.model!r}")
        if self.components < 1:
            raise ConfigError("components", f"must be >= 1, got {self.components}")
        if self.covariance not in COVARIANCE_TYPES:
            raise ConfigError("covariance", f"expected one of {list(COVARIANCE_TYPES)}, got {self.covariance!r}")
        if self.model == "fa" and self.covariance != "diag":
            raise ConfigError("covariance", "factor analysis has diagonal noise; full applies to --model gmm only")
        if self.max_iter < 0:
            raise ConfigError("max_iter", f"must be >= 0, got {self.max_iter}")
        if not self.tol >= 0:
            raise ConfigError("tol", f"must be >= 0, got {self.tol}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError("limit", f"must be >= 1, got {self.limit}")


def _check_out(out: Path) -> None:
    """Refuse to mix two fits in one directory, as ``vaelab train`` does."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise VaelabError(f"{out}: already exists and is not empty; choose another --out")


def history_figure(history: list[dict[str, float]]) -> Figure:
    """Mean log-likelihood and ELBO per EM iteration, in nats per example.

    After an exact E-step the ELBO equals the log-likelihood (PRML 9.70, KL(q ‖ p(z|x)) = 0), so
    the curves coincide: the log-likelihood is drawn wide and the ELBO dashed on top of it, and
    the title states the largest gap. A VAE's loss curve has no such equality.
    """
    iterations = [h["iteration"] for h in history]
    log_lik = [h["log_likelihood"] for h in history]
    elbo = [h["elbo"] for h in history]
    gap = max(abs(a - b) for a, b in zip(log_lik, elbo))
    figure = Figure(figsize=(6.5, 4), layout="tight")
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    ax.plot(iterations, log_lik, color="#1f77b4", lw=5, alpha=0.45, label="log-likelihood  log p(x)")
    ax.plot(iterations, elbo, color="#d62728", lw=1.5, ls="--", marker=".", label="ELBO after the E-step")
    ax.set_title(f"EM: ELBO = log-likelihood after each E-step (max gap {gap:.1e} nats)", fontsize=10)
    ax.set_xlabel("iteration (M-steps taken)")
    ax.set_ylabel("nats / example")
    ax.grid(True, alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    return figure


def components_grid(result: EMResult, shape: tuple[int, ...]) -> Image.Image:
    """GMM means μ_k, or the FA mean b then the columns of W, as images of ``shape`` [C, H, W].

    Means are pixel intensities already; a loading is a direction in pixel space with either sign
    and any scale, so each is min-max normalised on its own (grey = the loading's midpoint).
    """
    if isinstance(result, FactorAnalysis):
        loadings = result.weight.T  # [K, D]
        low = loadings.min(1, keepdim=True).values
        high = loadings.max(1, keepdim=True).values
        normalised = (loadings - low) / (high - low).clamp_min(torch.finfo(loadings.dtype).tiny)
        images = torch.cat([result.bias[None], normalised])  # [1 + K, D]
    else:
        images = result.means  # [K, D]
    return image_grid(images.reshape(-1, *shape).float())


def final_log_likelihood(result: EMResult) -> tuple[float, float]:
    """Mean log p(x) of the fitted model in nats per example and per dimension (D = pixels)."""
    per_example = result.history[-1]["log_likelihood"]
    dim = result.bias.shape[0] if isinstance(result, FactorAnalysis) else result.means.shape[1]
    return per_example, per_example / dim


def run_em(
    dataset: str,
    model: str,
    components: int,
    out: str | os.PathLike,
    *,
    data_dir: str | None = None,
    covariance: str = "diag",
    max_iter: int = 100,
    tol: float = 1e-3,
    seed: int = 0,
    limit: int | None = None,
) -> EMResult:
    """Fit ``model`` with K = ``components`` to the training split of ``dataset``; write into ``out``.

    Examples are flattened to x: [N, D] float64. The result's ``history`` holds the per-example
    mean log-likelihood and ELBO of every E-step (iteration 0 is the initialisation).
    """
    config = EMConfig(
        dataset=dataset, model=model, components=components, data_dir=data_dir,
        covariance=covariance, max_iter=max_iter, tol=tol, seed=seed, limit=limit,
    )
    out = Path(out)
    _check_out(out)
    data = load_dataset(dataset, data_dir=data_dir)  # the split vaelab train uses by default
    x = data.train.x.reshape(len(data.train), -1).to(torch.float64)  # [N, D]
    generator = torch.Generator().manual_seed(seed)
    if limit is not None and limit < x.shape[0]:
        x = x[torch.randperm(x.shape[0], generator=generator)[:limit]]
    if components > x.shape[0]:
        raise ConfigError("components", f"must be at most the number of training examples ({x.shape[0]})")
    options = {"covariance": covariance} if model == "gmm" else {"noise": "diag"}
    log.info("fitting %s with K=%d to %d x %d examples of %s", model, components, *x.shape, dataset)
    result = fit_em(x, model, components, max_iter=max_iter, tol=tol, generator=generator, **options)

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, asdict(config))
    tensors = {name: t.contiguous() for name, t in result.to_tensors().items()}
    atomic_write_bytes(out / PARAMS, save_safetensors_bytes(tensors, metadata={"model": model}))
    atomic_write_text(out / HISTORY, "".join(json.dumps(h) + "\n" for h in result.history))
    save_figure(history_figure(result.history), out / HISTORY_PLOT)
    if len(data.shape) == 3:
        save_image(components_grid(result, data.shape), out / COMPONENTS)
    return result
