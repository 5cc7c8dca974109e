"""LeCun's IDX format, the container of MNIST and Fashion-MNIST, read with bounded effort.

An IDX file is a 4-byte magic (two zero bytes, a type byte, a dimension count), one big-endian
uint32 per dimension, then the row-major payload. Files arrive gzip-compressed or raw under
either name (the Debian package re-compresses them, some users decompress them), so the reader
detects gzip by its magic bytes, never by the file extension.

The reader validates the structure strictly, because that is the check that holds for every
source: the ``.gz`` md5 of upstream does not match the Debian files, and a truncated download or
a half-copied file must fail loudly here instead of training on garbage.

It is also careful with hostile or broken input. The header is read first from the decompressing
stream; its promised payload size is checked against :data:`MAX_ARRAY_BYTES` and against what
the file could possibly hold *before* anything is allocated, and at most header + payload + 1
bytes are ever decompressed (the extra byte detects an over-long payload), so an 8 MB gzip bomb
costs a header's worth of work. :func:`open_regular` (shared with the ``.npz`` and image readers)
refuses FIFOs and devices, which would block or never end, and every byte read is hashed on the
way, so the file's sha256 (its provenance) costs no second pass.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import math
import os
import stat
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes

GZIP_MAGIC = b"\x1f\x8b"

# The largest array any data reader allocates for one file: 2 GiB is 4x EMNIST's largest IDX file
# (547 MB) and already 8 GiB once converted to float32 tensors.
MAX_ARRAY_BYTES = 2 * 1024**3

# Deflate cannot expand data more than ~1032:1 (a 258-byte match per 2 bits), so a gzip file of
# n bytes can never decompress to more than this many times n.
DEFLATE_MAX_RATIO = 1032

CHUNK_BYTES = 1 << 20

# IDX type byte -> big-endian numpy dtype (the table from LeCun's MNIST page).
IDX_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# ---------------------------------------------------------------------------------------------
# Bounded, hashed reading of regular files (also used by the .npz and image-folder readers)


def gigabytes(n_bytes: int) -> str:
    """``n_bytes`` for a message, e.g. ``8.6 GB``."""
    return f"{n_bytes / 1e9:.1f} GB"


def one_line(exc: BaseException) -> str:
    """An exception's text squeezed onto one line, for messages that quote a library's error."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _file_kind(mode: int) -> str:
    kinds = {
        stat.S_ISDIR: "a directory",
        stat.S_ISFIFO: "a FIFO (named pipe)",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
    }
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def open_regular(path: Path, expected: str) -> tuple[BinaryIO, int]:
    """Open ``path`` (symlinks followed) for reading only if it is a regular file; return it and its size.

    A FIFO would block ``open`` until a writer appears and a device such as ``/dev/zero`` never
    ends, so neither may be read. ``O_NONBLOCK`` makes opening a FIFO return at once, and the
    check is an ``fstat`` of the opened descriptor, so the file cannot be swapped in between.
    ``expected`` (e.g. "an IDX file") completes the error messages.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read {expected} ({exc.strerror or exc})") from exc
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise VaelabError(f"{path}: is {_file_kind(status.st_mode)}, expected {expected} (a regular file)")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), status.st_size


class HashingReader:
    """A read-only view of a file that feeds every byte read through it to sha256.

    Readers pull the file through this once (gzip decoding included), so the checksum recorded
    as provenance costs no second pass over a large file.
    """

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._digest = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self._digest.update(data)
        return data

    def readinto(self, buffer: memoryview) -> int:
        n = self._handle.readinto(buffer)
        self._digest.update(buffer[:n])
        return n

    def hexdigest(self) -> str:
        """The sha256 of the whole file: whatever was not read yet is read (and hashed) first."""
        while self.read(CHUNK_BYTES):
            pass
        return self._digest.hexdigest()


def read_into(stream: BinaryIO | HashingReader | gzip.GzipFile, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``stream``; return how many bytes arrived before the end of the stream."""
    filled = 0
    while filled < len(buffer):
        n = stream.readinto(buffer[filled : filled + CHUNK_BYTES])  # chunks: no payload-sized temporaries
        if not n:
            break
        filled += n
    return filled


def read_file_hashed(path: Path, expected: str, max_bytes: int) -> tuple[bytes, str]:
    """All bytes of regular file ``path`` and their sha256, refusing files over ``max_bytes``."""
    handle, size = open_regular(path, expected)
    with handle:
        if size > max_bytes:
            raise VaelabError(
                f"{path}: file is {gigabytes(size)}, expected {expected} of at most {gigabytes(max_bytes)}"
            )
        try:
            data = handle.read(size)  # the size fstat saw: a file growing meanwhile is not followed
        except OSError as exc:
            raise VaelabError(f"{path}: cannot read {expected} ({exc.strerror or exc})") from exc
    return data, hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# IDX


class IdxFile(NamedTuple):
    """An IDX file's array and the sha256 of the file's bytes as stored (gzip or raw)."""

    array: np.ndarray
    sha256: str


class _Header(NamedTuple):
    dtype: np.dtype
    shape: tuple[int, ...]
    length: int  # bytes: magic + dimensions

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@contextlib.contextmanager
def _decode_errors(path: Path, compressed: bool) -> Iterator[None]:
    """Turn the errors of reading or gunzipping ``path`` into one-line :class:`VaelabError`."""
    try:
        yield
    except (EOFError, OSError, zlib.error) as exc:
        if compressed:
            raise VaelabError(f"{path}: corrupt gzip stream ({one_line(exc)})") from exc
        raise VaelabError(f"{path}: cannot read IDX file ({one_line(exc)})") from exc


