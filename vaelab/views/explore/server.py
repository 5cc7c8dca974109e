"""The explorer's HTTP layer: one static page and a small JSON API over :class:`ExplorerBackend`.

Python's own ``http.server.ThreadingHTTPServer``: the explorer is a local, single-user tool, so a
framework would add a dependency and nothing the page needs. Routes:

- ``GET /`` and ``GET /static/<file>``: the page (package data in ``vaelab/views/explore/static/``);
- ``GET /api/info``: latent dimensions, map points, labels, upload limits;
- ``POST /api/decode`` ``{"z": [...], "label": int|null}`` -> ``{"image", "point"}``;
- ``POST /api/point`` ``{"point": [x, y], "label": ...}`` -> ``{"z", "image", "point"}``;
- ``POST /api/encode?label=L&invert=1`` with the image bytes as body -> ``{"z", "point", "input", "reconstruction", "note"}``.

It is meant to be safe to leave running, so every request is distrusted:

- the ``Host`` header must name this machine (``localhost``, ``127.0.0.1``, ``[::1]``) or the address
  the server was bound to, else 421: a DNS-rebinding page (``evil.example`` re-pointed at 127.0.0.1)
  reaches the socket, but always with its own name in ``Host``;
- bodies are bounded before they are read, a stalled one times out (408), a short one is refused;
- JSON is checked before ``json.loads`` can recurse without bound (nesting depth) or convert huge
  integers, and every number that leaves the parser is a finite float or an integer of at most 20 digits;
- every refusal, including http.server's own (bad request line, unknown method), is
  ``{"error": "..."}`` with a 4xx status. What still slips through as a ``ValueError``-like
  exception is answered 400 and logged in one line; only a genuine server fault is a 500.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import mimetypes
import re
import sys
import threading
import webbrowser
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from vaelab.errors import VaelabError
from vaelab.views.explore.backend import ExplorerBackend
from vaelab.views.explore.errors import RequestError
from vaelab.views.explore.uploads import MAX_UPLOAD_BYTES

log = logging.getLogger(__name__)

MAX_JSON_BYTES = 64 * 1024  # a z of thousands of dimensions still fits
MAX_JSON_DEPTH = 8  # {"z": [...]} is 2 deep; json.loads recurses once per level, so deeper is refused unparsed
MAX_INT_DIGITS = 20  # longer JSON integers are refused unconverted: no z is that large, int() of them is slow
DRAIN_BYTES = 4 * MAX_UPLOAD_BYTES  # an oversized body up to this is read and dropped, so the client sees the 413
REQUEST_TIMEOUT = 30.0  # seconds a connection may sit idle mid-request before it is dropped
STATIC_FILES = ("index.html", "app.js", "style.css")
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
_POSTS = ("/api/decode", "/api/point", "/api/encode")
_FIELDS = {"/api/decode": ("z", "label"), "/api/point": ("point", "label")}
_HOST_HEADER = re.compile(r"(\[[0-9a-fA-F:.]+\]|[^\[\]:/@\s]+)(?::[0-9]{1,5})?")
# A JSON string, its closing quote optional so that an unclosed one is consumed in one pass (a
# failed match retried from every later quote would take quadratic time), or a bracket.
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|[\[\]{}]', re.DOTALL)
_LABEL = re.compile(r"-?[0-9]{1,9}")


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


def host_name(header: str) -> str | None:
    """The host named by a ``Host`` header (``name[:port]``, ``[v6][:port]``), lower-case; None if malformed."""
    match = _HOST_HEADER.fullmatch(header.strip())
    return match.group(1).strip("[]").lower() if match else None


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def json_depth(text: str) -> int:
    """How deep brackets nest in ``text`` (brackets inside JSON strings do not count), without parsing it."""
    depth = deepest = 0
    for token in _JSON_TOKEN.findall(text):
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
    return deepest


def _parse_int(digits: str) -> int:
    if len(digits.lstrip("-")) > MAX_INT_DIGITS:
        raise RequestError(f"a JSON integer of {len(digits.lstrip('-'))} digits is out of range")
    return int(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise RequestError(f"the JSON number {text[:30]}{'...' if len(text) > 30 else ''} overflows a float")
    return value


def _reject_constant(name: str) -> float:
    raise RequestError(f"malformed JSON: {name} is not a number JSON allows")


def parse_json(body: bytes) -> dict[str, Any]:
    """``body`` as a JSON object, refused (400) unless UTF-8, at most ``MAX_JSON_DEPTH`` deep and all numbers finite.

    ``json.loads`` alone would raise RecursionError on 30,000 nested ``[``, ValueError on an integer of
    over 4,300 digits, and return ``inf`` for ``1e999``; the hooks see each number as text first.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(f"malformed JSON: the body is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise RequestError(f"malformed JSON: nested {depth} levels deep; at most {MAX_JSON_DEPTH}")
    try:
        payload = json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise RequestError(f"malformed JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError("the JSON body must be an object")
    return payload


def request_label(value: Any) -> Any:
    """A label from JSON or the query string, with a numeric string made an int (the backend checks the range).

    Only ASCII digits count: ``str.isdigit`` also accepts "²", which ``int`` then refuses.
    """
    if not isinstance(value, str):
        return value
    if not _LABEL.fullmatch(value.strip()):
        raise RequestError(f"label must be an integer, got {value[:30]!r}")
    return int(value)


def _fields(payload: dict[str, Any], path: str) -> dict[str, Any]:
    """``payload`` with no field ``path`` does not take: a typo such as "lable" must not be silently ignored."""
    unknown = sorted(set(payload) - set(_FIELDS[path]))
    if unknown:
        raise RequestError(f"unexpected field {unknown[0][:30]!r}; {path} takes {', '.join(_FIELDS[path])}")
    return payload


class ExplorerServer(ThreadingHTTPServer):
    """A threading HTTP server holding the backend its handlers answer from."""

    daemon_threads = True  # a slow browser tab never keeps the process alive

    def __init__(self, address: tuple[str, int], backend: ExplorerBackend) -> None:
        self.backend = backend
        super().__init__(address, _Handler)
        names = {address[0], self.server_address[0]}  # as given (maybe a name) and as bound (an address)
        self.hosts = LOCAL_HOSTS | {name.lower() for name in names}

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def accepts_host(self, name: str) -> bool:
        """Whether a request whose ``Host`` names ``name`` is for this server (see the module docstring).

        Bound to every interface (0.0.0.0), the server is reached by whatever address the machine has,
        so any IP address is accepted: DNS rebinding needs a name, never an address.
        """
        if name in self.hosts:
            return True
        return ipaddress.ip_address(self.server_address[0]).is_unspecified and _is_ip_address(name)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line, not socketserver's traceback on stderr, for a connection the client dropped or stalled."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError)):
            log.debug("explorer connection from %s dropped: %s", client_address[0], exc)
        else:
            log.exception("explorer connection from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server: ExplorerServer
    server_version = "vaelab-explore"
    timeout = REQUEST_TIMEOUT
    # The version assumed until the request line names one: HTTP/1.0, not http.server's HTTP/0.9, whose
    # answers have no status line, so that a refused request line still gets a readable 400.
    default_request_version = "HTTP/1.0"
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

    def _refuse(self, status: int, message: str) -> None:
        self._drain()
        self._json(status, {"error": message})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (request line, headers, method) as JSON 4xx like every other.

        Its 501 for a method without a ``do_`` handler means "not allowed here" (405); its 505 for an
        HTTP version it does not speak is a request it cannot read (400).
        """
        if code == HTTPStatus.NOT_IMPLEMENTED:
            code = HTTPStatus.METHOD_NOT_ALLOWED
            message = f"method {self.command} is not allowed; use GET, HEAD or POST"
        elif code >= 500:
            code = HTTPStatus.BAD_REQUEST
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        self._json(code, {"error": message or HTTPStatus(code).phrase})

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            self._check_host()
            action()
        except RequestError as exc:
            self._refuse(exc.status, str(exc))
        except (ValueError, TypeError, OverflowError, RecursionError) as exc:  # input no check foresaw
            log.warning("explorer request %s %s refused: %s: %s",
                        self.command, self.path[:100], type(exc).__name__, exc)
            self._refuse(HTTPStatus.BAD_REQUEST, f"cannot process this request ({type(exc).__name__})")
        except (ConnectionError, TimeoutError):
            raise  # the client left or stopped reading: nobody to answer (ExplorerServer.handle_error logs it)
        except Exception:
            log.exception("explorer request %s %s failed", self.command, self.path[:100])
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error (see the server log)"})

    def _check_host(self) -> None:
        values = self.headers.get_all("Host") or []
        name = host_name(values[0]) if len(values) == 1 else None
        if name is None or not self.server.accepts_host(name):
            raise RequestError("this server answers requests for localhost, 127.0.0.1, [::1] or "
                               f"{self.server.server_address[0]} only (a guard against DNS rebinding)",
                               HTTPStatus.MISDIRECTED_REQUEST)

    def _content_length(self) -> int | None:
        """The declared body length, or None when missing or malformed.

        Only one run of ASCII digits counts (``int`` would take "+5", " 5", "5_0" and "٥"); past 18
        digits the value exceeds every limit and is capped rather than converted.
        """
        values = {value.strip() for value in self.headers.get_all("Content-Length") or []}
        if len(values) != 1:
            return None
        value = values.pop()
        if not (value.isascii() and value.isdigit()):
            return None
        return int(value) if len(value) <= 18 else 10**18

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
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(f"the request body did not arrive within {self.timeout:g} s",
                               HTTPStatus.REQUEST_TIMEOUT) from None
        if len(body) < length:
            raise RequestError(f"the body ended after {len(body)} of the {length} bytes its Content-Length announced")
        return body

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

    def _json_body(self, path: str) -> dict[str, Any]:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = self._body(MAX_JSON_BYTES)
        if content_type != "application/json":
            raise RequestError(f"expected Content-Type application/json, got {content_type[:50] or 'none'!r}",
                               HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
        return _fields(parse_json(body), path)

    def _target(self) -> tuple[str, dict[str, list[str]]]:
        """The request's path and query; split by hand, as ``urlsplit`` raises on a target like ``//[x``."""
        path, _, query = self.path.partition("#")[0].partition("?")
        return path, parse_qs(query)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._guard(self._get)

    def do_POST(self) -> None:
        self._guard(self._post)

    def _get(self) -> None:
        path = self._target()[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _static("index.html"), "text/html; charset=utf-8")
        elif path.startswith("/static/") and path[len("/static/"):] in STATIC_FILES:
            name = path[len("/static/"):]
            content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
            self._send(HTTPStatus.OK, _static(name), f"{content_type}; charset=utf-8")
        elif path == "/api/info":
            self._json(HTTPStatus.OK, self.server.backend.info())
        elif path.startswith("/api/"):
            raise RequestError(f"{path} answers POST only" if path in _POSTS else f"no such endpoint: {path[:100]}",
                               HTTPStatus.METHOD_NOT_ALLOWED if path in _POSTS else HTTPStatus.NOT_FOUND)
        else:
            raise RequestError(f"not found: {path[:100]}", HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        path, query = self._target()
        backend = self.server.backend
        if path == "/api/decode":
            payload = self._json_body(path)
            self._json(HTTPStatus.OK, backend.decode(payload.get("z"), request_label(payload.get("label"))))
        elif path == "/api/point":
            payload = self._json_body(path)
            self._json(HTTPStatus.OK, backend.decode_point(payload.get("point"), request_label(payload.get("label"))))
        elif path == "/api/encode":
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
            data = self._body(MAX_UPLOAD_BYTES)
            if content_type != "application/octet-stream" and not content_type.startswith("image/"):
                raise RequestError(f"expected the image bytes (image/* or application/octet-stream), got "
                                   f"{content_type[:50] or 'no Content-Type'}", HTTPStatus.UNSUPPORTED_MEDIA_TYPE)
            label = request_label(query.get("label", [None])[0])
            invert = query.get("invert", ["0"])[0] in ("1", "true")
            self._json(HTTPStatus.OK, backend.encode(data, label, invert=invert))
        else:
            raise RequestError(f"no such endpoint: POST {path[:100]}", HTTPStatus.NOT_FOUND)


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
