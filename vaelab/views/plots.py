"""Pictures of what a trained VAE learned: its latent space, its decoder and its KL, per dimension.

Kinds (:data:`KINDS`), each a compute function that returns a ``matplotlib.figure.Figure`` and writes
nothing; :func:`write_run_plots` loads a run and writes ``RUN/plots/<kind>.png`` atomically
(``latent-tsne.png``, ``latent-umap.png`` for the other projections).

- ``curves``: the three ELBO terms per epoch (:func:`vaelab.views.images.loss_curve_figure`);
- ``latent``: posterior means E_q[z|x] of the test set, coloured by label; drawn directly for a 2-D
  latent, else projected to 2-D by PCA (or t-SNE / UMAP);
- ``manifold``: decoder means on a grid of z over Gaussian quantiles, z = Phi^-1(p), so each cell
  covers equal prior mass (Kingma & Welling 2014, Fig. 4); 2-D latents only;
- ``interpolation``: decoded paths between the codes of test pairs, linear and spherical (slerp,
  White 2016, which stays where a Gaussian prior puts its mass);
- ``traversal``: one latent dimension swept from -3 to 3 around a test code, for the most active
  dimensions (Burda et al. 2016: the variance over x of E_q[z_d]);
- ``kl``: the closed-form KL(q(z_d|x) || p(z_d)) per dimension, averaged over the test set, with the
  active units highlighted.

Image kinds (manifold, interpolation, traversal) need image data; ``"all"`` skips the kinds a run
cannot have, and asking for one by name is a :class:`~vaelab.errors.VaelabError`.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import torch.nn.functional as F

from vaelab import rundir
from vaelab.data.pipeline import load_data, resolve_device
from vaelab.errors import VaelabError
from vaelab.evaluation.latents import ACTIVE_UNIT_THRESHOLD, LatentSummary, latent_summary
from vaelab.models.latents import follow_prior_below, layer_of
from vaelab.models.vae import VAE
from vaelab.views.images import TRAIN_COLOR, image_grid, loss_curve_figure, save_figure

log = logging.getLogger(__name__)

KINDS = ("curves", "latent", "manifold", "interpolation", "traversal", "kl")
IMAGE_KINDS = ("manifold", "interpolation", "traversal")
METHODS = ("pca", "tsne", "umap")
PLOTS_DIR = "plots"

DEFAULT_LIMIT = 5000  # scatter points: more only hides structure and makes t-SNE slow
BATCH_SIZE = 1000
INACTIVE_COLOR = "#b0b0b0"  # grey: a dimension the encoder ignores
GRID_PADDING = 2  # pixels between decoded images
MANIFOLD_QUANTILES = (0.05, 0.95)  # outermost prior quantiles of the manifold grid
INTERPOLATION_PAIRS = 5
TRAVERSAL_RANGE = 3.0  # traverse z_d over [-3, 3]: 99.7% of the prior's mass
SEED = 0  # fixes t-SNE / UMAP layouts and the choice of pairs


# --- statistics of the posterior ---------------------------------------------------------------


# --- shared drawing helpers --------------------------------------------------------------------


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _style(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def _check_images(x: torch.Tensor, kind: str) -> None:
    if x.dim() != 4:
        raise VaelabError(f"--kind {kind}: needs image data, but the data are tabular (shape {list(x.shape[1:])})")


def _show_grid(ax, images: torch.Tensor, rows: int, cols: int) -> tuple[list[float], list[float]]:
    """Draw ``images: [rows * cols, C, H, W]`` as a grid on ``ax``; returns the cell centres (x, y).

    The grid comes from :func:`vaelab.views.images.image_grid`, so cells are upscaled and padded as in every
    other vaelab picture; the centres let callers put ticks under columns and beside rows.
    """
    assert images.shape[0] == rows * cols, "one image per cell"
    grid = image_grid(images.clamp(0, 1).cpu(), nrow=cols, padding=GRID_PADDING)
    width, height = grid.size
    cell_w = (width - (cols + 1) * GRID_PADDING) / cols
    cell_h = (height - (rows + 1) * GRID_PADDING) / rows
    gray = grid.mode == "L"
    ax.imshow(np.asarray(grid), cmap="gray" if gray else None, vmin=0, vmax=255, interpolation="nearest")
    xs = [GRID_PADDING + c * (cell_w + GRID_PADDING) + cell_w / 2 for c in range(cols)]
    ys = [GRID_PADDING + r * (cell_h + GRID_PADDING) + cell_h / 2 for r in range(rows)]
    for side in ("top", "right", "bottom", "left"):
        ax.spines[side].set_visible(False)
    ax.tick_params(length=0)
    return xs, ys


def _label_name(label: int, classes: Sequence[str] | None) -> str:
    return classes[label] if classes is not None and 0 <= label < len(classes) else str(label)


# --- curves ------------------------------------------------------------------------------------


def curves_figure(metrics: Sequence[dict]) -> Figure:
    """The training curves: the same figure as the run's ``loss_curve.png``."""
    return loss_curve_figure(metrics)


