"""The coloured-shapes generator: determinism, layout, pixels against factors, files on disk."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from vaelab.data.shapes import (
    FACTOR_NAMES,
    PALETTE,
    POSITION_RANGE,
    SCALE_RANGE,
    SHAPES,
    make_shapes,
    write_shapes_folder,
    write_shapes_npz,
)

FIELDS = ("images", "labels", "colours", "rgb", "x", "y", "scale", "masks")


def _equal(a, b, rows=slice(None)) -> bool:
    return all(np.array_equal(getattr(a, f)[rows], getattr(b, f)) for f in FIELDS)


def test_deterministic_for_a_seed_and_prefix_stable():
    a, b = make_shapes(200, seed=3), make_shapes(200, seed=3)
    assert _equal(a, b)
    assert not np.array_equal(a.images, make_shapes(200, seed=4).images)
    assert _equal(make_shapes(500, seed=3), a, slice(0, 200))  # more images extend, never reshuffle


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_and_dtypes(size):
    d = make_shapes(300, size=size)
    assert len(d) == 300
    assert d.images.shape == (300, 3, size, size) and d.images.dtype == np.uint8
    assert d.masks.shape == (300, size, size) and d.masks.dtype == np.bool_
    assert d.rgb.shape == (300, 3) and d.rgb.dtype == np.uint8
    assert d.labels.dtype == np.int64 and d.colours.dtype == np.int64
    assert d.factors().shape == (300, len(FACTOR_NAMES)) and d.factors().dtype == np.float32


@pytest.mark.parametrize("size", [16, 32, 64])
def test_pixels_are_the_factor_colour_on_the_mask_and_black_off_it(size):
    d = make_shapes(400, size=size, seed=1)
    on = d.masks[:, None].repeat(3, axis=1)  # [N, 3, S, S]
    assert np.array_equal(d.images[on], np.broadcast_to(d.rgb[:, :, None, None], d.images.shape)[on])
    assert (d.images[~on] == 0).all()
    assert d.masks.any(axis=(1, 2)).all()  # no shape vanishes, even the smallest triangle at 16 px


def test_factors_in_range_and_all_values_used():
    d = make_shapes(2000, seed=2)
    assert set(np.unique(d.labels)) == set(range(len(SHAPES)))
    assert set(np.unique(d.colours)) == set(range(len(PALETTE)))
    assert np.array_equal(d.rgb, PALETTE[d.colours])
    assert len({tuple(c) for c in PALETTE}) == len(PALETTE)  # distinct hues
    for v in (d.x, d.y):
        assert POSITION_RANGE[0] <= v.min() and v.max() <= POSITION_RANGE[1]
    assert SCALE_RANGE[0] <= d.scale.min() and d.scale.max() <= SCALE_RANGE[1]
    assert POSITION_RANGE[0] - SCALE_RANGE[1] >= 0 and POSITION_RANGE[1] + SCALE_RANGE[1] <= 1  # never cut off
    c = d.factors()
    np.testing.assert_array_equal(c[:, 0], d.colours)
    np.testing.assert_allclose(c[:, 4:], np.column_stack([d.x, d.y, d.scale]), rtol=1e-6)


def test_masks_are_the_named_shapes_at_the_factor_position():
    size = 64
    d = make_shapes(3000, size=size, seed=5)
    rows, cols = np.mgrid[0:size, 0:size]
    for label, area in enumerate([math.pi, 2.0, 3 * math.sqrt(3) / 4]):  # area / circumradius^2
        sel = d.labels == label
        ratio = d.masks[sel].sum((1, 2)) / (size * d.scale[sel]) ** 2
        assert abs(ratio.mean() - area) < 0.03 * area, SHAPES[label]
    counts = d.masks.sum((1, 2))
    cx = (d.masks * (cols + 0.5)).sum((1, 2)) / counts / size
    cy = (d.masks * (rows + 0.5)).sum((1, 2)) / counts / size
    np.testing.assert_allclose(cx, d.x, atol=0.02)
    np.testing.assert_allclose(cy, d.y, atol=0.02)  # an equilateral triangle's centroid is its circumcentre
    triangle = d.masks[d.labels == 2].any(axis=2)  # [n, S] rows the triangle touches; apex up reaches
    top = triangle.argmax(axis=1)  # r above the centre, its base only r/2 below
    bottom = size - 1 - triangle[:, ::-1].argmax(axis=1)
    y = d.y[d.labels == 2] * size - 0.5
    assert ((y - top) > (bottom - y)).all()


def test_bad_arguments():
    with pytest.raises(ValueError):
        make_shapes(10, size=8)
    with pytest.raises(ValueError):
        make_shapes(-1)


def test_write_folder_of_class_pngs(tmp_path):
    out = tmp_path / "shapes"
    d = write_shapes_folder(out, 30, size=16, seed=7)
    assert sorted(p.name for p in out.iterdir()) == list(SHAPES)
    for label, name in enumerate(SHAPES):
        files = sorted((out / name).glob("*.png"))
        index = [int(f.stem) for f in files]
        assert index == list(np.flatnonzero(d.labels == label))
        for f, i in zip(files, index, strict=True):
            with Image.open(f) as image:
                assert image.mode == "RGB"
                assert np.array_equal(np.asarray(image).transpose(2, 0, 1), d.images[i])
    with pytest.raises(FileExistsError):
        write_shapes_folder(out, 5, size=16)


def test_write_npz_in_the_loader_layout(tmp_path):
    path = tmp_path / "shapes.npz"
    d = write_shapes_npz(path, 25, size=16, seed=8)
    with np.load(path, allow_pickle=False) as archive:
        assert sorted(archive.files) == ["c", "c_names", "x", "y"]  # all the loader accepts
        assert np.array_equal(archive["x"], d.images) and archive["x"].dtype == np.uint8
        assert np.array_equal(archive["y"], d.labels)
        assert np.array_equal(archive["c"], d.factors())
        assert tuple(archive["c_names"]) == FACTOR_NAMES
