"""The explorer's HTTP layer: routes, status codes, JSON errors, body limits, and surviving bad requests."""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest
from PIL import Image

from vaelab.views.explore import ExplorerBackend, ExplorerServer, make_server
from vaelab.views.explore.server import is_loopback


@pytest.fixture(scope="module")
def server(trained_run) -> Iterator[ExplorerServer]:
    server = make_server(ExplorerBackend.from_run(trained_run.path), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def request(server: ExplorerServer, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) of one request on a fresh connection."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def post_json(server: ExplorerServer, path: str, payload) -> tuple[int, dict]:
    status, _, body = request(server, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    return status, json.loads(body)


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 200).save(buffer, format="PNG")
    return buffer.getvalue()


def test_page_and_static_files_are_served(server):
    status, content_type, body = request(server, "GET", "/")
    assert status == 200 and content_type.startswith("text/html") and b'<canvas id="map"' in body
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        status, content_type, body = request(server, "GET", f"/static/{name}")
        assert status == 200 and kind in content_type and body


def test_info_describes_the_model(server):
    status, content_type, body = request(server, "GET", "/api/info")
    info = json.loads(body)
    assert status == 200 and content_type == "application/json"
    assert info["latent_dim"] == 4 and info["input_shape"] == [1, 8, 8] and len(info["dims"]) == 4


def test_decode_and_point(server):
    status, result = post_json(server, "/api/decode", {"z": [0.1, 0.2, 0.3, 0.4], "label": None})
    assert status == 200 and result["image"].startswith("data:image/png;base64,") and len(result["point"]) == 2
    status, result = post_json(server, "/api/point", {"point": [0.5, 0.5]})
    assert status == 200 and len(result["z"]) == 4


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [
        ("GET", "/nope", None, {}, 404, "not found: /nope"),
        ("GET", "/static/../server.py", None, {}, 404, "not found"),
        ("GET", "/api/nope", None, {}, 404, "no such endpoint"),
        ("GET", "/api/decode", None, {}, 405, "answers POST only"),
        ("POST", "/api/nope", b"{}", {"Content-Type": "application/json"}, 404, "no such endpoint"),
        ("POST", "/api/decode", b"{not json", {"Content-Type": "application/json"}, 400, "malformed JSON"),
        ("POST", "/api/decode", b'{"z": [NaN, 0, 0, 0]}', {"Content-Type": "application/json"}, 400, "NaN is not a number"),
        ("POST", "/api/decode", b"[1, 2]", {"Content-Type": "application/json"}, 400, "must be an object"),
        ("POST", "/api/decode", b'{"z": [0, 0]}', {"Content-Type": "application/json"}, 400, "z must have 4 entries, got 2"),
        ("POST", "/api/decode", b'{"z": [0, 0, 0, 0]}', {"Content-Type": "text/plain"}, 415, "application/json"),
        ("POST", "/api/decode", b"\xff\xfe", {"Content-Type": "application/json"}, 400, "malformed JSON"),
        ("POST", "/api/point", b'{"point": [1]}', {"Content-Type": "application/json"}, 400, "point must have 2 entries"),
        ("POST", "/api/decode", b"x" * 70_000, {"Content-Type": "application/json"}, 413, "exceeds"),
        ("POST", "/api/encode", b"just some text", {"Content-Type": "application/octet-stream"}, 400, "not an image"),
        ("POST", "/api/encode", png(16, 16), {"Content-Type": "text/plain"}, 415, "image/\\*"),
        ("POST", "/api/encode", png(5000, 4), {"Content-Type": "image/png"}, 413, "at most 4096 per side"),
        ("POST", "/api/encode", b"\0" * (6 * 2**20), {"Content-Type": "image/png"}, 413, "exceeds the 5 MB limit"),
        ("POST", "/api/encode?label=3", png(16, 16), {"Content-Type": "image/png"}, 400, "not conditional"),
    ],
)
def test_bad_requests_get_a_json_error_and_the_server_keeps_answering(server, method, path, body, headers, status, message):
    got_status, content_type, got_body = request(server, method, path, body, headers)
    assert (got_status, content_type) == (status, "application/json")
    assert re.search(message, error_of(got_body))
    assert request(server, "GET", "/api/info")[0] == 200


def test_missing_content_length_is_411(server):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=10)
    connection.putrequest("POST", "/api/decode")
    connection.putheader("Content-Type", "application/json")
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 411 and "Content-Length" in error_of(response.read())
    connection.close()


def test_upload_is_encoded(server):
    status, _, body = request(server, "POST", "/api/encode?invert=1", png(24, 24), {"Content-Type": "image/png"})
    result = json.loads(body)
    assert status == 200 and len(result["z"]) == 4
    assert "resized from 24x24 to 8x8" in result["note"] and "inverted" in result["note"]


def test_concurrent_decodes_all_succeed(server):
    statuses: list[int] = []

    def decode(i: int) -> None:
        statuses.append(post_json(server, "/api/decode", {"z": [i / 10, 0, 0, 0]})[0])

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 12


def test_binding_beyond_loopback_warns(trained_run, caplog):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    backend = ExplorerBackend.from_run(trained_run.path, map_points=10)
    with caplog.at_level(logging.WARNING, logger="vaelab.views.explore.server"):
        make_server(backend, "127.0.0.1", 0).server_close()
        assert not caplog.records
        make_server(backend, "0.0.0.0", 0).server_close()
    assert "no authentication" in caplog.records[0].getMessage()
