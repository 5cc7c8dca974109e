"""Fetch a dataset file from a list of mirrors, verified by the md5 of the file as served.

Mirrors go down and get replaced (MNIST moved off yann.lecun.com), so every file is tried on
each mirror in order. A file is streamed into a temporary file beside its destination and renamed
into place only once its md5 matches (:func:`vaelab.fileio.atomic_write`), so an interrupted or
corrupted download never leaves a file that a later run would mistake for the real one.

The md5 values are those of the upstream ``.gz`` files. Files found locally are never checked
against them (the Debian package re-compressed its copies); the IDX reader validates those
structurally instead.

Every call has an overall time budget (:data:`DOWNLOAD_BUDGET_SECONDS`): a socket timeout only
catches a silent server, while a mirror that trickles a byte every few seconds would otherwise
keep a download going forever. Directories created for a download that then failed are removed
again, so a failed attempt leaves no empty cache folder behind.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import time
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
DOWNLOAD_BUDGET_SECONDS = 600.0  # one file over all its mirrors: 10 min is ~40 kB/s for MNIST's largest


class _ChecksumMismatch(Exception):
    """Aborts an atomic write whose content did not match the expected md5."""


class _OutOfTime(Exception):
    """Aborts a transfer that would overrun the download's overall time budget."""


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stream(url: str, handle: BinaryIO, timeout: float, deadline: float, progress: bool, label: str) -> str:
    """Copy ``url`` into ``handle`` and return the hex md5 of the bytes received.

    Reads with ``read1`` (whatever one socket read returns), so the clock is checked after every
    arrival however slowly the bytes come; ``deadline`` is a :func:`time.monotonic` time.
    """
    digest = hashlib.md5(usedforsecurity=False)
    request = urllib.request.Request(url, headers={"User-Agent": "vaelab"})
    with urllib.request.urlopen(request, timeout=min(timeout, _remaining(deadline))) as response:
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
            for chunk in iter(lambda: response.read1(CHUNK_BYTES), b""):
                handle.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                _remaining(deadline)
    return digest.hexdigest()


def _remaining(deadline: float) -> float:
    """Seconds left before ``deadline``; raises :class:`_OutOfTime` once none are."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise _OutOfTime("out of time")
    return left


def _missing_dirs(directory: Path) -> list[Path]:
    """``directory`` and those of its ancestors that do not exist yet, deepest first."""
    missing = []
    while not directory.exists() and directory != directory.parent:
        missing.append(directory)
        directory = directory.parent
    return missing


def _remove_if_empty(directories: list[Path]) -> None:
    """Remove the directories a failed download created, deepest first, stopping at a non-empty one."""
    for directory in directories:
        try:
            directory.rmdir()
        except OSError:
            return


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
    budget: float | None = None,
) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first mirror that serves it with ``md5``.

    ``mirrors`` are base URLs; the file's URL is ``<mirror>/<filename>``. Mirrors are tried in
    order; a network error, an HTTP error or a checksum mismatch moves on to the next one.
    ``timeout`` bounds each wait for the network, ``budget`` (seconds, default
    :data:`DOWNLOAD_BUDGET_SECONDS`) the whole call over all mirrors. A progress bar (bytes,
    rate) is shown on stderr when the server sends a size and ``progress`` is true. Returns the
    path of the verified file; raises :class:`VaelabError` naming the file, every mirror tried
    and why it failed, if none succeeded in time.
    """
    budget = DOWNLOAD_BUDGET_SECONDS if budget is None else budget
    deadline = time.monotonic() + budget
    target = Path(dest_dir) / filename
    created = _missing_dirs(target.parent)
    failures: list[str] = []
    out_of_time = False
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + filename
        if time.monotonic() >= deadline:
            out_of_time = True
            break
        logger.info("downloading %s", url)
        try:
            with atomic_write(target) as handle:
                got = _stream(url, handle, timeout, deadline, progress, filename)
                if got != md5:
                    raise _ChecksumMismatch(f"md5 {got}, expected {md5}")
        except _OutOfTime:
            failures.append(f"{url} (still incomplete when the time ran out)")
            out_of_time = True
            break
        except (OSError, http.client.HTTPException, _ChecksumMismatch) as exc:
            failures.append(f"{url} ({_reason(exc)})")
            logger.warning("download of %s failed: %s", url, _reason(exc))
            continue
        return target
    _remove_if_empty(created)
    tried = "; ".join(failures) if failures else "no mirrors given"
    if out_of_time:
        raise VaelabError(
            f"{target}: download gave up after its time budget of {budget:g} s "
            f"(expected to finish within DOWNLOAD_BUDGET_SECONDS): {tried}"
        )
    raise VaelabError(f"{target}: download failed from every mirror: {tried}")
