"""The HTTP/1.1 front end: an asyncio protocol around httptools' parser (uvicorn's parser).

Chosen by measurement (bench/serve_stacks.py, docs/benchmarks.md): a bare asyncio protocol
answers a keep-alive round trip faster than uvicorn + ASGI or aiohttp on the same machine and
the same event loop, and the protocol here needs nothing else (no routing framework, no
middleware). The command runs it on uvloop where installed (cli/serve_cmd.py).

Per connection, requests are answered in order (HTTP/1.1 pipelining): each parsed request gets
an entry in ``pending``; an infer request's entry is filled when the model's batch that holds
it has run, and entries are written out as soon as every entry before them is.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httptools

from .errors import ServeError
from .protocol import http_request, http_response

if TYPE_CHECKING:
    from .backend import Backend

__all__ = ["HttpProtocol"]

log = logging.getLogger("rnnstream.serve")

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
           405: "Method Not Allowed", 413: "Payload Too Large", 415: "Unsupported Media Type",
           429: "Too Many Requests",
           500: "Internal Server Error", 503: "Service Unavailable"}
JSON = b"application/json"
# answered without a token (liveness and readiness probes carry none)
OPEN_PATHS = (["v2", "health", "live"], ["v2", "health", "ready"])


def response(status: int, body: bytes, content_type: bytes = JSON, *,
             header_length: int | None = None, close: bool = False) -> bytes:
    head = [b"HTTP/1.1 %d %s" % (status, REASONS.get(status, "Error").encode()),
            b"content-type: " + content_type, b"content-length: %d" % len(body)]
    if status == 401:
        head.append(b'www-authenticate: Bearer realm="rnnstream"')
    if header_length is not None:
        head.append(b"inference-header-content-length: %d" % header_length)
    if close:
        head.append(b"connection: close")
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


class _Entry:
    __slots__ = ("close", "data", "head")

    def __init__(self, data: bytes | None = None, close: bool = False,
                 head: bool = False) -> None:
        self.data, self.close, self.head = data, close, head  # head: answer a HEAD request


class HttpProtocol(asyncio.Protocol):
    """One client connection."""

    def __init__(self, server: Backend) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.pending: collections.deque[_Entry] = collections.deque()
        self._reset()

    def _reset(self) -> None:
        self.url = b""
        self.body: list[bytes] = []
        self.size = 0
        self.header_length: bytes | None = None
        self.encoding: bytes | None = None
        self.too_large = False
        self.expect = False
        self.authorization: bytes | None = None

    # -- asyncio ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._reply_now(400, error_body("protocol upgrades are not supported"), close=True)
        except httptools.HttpParserError as exc:
            self._reply_now(400, error_body(f"malformed HTTP request ({exc})"), close=True)

    # -- httptools callbacks ----------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._reset()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"inference-header-content-length":
            self.header_length = value
        elif name == b"content-encoding":
            self.encoding = value.lower()
        elif name == b"content-length" and value.isdigit():
            self.too_large = int(value) > self.server.max_request_bytes
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect = True
        elif name == b"authorization":
            self.authorization = value

    def on_headers_complete(self) -> None:
        # curl sends "Expect: 100-continue" before bodies over 1 KiB and waits a second for it
        if self.expect and not self.too_large and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > self.server.max_request_bytes:
            self.too_large = True
            self.body = []
        elif not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        keep = self.parser.should_keep_alive()
        method = self.parser.get_method()
        path = self.url.split(b"?", 1)[0].decode("latin-1")
        entry = _Entry(close=not keep, head=method == b"HEAD")
        self.pending.append(entry)
        if self.too_large:
            entry.close = True  # the rest of an oversized body would be read as a new request
            self._fill(entry, 413, error_body(
                f"the request body is over {self.server.max_request_bytes} bytes "
                "(--max-request-bytes); send fewer points or sequences per request"))
            return
        self._route(entry, method, path)

    # -- routing ----------------------------------------------------------------------------------
    def _route(self, entry: _Entry, method: bytes, path: str) -> None:
        server = self.server
        parts = [p for p in path.split("/") if p]
        if parts not in OPEN_PATHS and not server.authorized(self.authorization):
            server.count_error("", "http", ServeError("unauthenticated", "no valid token"))
            self._fill(entry, 401, error_body(
                "this server needs a token: send the header 'Authorization: Bearer <token>' "
                "with one of the tokens of its --token-file"))
            return
        if method == b"POST" and len(parts) >= 4 and parts[:2] == ["v2", "models"] \
                and parts[-1] == "infer":
            self._infer(entry, parts)
            return
        if method not in (b"GET", b"HEAD"):
            self._fill(entry, 405, error_body(f"{method.decode()} {path}: not allowed; infer "
                                              "is POST /v2/models/NAME/infer"))
            return
        try:
            status, body, ctype = server.get(parts)
        except ServeError as exc:
            status, body, ctype = exc.http_status, error_body(str(exc)), JSON
        self._fill(entry, status, body, ctype)

    def _infer(self, entry: _Entry, parts: list[str]) -> None:
        server = self.server
        start = time.perf_counter()
        name = parts[2]
        try:
            if self.encoding not in (None, b"identity"):
                raise ServeError("bad_request", f"Content-Encoding {self.encoding.decode()!r} "
                                 "is not supported; send the body uncompressed")
            version = self._version(parts)
            service = server.model(name, version)
            hl = self.header_length
            if hl is not None and not hl.isdigit():
                raise ServeError("bad_request", f"Inference-Header-Content-Length "
                                 f"{hl.decode('latin-1')!r} is not a number")
            body = b"".join(self.body)
            req, request_id, binary = http_request(body, int(hl) if hl is not None else None)
            server.metrics.requests.inc(service.name, "http")
            points = req.x.shape[0] * req.x.shape[1]
            service.submit_with(req, lambda outputs, error: self._answered(
                entry, outputs, error, service.name, request_id, binary, start, points,
                req.outputs))
        except ServeError as exc:
            server.count_error(name, "http", exc)
            self._fill(entry, exc.http_status, error_body(str(exc)))

    @staticmethod
    def _version(parts: list[str]) -> str:
        if len(parts) == 4:
            return ""
        if len(parts) == 6 and parts[3] == "versions":
            return parts[4]
        raise ServeError("not_found", f"no such path /{'/'.join(parts)}; infer is POST "
                         "/v2/models/NAME[/versions/1]/infer")

    def _answered(self, entry: _Entry, outputs: Any, exc: Exception | None, model: str,
                  request_id: str, binary: bool, start: float, points: int,
                  names: tuple[str, ...]) -> None:
        server = self.server
        if exc is not None:
            error = exc if isinstance(exc, ServeError) else ServeError("internal", str(exc))
            server.count_error(model, "http", error)
            self._fill(entry, error.http_status, error_body(str(error)))
            return
        body, hl = http_response(model, request_id, outputs, binary, names)
        server.metrics.predictions.inc(model, by=points)
        server.metrics.request_seconds.observe(time.perf_counter() - start)
        self._fill(entry, 200, body, b"application/octet-stream" if binary else JSON,
                   header_length=hl)

    # -- writing ----------------------------------------------------------------------------------
    def _fill(self, entry: _Entry, status: int, body: bytes, ctype: bytes = JSON, *,
              header_length: int | None = None) -> None:
        data = response(status, body, ctype, header_length=header_length, close=entry.close)
        entry.data = data[:len(data) - len(body)] if entry.head and body else data
        self._flush()

    def _flush(self) -> None:
        pending = self.pending
        while pending and pending[0].data is not None:
            entry = pending.popleft()
            if self.transport is None or entry.data is None:
                continue
            self.transport.write(entry.data)
            if entry.close:
                self.transport.close()
                self.transport = None

    def _reply_now(self, status: int, body: bytes, close: bool) -> None:
        entry = _Entry(close=close)
        self.pending.append(entry)
        self._fill(entry, status, body)

    @property
    def idle(self) -> bool:
        return not self.pending

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def metadata_body(doc: Any) -> bytes:
    return json.dumps(doc).encode()