# --- latent scatter ----------------------------------------------------------------------------


PROJECTION_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def _palette(n: int) -> list:
    """n distinguishable colours: tab10 / tab20 while they last, then evenly spaced viridis."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](i / (n - 1)) for i in range(n)]


def project_2d(means: torch.Tensor, method: str = "pca", seed: int = SEED) -> tuple[np.ndarray, tuple[str, str]]:
    """``means: [N, D]`` as ``[N, 2]`` points with axis labels: z itself for D <= 2, else PCA/t-SNE/UMAP."""
    if method not in METHODS:
        raise VaelabError(f"--method: unknown projection {method!r} (choose from {', '.join(METHODS)})")
    points = means.double().numpy()
    n, dim = points.shape
    if dim == 1:
        return np.column_stack([points[:, 0], np.zeros(n)]), ("z1", "")
    if dim == 2:
        return points, ("z1", "z2")
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(points)
        share = 100 * pca.explained_variance_ratio_
        return pca.transform(points), (f"PC 1 ({share[0]:.0f}% of variance)", f"PC 2 ({share[1]:.0f}%)")
    if n < 3:
        raise VaelabError(f"--method {method}: needs at least 3 examples, got {n}")
    if method == "tsne":
        from sklearn.manifold import TSNE

        tsne = TSNE(n_components=2, perplexity=min(30.0, n - 1.0), init="pca", random_state=seed)
        return tsne.fit_transform(points), ("t-SNE 1", "t-SNE 2")
    try:
        import umap
    except ImportError:
        raise VaelabError("--method umap needs the umap package: pip install umap-learn") from None
    embedding = umap.UMAP(n_components=2, random_state=seed).fit_transform(points)
    return np.asarray(embedding), ("UMAP 1", "UMAP 2")


def latent_figure(
    means: torch.Tensor,
    labels: torch.Tensor | None = None,
    classes: Sequence[str] | None = None,
    method: str = "pca",
    seed: int = SEED,
) -> Figure:
    """Scatter of posterior means ``[N, D]``, one colour (and legend entry) per label.

    Clusters that follow the labels show that the encoder separates classes without being told
    them; a 2-D latent is drawn as is, larger ones through :func:`project_2d`. Unlabelled data use
    one colour. Each class is one scatter collection, in label order.
    """
    points, (xlabel, ylabel) = project_2d(means, method, seed)
    figure = _figure(7.5, 6.5)
    ax = figure.subplots()
    size = max(2.0, min(18.0, 6000 / len(points)))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, color=TRAIN_COLOR, alpha=0.6, linewidths=0)
    else:
        labels_np = labels.cpu().numpy()
        present = np.unique(labels_np)
        palette = _palette(len(present))
        for color, label in zip(palette, present):
            chosen = labels_np == label
            ax.scatter(points[chosen, 0], points[chosen, 1], s=size, color=color, alpha=0.7,
                       linewidths=0, label=_label_name(int(label), classes))
        if len(present) <= 20:
            ax.legend(title="label", frameon=False, markerscale=max(1.0, 20 / size) ** 0.5,
                      loc="center left", bbox_to_anchor=(1.0, 0.5))
    how = "" if means.shape[1] <= 2 else f", {PROJECTION_NAMES[method]}"
    ax.set_title(f"Posterior means E[z|x] of {len(points)} examples ({means.shape[1]}-D latent{how})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    _style(ax)
    return figure


# --- decoder pictures: manifold, interpolation, traversal ----------------------------------------


@torch.no_grad()
def decode_means(model: VAE, z: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of p(x|z, c) for ``z: [N, D]`` (on any device): ``[N, *input_shape]`` on the CPU, in [0, 1].

    ``c`` holds N conditions or one ``[1, ...]`` shared by all z; a label model also takes probability
    vectors ``[N, n_classes]``, so that a path can blend two classes' one-hots.
    """
    z = z.to(model.device)
    if c is not None:
        c = c.to(model.device)
        c = c.expand(z.shape[0], *c.shape[1:])
    return model.decode(z, c).mean.clamp(0, 1).cpu()