def _read_exactly(stream: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    buffer = bytearray(n)
    return bytes(buffer[: read_into(stream, memoryview(buffer))])


def _read_header(stream: BinaryIO, path: Path) -> _Header:
    """Magic and dimensions, validated, reading no byte of the payload."""
    magic = _read_exactly(stream, 4)
    if len(magic) < 4:
        raise VaelabError(
            f"{path}: not an IDX file: {len(magic)} bytes, shorter than the 4-byte magic"
        )
    zeros, type_byte, ndim = magic[:2], magic[2], magic[3]
    if zeros != b"\x00\x00":
        raise VaelabError(
            f"{path}: not an IDX file: magic starts with {magic.hex(' ')}, "
            "expected 00 00 <type> <ndim>"
        )
    if type_byte not in IDX_TYPES:
        known = ", ".join(f"0x{t:02x}" for t in IDX_TYPES)
        raise VaelabError(
            f"{path}: unsupported IDX type byte 0x{type_byte:02x}, expected one of {known}"
        )
    if ndim == 0:
        raise VaelabError(f"{path}: IDX header declares 0 dimensions, expected at least 1")
    dims = _read_exactly(stream, 4 * ndim)
    if len(dims) < 4 * ndim:
        raise VaelabError(
            f"{path}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} bytes, "
            f"found {4 + len(dims)}"
        )
    return _Header(IDX_TYPES[type_byte], struct.unpack(f">{ndim}I", dims), 4 + 4 * ndim)


def _check_payload_fits(path: Path, header: _Header, file_size: int, compressed: bool) -> None:
    """Refuse, before allocating, a payload above the limit or larger than the file can hold."""
    expected = header.payload_bytes
    if expected > MAX_ARRAY_BYTES:
        raise VaelabError(
            f"{path}: IDX header promises shape {header.shape} of {header.dtype.name}, which needs "
            f"{gigabytes(expected)}; expected at most {gigabytes(MAX_ARRAY_BYTES)} per file"
        )
    if compressed and expected > DEFLATE_MAX_RATIO * file_size:
        raise VaelabError(
            f"{path}: truncated IDX payload: header promises {expected} bytes, more than "
            f"{gigabytes(file_size)} of gzip data can hold"
        )
    found = file_size - header.length
    if not compressed and found != expected:
        kind = "truncated" if found < expected else "over-long"
        raise VaelabError(
            f"{path}: {kind} IDX payload: header promises {expected} bytes, found {found}"
        )


def _read_payload(stream: BinaryIO, path: Path, header: _Header) -> np.ndarray:
    """The payload as a native-endian array, reading at most one byte more than promised."""
    expected = header.payload_bytes
    buffer = bytearray(expected + 1)
    found = read_into(stream, memoryview(buffer))
    if found < expected:
        raise VaelabError(
            f"{path}: truncated IDX payload: header promises {expected} bytes, found {found}"
        )
    if found > expected:
        raise VaelabError(
            f"{path}: over-long IDX payload: header promises {expected} bytes, found more"
        )
    array = np.frombuffer(buffer, dtype=header.dtype, count=math.prod(header.shape))
    # Native byte order and writable; a copy only for the multi-byte types.
    return array.reshape(header.shape).astype(header.dtype.newbyteorder("="), copy=False)


def read_idx_file(path: str | os.PathLike) -> IdxFile:
    """Read an IDX file (gzip or raw) into a native-endian array of the promised shape, with its sha256.

    Raises :class:`VaelabError` naming the file for a path that is not a regular file, a wrong
    magic, an unknown type byte, a truncated header, a payload above :data:`MAX_ARRAY_BYTES`, or
    a payload shorter or longer than the header promises.
    """
    path = Path(path)
    handle, size = open_regular(path, "an IDX file")
    with handle:
        with _decode_errors(path, compressed=False):
            compressed = handle.peek(2)[:2] == GZIP_MAGIC  # peek: the hash must see every byte
        hashed = HashingReader(handle)
        with _decode_errors(path, compressed):
            stream = gzip.GzipFile(fileobj=hashed, mode="rb") if compressed else hashed
            header = _read_header(stream, path)
            _check_payload_fits(path, header, size, compressed)
            array = _read_payload(stream, path, header)
        return IdxFile(array, hashed.hexdigest())


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """The array of :func:`read_idx_file`, for callers that need no provenance."""
    return read_idx_file(path).array


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
) -> tuple[IdxFile, IdxFile]:
    """Read matching image and label files: images ``[N, H, W]``, labels ``[N]``, each with its sha256.

    Checks what a mislabelled pair would silently break: the ranks and that both files hold the
    same number of examples.
    """
    images = read_idx_file(images_path)
    labels = read_idx_file(labels_path)
    if images.array.ndim != 3:
        raise VaelabError(
            f"{images_path}: expected 3-D IDX images [N, H, W], got shape {images.array.shape}"
        )
    if labels.array.ndim != 1:
        raise VaelabError(
            f"{labels_path}: expected 1-D IDX labels [N], got shape {labels.array.shape}"
        )
    if len(images.array) != len(labels.array):
        raise VaelabError(
            f"{images_path} holds {len(images.array)} images but {labels_path} holds "
            f"{len(labels.array)} labels; expected one label per image"
        )
    return images, labels
