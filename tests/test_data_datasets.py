"""Datasets: real Fashion-MNIST, digits, IDX search order, user folders and .npz, binarisation."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from vaelab.data import datasets
from vaelab.data.datasets import (
    IDX_FILES,
    Dataset,
    Split,
    binarize,
    binarize_dataset,
    describe_datasets,
    load_dataset,
)
from vaelab.errors import VaelabError
from vaelab.data.idx import write_idx

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $VAELAB_DATA, empty cache and system roots: only what a test puts there is found."""
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", tmp_path / "system")
    return tmp_path


def write_fake_idx(
    directory: Path, marker: int, n_train: int = 8, n_test: int = 2, gz: bool = True
) -> None:
    """Four tiny IDX files whose every label is ``marker``, so a test can tell which copy loaded."""
    suffix = ".gz" if gz else ""
    write_idx(
        directory / f"{IDX_FILES['train_images']}{suffix}", np.full((n_train, 3, 3), 255, np.uint8)
    )
    write_idx(
        directory / f"{IDX_FILES['train_labels']}{suffix}", np.full(n_train, marker, np.uint8)
    )
    write_idx(directory / f"{IDX_FILES['test_images']}{suffix}", np.zeros((n_test, 3, 3), np.uint8))
    write_idx(directory / f"{IDX_FILES['test_labels']}{suffix}", np.full(n_test, marker, np.uint8))


# ------------------------------------------------------------------------------------------------
# Real Fashion-MNIST (Debian package dataset-fashion-mnist)


def raw_idx_images(path: Path) -> np.ndarray:
    """Independent reader for the check: gunzip, skip the 16-byte header of a 28x28 image file."""
    return np.frombuffer(gzip.decompress(path.read_bytes())[16:], np.uint8).reshape(-1, 28, 28)


def test_real_fashion_mnist(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file():
        message = f"Fashion-MNIST missing at {FASHION_DIR} (apt-get install dataset-fashion-mnist)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", FASHION_DIR.parent)
    ds = load_dataset("fashion-mnist", download=False)

    assert ds.source == str(FASHION_DIR) and ds.shape == (1, 28, 28)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    assert ds.classes is not None and len(ds.classes) == 10 and ds.classes[9] == "Ankle boot"
    for split in (ds.train, ds.val, ds.test):
        assert (
            split.x.dtype == torch.float32 and split.y is not None and split.y.dtype == torch.int64
        )
        assert split.x.shape[1:] == (1, 28, 28) and len(split.y) == len(split.x)
        assert split.x.min() >= 0.0 and split.x.max() <= 1.0
        assert set(split.y.unique().tolist()) == set(range(10))

    test_raw = raw_idx_images(FASHION_DIR / "t10k-images-idx3-ubyte.gz")
    train_raw = raw_idx_images(FASHION_DIR / "train-images-idx3-ubyte.gz")
    as_float = lambda a: torch.from_numpy(a.astype(np.float32) / 255)  # noqa: E731
    torch.testing.assert_close(ds.test.x[0, 0], as_float(test_raw[0]))
    torch.testing.assert_close(ds.test.x[-1, 0], as_float(test_raw[-1]))
    torch.testing.assert_close(ds.train.x[0, 0], as_float(train_raw[0]))
    torch.testing.assert_close(ds.val.x[0, 0], as_float(train_raw[55000]))  # val = last 5000
    torch.testing.assert_close(ds.val.x[-1, 0], as_float(train_raw[-1]))


# ------------------------------------------------------------------------------------------------
# IDX search order, file variants, errors


