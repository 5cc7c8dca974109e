"""Downloads against a real HTTP server on 127.0.0.1 (never any other address).

The server serves a temporary directory; each sub-folder plays one mirror, so a test arranges a
mirror that serves the right file, a wrong file (checksum mismatch) or nothing (404).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data import datasets
from vaelab.data import download as download_module
from vaelab.data.datasets import IDX_FILES, load_dataset
from vaelab.data.download import download, md5sum
from vaelab.errors import VaelabError
from vaelab.data.idx import write_idx

PAYLOAD = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x03abc", mtime=0)
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served root directory) of a threaded HTTP server on an ephemeral loopback port."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def serve(root: Path, mirror: str, filename: str, data: bytes) -> None:
    (root / mirror).mkdir(exist_ok=True)
    (root / mirror / filename).write_bytes(data)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_success_writes_verified_file_and_nothing_else(server, tmp_path: Path) -> None:
    base, root = server
    serve(root, "good", "f.gz", PAYLOAD)
    dest = tmp_path / "dest"
    path = download("f.gz", PAYLOAD_MD5, [f"{base}/good/"], dest, progress=False)
    assert path == dest / "f.gz" and path.read_bytes() == PAYLOAD
    assert md5sum(path) == PAYLOAD_MD5
    assert sorted(p.name for p in dest.iterdir()) == ["f.gz"]


def test_checksum_mismatch_falls_back_to_next_mirror(server, tmp_path: Path) -> None:
    base, root = server
    serve(root, "stale", "f.gz", PAYLOAD + b"tampered")
    serve(root, "good", "f.gz", PAYLOAD)
    dest = tmp_path / "dest"
    path = download("f.gz", PAYLOAD_MD5, [f"{base}/stale", f"{base}/good"], dest, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.iterdir()) == ["f.gz"]


def test_404_falls_back_to_next_mirror(server, tmp_path: Path) -> None:
    base, root = server
    serve(root, "good", "f.gz", PAYLOAD)
    path = download(
        "f.gz", PAYLOAD_MD5, [f"{base}/empty", f"{base}/good"], tmp_path, progress=False
    )
    assert path.read_bytes() == PAYLOAD


def test_all_mirrors_failing_raises_one_line_error_and_leaves_no_file(
    server, tmp_path: Path
) -> None:
    base, root = server
    serve(root, "stale", "f.gz", b"not it")
    dead = f"http://127.0.0.1:{closed_port()}/"
    mirrors = [f"{base}/stale/", f"{base}/missing/", dead]
    dest = tmp_path / "dest"
    with pytest.raises(VaelabError) as info:
        download("f.gz", PAYLOAD_MD5, mirrors, dest, timeout=5, progress=False)
    message = str(info.value)
    assert "\n" not in message and "f.gz" in message
    assert f"{base}/stale/f.gz (md5 " in message and f"expected {PAYLOAD_MD5}" in message
    assert f"{base}/missing/f.gz (HTTP 404" in message
    assert f"{dead}f.gz (" in message
    assert not dest.exists() or list(dest.iterdir()) == []


def test_failed_download_keeps_no_partial_file_over_existing_one(server, tmp_path: Path) -> None:
    base, root = server
    serve(root, "stale", "f.gz", b"wrong bytes")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "f.gz").write_bytes(b"previous")
    with pytest.raises(VaelabError):
        download("f.gz", PAYLOAD_MD5, [f"{base}/stale"], dest, progress=False)
    assert [p.name for p in dest.iterdir()] == ["f.gz"]
    assert (dest / "f.gz").read_bytes() == b"previous"


def test_progress_bar_shown_only_when_asked(server, tmp_path: Path, capsys) -> None:
    base, root = server
    serve(root, "good", "f.gz", PAYLOAD)
    download("f.gz", PAYLOAD_MD5, [f"{base}/good"], tmp_path / "a", progress=True)
    assert "f.gz" in capsys.readouterr().err
    download("f.gz", PAYLOAD_MD5, [f"{base}/good"], tmp_path / "b", progress=False)
    assert capsys.readouterr().err == ""


def test_load_dataset_downloads_missing_idx_files_into_cache(
    server, tmp_path: Path, monkeypatch
) -> None:
    """End to end: nothing found locally -> the four files are fetched, verified and loaded."""
    base, root = server
    rng = np.random.default_rng(1)
    train_x = rng.integers(0, 256, (12, 4, 4), dtype=np.uint8)
    arrays = {
        "train_images": train_x,
        "train_labels": np.arange(12, dtype=np.uint8) % 10,
        "test_images": rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
        "test_labels": np.array([7, 8, 9], dtype=np.uint8),
    }
    md5 = {}
    for role, stem in IDX_FILES.items():
        write_idx(root / "m" / f"{stem}.gz", arrays[role])
        md5[role] = md5sum(root / "m" / f"{stem}.gz")
    spec = datasets.IdxSource(
        name="mnist", md5=md5, mirrors=(f"{base}/m/",), classes=datasets.DATASETS["mnist"].classes
    )
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", tmp_path / "no-system")
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    with pytest.raises(VaelabError, match="not found"):
        load_dataset("mnist", download=False)
    ds = load_dataset("mnist", val_size=2)
    cache = tmp_path / "cache" / "vaelab" / "mnist"
    assert ds.source == str(cache)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{s}.gz" for s in IDX_FILES.values())
    assert (len(ds.train), len(ds.val), len(ds.test)) == (10, 2, 3)
    torch.testing.assert_close(ds.val.x[-1, 0], torch.from_numpy(train_x[-1]).float() / 255)
    assert ds.test.y.tolist() == [7, 8, 9]


class TrickleHandler(http.server.BaseHTTPRequestHandler):
    """Promises a megabyte, then sends one byte every 0.2 s until the client or the test gives up."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 20))
        self.end_headers()
        while not self.server.stop.wait(0.2):  # type: ignore[attr-defined]
            try:
                self.wfile.write(b"x")
                self.wfile.flush()
            except OSError:  # the client hung up
                return

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def trickle_server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), TrickleHandler)
    httpd.stop = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.stop.set()  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_trickling_mirror_is_abandoned_when_the_budget_runs_out(
    trickle_server: str, server, tmp_path: Path
) -> None:
    """Each byte arrives well within the socket timeout, so only the overall budget stops it."""
    base, root = server
    serve(root, "good", "f.gz", PAYLOAD)
    dest = tmp_path / "cache" / "dest"
    start = time.monotonic()
    with pytest.raises(VaelabError) as info:
        download(
            "f.gz", PAYLOAD_MD5, [trickle_server, f"{base}/good"], dest,
            timeout=5, progress=False, budget=1.0,
        )
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message and str(dest / "f.gz") in message
    assert "time budget of 1 s" in message and f"{trickle_server}/f.gz (still incomplete" in message
    assert "/good/" not in message  # the budget is for the whole call: no mirror after it
    assert elapsed < 30  # a hang guard, not a speed test (the budget is 1 s)
    assert not (tmp_path / "cache").exists()  # the folders made for the download are gone again


