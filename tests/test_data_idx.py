"""IDX reader/writer: round trips and every structural rejection, each naming the file."""

from __future__ import annotations

import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vaelab.errors import VaelabError
from vaelab.data.idx import read_idx, read_idx_pair, write_idx


def idx_bytes(array: np.ndarray, type_byte: int = 0x08, ndim: int | None = None) -> bytes:
    """Hand-built IDX bytes, independent of write_idx, so the reader is checked against the spec."""
    ndim = array.ndim if ndim is None else ndim
    return (
        bytes([0, 0, type_byte, ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


@settings(max_examples=40, deadline=None)
@given(
    array=arrays(np.uint8, st.lists(st.integers(0, 5), min_size=1, max_size=4).map(tuple)),
    compress=st.booleans(),
)
def test_uint8_round_trip(array: np.ndarray, compress: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.idx"
        write_idx(path, array, compress=compress)
        assert path.read_bytes().startswith(b"\x1f\x8b") == compress
        back = read_idx(path)
    assert back.dtype == np.uint8 and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.float32, np.float64])
def test_other_types_round_trip_native_endian(tmp_path: Path, dtype: type) -> None:
    array = (np.arange(24).reshape(2, 3, 4) - 12).astype(dtype)
    write_idx(tmp_path / "a.idx.gz", array)
    back = read_idx(tmp_path / "a.idx.gz")
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_reads_hand_built_file_and_detects_gzip_by_magic(tmp_path: Path) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(array)
    # Names lie on purpose: gzip data without .gz, raw data with .gz.
    (tmp_path / "zipped.idx").write_bytes(gzip.compress(raw))
    (tmp_path / "plain.gz").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def test_big_endian_dimensions(tmp_path: Path) -> None:
    array = np.zeros((300, 2), dtype=np.uint8)  # 300 > 255: a little-endian reader gets it wrong
    (tmp_path / "a").write_bytes(idx_bytes(array))
    assert read_idx(tmp_path / "a").shape == (300, 2)


def expect_error(path: Path, *fragments: str) -> None:
    with pytest.raises(VaelabError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize("compress", [False, True])
def test_rejects_truncated_payload(tmp_path: Path, compress: bool) -> None:
    data = idx_bytes(np.zeros((10, 28, 28), dtype=np.uint8))[:-100]
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(data) if compress else data)
    expect_error(path, "truncated IDX payload", "header promises 7840 bytes, found 7740")


def test_rejects_over_long_payload(tmp_path: Path) -> None:
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros((4, 3), dtype=np.uint8)) + b"\x00")
    expect_error(path, "over-long", "promises 12 bytes, found 13")


def test_rejects_wrong_magic(tmp_path: Path) -> None:
    path = tmp_path / "png-or-so"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    expect_error(path, "not an IDX file")


def test_rejects_wrong_type_byte(tmp_path: Path) -> None:
    path = tmp_path / "typ"
    path.write_bytes(idx_bytes(np.zeros((2, 2), dtype=np.uint8), type_byte=0x07))
    expect_error(path, "type byte 0x07")


def test_rejects_truncated_header_and_tiny_files(tmp_path: Path) -> None:
    path = tmp_path / "hdr"
    path.write_bytes(bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02")
    expect_error(path, "truncated IDX header")
    path.write_bytes(b"\x00\x00")
    expect_error(path, "shorter than the 4-byte magic")


def test_rejects_corrupt_gzip(tmp_path: Path) -> None:
    compressed = gzip.compress(idx_bytes(np.arange(5000, dtype=np.uint32).astype(np.uint8)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    expect_error(path, "corrupt gzip")
    path.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    expect_error(path, "corrupt gzip")


def test_missing_file_is_a_user_error(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.gz", "cannot read")


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(VaelabError, match="dtype"):
        write_idx(tmp_path / "a", np.zeros(3, dtype=np.complex64))


def test_pair_ok_and_count_mismatch_names_both_files(tmp_path: Path) -> None:
    images, labels = tmp_path / "img.gz", tmp_path / "lab.gz"
    write_idx(images, np.zeros((5, 2, 2), dtype=np.uint8))
    write_idx(labels, np.arange(5, dtype=np.uint8))
    x, y = read_idx_pair(images, labels)
    assert x.shape == (5, 2, 2) and y.tolist() == [0, 1, 2, 3, 4]

    write_idx(labels, np.arange(4, dtype=np.uint8))
    with pytest.raises(VaelabError) as info:
        read_idx_pair(images, labels)
    assert str(images) in str(info.value) and str(labels) in str(info.value)
    assert "5 images" in str(info.value) and "4 labels" in str(info.value)


def test_pair_checks_ranks(tmp_path: Path) -> None:
    images, flat, labels = tmp_path / "images", tmp_path / "flat", tmp_path / "labels"
    write_idx(images, np.zeros((5, 2, 2), dtype=np.uint8))
    write_idx(flat, np.zeros((5, 4), dtype=np.uint8))
    write_idx(labels, np.zeros(5, dtype=np.uint8))
    with pytest.raises(VaelabError, match=f"{flat}: expected 3-D"):
        read_idx_pair(flat, labels)
    with pytest.raises(VaelabError, match=f"{flat}: expected 1-D"):
        read_idx_pair(images, flat)
