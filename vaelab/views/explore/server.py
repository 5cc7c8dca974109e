"""The explorer's HTTP layer: one static page and a small JSON API over :class:`ExplorerBackend`.

Python's own ``http.server.ThreadingHTTPServer``: the explorer is a local, single-user tool, so a
framework would add a dependency and nothing the page needs. Routes:

- ``GET /`` and ``GET /static/<file>``: the page (package data in ``vaelab/explore/static/``);
- ``GET /api/info``: latent dimensions, map points, labels, upload limits;
- ``POST /api/decode`` ``{"z": [...], "label": int|null}`` -> ``{"image", "point"}``;
- ``POST /api/point`` ``{"point": [x, y], "label": ...}`` -> ``{"z", "image", "point"}``;
- ``POST /api/encode?label=L&invert=1`` with the image bytes as body -> ``{"z", "point", "input", "reconstruction", "note"}``.

Every refusal is ``{"error": "..."}`` with a 4xx status; an unexpected failure is logged and
answered with 500. Bodies are bounded before they are read, so no request can exhaust memory.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import mimetypes
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from vaelab.errors import VaelabError
from vaelab.views.explore.backend import ExplorerBackend
from vaelab.views.explore.errors import RequestError
from vaelab.views.explore.uploads import MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024  # a z of thousands of dimensions still fits
DRAIN_BYTES = 4 * MAX_UPLOAD_BYTES  # an oversized body up to this is read and dropped, so the client sees the 413
STATIC_FILES = ("index.html", "app.js", "style.css")
_POSTS = ("/api/decode", "/api/point", "/api/encode")


def _static(name: str) -> bytes:
    return resources.files("vaelab.views.explore").joinpath("static", name).read_bytes()


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the backend its handlers answer from."""

    daemon_threads = True  # a slow browser tab never keeps the process alive

    def __init__(self, address: tuple[str, int], backend: ExplorerBackend) -> None:
        self.backend = backend
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = "vaelab-explore"
    _consumed = False  # whether the request body was read (HTTP/1.0: one request per handler)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except RequestError as exc:
            self._drain()
            self._json(exc.status, {"error": str(exc)})
        except Exception:
            log.exception("explorer request %s %s failed", self.command, self.path)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server log)"})

    def _content_length(self) -> int | None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        return length if length >= 0 else None

    def _body(self, limit: int) -> bytes:
        """The request body, refused with 411/413 when its length is missing, bad or above ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise RequestError("chunked bodies are not accepted; send Content-Length", HTTPStatus.LENGTH_REQUIRED)
        length = self._content_length()
        if length is None:
            self.close_connection = True
            raise RequestError("a valid Content-Length is required", HTTPStatus.LENGTH_REQUIRED)
        if length > limit:
            raise RequestError(f"request body of {length / 2**20:.1f} MB exceeds the {limit / 2**20:g} MB limit",
                               HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
        self._consumed = True
        return self.rfile.read(length)

    def _drain(self) -> None:
        """Read and drop an unread body (up to ``DRAIN_BYTES``) so that the client gets to read the error.

        Closing a socket with unread input makes the kernel reset the connection, and the client may
        then lose the response; a larger body is not worth reading, the connection is just closed.
        """
        self.close_connection = True
        remaining = self._content_length() or 0
        if self._consumed or remaining > DRAIN_BYTES:
            return
        while remaining > 0:
            chunk = self.rfile.read(min(65536, remaining))
            if not chunk:
                break
            remaining -= len(chunk)

    def _json_body(self) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._body(MAX_JSON_BYTES)
        if content_type != "application/json":
            raise RequestError(f"expected Content-Type application/json, got {content_type or 'none'!r}",
                               HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        try:
            payload = json.loads(body, parse_constant=_reject_constant)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(f"malformed JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise RequestError("the JSON body must be an object")
        return payload

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _static("index.html"), "text/html; charset=utf-8")
        elif path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            name = path[len("/static/"):]
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, _static(name), f"{content_type}; charset=utf-8")
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.server.backend.info())
        elif path.startswith("/api/"):
            raise RequestError(f"{path} answers POST only" if path in _POSTS else f"no such endpoint: {path}",
                               HTTPStatus.METHOD_NOT_ALLOWED if path in _POSTS else HTTPStatus.NOT_FOUND)
        else:
            raise RequestError(f"not found: {path}", HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        url = urlsplit(self.path)
        backend = self.server.backend
        if url.path == "/api/decode":
            payload = self._json_body()
            self._json(HTTPStatus.OK, backend.decode(payload.get("z"), payload.get("label")))
        elif url.path == "/api/point":
            payload = self._json_body()
            self._json(HTTPStatus.OK, backend.decode_point(payload.get("point"), payload.get("label")))
        elif url.path == "/api/encode":
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            data = self._body(MAX_UPLOAD_BYTES)
            if content_type != "application/octet-stream" and not content_type.startswith("image/"):
                raise RequestError(f"expected the image bytes (image/* or application/octet-stream), got "
                                   f"{content_type or 'no Content-Type'}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            query = parse_qs(url.query)
            label = query.get("label", [None])[0]
            invert = query.get("invert", ["0"])[0] in ("1", "true")
            self._json(HTTPStatus.OK, backend.encode(data, label, invert=invert))
        else:
            raise RequestError(f"no such endpoint: POST {url.path}", HTTPStatus.NOT_FOUND)


def _reject_constant(name: str) -> float:
    raise RequestError(f"malformed JSON: {name} is not a number JSON allows")


def make_server(backend: ExplorerBackend, host: str = "127.0.0.1", port: int = 0) -> ExplorerServer:
    """Bind an :class:`ExplorerServer` (``port=0``: any free port, read it from ``server.url``); not yet serving."""
    if not is_loopback(host):
        log.warning("explorer bound to %s: anyone who can reach this address can use it "
                    "(it has no authentication); the default 127.0.0.1 keeps it on this machine", host)
    try:
        return ExplorerServer((host, port), backend)
    except OSError as exc:
        raise VaelabError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    open_browser: bool = True,
    ready: Callable[[ExplorerServer], None] | None = None,
) -> None:
    """Serve the explorer of ``run_dir`` until Ctrl-C; ``ready(server)`` is called once it listens."""
    from vaelab.data.pipeline import resolve_device

    backend = ExplorerBackend.from_run(run_dir, device=resolve_device(device))
    server = make_server(backend, host, port)
    log.info("vaelab explorer at %s (Ctrl-C stops it)", server.url)
    if ready is not None:
        ready(server)
    if open_browser:
        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("explorer stopped")
    finally:
        server.server_close()
