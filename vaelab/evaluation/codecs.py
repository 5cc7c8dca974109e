"""Lossless codecs as a baseline for a generative model's bits/dim on 8-bit images.

A discrete likelihood p(x) is a code length: -log2 p(x) bits, achievable to within a few bits by
arithmetic coding (the bits-back argument extends this to the ELBO of a latent-variable model,
Townsend et al. 2019). A model that cannot beat PNG or lossless WebP on its own test images has
learned less about them than a hand-written codec. Here each image is encoded on its own, as it would
be stored, and the whole file counts, headers included (for PNG about 57 bytes per image, ~0.15
bits/dim at 3x32x32), so the numbers are what the files really cost:

    bits/dim = 8 * total bytes / (N C H W).
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
from PIL import Image

_MODES = {1: "L", 3: "RGB"}  # channels -> Pillow mode


def _to_pil(image: np.ndarray) -> Image.Image:
    """``[C, H, W]`` uint8, C = 1 or 3 -> a Pillow image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in _MODES:
        raise ValueError(f"expected a uint8 image [C, H, W] with C 1 or 3, got {image.dtype} {image.shape}")
    return Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0), _MODES[image.shape[0]])


def encode_png(image: np.ndarray) -> bytes:
    """A PNG file of one ``[C, H, W]`` uint8 image, zlib at level 9 with Pillow's optimize pass."""
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="PNG", optimize=True, compress_level=9)
    return buffer.getvalue()


def encode_webp(image: np.ndarray) -> bytes:
    """A lossless WebP file of one ``[C, H, W]`` uint8 image, at the slowest, smallest setting
    (quality 100 = most effort, method 6). WebP has no grey mode: a grey image is stored as RGB."""
    buffer = io.BytesIO()
    _to_pil(image).save(buffer, format="WEBP", lossless=True, quality=100, method=6)
    return buffer.getvalue()


def _bits_per_dim(images: np.ndarray, encode: Callable[[np.ndarray], bytes]) -> float:
    images = np.asarray(images)
    if images.ndim != 4 or images.size == 0:
        raise ValueError(f"expected uint8 images [N, C, H, W] with N > 0, got shape {images.shape}")
    total_bytes = sum(len(encode(image)) for image in images)
    return 8.0 * total_bytes / images.size


def png_bits_per_dim(images: np.ndarray) -> float:
    """Bits per sub-pixel of ``images`` ``[N, C, H, W]`` uint8 stored as one PNG file each."""
    return _bits_per_dim(images, encode_png)


def webp_bits_per_dim(images: np.ndarray) -> float:
    """Bits per sub-pixel of ``images`` ``[N, C, H, W]`` uint8 stored as one lossless WebP file each."""
    return _bits_per_dim(images, encode_webp)


CODECS = {"png": png_bits_per_dim, "webp": webp_bits_per_dim}  # name -> bits/dim of uint8 [N, C, H, W]
