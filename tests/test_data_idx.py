"""IDX reader/writer: round trips and every structural rejection, each naming the file."""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from vaelab.errors import VaelabError
from vaelab.data.idx import read_idx, read_idx_file, read_idx_pair, write_idx


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
    assert x.array.shape == (5, 2, 2) and y.array.tolist() == [0, 1, 2, 3, 4]
    assert x.sha256 == hashlib.sha256(images.read_bytes()).hexdigest()

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


# ------------------------------------------------------------------------------------------------
# Hostile input: bombs, non-regular files, provenance


def zeros_gzip(header: bytes, n_zeros: int, member_bytes: int = 64 << 20) -> bytes:
    """``header`` + ``n_zeros`` zero bytes as multi-member gzip (valid gzip): MBs on disk, GBs inside.

    One compressed member of zeros is reused, so building an 8 GB bomb costs one 64 MB compression.
    """
    member = gzip.compress(bytes(member_bytes), compresslevel=9, mtime=0)
    head = gzip.compress(header, mtime=0)
    whole, rest = divmod(n_zeros, member_bytes)
    return head + member * whole + gzip.compress(bytes(rest), mtime=0)


class CountingGzip(gzip.GzipFile):
    """A GzipFile that counts the decompressed bytes it hands out (``readinto`` goes through ``read``)."""

    delivered = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        CountingGzip.delivered += len(data)
        return data


def test_gzip_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """The issue's bomb: 8 MB of gzip that inflates to 8 GB. Refused after reading 16 bytes."""
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 8192, 1024, 1024)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(zeros_gzip(header, 8 << 30, member_bytes=8 << 20))
    assert path.stat().st_size < 10 << 20
    expect_error(path, "(8192, 1024, 1024)", "needs 8.6 GB", "at most 2.1 GB")


def test_long_bomb_reads_at_most_payload_plus_one_byte(tmp_path: Path, monkeypatch) -> None:
    header = bytes([0, 0, 8, 2]) + struct.pack(">2I", 2, 2)
    path = tmp_path / "bomb.gz"
    path.write_bytes(zeros_gzip(header, 1 << 30, member_bytes=8 << 20))  # honest small header, 1 GB of trailing zeros
    monkeypatch.setattr("vaelab.data.idx.gzip.GzipFile", CountingGzip)
    CountingGzip.delivered = 0
    expect_error(path, "over-long IDX payload", "promises 4 bytes, found more")
    assert CountingGzip.delivered <= len(header) + 4 + 1


def test_gzip_too_small_for_its_claim_is_refused_unread(tmp_path: Path) -> None:
    header = bytes([0, 0, 8, 3]) + struct.pack(">3I", 60000, 28, 28)
    path = tmp_path / "tiny.gz"
    path.write_bytes(gzip.compress(header + bytes(10)))
    expect_error(path, "truncated IDX payload", "promises 47040000 bytes")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/null"])
def test_symlink_to_device_is_refused(tmp_path: Path, target: str) -> None:
    if not Path(target).exists():
        pytest.skip(f"no {target} here")
    path = tmp_path / "train-images-idx3-ubyte"
    path.symlink_to(target)
    expect_error(path, "character device", "expected an IDX file")


def test_fifo_and_directory_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.gz"
    os.mkfifo(fifo)  # no writer: a plain open() would wait forever
    expect_error(fifo, "FIFO", "expected an IDX file")
    (tmp_path / "dir.gz").mkdir()
    expect_error(tmp_path / "dir.gz", "directory", "regular file")


@pytest.mark.parametrize("compress", [False, True])
def test_sha256_is_of_the_file_as_stored(tmp_path: Path, compress: bool) -> None:
    path = tmp_path / "a"
    write_idx(path, np.arange(60, dtype=np.int16).reshape(3, 4, 5), compress=compress)
    read = read_idx_file(path)
    assert read.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert read.array.shape == (3, 4, 5) and read.array.dtype == np.int16


def test_zero_sized_axis_is_a_valid_empty_array(tmp_path: Path) -> None:
    (tmp_path / "e").write_bytes(idx_bytes(np.zeros((0, 28, 28), dtype=np.uint8)))
    assert read_idx(tmp_path / "e").shape == (0, 28, 28)


def test_gzip_with_trailing_garbage_or_bad_crc(tmp_path: Path) -> None:
    good = gzip.compress(idx_bytes(np.arange(12, dtype=np.uint8)), mtime=0)
    path = tmp_path / "g.gz"
    path.write_bytes(good + b"junk after the stream")
    expect_error(path, "corrupt gzip")
    crc_broken = good[:-8] + bytes(b ^ 0xFF for b in good[-8:-4]) + good[-4:]
    path.write_bytes(crc_broken)
    expect_error(path, "corrupt gzip")
