"""Pictures of a VAE: image grids, input-vs-reconstruction grids and loss curves.

Compute functions return a ``PIL.Image.Image`` or a ``matplotlib.figure.Figure`` and write
nothing; the ``save_*`` helpers write PNGs through :func:`vaelab.fileio.atomic_save`, so a killed
run never leaves half an image. Figures are built on ``Figure`` + ``FigureCanvasAgg`` directly,
never through ``pyplot``: importing this module does not pick a backend, open windows or register
figures in a user's notebook.

Loss curves follow the ELBO decomposition of Kingma & Welling (2014), Eq. 3:
``-ELBO(x) = -E_q[log p(x|z)] + KL(q(z|x) || p(z))``, one panel per term, in nats per example.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_save

# Smallest side of a grid cell, in pixels, before the default scale stops upscaling: 8x8 UCI digits
# become 56x56 (x7), 28x28 MNIST becomes 56x56 (x2), 64x64 faces stay as they are.
MIN_CELL_PIXELS = 56

# Below this font size (pixels) the "input"/"recon" labels are harder to read than to leave out.
MIN_LABEL_FONT = 9

TRAIN_COLOR = "#1f77b4"  # blue, the same in every panel
VAL_COLOR = "#ff7f0e"  # orange
# (key prefix, legend label, colour) of each line in a panel
SPLITS = (("train", "train", TRAIN_COLOR), ("val", "validation", VAL_COLOR))
MAX_MARKED_EPOCHS = 30  # with more epochs, markers turn the line into a smudge
MAX_LABELLED_EPOCHS = 10  # up to this many epochs, every epoch gets its own tick

# (metric suffix, panel title) in the order of the panels; the suffix completes "train_"/"val_".
LOSS_PANELS = (
    ("negative_elbo", "negative ELBO"),
    ("rec", "reconstruction  −log p(x|z)"),
    ("kl", "KL( q(z|x) ‖ p(z) )"),
)


def _check_images(images: torch.Tensor, name: str) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise VaelabError(
            f"{name} must be a non-empty [N, C, H, W] tensor with C = 1 or 3, "
            f"got shape {tuple(images.shape)}"
        )


def _default_scale(height: int, width: int) -> int:
    """Integer nearest-neighbour factor making the smaller side at least ``MIN_CELL_PIXELS``."""
    return max(1, math.ceil(MIN_CELL_PIXELS / min(height, width)))


def _to_byte(value: float) -> int:
    return round(min(max(value, 0.0), 1.0) * 255)


def image_grid(
    images: torch.Tensor,
    nrow: int | None = None,
    padding: int = 2,
    scale: int | None = None,
    pad_value: float = 1.0,
) -> Image.Image:
    """Lay out ``images: [N, C, H, W]`` (values in [0, 1], clamped) as a grid, ``nrow`` per row.

    ``nrow`` defaults to ``ceil(sqrt(N))`` so the grid is about square. Each image is upscaled by
    the integer ``scale`` with nearest-neighbour, which keeps pixels crisp instead of blurring a
    8x8 digit into mush; the default makes every cell at least ``MIN_CELL_PIXELS`` on a side.
    ``padding`` is in output pixels (a thin line at any scale) and surrounds every cell, so the
    result is ``nrow * W * scale + (nrow + 1) * padding`` wide and
    ``ceil(N / nrow) * H * scale + (ceil(N / nrow) + 1) * padding`` high. Cells past N keep the
    ``pad_value`` background. One channel gives a mode "L" image, three give "RGB".
    """
    _check_images(images, "images")
    n, channels, height, width = images.shape
    if nrow is not None and nrow < 1:
        raise VaelabError(f"nrow must be at least 1, got {nrow}")
    if scale is not None and scale < 1:
        raise VaelabError(f"scale must be at least 1, got {scale}")
    if padding < 0:
        raise VaelabError(f"padding must be non-negative, got {padding}")
    ncol = min(nrow or math.ceil(math.sqrt(n)), n)
    scale = scale or _default_scale(height, width)
    nrows = math.ceil(n / ncol)

    pixels = images.detach().to("cpu", torch.float32).nan_to_num(0.0).clamp(0.0, 1.0)
    pixels = (pixels * 255).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(scale, 2).repeat_interleave(scale, 3)  # [N, C, sH, sW]
    cell_h, cell_w = height * scale, width * scale

    canvas = torch.full(
        (channels, nrows * cell_h + (nrows + 1) * padding, ncol * cell_w + (ncol + 1) * padding),
        _to_byte(pad_value),
        dtype=torch.uint8,
    )
    for index in range(n):
        row, col = divmod(index, ncol)
        top = padding + row * (cell_h + padding)
        left = padding + col * (cell_w + padding)
        canvas[:, top : top + cell_h, left : left + cell_w] = pixels[index]

    array = canvas.permute(1, 2, 0).numpy()  # [H, W, C]
    return Image.fromarray(array[:, :, 0] if channels == 1 else array)


def reconstruction_grid(
    inputs: torch.Tensor,
    reconstructions: torch.Tensor,
    ncol: int = 8,
    rows: int = 4,
    padding: int = 2,
    scale: int | None = None,
    pad_value: float = 1.0,
    gap: int = 10,
    labels: bool = True,
) -> Image.Image:
    """Show x above its reconstruction, ``rows`` pairs of rows with ``ncol`` examples each.

    Each pair is a row of inputs directly above the row of their reconstructions, so the eye
    compares an example with its reconstruction vertically; pairs are separated by ``gap`` extra
    pixels so the alternation cannot be misread. Only the first ``ncol * rows`` examples are shown.
    With ``labels`` a left column names each row "input"/"recon" in PIL's default font, dropped when
    cells are too small for the text to stay readable.
    """
    _check_images(inputs, "inputs")
    if reconstructions.shape != inputs.shape:
        raise VaelabError(
            f"reconstructions must have the shape of inputs {tuple(inputs.shape)}, "
            f"got {tuple(reconstructions.shape)}"
        )
    if ncol < 1 or rows < 1:
        raise VaelabError(f"ncol and rows must be at least 1, got ncol={ncol}, rows={rows}")
    if gap < 0:
        raise VaelabError(f"gap must be non-negative, got {gap}")
    n = min(inputs.shape[0], ncol * rows)
    ncol = min(ncol, n)
    npairs = math.ceil(n / ncol)
    scale = scale or _default_scale(inputs.shape[2], inputs.shape[3])
    # Blank cells complete a short last pair so its inputs and reconstructions stay column-aligned.
    blank = torch.full((npairs * ncol - n, *inputs.shape[1:]), pad_value)

    pairs = []
    for pair in range(npairs):
        chunk = slice(pair * ncol, (pair + 1) * ncol)
        top_row = torch.cat([inputs[:n][chunk].detach().cpu().float(), blank])[:ncol]
        bottom_row = torch.cat([reconstructions[:n][chunk].detach().cpu().float(), blank])[:ncol]
        pairs.append(image_grid(torch.cat([top_row, bottom_row]), ncol, padding, scale, pad_value))

    pair_w, pair_h = pairs[0].size
    cell_h = inputs.shape[2] * scale
    font_size = min(16, cell_h // 3)
    readable = labels and font_size >= MIN_LABEL_FONT
    font = ImageFont.load_default(size=font_size) if readable else None
    margin = 6
    label_w = 0
    if font is not None:
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        text_w = max(probe.textbbox((0, 0), text, font=font)[2] for text in ("input", "recon"))
        label_w = text_w + 2 * margin

    mode = pairs[0].mode
    background = _to_byte(pad_value)
    fill = background if mode == "L" else (background,) * 3
    grid = Image.new(mode, (label_w + pair_w, npairs * pair_h + (npairs - 1) * gap), fill)
    for pair, image in enumerate(pairs):
        grid.paste(image, (label_w, pair * (pair_h + gap)))

    if font is not None:
        ink = 40 if pad_value >= 0.5 else 230
        ink_fill = ink if mode == "L" else (ink,) * 3
        draw = ImageDraw.Draw(grid)
        for pair in range(npairs):
            for row, text in enumerate(("input", "recon")):
                centre = pair * (pair_h + gap) + padding + row * (cell_h + padding) + cell_h / 2
                _, top, right, bottom = draw.textbbox((0, 0), text, font=font)
                xy = (label_w - margin - right, round(centre - (top + bottom) / 2))
                draw.text(xy, text, fill=ink_fill, font=font)
    return grid


def loss_curve_figure(metrics: Sequence[Mapping[str, float]]) -> Figure:
    """Three panels, negative ELBO, reconstruction and KL, train vs validation per epoch.

    Splitting the loss into its two ELBO terms shows what a single curve hides: a KL that
    collapses to zero (posterior collapse) or a reconstruction term that keeps falling while
    validation rises (overfitting). Records are dicts like ``{"epoch": 1, "train_negative_elbo": ...,
    "val_negative_elbo": ..., "train_rec": ..., "val_rec": ..., "train_kl": ..., "val_kl": ...}``; a key that
    is missing or ``None`` in a record simply has no point there, so runs without validation
    plot train lines only. A record without ``"epoch"`` counts as its 1-based position.
    """
    if not metrics:
        raise VaelabError("no metrics to plot: the run has no completed epochs")
    epochs = [record.get("epoch", position) for position, record in enumerate(metrics, start=1)]
    marker = "o" if len(metrics) <= MAX_MARKED_EPOCHS else None

    figure = Figure(figsize=(13, 3.8), layout="tight")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(LOSS_PANELS))
    for ax, (term, title) in zip(axes, LOSS_PANELS):
        for split, label, color in SPLITS:
            points = [
                (epoch, record[f"{split}_{term}"])
                for epoch, record in zip(epochs, metrics)
                if record.get(f"{split}_{term}") is not None
            ]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, color=color, label=label, marker=marker, markersize=4, lw=1.8)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / example")
        if len(set(epochs)) <= MAX_LABELLED_EPOCHS:
            ax.set_xticks(sorted(set(epochs)))  # else one epoch gets fractional ticks like 0.975
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
        if ax.lines:
            ax.legend(frameon=False)
        else:
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", color="gray",
                    transform=ax.transAxes)
    return figure


def save_image(image: Image.Image, path: str | os.PathLike) -> None:
    """Write ``image`` as a PNG (whatever the suffix), atomically."""
    atomic_save(path, lambda handle: image.save(handle, format="PNG"))


def save_figure(figure: Figure, path: str | os.PathLike, dpi: int = 150) -> None:
    """Write ``figure`` as a PNG on a white background, atomically."""
    atomic_save(
        path, lambda handle: figure.savefig(handle, format="png", dpi=dpi, facecolor="white")
    )
