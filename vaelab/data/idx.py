"""LeCun's IDX format, the container of MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic (two zero bytes, a type byte, a dimension count), one big-endian
uint32 per dimension, then the row-major payload. Files arrive gzip-compressed or raw under
either name (the Debian package re-compresses them, some users decompress them), so the reader
detects gzip by its magic bytes, never by the file extension.

The reader validates the structure strictly, because that is the check that holds for every
source: the ``.gz`` md5 of upstream does not match the Debian files, and a truncated download or
a half-copied file must fail loudly here instead of training on garbage.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"

# IDX type byte -> big-endian numpy dtype (the table from LeCun's MNIST page).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _raw_bytes(path: Path) -> bytes:
    """The file's IDX bytes, decompressed if the file starts with the gzip magic."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read IDX file ({exc.strerror or exc})") from exc
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as exc:
        raise VaelabError(f"{path}: corrupt gzip stream ({exc})") from exc


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip or raw) into a native-endian numpy array of the promised shape.

    Raises :class:`VaelabError` naming the file for a wrong magic, an unknown type byte, a
    truncated header, or a payload shorter or longer than the header promises.
    """
    path = Path(path)
    data = _raw_bytes(path)
    if len(data) < 4:
        raise VaelabError(
            f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic"
        )
    zeros, type_byte, ndim = data[:2], data[2], data[3]
    if zeros != b"\x00\x00":
        raise VaelabError(
            f"{path}: not an IDX file: magic starts with {data[:4].hex(' ')}, "
            "expected 00 00 <type> <ndim>"
        )
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_TYPES)
        raise VaelabError(
            f"{path}: unsupported IDX type byte 0x{type_byte:02x}, expected one of {known}"
        )
    if ndim == 0:
        raise VaelabError(f"{path}: IDX header declares 0 dimensions, expected at least 1")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise VaelabError(
            f"{path}: truncated IDX header: {ndim} dimensions need {header_len} bytes, "
            f"found {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = IDX_TYPES[type_byte]
    expected = math.prod(shape) * dtype.itemsize
    found = len(data) - header_len
    if found < expected:
        raise VaelabError(
            f"{path}: truncated IDX payload: header promises {expected} bytes, found {found}"
        )
    if found > expected:
        raise VaelabError(
            f"{path}: over-long IDX payload: header promises {expected} bytes, found {found}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    # One copy: native byte order and a writable array, independent of the file's bytes.
    return array.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as an IDX file, atomically; gzip it if ``compress`` (default: ``*.gz`` name).

    Used by tests and tools to produce files in exactly the format :func:`read_idx` accepts.
    """
    path = Path(path)
    array = np.asarray(array)
    type_byte = next(
        (t for t, dt in IDX_TYPES.items() if dt == array.dtype.newbyteorder(">")), None
    )
    if type_byte is None:
        raise VaelabError(
            f"{path}: cannot store dtype {array.dtype} in IDX; "
            "use uint8, int8, int16, int32, float32 or float64"
        )
    if not 1 <= array.ndim <= 255:
        raise VaelabError(f"{path}: IDX stores 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_TYPES[type_byte]).tobytes()
    if compress is None:
        compress = path.name.endswith(".gz")
    if compress:
        data = gzip.compress(data, compresslevel=6, mtime=0)
    atomic_write_bytes(path, data)


def read_idx_pair(
    images_path: str | os.PathLike, labels_path: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray]:
    """Read matching image and label files: images ``[N, H, W]``, labels ``[N]``.

    Checks what a mislabelled pair would silently break: the ranks and that both files hold the
    same number of examples.
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim != 3:
        raise VaelabError(
            f"{images_path}: expected 3-D IDX images [N, H, W], got shape {images.shape}"
        )
    if labels.ndim != 1:
        raise VaelabError(f"{labels_path}: expected 1-D IDX labels [N], got shape {labels.shape}")
    if len(images) != len(labels):
        raise VaelabError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    return images, labels
