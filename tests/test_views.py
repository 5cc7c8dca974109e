"""vaelab.views.images: exact grid geometry and pixels, row order, figure contents, atomic PNGs."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from vaelab.errors import VaelabError
from vaelab.views.images import (
    image_grid,
    loss_curve_figure,
    reconstruction_grid,
    save_figure,
    save_image,
)


def full_metrics(epochs: int) -> list[dict]:
    return [
        {
            "epoch": e,
            "train_negative_elbo": 200.0 - e,
            "val_negative_elbo": 205.0 - e,
            "train_rec": 180.0 - e,
            "val_rec": 186.0 - e,
            "train_kl": 20.0 + 0.1 * e,
            "val_kl": 19.0 + 0.1 * e,
            "seconds": 3.9,
        }
        for e in range(1, epochs + 1)
    ]


# --- image_grid -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "nrow", "padding", "scale", "size"),
    [
        # width = ncol * W * scale + (ncol + 1) * padding, height likewise with ceil(N / ncol) rows
        (6, 3, 2, 1, (3 * 8 + 4 * 2, 2 * 8 + 3 * 2)),
        (7, 3, 2, 2, (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)),
        (5, 5, 0, 3, (5 * 24, 24)),
        (2, 8, 1, 1, (2 * 8 + 3, 8 + 2)),  # nrow larger than N: only N columns
    ],
)
def test_grid_size_arithmetic(n, nrow, padding, scale, size):
    grid = image_grid(torch.rand(n, 1, 8, 8), nrow=nrow, padding=padding, scale=scale)
    assert grid.size == size


def test_default_layout_is_square_and_upscaled_to_readable_cells():
    digits = image_grid(torch.rand(16, 1, 8, 8), padding=0)  # 8x8 digits: x7 -> 56 px cells
    assert digits.size == (4 * 56, 4 * 56)
    mnist = image_grid(torch.rand(10, 1, 28, 28), padding=0)  # 28x28: x2, 4 columns, 3 rows
    assert mnist.size == (4 * 56, 3 * 56)
    large = image_grid(torch.rand(1, 3, 64, 64), padding=0)  # already readable: not upscaled
    assert large.size == (64, 64)


def test_gray_is_mode_L_and_colour_is_RGB():
    assert image_grid(torch.rand(4, 1, 5, 5)).mode == "L"
    assert image_grid(torch.rand(4, 3, 5, 5)).mode == "RGB"


def test_pixels_land_in_their_cells_with_padding_between():
    # white at cell (0, 0), black at cell (0, 1)
    images = torch.stack([torch.ones(1, 4, 4), torch.zeros(1, 4, 4)])
    grid = image_grid(images, nrow=2, padding=2, scale=3, pad_value=0.5)
    # cell (0, 0) spans x, y in [2, 14); cell (0, 1) spans x in [16, 28)
    assert grid.getpixel((2, 2)) == 255 and grid.getpixel((13, 13)) == 255
    assert grid.getpixel((16, 2)) == 0 and grid.getpixel((27, 13)) == 0
    assert [grid.getpixel(xy) for xy in ((0, 0), (14, 5), (28, 5))] == [128, 128, 128]


def test_rgb_channels_keep_their_values():
    red = torch.zeros(1, 3, 2, 2)
    red[:, 0] = 1.0
    grid = image_grid(red, padding=1, scale=1, pad_value=0.0)
    assert grid.getpixel((1, 1)) == (255, 0, 0)
    assert grid.getpixel((0, 0)) == (0, 0, 0)


def test_empty_cells_keep_the_pad_value():
    grid = image_grid(torch.zeros(3, 1, 2, 2), nrow=2, padding=0, scale=1, pad_value=1.0)
    assert grid.getpixel((0, 2)) == 0  # third image, row 1 col 0
    assert grid.getpixel((2, 2)) == 255  # missing fourth image


def test_values_outside_unit_interval_are_clamped():
    images = torch.tensor([3.0, -2.0, 0.5, float("nan")]).view(4, 1, 1, 1)
    grid = image_grid(images, nrow=4, padding=0, scale=1)
    assert [grid.getpixel((x, 0)) for x in range(4)] == [255, 0, 128, 0]


@pytest.mark.parametrize("shape", [(4, 8, 8), (4, 2, 8, 8), (0, 1, 8, 8)])
def test_bad_shapes_are_user_errors(shape):
    with pytest.raises(VaelabError, match="C, H, W"):
        image_grid(torch.rand(shape))


# --- reconstruction_grid ----------------------------------------------------------------------


def test_inputs_sit_above_their_reconstructions_in_alternating_pairs():
    inputs = torch.ones(6, 1, 4, 4)  # white
    recons = torch.zeros(6, 1, 4, 4)  # black
    grid = reconstruction_grid(
        inputs, recons, ncol=3, rows=2, padding=1, scale=2, pad_value=0.5, gap=5, labels=False
    )
    # each pair: 2 rows of 8 px cells with 1 px padding = 19 px; two pairs plus a 5 px gap
    assert grid.size == (3 * 8 + 4, 2 * 19 + 5)
    x = 1 + 4  # middle of the first column
    input_rows = (1 + 4, 24 + 1 + 4)  # first pair, second pair
    recon_rows = (1 + 8 + 1 + 4, 24 + 1 + 8 + 1 + 4)
    assert [grid.getpixel((x, y)) for y in input_rows] == [255, 255]
    assert [grid.getpixel((x, y)) for y in recon_rows] == [0, 0]
    assert grid.getpixel((x, 19 + 2)) == 128  # the gap between pairs is background


def test_reconstructions_stay_under_their_own_inputs():
    inputs = torch.linspace(0, 1, 4).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    grid = reconstruction_grid(inputs, inputs, ncol=4, rows=1, padding=0, scale=1, labels=False)
    top = [grid.getpixel((x, 0)) for x in range(0, 8, 2)]
    bottom = [grid.getpixel((x, 2)) for x in range(0, 8, 2)]
    assert top == bottom == [0, 85, 170, 255]


def test_only_ncol_times_rows_examples_and_short_last_pair_is_padded():
    inputs, recons = torch.ones(20, 3, 4, 4), torch.zeros(20, 3, 4, 4)
    shown = reconstruction_grid(
        inputs, recons, ncol=4, rows=2, padding=0, scale=1, gap=0, labels=False
    )
    assert shown.size == (16, 2 * 8) and shown.mode == "RGB"
    short = reconstruction_grid(inputs[:5], recons[:5], ncol=4, rows=3, padding=0, scale=1, gap=0,
                                pad_value=0.5, labels=False)
    assert short.size == (16, 2 * 8)
    assert short.getpixel((0, 8)) == (255, 255, 255)  # 5th input starts the second pair
    assert short.getpixel((0, 12)) == (0, 0, 0)  # its reconstruction right below
    assert short.getpixel((4, 8)) == (128, 128, 128)  # blank cell beside it


def test_labels_add_a_left_column_with_text_only_when_readable():
    inputs = torch.ones(8, 1, 28, 28)
    plain = reconstruction_grid(inputs, inputs, ncol=4, rows=2, labels=False)
    labelled = reconstruction_grid(inputs, inputs, ncol=4, rows=2, labels=True)
    assert labelled.height == plain.height and labelled.width > plain.width
    label_column = labelled.crop((0, 0, labelled.width - plain.width, labelled.height))
    assert label_column.getextrema()[0] < 128  # dark text drawn on the white background
    tiny = reconstruction_grid(inputs[:, :, :4, :4], inputs[:, :, :4, :4], scale=1, labels=True)
    assert tiny.size == reconstruction_grid(inputs[:, :, :4, :4], inputs[:, :, :4, :4], scale=1,
                                            labels=False).size


def test_mismatched_shapes_are_user_errors():
    with pytest.raises(VaelabError, match="shape of inputs"):
        reconstruction_grid(torch.rand(4, 1, 8, 8), torch.rand(4, 64))


# --- loss_curve_figure ------------------------------------------------------------------------


def test_three_panels_with_train_and_validation_lines():
    figure = loss_curve_figure(full_metrics(5))
    axes = figure.get_axes()
    assert [ax.get_title() for ax in axes][0] == "negative ELBO" and len(axes) == 3
    for ax in axes:
        assert [line.get_label() for line in ax.get_lines()] == ["train", "validation"]
        assert ax.get_xlabel() == "epoch" and ax.get_ylabel() == "nats / example"
        assert ax.get_legend() is not None
        assert list(ax.get_lines()[0].get_xdata()) == [1, 2, 3, 4, 5]
    train, val = axes[2].get_lines()
    assert train.get_color() != val.get_color()
    assert [ax.get_lines()[0].get_color() for ax in axes] == [train.get_color()] * 3  # consistent


def test_missing_validation_and_single_epoch_still_plot():
    records = [{"epoch": 1, "train_negative_elbo": 250.1, "train_rec": 230.0, "train_kl": 20.1}]
    axes = loss_curve_figure(records).get_axes()
    assert [len(ax.get_lines()) for ax in axes] == [1, 1, 1]
    assert axes[0].get_lines()[0].get_marker() == "o"  # a single point must be visible
    assert list(axes[0].get_xticks()) == [1]


def test_keys_missing_in_some_epochs_leave_gaps_not_errors():
    records = full_metrics(4)
    del records[1]["val_negative_elbo"]
    records[2]["val_kl"] = None
    axes = loss_curve_figure(records).get_axes()
    assert list(axes[0].get_lines()[1].get_xdata()) == [1, 3, 4]
    assert list(axes[2].get_lines()[1].get_xdata()) == [1, 2, 4]


def test_long_runs_drop_markers():
    line = loss_curve_figure(full_metrics(100)).get_axes()[0].get_lines()[0]
    assert line.get_marker() in (None, "None", "")


def test_no_epochs_is_a_user_error():
    with pytest.raises(VaelabError, match="no metrics"):
        loss_curve_figure([])


def test_importing_views_leaves_pyplot_and_backend_alone():
    code = "import sys, vaelab.views.images; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- saving -----------------------------------------------------------------------------------


def test_save_image_and_figure_write_readable_pngs_atomically(tmp_path):
    grid = image_grid(torch.rand(4, 3, 8, 8))
    save_image(grid, tmp_path / "grid.png")
    save_figure(loss_curve_figure(full_metrics(3)), tmp_path / "sub" / "loss.png", dpi=50)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "grid.png",
        "sub",
        "sub/loss.png",
    ]
    with Image.open(tmp_path / "grid.png") as read:
        assert read.format == "PNG" and read.size == grid.size and read.mode == "RGB"
        assert read.tobytes() == grid.tobytes()  # lossless
    with Image.open(tmp_path / "sub" / "loss.png") as read:
        assert read.format == "PNG" and read.size == (13 * 50, round(3.8 * 50))
    assert (tmp_path / "sub" / "loss.png").stat().st_size > 1000


def test_failed_save_leaves_old_file_and_no_temp_files(tmp_path):
    path = tmp_path / "grid.png"
    save_image(image_grid(torch.zeros(1, 1, 8, 8)), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="empty image"):
        save_image(Image.new("I;16", (0, 0)), path)  # PIL refuses an empty image mid-write
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["grid.png"]
