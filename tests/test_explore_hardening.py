"""The explorer left running: Host allow-list, hostile or broken requests, decompression bombs, the page's numbering.

Every refusal must be a 4xx with a JSON ``{"error"}``, no traceback in the log, and the server must
keep answering afterwards.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import socket
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from PIL import Image

from vaelab.views.explore import ExplorerBackend, ExplorerServer, RequestError, make_server
from vaelab.views.explore import server as server_module
from vaelab.views.explore.server import host_name, json_depth
from vaelab.views.explore.uploads import read_image

from .browser import chromium_page

JSON = {"Content-Type": "application/json"}


@dataclass
class Served:
    server: ExplorerServer
    thread: threading.Thread

    @property
    def address(self) -> tuple[str, int]:
        return self.server.server_address[:2]


@pytest.fixture(scope="module")
def served(trained_run) -> Iterator[Served]:
    server = make_server(ExplorerBackend.from_run(trained_run.path), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Served(server, thread)
    server.shutdown()
    server.server_close()
    thread.join()


def request(served: Served, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request on a fresh connection (http.client sets Host)."""
    connection = http.client.HTTPConnection(*served.address, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def raw(served: Served, data: bytes, half_close: bool = False) -> tuple[int, str, bytes]:
    """(status, content type, body) for bytes sent as they are; ``half_close`` ends the upload early."""
    with socket.create_connection(served.address, timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, response.getheader("Content-Type", ""), response.read()


def host(served: Served) -> bytes:
    return f"Host: 127.0.0.1:{served.address[1]}\r\n".encode()


def assert_refused(served: Served, caplog, got: tuple[int, str, bytes], status: int, message: str) -> None:
    """A JSON 4xx error matching ``message``, no traceback logged, and the server still decoding."""
    got_status, content_type, body = got
    assert (got_status, content_type) == (status, "application/json"), body[:300]
    assert 400 <= status < 500 and re.search(message, json.loads(body)["error"]), body[:300]
    assert not [record for record in caplog.records if record.exc_info], "a traceback was logged"
    assert served.thread.is_alive()
    good = request(served, "POST", "/api/decode", json.dumps({"z": [0.1, 0, 0, 0]}).encode(), JSON)
    assert good[0] == 200 and json.loads(good[2])["image"].startswith("data:image/png")


# ---- 1. Host allow-list ---------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["localhost", "localhost:8000", "LocalHost:1", "127.0.0.1", "127.0.0.1:9",
                                   "[::1]", "[::1]:8000"])
def test_local_host_names_are_served(served, value):
    assert request(served, "GET", "/api/info", headers={"Host": value})[0] == 200


@pytest.mark.parametrize("value", ["evil.example.com", "evil.example.com:8000", "127.0.0.1.evil.example",
                                   "localhost.evil.example", "attacker@localhost", "[::2]", "10.0.0.1",
                                   "localhost:port", "::1", ""])
def test_other_host_names_are_misdirected(served, caplog, value):
    got = request(served, "POST", "/api/decode", json.dumps({"z": [0, 0, 0, 0]}).encode(), {**JSON, "Host": value})
    assert_refused(served, caplog, got, 421, "localhost, 127.0.0.1, \\[::1\\]")


@pytest.mark.parametrize("headers", [b"", b"Host: localhost\r\nHost: evil.example.com\r\n"], ids=["missing", "twice"])
def test_missing_or_doubled_host_is_misdirected(served, caplog, headers):
    got = raw(served, b"GET /api/info HTTP/1.1\r\n" + headers + b"Connection: close\r\n\r\n")
    assert_refused(served, caplog, got, 421, "DNS rebinding")


def test_host_names_of_the_bound_address(trained_run):
    assert host_name("[::1]:80") == "::1" and host_name("LOCALHOST") == "localhost"
    assert host_name("a:b:c") is None and host_name("[::1") is None and host_name("") is None
    backend = ExplorerBackend.from_run(trained_run.path, map_points=10)
    local = make_server(backend, "127.0.0.1", 0)
    everywhere = make_server(backend, "0.0.0.0", 0)
    try:
        assert local.accepts_host("127.0.0.1") and not local.accepts_host("192.168.1.5")
        # bound to every interface: any address (rebinding needs a name), but still no foreign name
        assert everywhere.accepts_host("192.168.1.5") and everywhere.accepts_host("0.0.0.0")
        assert not everywhere.accepts_host("evil.example.com")
    finally:
        local.server_close()
        everywhere.server_close()


# ---- 2. malformed requests: 4xx, never 500 --------------------------------------------------------