def _sparse_ticks(ax, axis: str, centres: Sequence[float], values: Sequence[float], most: int = 7) -> None:
    """Label at most ``most`` of the cells along ``axis`` with their z value, evenly spread and
    symmetric about the middle (so an odd grid shows its centre, z = 0)."""
    chosen = sorted({round(i) for i in np.linspace(0, len(centres) - 1, min(most, len(centres)))})
    setter = ax.set_xticks if axis == "x" else ax.set_yticks
    setter([centres[i] for i in chosen], [f"{values[i]:.2g}" for i in chosen])


def manifold_codes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``[n * n, 2]`` of an n x n grid over Gaussian quantiles, and the ``[n]`` values per axis.

    Values are Phi^-1(p) for p evenly spaced in :data:`MANIFOLD_QUANTILES`, so neighbouring cells are
    equally probable under the prior. Row-major like an image: columns sweep z1 upwards, rows sweep z2
    downwards (the top row has the largest z2), as on a plot with z2 on the vertical axis.
    """
    if n < 2:
        raise VaelabError(f"the manifold grid needs at least 2 cells per side, got {n}")
    values = torch.special.ndtri(torch.linspace(*MANIFOLD_QUANTILES, n, dtype=torch.float64)).float()
    z1 = values.repeat(n)
    z2 = values.flip(0).repeat_interleave(n)
    return torch.stack([z1, z2], dim=-1), values


def manifold_figure(model: VAE, n: int = 15, label: int = 0, example_c: torch.Tensor | None = None) -> Figure:
    """The decoder's means over the 2-D latent space (Kingma & Welling 2014, Fig. 4).

    A conditional model is drawn at its condition's ``fixed`` value (``label``, or ``example_c``).
    """
    if model.latent_size != 2:
        raise VaelabError(
            f"--kind manifold: needs a 2-D latent space, the model has {model.latent_size} latent dimensions "
            "(--kind traversal shows any latent space)"
        )
    codes, values = manifold_codes(n)
    images = decode_means(model, codes, model.condition.fixed(model, label, example_c))
    _check_images(images, "manifold")
    figure = _figure(8, 8.4)
    ax = figure.subplots()
    xs, ys = _show_grid(ax, images, n, n)
    _sparse_ticks(ax, "x", xs, values.tolist())
    _sparse_ticks(ax, "y", ys, values.flip(0).tolist())
    ax.set_xlabel("z1")
    ax.set_ylabel("z2")
    low, high = MANIFOLD_QUANTILES
    ax.set_title(f"Decoder means over the latent space: z = Φ⁻¹(p), p from {low:g} to {high:g}"
                 + model.condition.describe(model, label))
    return figure


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of ``z0, z1: [B, D]`` at ``t: [T]``: ``[B, T, D]`` (after White 2016).

    The direction follows the great circle from z0's to z1's and the norm goes linearly from |z0| to
    |z1|, so midpoints keep a typical norm for a Gaussian prior instead of shrinking towards 0 as
    linear midpoints do. (White's formula applied to the raw codes explodes when they point in nearly
    opposite directions with unequal norms; the unit directions never do.) Parallel or antiparallel
    codes, whose great circle is degenerate, fall back to linear interpolation.
    """
    norm0 = z0.norm(dim=-1, keepdim=True)[:, None]  # [B, 1, 1]
    norm1 = z1.norm(dim=-1, keepdim=True)[:, None]
    unit0 = z0[:, None] / norm0.clamp_min(1e-12)  # [B, 1, D]
    unit1 = z1[:, None] / norm1.clamp_min(1e-12)
    omega = torch.acos((unit0 * unit1).sum(-1, keepdim=True).clamp(-1, 1))  # [B, 1, 1]
    t = t[None, :, None]  # [1, T, 1]
    sin = torch.sin(omega)
    degenerate = sin.abs() < 1e-6
    safe = torch.where(degenerate, torch.ones_like(sin), sin)
    direction = (torch.sin((1 - t) * omega) * unit0 + torch.sin(t * omega) * unit1) / safe
    spherical = ((1 - t) * norm0 + t * norm1) * direction
    return torch.where(degenerate, lerp(z0, z1, t[0, :, 0]), spherical)


def lerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of ``z0, z1: [B, D]`` at ``t: [T]``: ``[B, T, D]``."""
    t = t[None, :, None]
    return (1 - t) * z0[:, None] + t * z1[:, None]


def _blendable(model: VAE, c: torch.Tensor) -> torch.Tensor:
    """Conditions as float vectors that can be blended: labels as one-hots, covariates as they are."""
    if c.dtype.is_floating_point:
        return c
    return F.one_hot(c.long(), model.condition_dim).to(model.dtype)


def interpolation_figure(
    model: VAE,
    start: torch.Tensor,
    end: torch.Tensor,
    steps: int = 9,
    names: Sequence[str] | None = None,
    c_start: torch.Tensor | None = None,
    c_end: torch.Tensor | None = None,
) -> Figure:
    """Decoded paths between the posterior means of ``start[i]`` and ``end[i]`` (``[P, C, H, W]``).

    Two panels, linear and spherical, one row per pair; ``names`` label the rows (e.g. "3 → 7").
    A smooth morph means the decoder is meaningful between the codes of real data, not only at them.
    A conditional model encodes each end with its condition (``c_start``, ``c_end``) and decodes
    along the path with the condition vectors blended linearly (one-hot to one-hot for labels).
    """
    _check_images(start, "interpolation")
    assert start.shape == end.shape, "one end for every start"
    if steps < 2:
        raise VaelabError(f"an interpolation needs at least 2 steps, got {steps}")
    pairs = start.shape[0]
    with torch.no_grad():
        device = model.device
        c0 = None if c_start is None else c_start.to(device)
        c1 = None if c_end is None else c_end.to(device)
        z0, z1 = model.encode(start.to(device), c0).mean, model.encode(end.to(device), c1).mean
    t = torch.linspace(0, 1, steps, device=z0.device)
    condition = None
    if model.conditional:
        vectors = lerp(_blendable(model, c0), _blendable(model, c1), t)  # [P, T, K]
        condition = vectors.reshape(pairs * steps, -1)
    names = names or [f"pair {i + 1}" for i in range(pairs)]
    figure = _figure(2 * (1.2 + 0.75 * steps), 1.1 + 0.75 * pairs)
    for ax, (title, path) in zip(figure.subplots(1, 2), (("linear", lerp), ("spherical (slerp)", slerp))):
        codes = path(z0, z1, t).reshape(pairs * steps, -1)  # row = pair, column = t
        xs, ys = _show_grid(ax, decode_means(model, codes, condition), pairs, steps)
        _sparse_ticks(ax, "x", xs, t.tolist(), most=5)
        ax.set_yticks(ys, names)
        ax.set_xlabel("t")
        ax.set_title(f"{title} interpolation")
    figure.suptitle("Decoded paths between the codes of test pairs, t = 0 → 1")
    return figure


def traversal_figure(
    model: VAE,
    base: torch.Tensor,
    stats: LatentSummary,
    rows: int = 8,
    steps: int = 9,
    label: int = 0,
    example_c: torch.Tensor | None = None,
) -> Figure:
    """Sweep single latent dimensions over [-3, 3] around the code ``base: [D]``, most active first.

    Each row replaces one coordinate of ``base`` and decodes: the change along a row is what that
    dimension encodes. Rows are labelled with the dimension and its average KL; a dimension the
    encoder ignores (inactive) usually leaves its row unchanged. A conditional model is decoded at
    its condition's ``fixed`` value (``label``, or the base example's covariates ``example_c``).
    In a hierarchical model a dimension of an upper layer moves the layers below it by the prior's
    conditional means (:func:`~vaelab.models.latents.follow_prior_below`), so its row shows its effect.
    """
    if steps < 2 or rows < 1:
        raise VaelabError(f"a traversal needs rows >= 1 and steps >= 2, got rows={rows}, steps={steps}")
    order = torch.argsort(stats.mean_variance, descending=True)[: min(rows, model.latent_size)]
    values = torch.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, steps)
    condition = model.condition.fixed(model, label, example_c)
    base = base.to(model.device, model.dtype)
    prior = model.prior_for(None if condition is None else condition.to(model.device))
    codes = base.repeat(len(order), steps, 1)  # [R, T, D]
    with torch.no_grad():
        for row, dim in enumerate(order.tolist()):
            codes[row, :, dim] = values.to(codes)
            codes[row] = follow_prior_below(prior, base, codes[row], layer_of(prior, dim))
    images = decode_means(model, codes.reshape(len(order) * steps, -1), condition)
    _check_images(images, "traversal")
    figure = _figure(1.8 + 0.75 * steps, 1.3 + 0.75 * len(order))
    ax = figure.subplots()
    xs, ys = _show_grid(ax, images, len(order), steps)
    ax.set_xticks(xs, [f"{value:g}" for value in values.tolist()])  # every column: its z_d value
    active = stats.active
    ax.set_yticks(ys, [
        f"z{d + 1}  KL {stats.kl_per_dim[d]:.2f}" + ("" if active[d] else " (inactive)") for d in order.tolist()
    ])
    ax.set_xlabel("value of the traversed dimension")
    ax.set_title(f"Latent traversals: {len(order)} most active of {model.latent_size} dimensions"
                 + model.condition.describe(model, label))
    return figure


def interpolation_pairs(labels: torch.Tensor | None, n: int, pairs: int) -> tuple[list[int], list[int]]:
    """Indices (starts, ends) of up to ``pairs`` pairs among the first n examples, classes mixed if known.

    Between two examples of one class an interpolation shows little. Examples are taken round-robin
    over the classes (the first of each class, then the second of each, ...) and paired in that
    order, so a pair joins two classes and the pairs cover many classes. Unlabelled data pair 0-1, 2-3, ...
    """
    order = list(range(n))
    if labels is not None:
        counts: dict[int, int] = {}
        rank = []
        for label in labels[:n].tolist():
            rank.append(counts.get(label, 0))
            counts[label] = rank[-1] + 1
        order.sort(key=lambda i: (rank[i], i))
    pairs = min(pairs, n // 2)
    return order[0 : 2 * pairs : 2], order[1 : 2 * pairs : 2]


# --- KL per dimension ----------------------------------------------------------------------------


def kl_figure(stats: LatentSummary, order: str = "index") -> Figure:
    """Bars of the average KL per latent dimension over the activity statistic Var_x E_q[z_d].

    The KL a dimension costs is the information it carries about x; dimensions whose posterior mean
    does not vary with x (Var below :data:`ACTIVE_UNIT_THRESHOLD`) are inactive: q(z_d|x) ≈ p(z_d),
    the posterior collapsed. ``order`` is ``"index"`` or ``"kl"`` (largest first).
    """
    if order not in ("index", "kl"):
        raise VaelabError(f"order must be 'index' or 'kl', got {order!r}")
    dims = stats.kl_per_dim.shape[0]
    index = torch.argsort(stats.kl_per_dim, descending=True) if order == "kl" else torch.arange(dims)
    active = stats.active[index].tolist()
    colors = [TRAIN_COLOR if a else INACTIVE_COLOR for a in active]
    positions = np.arange(dims)
    figure = _figure(max(8.5, min(18.0, 4 + 0.3 * dims)), 6.5)
    kl_ax, var_ax = figure.subplots(2, 1, sharex=True)
    kl_ax.bar(positions, stats.kl_per_dim[index].numpy(), color=colors)
    kl_ax.set_ylabel("KL( q(z_d|x) ‖ p(z_d) ), nats")
    kl_ax.set_title(
        f"KL per latent dimension (mean over x): {sum(active)} of {dims} active, "
        f"total {stats.kl_per_dim.sum():.2f} nats"
    )
    variance = stats.mean_variance[index].clamp_min(1e-8)
    var_ax.bar(positions, variance.numpy(), color=colors)
    var_ax.set_yscale("log")
    var_ax.set_ylim(bottom=min(ACTIVE_UNIT_THRESHOLD / 10, float(variance.min()) / 2))
    var_ax.axhline(ACTIVE_UNIT_THRESHOLD, color="black", ls="--", lw=1,
                   label=f"threshold {ACTIVE_UNIT_THRESHOLD:g}:\nactive above it\n(Burda et al. 2016)")
    var_ax.set_ylabel("Var_x E_q[z_d]")
    var_ax.set_xlabel("latent dimension" + (" (sorted by KL)" if order == "kl" else ""))
    step = max(1, math.ceil(dims / 40))
    var_ax.set_xticks(positions[::step], [f"z{d + 1}" for d in index.tolist()][::step],
                      rotation=90 if dims > 20 else 0)
    handles = [
        kl_ax.bar([0], [0], color=TRAIN_COLOR, label="active"),
        kl_ax.bar([0], [0], color=INACTIVE_COLOR, label="inactive (posterior collapsed)"),
    ]
    kl_ax.legend(handles=handles, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    var_ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1))
    for ax in (kl_ax, var_ax):
        ax.grid(True, axis="y", alpha=0.3)
        _style(ax)
    return figure


# --- a run's plots on disk -----------------------------------------------------------------------


def plot_path(run_dir: str | os.PathLike, kind: str, method: str = "pca") -> Path:
    """``RUN/plots/<kind>.png``; a latent map projected by another method than PCA is
    ``latent-<method>.png``, so a t-SNE map sits beside the PCA one instead of replacing it."""
    name = f"{kind}-{method}" if kind == "latent" and method != "pca" else kind
    return Path(run_dir) / PLOTS_DIR / f"{name}.png"


def _requested_kinds(kinds: Sequence[str]) -> tuple[list[str], bool]:
    """The named kinds in :data:`KINDS` order, and whether ``"all"`` was asked for."""
    unknown = [kind for kind in kinds if kind != "all" and kind not in KINDS]
    if unknown:
        raise VaelabError(f"--kind: unknown plot kind {unknown[0]!r} (choose from all, {', '.join(KINDS)})")
    everything = "all" in kinds
    return [kind for kind in KINDS if everything or kind in kinds], everything


def _unavailable(kind: str, run: rundir.Run, x: torch.Tensor) -> str | None:
    """Why ``run`` cannot have a plot of ``kind`` on the data ``x``, or None if it can."""
    if kind == "curves" and not run.metrics:
        return "the run has no completed epochs (no metrics.jsonl)"
    if kind in IMAGE_KINDS and x.dim() != 4:
        return f"needs image data, but {run.config.data.dataset} is tabular"
    if kind == "manifold" and run.model.latent_size != 2:
        return f"needs a 2-D latent space, the model has {run.model.latent_size} latent dimensions"
    if kind == "interpolation" and x.shape[0] < 2:
        return "needs at least 2 examples in the split"
    return None


def write_run_plots(
    run_dir: str | os.PathLike,
    kinds: Sequence[str] = ("all",),
    *,
    device: str = "auto",
    split: str = "test",
    limit: int = DEFAULT_LIMIT,
    method: str = "pca",
    label: int = 0,
    missing_only: bool = False,
) -> list[Path]:
    """Write ``RUN/plots/<kind>.png`` for each kind (``"all"``: every kind the run can have).

    The latent scatter shows the first ``limit`` examples of ``split``; KL and activity use the whole
    split. Conditional models encode every example with its own condition; the manifold and the
    traversals of a label model are drawn for class ``label``. With ``missing_only`` existing plots
    are kept (what ``vaelab report`` uses). Returns the paths written.
    """
    wanted, everything = _requested_kinds(kinds)
    if method not in METHODS:
        raise VaelabError(f"--method: unknown projection {method!r} (choose from {', '.join(METHODS)})")
    if limit < 1:
        raise VaelabError(f"--limit: must be >= 1, got {limit}")
    run = rundir.load(run_dir, device=resolve_device(device))
    dataset = load_data(run.config)
    data = getattr(dataset, split)
    if len(data) == 0:
        raise VaelabError(f"{run_dir}: the {split} split is empty")
    todo = []
    for kind in wanted:
        reason = _unavailable(kind, run, data.x)
        if reason is None:
            todo.append(kind)
        elif everything:  # not asked for by name: a normal run need not hear about it
            log.debug("plots: no %s plot (%s)", kind, reason)
        else:
            raise VaelabError(f"--kind {kind}: {reason}")
    if missing_only:
        todo = [kind for kind in todo if not plot_path(run_dir, kind, method).is_file()]
    c = run.model.condition.of(data)
    run.model.condition.fixed(run.model, label, None if c is None else c[0])  # a bad --label fails before any drawing

    stats = latent_summary(run.model, data.x, c) if set(todo) - {"curves", "manifold"} else None
    labels = None if data.y is None else data.y[:limit]
    starts, ends = interpolation_pairs(data.y, min(len(data), 1000), INTERPOLATION_PAIRS)
    names = None
    if data.y is not None:
        names = [f"{_label_name(int(data.y[a]), dataset.classes)} → {_label_name(int(data.y[b]), dataset.classes)}"
                 for a, b in zip(starts, ends)]
    figures = {
        "curves": lambda: curves_figure(run.metrics),
        "latent": lambda: latent_figure(stats.means[:limit], labels, dataset.classes, method),
        "manifold": lambda: manifold_figure(run.model, label=label, example_c=None if c is None else c[0]),
        "interpolation": lambda: interpolation_figure(
            run.model, data.x[starts], data.x[ends], names=names,
            c_start=None if c is None else c[starts], c_end=None if c is None else c[ends]),
        "traversal": lambda: traversal_figure(
            run.model, stats.means[0], stats, label=label, example_c=None if c is None else c[0]),
        "kl": lambda: kl_figure(stats),
    }
    written = []
    for kind in todo:
        path = plot_path(run_dir, kind, method)
        save_figure(figures[kind](), path)
        written.append(path)
    return written
