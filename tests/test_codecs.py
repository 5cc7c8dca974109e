"""PNG and lossless WebP code lengths: truly lossless, and cheap for easy images, ~8 bits/dim for noise."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vaelab.data.shapes import make_shapes
from vaelab.evaluation.codecs import CODECS, encode_png, encode_webp, png_bits_per_dim, webp_bits_per_dim

RNG = np.random.default_rng(0)
NOISE_RGB = RNG.integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
NOISE_GREY = RNG.integers(0, 256, (4, 1, 32, 32), dtype=np.uint8)


def _decode(data: bytes, channels: int) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


@pytest.mark.parametrize("encode", [encode_png, encode_webp])
@pytest.mark.parametrize("images", [NOISE_RGB, NOISE_GREY, make_shapes(4, 32).images], ids=["rgb", "grey", "shapes"])
def test_lossless_round_trip(encode, images):
    for image in images:
        assert np.array_equal(_decode(encode(image), image.shape[0]), image)


@pytest.mark.parametrize("name", ["png", "webp"])
def test_constant_costs_far_less_than_noise(name):
    bits = CODECS[name]
    constant = np.full((4, 3, 32, 32), 77, dtype=np.uint8)
    assert bits(constant) < 0.5
    assert bits(NOISE_RGB) >= 7.9  # incompressible: 8 bits/dim plus the container, give or take
    assert bits(make_shapes(8, 32).images) < 1.0  # flat shapes on black compress well


def test_bits_per_dim_is_eight_times_bytes_per_sub_pixel():
    images = make_shapes(3, 32, seed=1).images
    total = sum(len(encode_png(image)) for image in images)
    assert png_bits_per_dim(images) == 8 * total / images.size
    total = sum(len(encode_webp(image)) for image in images)
    assert webp_bits_per_dim(images) == 8 * total / images.size


def test_rejects_what_is_not_8_bit_images():
    with pytest.raises(ValueError):
        png_bits_per_dim(np.zeros((2, 3, 8, 8), dtype=np.float32))
    with pytest.raises(ValueError):
        webp_bits_per_dim(np.zeros((2, 2, 8, 8), dtype=np.uint8))
    with pytest.raises(ValueError):
        png_bits_per_dim(np.zeros((3, 8, 8), dtype=np.uint8))