def z_body(entry: str, rest: str = ", 0, 0, 0") -> bytes:
    return ('{"z": [' + entry + rest + "]}").encode()


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/api/decode", z_body("1" * 401), 400, "integer of 401 digits"),
        ("/api/decode", z_body("-" + "9" * 5000), 400, "integer of 5000 digits"),
        ("/api/decode", b"[" * 30_000, 400, "nested 30000 levels deep"),
        ("/api/decode", b'{"z": ' + b"[" * 30_000 + b"]}", 400, "nested 30001 levels deep"),
        ("/api/decode", z_body("NaN"), 400, "NaN is not a number JSON allows"),
        ("/api/decode", z_body("Infinity"), 400, "Infinity is not a number"),
        ("/api/decode", z_body("-Infinity"), 400, "-Infinity is not a number"),
        ("/api/decode", z_body("1e999"), 400, "1e999 overflows a float"),
        ("/api/decode", z_body("1" * 20), 400, "within ±1000"),
        ("/api/decode", z_body("1e6"), 400, "within ±1000"),
        ("/api/decode", b'{"z": "0, 0, 0, 0"}', 400, "z must be a list of 4 numbers"),
        ("/api/decode", b'{"z": null}', 400, "z must be a list"),
        ("/api/decode", z_body("true"), 400, "z\\[0\\] must be a number, got bool"),
        ("/api/decode", z_body('"1"'), 400, "z\\[0\\] must be a number, got str"),
        ("/api/decode", z_body("[0]"), 400, "z\\[0\\] must be a number, got list"),
        ("/api/decode", z_body("0", ", 0, 0"), 400, "z must have 4 entries, got 3"),
        ("/api/decode", z_body("0", ", 0" * 4999), 400, "z must have 4 entries, got 5000"),
        ("/api/point", b'{"point": [0, 0, 0]}', 400, "point must have 2 entries, got 3"),
        ("/api/point", b'{"point": [0, 1e400]}', 400, "overflows a float"),
        ("/api/decode", b'{"z": [0, 0, 0, 0], "label": "\xc2\xb2"}', 400, "label must be an integer"),
        ("/api/decode", b'{"z": [0, 0, 0, 0], "label": [1]}', 400, "not conditional"),
        ("/api/decode", b'{"z": [0, 0, 0, 0], "lable": 1}', 400, "unexpected field 'lable'"),
        ("/api/decode", b'{"z": "\xff\xfe"}', 400, "not UTF-8"),
        ("/api/decode", '{"z": [0, 0, 0, 0]}'.encode("utf-16"), 400, "not UTF-8"),
        ("/api/decode", '\ufeff{"z": [0, 0, 0, 0]}'.encode(), 400, "malformed JSON"),
        ("/api/decode", b"", 400, "malformed JSON"),
        ("/api/decode", b'"z"', 400, "must be an object"),
    ],
)
def test_malformed_json_is_refused(served, caplog, path, body, status, message):
    assert_refused(served, caplog, request(served, "POST", path, body, JSON), status, message)


def test_json_depth_ignores_brackets_in_strings_and_takes_linear_time():
    assert json_depth('{"z": [[1], "[[[[\\"[["]}') == 3 and json_depth("[" * 100) == 100
    assert json_depth('["a", "[[[') == 1
    started = time.monotonic()
    assert json_depth('"' + '\\"' * 32_000) == 0  # one unclosed string of escaped quotes: 64 KB
    assert time.monotonic() - started < 0.5


@pytest.mark.parametrize(
    ("length", "body", "status", "message"),
    [
        ("100", b'{"z": [0, 0, 0, 0]}', 400, "ended after 19 of the 100 bytes"),
        ("5", b'{"z": [0, 0, 0, 0]}', 400, "malformed JSON"),
        ("9" * 30, b"", 413, "exceeds the 0.0625 MB limit"),
        ("1" * 5000, b"", 413, "exceeds"),
        ("+19", b'{"z": [0, 0, 0, 0]}', 411, "valid Content-Length"),
        ("1_9", b'{"z": [0, 0, 0, 0]}', 411, "valid Content-Length"),
        ("-1", b"{}", 411, "valid Content-Length"),
        ("19\r\nContent-Length: 20", b'{"z": [0, 0, 0, 0]}', 411, "valid Content-Length"),
    ],
    ids=["short", "long", "huge", "5000-digits", "plus", "underscore", "negative", "two-values"],
)
def test_content_length_that_lies_is_refused(served, caplog, length, body, status, message):
    head = f"POST /api/decode HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n"
    got = raw(served, head.encode() + host(served) + b"\r\n" + body, half_close=True)
    assert_refused(served, caplog, got, status, message)


