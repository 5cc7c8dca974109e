"""Coloured shapes with known generative factors: an offline RGB dataset made in numpy.

dSprites (Matthey et al. 2017) in colour: each image is one flat-coloured circle, square or triangle
on black, with its shape, palette colour, position and scale drawn independently and uniformly and
kept beside the pixels. That makes it a test bed where the answers are known: latent traversals and
disentanglement can be scored against true factors, and an 8-bit likelihood sees both edge bins
(the black background, the saturated colours) and sharp edges.

Every image is drawn from five uniforms in one row of ``numpy.random.default_rng(seed).random((n, 5))``,
so ``make_shapes(n, seed=s)`` is a prefix of ``make_shapes(m, seed=s)`` for m > n, and the same scene is
drawn at every ``size`` (factors are fractions of the image side).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ("circle", "square", "triangle")  # label = index; sorted, so class folders keep the labels
COLOUR_NAMES = ("red", "green", "blue", "yellow", "magenta", "cyan")
PALETTE = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [255, 0, 255], [0, 255, 255]], dtype=np.uint8
)  # [6, 3], row = colour index
SCALE_RANGE = (0.10, 0.25)  # radius of the circle through the shape's corners, fraction of the side
POSITION_RANGE = (0.25, 0.75)  # centre, fraction of the side; with scale <= 0.25 no shape is cut off
FACTOR_NAMES = ("colour", "r", "g", "b", "x", "y", "scale")  # columns of ShapesData.factors()
MIN_SIZE = 16  # the smallest triangle's incircle (radius 0.05 * size) then always covers a pixel centre
_CHUNK = 2048  # images per vectorised block: bounds the [chunk, S, S] temporaries at 64x64 to ~32 MB


@dataclass(frozen=True)
class ShapesData:
    images: np.ndarray  # [N, 3, S, S] uint8: the object's RGB on its mask, 0 elsewhere
    labels: np.ndarray  # [N] int64, index into SHAPES
    colours: np.ndarray  # [N] int64, index into PALETTE / COLOUR_NAMES
    rgb: np.ndarray  # [N, 3] uint8, the object's exact colour, PALETTE[colours]
    x: np.ndarray  # [N] float64, centre from the left edge, fraction of the side, in POSITION_RANGE
    y: np.ndarray  # [N] float64, centre from the top edge, fraction of the side, in POSITION_RANGE
    scale: np.ndarray  # [N] float64, circumradius as a fraction of the side, in SCALE_RANGE
    masks: np.ndarray  # [N, S, S] bool, the object's pixels

    def __len__(self) -> int:
        return len(self.labels)

    def factors(self) -> np.ndarray:
        """``[N, 7]`` float32, columns :data:`FACTOR_NAMES` (what ``.npz`` files store as ``c``)."""
        return np.column_stack([self.colours, self.rgb, self.x, self.y, self.scale]).astype(np.float32)


def _inside_circle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    return dx * dx + dy * dy <= r * r


def _inside_square(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Axis-aligned, corners on the circumcircle: half-side r / sqrt 2."""
    return np.maximum(np.abs(dx), np.abs(dy)) <= r / math.sqrt(2.0)


def _inside_triangle(dx: np.ndarray, dy: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Equilateral, apex up (y grows downwards): apex at dy = -r, base at dy = r/2 with half-width
    r sqrt(3)/2, so the half-width at height dy is (dy + r) / sqrt 3."""
    return (dy <= r / 2) & (math.sqrt(3.0) * np.abs(dx) <= dy + r)


_INSIDE = (_inside_circle, _inside_square, _inside_triangle)  # indexed like SHAPES


def _draw_masks(labels: np.ndarray, x: np.ndarray, y: np.ndarray, scale: np.ndarray, size: int) -> np.ndarray:
    """``[N, S, S]`` bool: a pixel belongs to the shape when its centre ((i + 0.5) / S) lies inside."""
    centres = ((np.arange(size) + 0.5) / size).astype(np.float32)  # [S]
    masks = np.empty((len(labels), size, size), dtype=bool)
    for start in range(0, len(labels), _CHUNK):
        block = slice(start, start + _CHUNK)
        dx = centres[None, None, :] - x[block, None, None].astype(np.float32)  # [n, 1, S]
        dy = centres[None, :, None] - y[block, None, None].astype(np.float32)  # [n, S, 1]
        r = scale[block, None, None].astype(np.float32)  # [n, 1, 1]
        for label, inside in enumerate(_INSIDE):
            rows = np.flatnonzero(labels[block] == label)
            masks[start + rows] = inside(dx[rows], dy[rows], r[rows])
    return masks


def make_shapes(n: int, size: int = 32, seed: int = 0) -> ShapesData:
    """``n`` images ``[n, 3, size, size]`` of one flat-coloured shape each, with their factors."""
    if n < 0 or size < MIN_SIZE:
        raise ValueError(f"need n >= 0 and size >= {MIN_SIZE}, got n={n}, size={size}")
    u = np.random.default_rng(seed).random((n, 5))  # one row per image: shape, colour, scale, x, y
    labels = (u[:, 0] * len(SHAPES)).astype(np.int64)
    colours = (u[:, 1] * len(PALETTE)).astype(np.int64)
    scale = SCALE_RANGE[0] + (SCALE_RANGE[1] - SCALE_RANGE[0]) * u[:, 2]
    x, y = POSITION_RANGE[0] + (POSITION_RANGE[1] - POSITION_RANGE[0]) * u[:, 3:5].T
    rgb = PALETTE[colours]
    masks = _draw_masks(labels, x, y, scale, size)
    images = masks[:, None] * rgb[:, :, None, None]  # [n, 3, S, S] uint8
    return ShapesData(images, labels, colours, rgb, x, y, scale, masks)


def write_shapes_folder(path: str | Path, n: int, size: int = 32, seed: int = 0) -> ShapesData:
    """``path/<shape>/<index>.png``: a folder of class sub-folders, as a user's own photos would be.

    Class folders sort like :data:`SHAPES`, so a folder loader's labels equal ``labels``. Refuses a
    non-empty ``path``: files left from an earlier, larger run would silently join the dataset.
    """
    path = Path(path)
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not empty")
    data = make_shapes(n, size, seed)
    for name in SHAPES:
        (path / name).mkdir(parents=True, exist_ok=True)
    width = len(str(max(n - 1, 0)))
    for i, (image, label) in enumerate(zip(data.images, data.labels, strict=True)):
        Image.fromarray(image.transpose(1, 2, 0)).save(path / SHAPES[label] / f"{i:0{width}d}.png")
    return data


def write_shapes_npz(path: str | Path, n: int, size: int = 32, seed: int = 0) -> ShapesData:
    """One ``.npz`` in the layout vaelab's loader reads: ``x`` uint8 ``[N, 3, S, S]``, ``y`` the shape,
    ``c`` the factors ``[N, 7]`` and ``c_names`` :data:`FACTOR_NAMES`. The masks are not stored (the
    loader accepts no other arrays); ``make_shapes(n, size, seed)`` rebuilds them exactly."""
    data = make_shapes(n, size, seed)
    np.savez_compressed(Path(path), x=data.images, y=data.labels, c=data.factors(), c_names=np.array(FACTOR_NAMES))
    return data
