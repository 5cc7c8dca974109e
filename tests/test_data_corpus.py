"""A corpus of bad data files: each must fail as a one-line VaelabError, in bounded time, touching nothing.

Every case builds its bad input in a fresh temporary directory and runs the call a user's command
makes (``read_idx``, ``read_idx_pair`` or ``load_dataset``). The checks are the same for all:

* a :class:`VaelabError` (never a traceback), on one line, naming the bad file and what was
  expected (each case lists fragments of that);
* no hang: ``signal.alarm`` fails a case that is still running after :data:`HANG_SECONDS` (a
  FIFO with no writer or a symlink to ``/dev/zero`` would block or never end);
* nothing on disk created, deleted or changed (``lstat`` of every entry and the bytes of every
  regular file, before and after; directory mtimes catch a file created and removed again).

Hypothesis then fuzzes the IDX and ``.npz`` readers with random bytes and random mutations of
valid files: they return data or raise VaelabError, nothing else.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import signal
import stat
import struct
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from vaelab.data import datasets
from vaelab.data.datasets import IDX_FILES, load_dataset
from vaelab.data.idx import read_idx, read_idx_pair
from vaelab.errors import VaelabError

HANG_SECONDS = 30  # a hang guard only: every case takes well under a second


@dataclass(frozen=True)
class Bad:
    """A bad input, ready: the call to make, the path its message must name, and what it must say."""

    call: Callable[[], object]
    names: Path
    expect: tuple[str, ...]


Builder = Callable[[Path], Bad]


# ------------------------------------------------------------------------------------------------
# Byte builders


def idx(type_byte: int, shape: tuple[int, ...], payload: bytes | None = None, ndim: int | None = None) -> bytes:
    """IDX bytes by hand (independent of write_idx); ``payload`` defaults to the promised zeros."""
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}.get(type_byte, 1)
    if payload is None:
        payload = bytes(int(np.prod(shape, dtype=np.int64)) * itemsize)
    header = bytes([0, 0, type_byte, len(shape) if ndim is None else ndim])
    return header + struct.pack(f">{len(shape)}I", *shape) + payload


def zeros_gzip(header: bytes, n_zeros: int, member_bytes: int = 8 << 20) -> bytes:
    """``header`` + ``n_zeros`` zeros as multi-member gzip: MBs on disk, GBs when inflated."""
    member = gzip.compress(bytes(member_bytes), compresslevel=9, mtime=0)
    whole, rest = divmod(n_zeros, member_bytes)
    return gzip.compress(header, mtime=0) + member * whole + gzip.compress(bytes(rest), mtime=0)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height`` with almost no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def png(size: tuple[int, int] = (4, 4), mode: str = "L") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size).save(out, "PNG")
    return out.getvalue()


def npz_bytes(compressed: bool = False, **arrays: np.ndarray) -> bytes:
    out = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(out, **arrays)
    return out.getvalue()


def npz_lying(shape: tuple[int, ...], data: bytes, descr: str = "|u1") -> bytes:
    """An .npz whose x.npy header claims ``shape`` but carries ``data``."""
    npy = io.BytesIO()
    np.lib.format.write_array_header_1_0(npy, {"descr": descr, "fortran_order": False, "shape": shape})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", npy.getvalue() + data)
    return out.getvalue()


GOOD_X = np.zeros((6, 2, 2), np.uint8)
GOOD_NPZ = npz_bytes(x=GOOD_X, y=np.arange(6) % 2)
FLIPPED_CRC_NPZ = bytearray(GOOD_NPZ)
FLIPPED_CRC_NPZ[GOOD_NPZ.index(b"\x93NUMPY") + 130] ^= 0xFF  # a data byte after the 128-byte .npy header


# ------------------------------------------------------------------------------------------------
# IDX single files: each defect raw and gzip-compressed

IDX_DEFECTS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    "empty": (b"", ("shorter than the 4-byte magic",)),
    "one-byte": (b"\x00", ("1 bytes, shorter than the 4-byte magic",)),
    "three-bytes": (b"\x00\x00\x08", ("shorter than the 4-byte magic",)),
    "png-magic": (b"\x89PNG\r\n\x1a\n" + bytes(40), ("not an IDX file", "expected 00 00 <type> <ndim>")),
    "text": (b"label,pixel0\n1,0\n", ("not an IDX file", "expected 00 00")),
    "first-byte-nonzero": (b"\x01" + idx(0x08, (2, 2))[1:], ("magic starts with 01 00 08 02",)),
    "second-byte-nonzero": (b"\x00\x01" + idx(0x08, (2, 2))[2:], ("magic starts with 00 01",)),
    "type-0x00": (idx(0x00, (2, 2)), ("type byte 0x00", "expected one of 0x08")),
    "type-0x07": (idx(0x07, (2, 2)), ("type byte 0x07",)),
    "type-0x0a": (idx(0x0A, (2, 2)), ("type byte 0x0a",)),
    "type-0xff": (idx(0xFF, (2, 2)), ("type byte 0xff",)),
    "ndim-0": (bytes([0, 0, 8, 0]) + bytes(8), ("0 dimensions", "expected at least 1")),
    "header-1-of-3-dims": (bytes([0, 0, 8, 3]) + struct.pack(">I", 2), ("truncated IDX header", "need 16 bytes")),
    "header-ndim-255": (bytes([0, 0, 8, 255]) + bytes(40), ("truncated IDX header", "need 1024 bytes")),
    "payload-short-1": (idx(0x08, (3, 4, 4))[:-1], ("truncated IDX payload", "promises 48 bytes, found 47")),
    "payload-half": (idx(0x08, (10, 28, 28))[: 16 + 3920], ("truncated IDX payload", "promises 7840 bytes")),
    "payload-missing": (idx(0x08, (10, 28, 28))[:16], ("truncated IDX payload", "found 0")),
    "payload-long-1": (idx(0x08, (3, 4)) + b"\x00", ("over-long IDX payload", "promises 12 bytes")),
    "payload-long-1000": (idx(0x08, (3, 4)) + bytes(1000), ("over-long IDX payload", "promises 12 bytes")),
    "int16-odd-length": (idx(0x0B, (3,), payload=bytes(5)), ("truncated IDX payload", "promises 6 bytes")),
    "float64-short": (idx(0x0E, (2, 2), payload=bytes(31)), ("truncated IDX payload", "promises 32 bytes")),
    "claims-3GB": (idx(0x08, (3000, 1000, 1000), payload=b""), ("needs 3.0 GB", "at most 2.1 GB")),
    "int32-claims-17GB": (idx(0x0C, (65536, 65536), payload=b""), ("needs 17.2 GB",)),
}


def idx_case(defect: str, compress: bool) -> Builder:
    data, expect = IDX_DEFECTS[defect]

    def build(tmp: Path) -> Bad:
        path = tmp / f"train-images-idx3-ubyte{'.gz' if compress else ''}"
        path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
        return Bad(lambda: read_idx(path), path, expect)

    return build


def idx_file(name: str, data: bytes, *expect: str) -> Builder:
    def build(tmp: Path) -> Bad:
        path = tmp / name
        path.write_bytes(data)
        return Bad(lambda: read_idx(path), path, expect)

    return build


GOOD_IDX_GZ = gzip.compress(idx(0x08, (4, 3)), mtime=0)
GZIP_CASES: dict[str, Builder] = {
    "gzip-bomb-8GB": idx_file(
        "bomb.gz", zeros_gzip(idx(0x08, (8192, 1024, 1024), payload=b""), 8 << 30), "needs 8.6 GB"
    ),
    "gzip-bomb-long-tail": idx_file(
        "tail.gz", zeros_gzip(idx(0x08, (2, 2)), 1 << 30), "over-long IDX payload", "promises 4 bytes"
    ),
    "gzip-claim-beyond-capacity": idx_file(
        "tiny.gz", gzip.compress(idx(0x08, (60000, 28, 28), payload=bytes(10))), "truncated IDX payload"
    ),
    "gzip-cut-mid-stream": idx_file("cut.gz", GOOD_IDX_GZ[:-12], "corrupt gzip stream"),
    "gzip-bad-crc": idx_file(
        "crc.gz", GOOD_IDX_GZ[:-8] + bytes(b ^ 0xFF for b in GOOD_IDX_GZ[-8:-4]) + GOOD_IDX_GZ[-4:],
        "corrupt gzip stream",
    ),
    "gzip-bad-length": idx_file("len.gz", GOOD_IDX_GZ[:-4] + struct.pack("<I", 999), "corrupt gzip stream"),
    "gzip-trailing-garbage": idx_file("trail.gz", GOOD_IDX_GZ + b"garbage", "corrupt gzip stream"),
    "gzip-magic-then-garbage": idx_file("magic.gz", b"\x1f\x8b" + b"garbage" * 10, "corrupt gzip stream"),
    "gzip-magic-only": idx_file("magiconly.gz", b"\x1f\x8b", "corrupt gzip stream"),
    "gzip-of-random-bytes": idx_file(
        "random.gz", gzip.compress(np.random.default_rng(0).bytes(500), mtime=0), "not an IDX file"
    ),
}


def special_file(kind: str, name: str, call: Callable[[Path], Callable[[], object]], *expect: str) -> Builder:
    """``name`` made a FIFO, a symlink to a device, a directory or a dangling link."""

    def build(tmp: Path) -> Bad:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if kind == "fifo":
            os.mkfifo(path)
        elif kind == "dir":
            path.mkdir()
        elif kind == "dangling":
            path.symlink_to(tmp / "nowhere")
        else:
            path.symlink_to(kind)
        return Bad(call(path), path, expect)

    return build


def reads_idx(path: Path) -> Callable[[], object]:
    return lambda: read_idx(path)


SPECIAL_IDX: dict[str, Builder] = {
    "idx-fifo": special_file("fifo", "train-images-idx3-ubyte.gz", reads_idx, "is a FIFO", "expected an IDX file"),
    "idx-dev-zero": special_file("/dev/zero", "t10k-images-idx3-ubyte", reads_idx, "character device"),
    "idx-dev-null": special_file("/dev/null", "t10k-labels-idx1-ubyte", reads_idx, "character device"),
    "idx-directory": special_file("dir", "labels.gz", reads_idx, "is a directory", "regular file"),
    "idx-dangling-link": special_file("dangling", "images.gz", reads_idx, "cannot read an IDX file"),
}


def pair_case(images: bytes, labels: bytes, bad: str, *expect: str) -> Builder:
    def build(tmp: Path) -> Bad:
        (tmp / "images").write_bytes(images)
        (tmp / "labels").write_bytes(labels)
        return Bad(lambda: read_idx_pair(tmp / "images", tmp / "labels"), tmp / bad, expect)

    return build


PAIR_CASES: dict[str, Builder] = {
    "pair-images-2d": pair_case(idx(0x08, (5, 4)), idx(0x08, (5,)), "images", "expected 3-D IDX images"),
    "pair-images-4d": pair_case(idx(0x08, (5, 1, 2, 2)), idx(0x08, (5,)), "images", "expected 3-D"),
    "pair-labels-2d": pair_case(idx(0x08, (5, 2, 2)), idx(0x08, (5, 1)), "labels", "expected 1-D IDX labels"),
    "pair-swapped": pair_case(idx(0x08, (5,)), idx(0x08, (5, 2, 2)), "images", "expected 3-D"),
    "pair-count-mismatch": pair_case(
        idx(0x08, (5, 2, 2)), idx(0x08, (4,)), "labels", "5 images", "4 labels", "one label per image"
    ),
    "pair-bad-labels-file": pair_case(idx(0x08, (5, 2, 2)), idx(0x08, (5,))[:-2], "labels", "truncated"),
}


# ------------------------------------------------------------------------------------------------
# Named IDX datasets through load_dataset, with a data directory


def write_mnist(directory: Path, n_train: int = 8, train_shape: tuple[int, int] = (3, 3)) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": idx(0x08, (n_train, *train_shape)),
        "train_labels": idx(0x08, (n_train,)),
        "test_images": idx(0x08, (2, 3, 3)),
        "test_labels": idx(0x08, (2,)),
    }
    for role, stem in IDX_FILES.items():
        (directory / stem).write_bytes(arrays[role])


def data_dir_case(prepare: Callable[[Path], Path], *expect: str) -> Builder:
    """``prepare(root)`` arranges ``root/data`` and returns the path the message must name."""

    def build(tmp: Path) -> Bad:
        names = prepare(tmp)
        return Bad(lambda: load_dataset("mnist", data_dir=str(tmp / "data")), names, expect)

    return build


def _replace(tmp: Path, role: str, data: bytes) -> Path:
    write_mnist(tmp / "data" / "mnist")
    path = tmp / "data" / "mnist" / IDX_FILES[role]
    path.write_bytes(data)
    return path


def _fifo_for(tmp: Path, role: str) -> Path:
    write_mnist(tmp / "data" / "mnist")
    path = tmp / "data" / "mnist" / IDX_FILES[role]
    path.unlink()
    os.mkfifo(path)
    return path


def _partial(tmp: Path) -> Path:
    write_mnist(tmp / "data" / "mnist")
    (tmp / "data" / "mnist" / IDX_FILES["test_labels"]).unlink()
    return tmp / "data" / "mnist"


def _shape_mismatch(tmp: Path) -> Path:
    write_mnist(tmp / "data" / "mnist", train_shape=(4, 4))
    return tmp / "data" / "mnist" / IDX_FILES["test_images"]


DATA_DIR_CASES: dict[str, Builder] = {
    "data-dir-missing": data_dir_case(lambda tmp: tmp / "data", "data directory not found", "expected a folder holding mnist/"),
    "data-dir-without-dataset": data_dir_case(
        lambda tmp: (tmp / "data").mkdir() or tmp / "data" / "mnist", "missing train-images-idx3-ubyte.gz", "expected all four"
    ),
    "data-dir-partial": data_dir_case(_partial, "missing t10k-labels-idx1-ubyte.gz"),
    "data-dir-train-fifo": data_dir_case(lambda tmp: _fifo_for(tmp, "train_images"), "is a FIFO"),
    "data-dir-labels-fifo": data_dir_case(lambda tmp: _fifo_for(tmp, "test_labels"), "is a FIFO"),
    "data-dir-corrupt-labels": data_dir_case(
        lambda tmp: _replace(tmp, "train_labels", b"\x1f\x8b garbage"), "corrupt gzip stream"
    ),
    "data-dir-count-mismatch": data_dir_case(
        lambda tmp: _replace(tmp, "train_labels", idx(0x08, (7,))), "8 images", "7 labels"
    ),
    "data-dir-shape-mismatch": data_dir_case(_shape_mismatch, "expected the same size"),
    "data-dir-too-few-for-val": data_dir_case(
        lambda tmp: write_mnist(tmp / "data" / "mnist") or tmp / "data" / "mnist", "val_size must be between"
    ),
}


# ------------------------------------------------------------------------------------------------
# .npz files through load_dataset

X = np.zeros((6, 2, 2), np.uint8)
NPZ_ARRAY_DEFECTS: dict[str, tuple[dict[str, np.ndarray], tuple[str, ...]]] = {
    "npz-no-x": ({"images": X}, ("expected arrays 'x' (required)",)),
    "npz-extra-array": ({"x": X, "z": np.zeros(6)}, ("expected arrays 'x'", "'z.npy'")),
    "npz-x-zero-n": ({"x": np.zeros((0, 2, 2), np.uint8)}, ("no empty axis", "(0, 2, 2)")),
    "npz-x-zero-height": ({"x": np.zeros((6, 0, 2), np.uint8)}, ("no empty axis",)),
    "npz-x-zero-width": ({"x": np.zeros((6, 2, 0), np.float32)}, ("no empty axis",)),
    "npz-x-zero-features": ({"x": np.zeros((6, 0), np.float32)}, ("no empty axis",)),
    "npz-x-1d": ({"x": np.zeros(6, np.uint8)}, ("x must be [N, D]",)),
    "npz-x-5d": ({"x": np.zeros((6, 1, 1, 2, 2), np.uint8)}, ("x must be",)),
    "npz-x-scalar": ({"x": np.array(3.0)}, ("x must be",)),
    "npz-x-channels-last": ({"x": np.zeros((6, 2, 2, 3), np.uint8)}, ("channels-first",)),
    "npz-x-int64": ({"x": np.zeros((6, 2, 2), np.int64)}, ("dtype int64", "expected uint8")),
    "npz-x-complex": ({"x": np.zeros((6, 4), np.complex64)}, ("dtype complex64",)),
    "npz-x-strings": ({"x": np.array([["a", "b"]] * 6)}, ("dtype <U1",)),
    "npz-x-nan": ({"x": np.full((6, 2), np.nan)}, ("NaN or infinite", "expected finite")),
    "npz-x-inf": ({"x": np.full((6, 2), np.inf, np.float32)}, ("NaN or infinite",)),
    "npz-x-overflows-float32": ({"x": np.full((6, 2), 1e300)}, ("NaN or infinite",)),
    "npz-x-image-above-1": ({"x": np.full((6, 2, 2), 2.0)}, ("must lie in [0, 1]",)),
    "npz-x-image-negative": ({"x": np.full((6, 2, 2), -0.5, np.float32)}, ("must lie in [0, 1]",)),
    "npz-x-too-few": ({"x": np.zeros((2, 2, 2), np.uint8)}, ("need at least 3",)),
    "npz-y-billion": ({"x": X, "y": np.array([0, 1, 0, 1, 0, 10**9])}, ("label 1000000000", "below 10000")),
    "npz-y-10000": ({"x": X, "y": np.array([0, 1, 0, 1, 0, 10_000])}, ("below 10000",)),
    "npz-y-uint64-max": ({"x": X, "y": np.full(6, np.iinfo(np.uint64).max, np.uint64)}, ("below 10000",)),
    "npz-y-float": ({"x": X, "y": np.arange(6, dtype=np.float32)}, ("integer labels", "dtype float32")),
    "npz-y-nan": ({"x": X, "y": np.array([0, 1, np.nan, 0, 1, 0])}, ("integer labels",)),
    "npz-y-bool": ({"x": X, "y": np.ones(6, bool)}, ("integer labels", "dtype bool")),
    "npz-y-strings": ({"x": X, "y": np.array(list("abcdef"))}, ("integer labels",)),
    "npz-y-2d": ({"x": X, "y": np.zeros((6, 1), np.int64)}, ("y must be 6 integer labels",)),
    "npz-y-short": ({"x": X, "y": np.zeros(5, np.int64)}, ("y must be 6 integer labels", "shape (5,)")),
    "npz-y-long": ({"x": X, "y": np.zeros(7, np.int64)}, ("y must be 6",)),
    "npz-y-below-minus-1": ({"x": X, "y": np.array([0, 1, -5, 0, 1, 0])}, ("negative label -5",)),
    "npz-y-all-missing": ({"x": X, "y": -np.ones(6, np.int64)}, ("every example missing",)),
    "npz-c-short": ({"x": X, "c": np.zeros(5)}, ("c must be 6 rows",)),
    "npz-c-3d": ({"x": X, "c": np.zeros((6, 2, 2))}, ("c must be 6 rows", "shape (6, 2, 2)")),
    "npz-c-no-columns": ({"x": X, "c": np.zeros((6, 0))}, ("K >= 1",)),
    "npz-c-strings": ({"x": X, "c": np.array(list("abcdef"))}, ("c must be 6 rows of numbers",)),
    "npz-c-bool": ({"x": X, "c": np.ones(6, bool)}, ("c must be",)),
    "npz-c-inf": ({"x": X, "c": np.full(6, np.inf)}, ("infinite", "expected NaN")),
    "npz-c-overflows-float32": ({"x": X, "c": np.full(6, 1e300)}, ("infinite",)),
    "npz-c-names-without-c": ({"x": X, "c_names": np.array(["a"])}, ("c_names given without c",)),
    "npz-c-names-count": ({"x": X, "c": np.zeros((6, 2)), "c_names": np.array(["a"])}, ("2 distinct non-empty names",)),
    "npz-c-names-duplicate": ({"x": X, "c": np.zeros((6, 2)), "c_names": np.array(["a", "a"])}, ("distinct",)),
    "npz-c-names-empty": ({"x": X, "c": np.zeros((6, 1)), "c_names": np.array([""])}, ("non-empty",)),
}


def npz_case(arrays: dict[str, np.ndarray], expect: tuple[str, ...], compressed: bool = False) -> Builder:
    def build(tmp: Path) -> Bad:
        path = tmp / "data.npz"
        path.write_bytes(npz_bytes(compressed, **arrays))
        return Bad(lambda: load_dataset(str(path)), path, expect)

    return build


def npz_raw(data: bytes, *expect: str, name: str = "data.npz") -> Builder:
    def build(tmp: Path) -> Bad:
        path = tmp / name
        path.write_bytes(data)
        return Bad(lambda: load_dataset(str(path)), path, expect)

    return build


def object_npz() -> bytes:
    out = io.BytesIO()
    np.savez(out, x=np.array([[1, "a"]] * 6, dtype=object))
    return out.getvalue()


def npy_of(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def reads_dataset(path: Path) -> Callable[[], object]:
    return lambda: load_dataset(str(path))


NPZ_FILE_CASES: dict[str, Builder] = {
    "npz-empty-file": npz_raw(b"", "cannot read .npz file", "expected a zip of .npy arrays"),
    "npz-truncated-end": npz_raw(GOOD_NPZ[:-10], "cannot read .npz file"),
    "npz-truncated-half": npz_raw(GOOD_NPZ[: len(GOOD_NPZ) // 2], "cannot read .npz file"),
    "npz-truncated-header": npz_raw(GOOD_NPZ[:30], "cannot read .npz file"),
    "npz-random-bytes": npz_raw(np.random.default_rng(1).bytes(300), "cannot read .npz file"),
    "npz-text": npz_raw(b"x,y\n1,2\n", "cannot read .npz file"),
    "npz-is-npy": npz_raw(npy_of(X), "cannot read .npz file"),
    "npz-bad-crc": npz_raw(bytes(FLIPPED_CRC_NPZ), "cannot read .npz file", "CRC"),
    "npz-object-array": npz_raw(object_npz(), "holds Python objects", "never unpickles"),
    "npz-header-claims-terabyte": npz_raw(
        npz_lying((10**6, 10**6), bytes(100)), "header promises shape (1000000, 1000000)", "expected a complete"
    ),
    "npz-header-claims-one-more": npz_raw(npz_lying((6, 2), bytes(11)), "promises 12 bytes of data, found 11"),
    "npz-header-negative-dim": npz_raw(npz_lying((-6, 2), bytes(12)), "header promises shape (-6, 2)"),
    "npz-data-beyond-header": npz_raw(npz_lying((6, 2), bytes(13)), "found more"),
    "npz-header-bad-descr": npz_raw(npz_lying((6, 2), bytes(12), descr="<q16"), "cannot read .npz file"),
    "npz-fifo": special_file("fifo", "pipe.npz", reads_dataset, "is a FIFO", "expected an .npz file"),
    "npz-dev-zero": special_file("/dev/zero", "zero.npz", reads_dataset, "character device"),
    "npz-dev-null": special_file("/dev/null", "null.npz", reads_dataset, "character device"),
    "npz-wrong-extension": npz_raw(GOOD_NPZ, "expected a folder of images or an .npz file", name="data.npy"),
}


# ------------------------------------------------------------------------------------------------
# Image folders through load_dataset


def folder_case(files: dict[str, bytes | str], names: str, *expect: str) -> Builder:
    """``files``: relative path -> bytes, or "fifo" / "dir" / a device path for special entries."""

    def build(tmp: Path) -> Bad:
        root = tmp / "images"
        root.mkdir()
        for rel, content in files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if content == "fifo":
                os.mkfifo(path)
            elif content == "dir":
                path.mkdir()
            elif isinstance(content, str):
                path.symlink_to(content)
            else:
                path.write_bytes(content)
        return Bad(lambda: load_dataset(str(root)), root / names if names else root, expect)

    return build


def three(**extra: bytes | str) -> dict[str, bytes | str]:
    return {"a.png": png(), "b.png": png(), "c.png": png(), **extra}


def truncated_png() -> bytes:
    data = png((64, 64), "RGB")
    return data[: len(data) // 2]


FOLDER_CASES: dict[str, Builder] = {
    "folder-empty": folder_case({}, "", "no image files found", "expected images or class sub-folders"),
    "folder-only-text": folder_case({"notes.txt": b"hi"}, "", "no image files found"),
    "folder-empty-class": folder_case({"cat/1.png": png(), "dog/.keep": b""}, "dog", "class folder holds no image files"),
    "folder-mixed-layout": folder_case({"cat/1.png": png(), "stray.png": png()}, "", "stray.png", "use either"),
    "folder-mixed-sizes": folder_case(three(**{"d.png": png((5, 4))}), "d.png", "5x4", "same size"),
    "folder-mixed-sizes-in-classes": folder_case(
        {"a/1.png": png(), "a/2.png": png(), "b/1.png": png((4, 5))}, "b/1.png", "4x5", "same size"
    ),
    "folder-bomb-20000": folder_case(three(**{"d.png": png_claiming(20000, 20000)}), "d.png", "image too large"),
    "folder-bomb-5000": folder_case(three(**{"d.png": png_claiming(5000, 5000)}), "d.png", "5000x5000", "at most"),
    "folder-bomb-wide": folder_case(three(**{"d.png": png_claiming(2**31 - 1, 1)}), "d.png", "d.png"),
    "folder-garbage-png": folder_case(three(**{"d.png": b"not a png at all"}), "d.png", "cannot read image"),
    "folder-empty-png": folder_case(three(**{"d.png": b""}), "d.png", "cannot read image"),
    "folder-truncated-png": folder_case(three(**{"d.png": truncated_png()}), "d.png", "cannot read image"),
    "folder-png-as-jpg-garbage": folder_case(three(**{"d.jpg": b"\xff\xd8\xff" + bytes(20)}), "d.jpg", "cannot read image"),
    "folder-zero-width-png": folder_case(three(**{"d.png": png_claiming(0, 4)}), "d.png", "cannot read image"),
    "folder-fifo-image": folder_case(three(**{"d.png": "fifo"}), "d.png", "is a FIFO", "expected an image file"),
    "folder-dev-zero-image": folder_case(three(**{"d.png": "/dev/zero"}), "d.png", "character device"),
    "folder-dev-null-image": folder_case(three(**{"d.png": "/dev/null"}), "d.png", "character device"),
    "folder-dangling-image": folder_case(three(**{"d.png": "/nonexistent/x.png"}), "d.png", "cannot read an image file"),
    "folder-fifo-in-class": folder_case({"a/1.png": png(), "a/2.png": png(), "b/1.png": "fifo"}, "b/1.png", "FIFO"),
    "folder-too-few": folder_case({"a.png": png(), "b.png": png()}, "", "need at least 3"),
}


MISSING_CASES: dict[str, Builder] = {
    "missing-npz": lambda tmp: Bad(lambda: load_dataset(str(tmp / "gone.npz")), tmp / "gone.npz", ("file not found",)),
    "missing-folder": lambda tmp: Bad(lambda: load_dataset(str(tmp / "gone") + "/"), tmp / "gone", ("file not found",)),
    "missing-nested-npz": lambda tmp: Bad(
        lambda: load_dataset(str(tmp / "a" / "b.npz")), tmp / "a" / "b.npz", ("file not found", "expected a folder")
    ),
}


CORPUS: dict[str, Builder] = {
    **{f"idx-{d}-{'gz' if c else 'raw'}": idx_case(d, c) for d in IDX_DEFECTS for c in (False, True)},
    **GZIP_CASES,
    **SPECIAL_IDX,
    **PAIR_CASES,
    **DATA_DIR_CASES,
    **{name: npz_case(arrays, expect) for name, (arrays, expect) in NPZ_ARRAY_DEFECTS.items()},
    **{f"{name}-compressed": npz_case(arrays, expect, True) for name, (arrays, expect) in list(NPZ_ARRAY_DEFECTS.items())[:8]},
    **NPZ_FILE_CASES,
    **FOLDER_CASES,
    **MISSING_CASES,
}


# ------------------------------------------------------------------------------------------------
# The checks


def snapshot(root: Path) -> dict[str, tuple]:
    """lstat of every entry under ``root`` (never following links) and the bytes of regular files."""
    state = {}
    for path in [root, *sorted(root.rglob("*"))]:
        info = os.lstat(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(info.st_mode) else None
        state[str(path.relative_to(root))] = (info.st_mode, info.st_size, info.st_mtime_ns, digest)
    return state


@pytest.fixture(autouse=True)
def hang_guard() -> Iterator[None]:
    """Fail a test still running after HANG_SECONDS (SIGALRM interrupts even a blocking open())."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {HANG_SECONDS} s: a read that never ends?")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A case directory whose cache and system roots lie inside it, so the snapshot sees them too."""
    case = tmp_path / "case"
    case.mkdir()
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.delenv("VAELAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(case / "cache"))
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", case / "system")
    monkeypatch.chdir(case)
    return case


def test_corpus_is_large() -> None:
    assert len(CORPUS) >= 80, len(CORPUS)


@pytest.mark.parametrize("case", list(CORPUS))
def test_bad_input_fails_cleanly(case: str, isolated: Path) -> None:
    if any(s in case for s in ("dev-zero", "dev-null")) and not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero here")
    bad = CORPUS[case](isolated)
    before = snapshot(isolated)
    with pytest.raises(VaelabError) as info:
        bad.call()
    message = str(info.value)
    assert "\n" not in message
    assert str(bad.names) in message, f"{message!r} does not name {bad.names}"
    for fragment in bad.expect:
        assert fragment in message, f"{message!r} lacks {fragment!r}"
    assert snapshot(isolated) == before


# ------------------------------------------------------------------------------------------------
# Fuzzing: valid data or VaelabError, never another exception

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD_IDX = idx(0x08, (3, 2, 2), payload=bytes(range(12)))
GOOD_IDX_INT16 = idx(0x0B, (2, 3), payload=bytes(range(12)))


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None, tail: bytes) -> bytes:
    """``data`` with bytes overwritten at positions (mod its length), cut short, then extended."""
    out = bytearray(data)
    for position, value in edits:
        if out:
            out[position % len(out)] = value
    if cut is not None:
        del out[cut:]
    return bytes(out) + tail


mutations = st.tuples(
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=4),
    st.one_of(st.none(), st.integers(0, 400)),
    st.binary(max_size=8),
)


def read_or_user_error(read: Callable[[Path], object], data: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        try:
            read(path)
        except VaelabError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)


@FUZZ
@given(data=st.binary(max_size=64), compress=st.booleans())
def test_fuzz_idx_random_bytes(data: bytes, compress: bool) -> None:
    read_or_user_error(read_idx, gzip.compress(data, mtime=0) if compress else data, "f.gz")


@FUZZ
@given(
    base=st.sampled_from([GOOD_IDX, GOOD_IDX_INT16]),
    change=mutations,
    where=st.sampled_from(["raw", "inside gzip", "gzip stream"]),
)
def test_fuzz_idx_mutations(base: bytes, change: tuple, where: str) -> None:
    """A damaged raw file, a damaged file compressed intact, or an intact file in a damaged gzip stream."""
    if where == "raw":
        data = mutate(base, *change)
    elif where == "inside gzip":
        data = gzip.compress(mutate(base, *change), mtime=0)
    else:
        data = mutate(gzip.compress(base, mtime=0), *change)
    read_or_user_error(read_idx, data, "f")


NPZ_BASES = [
    GOOD_NPZ,
    npz_bytes(True, x=GOOD_X, y=np.arange(6) % 2),
    npz_bytes(x=np.linspace(0, 1, 12, dtype=np.float32).reshape(6, 2), c=np.arange(6.0), c_names=np.array(["t"])),
]


@FUZZ
@given(base=st.sampled_from(NPZ_BASES), change=mutations)
def test_fuzz_npz_mutations(base: bytes, change: tuple) -> None:
    read_or_user_error(lambda p: load_dataset(str(p)), mutate(base, *change), "d.npz")


@FUZZ
@given(data=st.binary(max_size=300))
def test_fuzz_npz_random_bytes(data: bytes) -> None:
    read_or_user_error(lambda p: load_dataset(str(p)), b"PK\x03\x04" + data, "d.npz")


def test_fuzz_bases_are_valid() -> None:
    """The mutated files start out valid, so the fuzzers explore near real data."""
    assert read_idx_from(GOOD_IDX).shape == (3, 2, 2)
    with tempfile.TemporaryDirectory() as tmp:
        for i, base in enumerate(NPZ_BASES):
            (Path(tmp) / f"{i}.npz").write_bytes(base)
            assert len(load_dataset(str(Path(tmp) / f"{i}.npz")).train) == 4


def read_idx_from(data: bytes) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "f").write_bytes(data)
        return read_idx(Path(tmp) / "f")