def test_stalled_body_times_out(served, caplog, monkeypatch):
    monkeypatch.setattr(server_module._Handler, "timeout", 0.5)
    head = b"POST /api/decode HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
    started = time.monotonic()
    got = raw(served, head + host(served) + b'\r\n{"z": [')  # and then nothing, connection kept open
    assert time.monotonic() - started < 5
    assert_refused(served, caplog, got, 408, "did not arrive within 0.5 s")


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("PUT", "/api/decode", 405, "method PUT is not allowed"),
        ("DELETE", "/", 405, "method DELETE is not allowed"),
        ("OPTIONS", "/api/info", 405, "method OPTIONS is not allowed"),
        ("BREW", "/", 405, "method BREW is not allowed"),
        ("POST", "/static/app.js", 404, "no such endpoint"),
        ("GET", "/api/../../etc/passwd", 404, "no such endpoint"),
        ("GET", "//[x/api/info", 404, "not found"),
        ("GET", "/api/info/", 404, "no such endpoint"),
    ],
)
def test_unknown_paths_and_methods_are_refused(served, caplog, method, path, status, message):
    got = raw(served, f"{method} {path} HTTP/1.1\r\n".encode() + host(served) + b"Content-Length: 0\r\n\r\n")
    assert_refused(served, caplog, got, status, message)


@pytest.mark.parametrize(
    ("line", "message"),
    [(b"GET / HTTP/2.0", "Invalid HTTP version"), (b"GET / HTTP/x", "Bad request version"),
     (b"GET /" + b"a" * 70_000 + b" HTTP/1.1", "URI Too Long|Request-URI Too Long")],
    ids=["version-2", "bad-version", "long-line"],
)
def test_unreadable_request_lines_get_json_errors(served, caplog, line, message):
    got = raw(served, line + b"\r\n" + host(served) + b"\r\n")
    assert_refused(served, caplog, got, 414 if b"a" * 100 in line else 400, message)


def test_upload_label_must_be_ascii_digits(served, caplog):
    buffer = io.BytesIO()
    Image.new("L", (16, 16), 200).save(buffer, format="PNG")
    got = request(served, "POST", "/api/encode?label=%C2%B2", buffer.getvalue(), {"Content-Type": "image/png"})
    assert_refused(served, caplog, got, 400, "label must be an integer")


# ---- 3. decompression bombs -----------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid all-black 1-bit PNG of ``width`` x ``height``: tens of KB on disk, width*height pixels once decoded."""
    row = bytes(1 + (width + 7) // 8)  # filter byte + packed bits
    compressor = zlib.compressobj(9)
    rows = b"".join(compressor.compress(row * min(1000, height - start)) for start in range(0, height, 1000))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit grey, no interlace
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows + compressor.flush())
            + _chunk(b"IEND", b""))


def ico_around(png: bytes) -> bytes:
    """An ICO whose one entry claims 256x256 but holds ``png``: its true size shows only while decoding."""
    return struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 22) + png


def test_decompression_bomb_is_refused_from_its_header(served, caplog):
    bomb = bomb_png(20_000, 20_000)
    assert len(bomb) < 100_000
    started = time.monotonic()
    got = request(served, "POST", "/api/encode", bomb, {"Content-Type": "image/png"})
    assert time.monotonic() - started < 5  # refused before its 400 M pixels were decoded
    assert_refused(served, caplog, got, 413, "^image is 20000x20000 pixels; at most 4096 per side$")


@pytest.mark.parametrize(("side", "message"),
                         [(12_000, "frame too large to decode"), (5000, "image is 5000x5000 pixels")])
def test_bomb_frames_hidden_behind_a_small_header_are_refused(side, message):
    with warnings.catch_warnings(record=True) as caught, pytest.raises(RequestError, match=message) as refused:
        warnings.simplefilter("always")
        read_image(ico_around(bomb_png(side, side)), (1, 8, 8))
    assert refused.value.status == 413
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


# ---- 4. the page numbers dimensions from 1, like the plots ----------------------------------------

def test_page_numbers_latent_dimensions_from_one(served, tmp_path):
    info = json.loads(request(served, "GET", "/api/info")[2])
    with chromium_page(tmp_path / "profile") as page:
        page.goto(served.server.url)
        page.wait_for_selector("body[data-ready=true]")
        labels = page.locator("#sliders label").all_inner_texts()
    assert [label.split(" ")[0] for label in labels] == [f"z{dim['index'] + 1}" for dim in info["dims"]]
    assert sorted(label.split(" ")[0] for label in labels) == ["z1", "z2", "z3", "z4"]


def test_no_traceback_reaches_the_log_for_a_dropped_client(served, caplog):
    with caplog.at_level(logging.DEBUG, logger="vaelab.views.explore.server"):
        with socket.create_connection(served.address, timeout=10) as sock:
            sock.sendall(b"POST /api/decode HTTP/1.1\r\n" + host(served) + b"Content-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{")
        time.sleep(0.3)
    assert_refused(served, caplog, request(served, "GET", "/api/nope"), 404, "no such endpoint")
