"""Fetch a dataset file from a list of mirrors, verified by the md5 of the file as served.

Mirrors go down and get replaced (MNIST moved off yann.lecun.com), so every file is tried on
each mirror in order. A file is streamed into a temporary file beside its destination and renamed
into place only once its md5 matches (:func:`vaelab.fileio.atomic_write`), so an interrupted or
corrupted download never leaves a file that a later run would mistake for the real one.

The md5 values are those of the upstream ``.gz`` files. Files found locally are never checked
against them (the Debian package re-compressed its copies); the IDX reader validates those
structurally instead.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from tqdm import tqdm

from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 16


class _ChecksumMismatch(Exception):
    """Aborts an atomic write whose content did not match the expected md5."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, handle: BinaryIO, timeout: float, progress: bool, label: str) -> str:
    """Copy ``url`` into ``handle`` and return the hex md5 of the bytes received."""
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "vaelab"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=label,
            disable=not progress or total is None,
            leave=False,
        ) as bar:
            for chunk in iter(lambda: response.read(CHUNK_BYTES), b""):
                handle.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
    return digest.hexdigest()


def _reason(exc: BaseException) -> str:
    """A short one-line description of why a mirror failed."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code} {exc.reason}"
    elif isinstance(exc, urllib.error.URLError):
        text = str(exc.reason)
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def download(
    filename: str,
    md5: str,
    mirrors: Sequence[str],
    dest_dir: str | os.PathLike,
    timeout: float = 30.0,
    progress: bool = True,
) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first mirror that serves it with ``md5``.

    ``mirrors`` are base URLs; the file's URL is ``<mirror>/<filename>``. Mirrors are tried in
    order; a network error, an HTTP error or a checksum mismatch moves on to the next one. A
    progress bar (bytes, rate) is shown on stderr when the server sends a size and ``progress``
    is true. Returns the path of the verified file; raises :class:`VaelabError` naming the file,
    every mirror tried and why it failed, if none succeeded.
    """
    target = Path(dest_dir) / filename
    failures: list[str] = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        logger.info("downloading %s", url)
        try:
            with atomic_write(target) as handle:
                got = _stream(url, handle, timeout, progress, filename)
                if got != md5:
                    raise _ChecksumMismatch(f"md5 {got}, expected {md5}")
        except (OSError, http.client.HTTPException, _ChecksumMismatch) as exc:
            failures.append(f"{url} ({_reason(exc)})")
            logger.warning("download of %s failed: %s", url, _reason(exc))
            continue
        return target
    tried = "; ".join(failures) if failures else "no mirrors given"
    raise VaelabError(f"{target}: download failed from every mirror: {tried}")