def test_budget_default_is_the_module_constant(monkeypatch, server, tmp_path: Path) -> None:
    base, root = server
    serve(root, "good", "f.gz", PAYLOAD)
    monkeypatch.setattr(download_module, "DOWNLOAD_BUDGET_SECONDS", 0.0)
    with pytest.raises(VaelabError, match="time budget of 0 s"):
        download("f.gz", PAYLOAD_MD5, [f"{base}/good"], tmp_path / "d", progress=False)


def test_failed_download_keeps_folders_that_existed(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/"
    (tmp_path / "old").mkdir()
    with pytest.raises(VaelabError):
        download("f.gz", PAYLOAD_MD5, [dead], tmp_path / "old" / "new" / "newer", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert list((tmp_path / "old").iterdir()) == []


def test_offline_mnist_says_where_to_put_the_files(tmp_path: Path, monkeypatch) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/"
    spec = datasets.IdxSource(
        name="mnist", md5=datasets.DATASETS["mnist"].md5, mirrors=(dead,),
        classes=datasets.DATASETS["mnist"].classes,
    )
    monkeypatch.setitem(datasets.DATASETS, "mnist", spec)
    monkeypatch.setattr(datasets, "SYSTEM_DATA_ROOT", tmp_path / "no-system")
    monkeypatch.delenv("VAELAB_DATA", raising=False)
    monkeypatch.delenv("VAELAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(VaelabError) as info:
        load_dataset("mnist")
    message = str(info.value)
    target = tmp_path / "cache" / "vaelab" / "mnist"
    assert "\n" not in message and f"into {target}/" in message
    for stem in IDX_FILES.values():
        assert f"{stem}.gz" in message
    assert "--data-dir" in message
    assert not (tmp_path / "cache").exists()