def test_search_order_data_dir_env_system_cache(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_idx(isolated / "cache" / "vaelab" / "mnist", marker=4)
    assert load_dataset("mnist", val_size=2, download=False).train.y[0] == 4
    write_fake_idx(isolated / "system" / "mnist", marker=3)
    assert load_dataset("mnist", val_size=2, download=False).train.y[0] == 3
    write_fake_idx(isolated / "env" / "mnist", marker=2)
    monkeypatch.setenv("VAELAB_DATA", str(isolated / "env"))
    assert load_dataset("mnist", val_size=2, download=False).train.y[0] == 2
    write_fake_idx(isolated / "arg" / "mnist", marker=1)
    ds = load_dataset("mnist", data_dir=str(isolated / "arg"), val_size=2, download=False)
    assert ds.train.y[0] == 1 and ds.source == str(isolated / "arg" / "mnist")


def test_files_directly_in_root_are_not_taken_for_a_dataset(isolated: Path) -> None:
    write_fake_idx(isolated / "root", marker=1)  # which dataset would these be? not guessed
    with pytest.raises(VaelabError, match="missing"):
        load_dataset("mnist", data_dir=str(isolated / "root"), download=False)


def test_uncompressed_files_and_split_convention(isolated: Path) -> None:
    directory = isolated / "arg" / "mnist"
    write_fake_idx(directory, marker=5, n_train=10, n_test=4, gz=False)
    write_idx(
        directory / IDX_FILES["train_images"], np.arange(10 * 9, dtype=np.uint8).reshape(10, 3, 3)
    )
    ds = load_dataset("mnist", data_dir=str(isolated / "arg"), val_size=3, download=False)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (7, 3, 4)
    assert ds.train.x[0, 0, 0, 0] == 0 and ds.val.x[0, 0, 0, 0] == pytest.approx(63 / 255)
    assert ds.test.x.shape == (4, 1, 3, 3)


def test_partial_searched_directory_is_skipped(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_fake_idx(isolated / "env" / "mnist", marker=1)
    (isolated / "env" / "mnist" / f"{IDX_FILES['test_labels']}.gz").unlink()
    monkeypatch.setenv("VAELAB_DATA", str(isolated / "env"))
    write_fake_idx(isolated / "system" / "mnist", marker=3)
    assert load_dataset("mnist", val_size=2, download=False).train.y[0] == 3


def test_given_data_dir_is_the_only_place_searched(isolated: Path) -> None:
    """A partial or absent data_dir is an error even though the system copy would do."""
    write_fake_idx(isolated / "system" / "mnist", marker=3)
    write_fake_idx(isolated / "arg" / "mnist", marker=1)
    (isolated / "arg" / "mnist" / f"{IDX_FILES['test_labels']}.gz").unlink()
    with pytest.raises(VaelabError) as info:
        load_dataset("mnist", data_dir=str(isolated / "arg"), val_size=2)
    message = str(info.value)
    assert str(isolated / "arg" / "mnist") in message and "t10k-labels-idx1-ubyte.gz" in message
    assert "train-images" not in message  # only what is missing is listed

    (isolated / "empty").mkdir()
    with pytest.raises(VaelabError, match="missing train-images-idx3-ubyte.gz, train-labels"):
        load_dataset("mnist", data_dir=str(isolated / "empty"))
    with pytest.raises(VaelabError, match=f"data directory not found: {isolated / 'nope'}"):
        load_dataset("mnist", data_dir=str(isolated / "nope"))
    with pytest.raises(VaelabError, match="data directory not found"):
        describe_datasets(str(isolated / "nope"))
    assert not (isolated / "cache").exists()  # nothing downloaded, no cache folder made


def test_not_found_without_download_lists_searched_places(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAELAB_DATA", str(isolated / "env"))
    with pytest.raises(VaelabError) as info:
        load_dataset("mnist", download=False)
    message = str(info.value)
    for place in (
        isolated / "env" / "mnist",
        isolated / "system" / "mnist",
        isolated / "cache" / "vaelab" / "mnist",
    ):
        assert str(place) in message


def test_corrupt_local_file_names_it(isolated: Path) -> None:
    directory = isolated / "system" / "mnist"
    write_fake_idx(directory, marker=1)
    bad = directory / f"{IDX_FILES['train_images']}.gz"
    bad.write_bytes(bad.read_bytes()[:-10])
    with pytest.raises(VaelabError, match=str(bad)):
        load_dataset("mnist", download=False)


@pytest.mark.parametrize("val_size", [-1, 8])
def test_bad_val_size(isolated: Path, val_size: int) -> None:
    write_fake_idx(isolated / "system" / "mnist", marker=1, n_train=8)
    with pytest.raises(VaelabError, match="val_size"):
        load_dataset("mnist", val_size=val_size, download=False)


def test_unknown_name_lists_known_ones() -> None:
    with pytest.raises(VaelabError) as info:
        load_dataset("cifar-77")
    for name in ("mnist", "fashion-mnist", "digits"):
        assert name in str(info.value)


def test_describe_datasets(isolated: Path) -> None:
    write_fake_idx(isolated / "system" / "fashion-mnist", marker=1)
    rows = {row["name"]: row for row in describe_datasets()}
    assert set(rows) == set(datasets.DATASETS)
    assert rows["fashion-mnist"]["found"] and rows["fashion-mnist"]["location"] == str(
        isolated / "system" / "fashion-mnist"
    )
    assert not rows["mnist"]["found"] and "ossci-datasets" in rows["mnist"]["location"]
    assert rows["digits"]["sizes"] == {"train": 1257, "val": 180, "test": 360}
    assert rows["mnist"]["shape"] == (1, 28, 28)


# ------------------------------------------------------------------------------------------------
# digits


def test_digits_split_sizes_values_and_determinism() -> None:
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert ds.shape == (1, 8, 8) and ds.source == "scikit-learn" and len(ds.classes) == 10
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1257, 180, 360)
    assert ds.train.x.dtype == torch.float32 and ds.train.x.max() == 1.0 and ds.train.x.min() == 0.0
    assert ds.train.y.dtype == torch.int64

    perm = np.random.default_rng(0).permutation(1797)  # the documented split
    bunch = load_digits()
    torch.testing.assert_close(
        ds.test.x[:, 0], torch.from_numpy(bunch.images[perm[:360]] / 16).float()
    )
    assert ds.val.y.tolist() == bunch.target[perm[360:540]].tolist()

    again = load_dataset("digits", seed=123)  # seed does not move the fixed split
    torch.testing.assert_close(again.train.x, ds.train.x)
    torch.testing.assert_close(again.test.y, ds.test.y)
    assert len(load_dataset("digits", val_size=100).train) == 1337


# ------------------------------------------------------------------------------------------------
# User folders


def save_png(path: Path, size: tuple[int, int], mode: str = "L", value: int | tuple = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)


def test_labelled_folder(tmp_path: Path) -> None:
    for i in range(6):
        save_png(tmp_path / "zebra" / f"{i}.png", (5, 4), value=255)
        save_png(tmp_path / "ant" / f"{i}.png", (5, 4), value=0)
    (tmp_path / "ant" / "notes.txt").write_text("not an image, ignored")
    ds = load_dataset(str(tmp_path))
    assert ds.classes == ("ant", "zebra") and ds.shape == (1, 4, 5) and ds.name == str(tmp_path)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 1, 1)
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    y = torch.cat([ds.train.y, ds.val.y, ds.test.y])
    assert torch.all(x[y == 1] == 1.0) and torch.all(x[y == 0] == 0.0)
    assert sorted(y.tolist()) == [0] * 6 + [1] * 6


def test_flat_folder_is_unlabelled_and_split_is_seeded(tmp_path: Path) -> None:
    for i in range(20):
        save_png(tmp_path / f"{i:02d}.png", (3, 3), value=i)
    ds = load_dataset(str(tmp_path), seed=0)
    assert ds.classes is None and ds.train.y is None and ds.test.y is None
    assert (len(ds.train), len(ds.val), len(ds.test)) == (16, 2, 2)
    same = load_dataset(str(tmp_path), seed=0)
    other = load_dataset(str(tmp_path), seed=1)
    torch.testing.assert_close(same.test.x, ds.test.x)
    assert not torch.equal(other.train.x, ds.train.x)
    values = sorted(
        torch.cat([ds.train.x, ds.val.x, ds.test.x])[:, 0, 0, 0].mul(255).round().int().tolist()
    )
    assert values == list(range(20))  # every image exactly once


def test_gray_and_rgb_mix_becomes_rgb(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", (4, 2), "L", 51)
    save_png(tmp_path / "b.png", (4, 2), "RGB", (255, 0, 102))
    save_png(tmp_path / "c.png", (4, 2), "L", 51)
    ds = load_dataset(str(tmp_path))
    assert ds.shape == (3, 2, 4)
    x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    pixels = {tuple(round(v * 255) for v in img[:, 0, 0].tolist()) for img in x}
    assert pixels == {(51, 51, 51), (255, 0, 102)}


def test_mixed_sizes_name_the_file_and_both_sizes(tmp_path: Path) -> None:
    save_png(tmp_path / "a.png", (4, 4))
    save_png(tmp_path / "b.png", (4, 4))
    save_png(tmp_path / "c.png", (6, 5))
    with pytest.raises(VaelabError) as info:
        load_dataset(str(tmp_path))
    message = str(info.value)
    assert str(tmp_path / "c.png") in message and "6x5" in message and "4x4" in message


def test_empty_folder_and_empty_class(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(VaelabError, match="no image files"):
        load_dataset(str(tmp_path / "empty"))
    save_png(tmp_path / "cls" / "a" / "1.png", (2, 2))
    (tmp_path / "cls" / "b").mkdir()
    with pytest.raises(VaelabError, match=f"{tmp_path / 'cls' / 'b'}: class folder holds no image"):
        load_dataset(str(tmp_path / "cls"))


def test_unreadable_image_and_too_few_examples(tmp_path: Path) -> None:
    save_png(tmp_path / "a" / "1.png", (2, 2))
    (tmp_path / "a" / "2.png").write_bytes(b"definitely not a png")
    with pytest.raises(VaelabError, match=f"{tmp_path / 'a' / '2.png'}: cannot read image"):
        load_dataset(str(tmp_path / "a"))
    save_png(tmp_path / "b" / "1.png", (2, 2))
    save_png(tmp_path / "b" / "2.png", (2, 2))
    with pytest.raises(VaelabError, match="at least 3"):
        load_dataset(str(tmp_path / "b"))


def test_files_beside_class_folders_are_rejected(tmp_path: Path) -> None:
    save_png(tmp_path / "cat" / "1.png", (2, 2))
    save_png(tmp_path / "stray.png", (2, 2))
    with pytest.raises(VaelabError, match="stray.png"):
        load_dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# .npz


def test_npz_images_uint8_with_labels(tmp_path: Path) -> None:
    x = np.arange(30 * 2 * 2, dtype=np.uint8).reshape(30, 2, 2)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(30) % 3)
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.shape == (1, 2, 2) and ds.classes == ("0", "1", "2")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 3, 3)
    # each example keeps its own label: image k holds values 4k..4k+3, label k % 3
    first = (ds.train.x[:, 0, 0, 0] * 255).round().long()
    assert torch.equal(ds.train.y, (first // 4) % 3)


def test_npz_tabular_float_kept_and_channels_first(tmp_path: Path) -> None:
    x = np.linspace(-3, 3, 40, dtype=np.float64).reshape(10, 4)
    np.savez(tmp_path / "t.npz", x=x)
    ds = load_dataset(str(tmp_path / "t.npz"))
    assert ds.shape == (4,) and ds.train.y is None and ds.train.x.dtype == torch.float32
    all_x = torch.cat([ds.train.x, ds.val.x, ds.test.x])
    assert sorted(all_x.flatten().tolist()) == pytest.approx(sorted(x.flatten().tolist()), abs=1e-6)
    np.savez(tmp_path / "c.npz", x=np.full((5, 3, 2, 2), 0.5, np.float32))
    assert load_dataset(str(tmp_path / "c.npz")).shape == (3, 2, 2)


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"images": np.zeros((5, 2, 2), np.uint8)}, "expected arrays 'x'"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "z": np.zeros(5)}, "expected arrays 'x'"),
        ({"x": np.zeros(5, np.uint8)}, "x must be"),
        ({"x": np.zeros((5, 28, 28, 3), np.uint8)}, "channels-first"),
        ({"x": np.zeros((5, 2, 2), np.int64)}, "dtype int64"),
        ({"x": np.full((5, 2, 2), 2.0)}, r"\[0, 1\]"),
        ({"x": np.full((5, 2), np.nan)}, "NaN"),
        (
            {"x": np.zeros((5, 2, 2), np.uint8), "y": np.zeros(4, np.int64)},
            "y must be 5 integer labels",
        ),
        ({"x": np.zeros((5, 2, 2), np.uint8), "y": np.zeros(5, np.float32)}, "y must be"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "y": -2 * np.ones(5, np.int64)}, "negative"),
        ({"x": np.zeros((0, 2, 2), np.uint8)}, "no empty axis"),
        ({"x": np.zeros((5, 0), np.float32)}, "no empty axis"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "y": np.array([0, 1, 2, 3, 10**9])}, "below 10000"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "y": np.array([0, 1, np.nan, 1, 0])}, "integer labels"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "y": -np.ones(5, np.int64)}, "every example missing"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "c": np.zeros(4)}, "c must be 5 rows"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "c": np.zeros((5, 2, 2))}, "c must be 5 rows"),
        ({"x": np.zeros((5, 2, 2), np.uint8), "c": np.zeros((5, 0))}, "K >= 1"),
        ({"x": np.zeros((5, 2, 2), np.complex64)}, "dtype complex64"),
    ],
)
def test_npz_errors_name_the_file(tmp_path: Path, arrays: dict, fragment: str) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(VaelabError, match=fragment) as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)


def test_not_an_npz_and_unsupported_file(tmp_path: Path) -> None:
    (tmp_path / "fake.npz").write_bytes(b"nope")
    with pytest.raises(VaelabError, match="cannot read .npz"):
        load_dataset(str(tmp_path / "fake.npz"))
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(VaelabError, match="folder of images or an .npz"):
        load_dataset(str(tmp_path / "data.csv"))


# ------------------------------------------------------------------------------------------------
# Binarisation


def tiny_dataset() -> Dataset:
    x = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    return Dataset(
        "tiny", Split(x[:30], None), Split(x[30:40], None), Split(x[40:], None), None, "test"
    )


def test_binarize_is_bernoulli_of_the_intensities() -> None:
    x = torch.full((200_000,), 0.3)
    draw = binarize(x, torch.Generator().manual_seed(0))
    assert set(draw.unique().tolist()) == {0.0, 1.0}
    assert abs(draw.mean().item() - 0.3) < 0.005
    edges = torch.tensor([0.0, 1.0, 0.0, 1.0])
    assert torch.equal(binarize(edges, torch.Generator().manual_seed(1)), edges)


def test_binarize_modes() -> None:
    ds = tiny_dataset()
    assert binarize_dataset(ds, "none", 0) is ds

    static = binarize_dataset(ds, "static", 7)
    for split in (static.train, static.val, static.test):
        assert set(split.x.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(binarize_dataset(ds, "static", 7).train.x, static.train.x)
    assert not torch.equal(binarize_dataset(ds, "static", 8).train.x, static.train.x)

    dynamic = binarize_dataset(ds, "dynamic", 7)
    assert dynamic.train.x is ds.train.x
    torch.testing.assert_close(dynamic.val.x, static.val.x)
    torch.testing.assert_close(dynamic.test.x, static.test.x)
    assert ds.val.x.unique().numel() > 2  # the input was not modified in place


def test_binarize_rejects_unknown_mode_and_out_of_range_data() -> None:
    with pytest.raises(VaelabError, match="none, static, dynamic"):
        binarize_dataset(tiny_dataset(), "sometimes", 0)
    ds = tiny_dataset()
    wide = Dataset("wide", Split(ds.train.x * 3, None), ds.val, ds.test, None, "test")
    with pytest.raises(VaelabError, match=r"wide: .*\[0, 1\]"):
        binarize_dataset(wide, "static", 0)


def test_cache_dir_follows_vaelab_cache_then_xdg(monkeypatch, tmp_path):
    from vaelab.data.datasets import cache_dir

    monkeypatch.setenv("VAELAB_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("VAELAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vaelab"


def test_npz_object_arrays_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "obj.npz"
    np.savez(path, x=np.array([[1, "a"], [2, "b"], [3, "c"]], dtype=object))
    with pytest.raises(VaelabError, match=f"{path}: array 'x' holds Python objects") as info:
        load_dataset(str(path))
    assert "\n" not in str(info.value)


def test_truncated_npz_is_a_user_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.npz"
    np.savez(path, x=np.zeros((30, 4, 4), np.uint8), y=np.arange(30) % 3)
    whole = path.read_bytes()
    for keep in (len(whole) - 10, len(whole) // 2, 30):
        path.write_bytes(whole[:keep])
        with pytest.raises(VaelabError, match=f"{path}: cannot read .npz file"):
            load_dataset(str(path))


def npz_with_lying_header(path: Path, shape: tuple[int, ...], data: bytes) -> None:
    """An .npz whose x.npy header claims ``shape`` (uint8) but whose data is ``data``."""
    import io
    import zipfile

    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy.getvalue() + data)


def test_npz_header_claiming_more_than_the_member_holds(tmp_path: Path) -> None:
    """A .npy header promising 10**12 values must be refused before anything is allocated."""
    path = tmp_path / "liar.npz"
    npz_with_lying_header(path, (10**6, 10**6), bytes(100))
    with pytest.raises(VaelabError, match="header promises shape") as info:
        load_dataset(str(path))
    assert str(path) in str(info.value)
    npz_with_lying_header(path, (5, 2), bytes(11))  # one byte too many
    with pytest.raises(VaelabError, match="promises 10 bytes of data, found more"):
        load_dataset(str(path))


def test_missing_paths_are_not_found_not_unknown(tmp_path: Path) -> None:
    for name in (str(tmp_path / "gone.npz"), "gone.npz", str(tmp_path / "folder"), "./folder"):
        with pytest.raises(VaelabError, match=f"^file not found: {name} "):
            load_dataset(name)


def test_fifo_and_device_as_npz_are_refused(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.npz")
    with pytest.raises(VaelabError, match=f"{tmp_path / 'pipe.npz'}: is a FIFO"):
        load_dataset(str(tmp_path / "pipe.npz"))
    (tmp_path / "zero.npz").symlink_to("/dev/zero")
    with pytest.raises(VaelabError, match=f"{tmp_path / 'zero.npz'}: is a character device"):
        load_dataset(str(tmp_path / "zero.npz"))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR chunk claiming ``width`` x ``height``: a bomb costs no disk."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("size", "fragment"), [(20000, "image too large"), (5000, "5000x5000")])
def test_image_bombs_are_refused_naming_the_file(tmp_path: Path, size: int, fragment: str) -> None:
    save_png(tmp_path / "a.png", (4, 4))
    (tmp_path / "b.png").write_bytes(png_header_only(size, size))
    save_png(tmp_path / "c.png", (4, 4))
    with pytest.raises(VaelabError, match=fragment) as info:
        load_dataset(str(tmp_path))
    assert str(info.value).startswith(f"{tmp_path / 'b.png'}: ") and "\n" not in str(info.value)


def test_fifo_named_like_an_image_is_refused_not_skipped(tmp_path: Path) -> None:
    for i in range(3):
        save_png(tmp_path / f"{i}.png", (2, 2))
    os.mkfifo(tmp_path / "3.png")
    with pytest.raises(VaelabError, match=f"{tmp_path / '3.png'}: is a FIFO"):
        load_dataset(str(tmp_path))


# ------------------------------------------------------------------------------------------------
# Provenance


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_provenance_of_idx_files(isolated: Path) -> None:
    directory = isolated / "arg" / "mnist"
    write_fake_idx(directory, marker=1)
    ds = load_dataset("mnist", data_dir=str(isolated / "arg"), val_size=2)
    expected = tuple(
        (str(directory / f"{stem}.gz"), sha256_of(directory / f"{stem}.gz")) for stem in IDX_FILES.values()
    )
    assert ds.provenance == expected


def test_provenance_of_npz_folder_and_digits(tmp_path: Path) -> None:
    import sklearn

    np.savez(tmp_path / "d.npz", x=np.zeros((6, 2, 2), np.uint8))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.provenance == ((str(tmp_path / "d.npz"), sha256_of(tmp_path / "d.npz")),)

    for i in range(3):
        save_png(tmp_path / "imgs" / "b" / f"{i}.png", (2, 2), value=i)
    save_png(tmp_path / "imgs" / "a" / "0.png", (2, 2))
    ds = load_dataset(str(tmp_path / "imgs"))
    files = [tmp_path / "imgs" / "a" / "0.png"] + [tmp_path / "imgs" / "b" / f"{i}.png" for i in range(3)]
    assert ds.provenance == tuple((str(f), sha256_of(f)) for f in files)

    assert load_dataset("digits").provenance == f"embedded: scikit-learn {sklearn.__version__} load_digits"
    assert tiny_dataset().provenance == ()  # built by hand: the default


def test_idx_labels_beyond_the_classes_are_refused_naming_the_file(isolated: Path) -> None:
    """Labels 200 or 255 are not Fashion-MNIST classes: an error, even for an unconditional run."""
    directory = isolated / "arg" / "fashion-mnist"
    write_fake_idx(directory, marker=200)
    with pytest.raises(VaelabError, match=r"labels-idx1-ubyte.gz: holds label 200, expected class indices 0\.\.9"):
        load_dataset("fashion-mnist", data_dir=str(isolated / "arg"), val_size=2)
