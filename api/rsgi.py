"""The ASGI app served over granian's RSGI interface: `ledger serve --server granian` (the
default) runs the same app as uvicorn does, through this adapter.

Why: granian's own ASGI interface answers every `receive()` and every `send()` with a future
that its Rust side completes and the event loop then wakes on, and builds the scope's header list
in Rust under the GIL. RSGI, granian's native interface, reads a body with one await and writes a
whole response with one call that returns at once. Measured on this machine with a
trivial app under wrk (POST of a posting's body, 64 connections): granian's CPU per request fell
from 34-42 us (ASGI) to 23-29 us (RSGI). In `ledger serve` the event loop thread holds the GIL
that the ledger's writer also needs, so what it saves there the writer gets (see the note of
`benchmarks/http_benchmark.py`).

The adapter keeps ASGI's meaning, so the app cannot tell which interface served it:
- the scope is what ASGI 3 (HTTP spec 2.3) says: `path` percent-decoded (as RSGI gives it),
  `raw_path` re-quoted from it, `query_string` and the headers as bytes, lowercase names in the
  order received, repeated headers repeated; `client` and `server` as (host, port);
- `receive()` gives the body as one `http.request` message where the request announced a
  `Content-Length` (the app has checked it against its limit before it reads: granian reads no
  more than announced), and chunk by chunk as they arrive otherwise (a chunked body is never
  read whole before the app's limit sees it); after the body, it waits for the client to go
  and says `http.disconnect`;
- `send()` writes a response whose first body message is its last with one call, and streams
  any other (`more_body`);
- an app that fails before it starts its response gets a 500 problem, logged, with no detail of
  the failure for the client; one that fails mid-stream ends the stream (the client sees a
  truncated chunked body, as it would from granian's ASGI);
- the lifespan is the app's own (`Litestar.lifespan`), entered by `api.serve` around the server.

Websockets are not part of the API: a websocket upgrade is refused.
"""

from __future__ import annotations

import logging
from typing import Any, Final
from urllib.parse import quote

import msgspec
from granian._granian import RSGIProtocolClosed as ProtocolClosed
from litestar.types import ASGIApp

from api.problems import (
    INTERNAL_ERROR,
    PROBLEM_MEDIA_TYPE,
    PROBLEM_TYPE_BASE,
    status_of,
    title_of,
)
from api.request_id import request_id_of
from ledger_core.errors import MalformedRequest

logger = logging.getLogger(__name__)

#: The ASGI version and HTTP spec version the scope follows.
ASGI_VERSIONS: Final = {"version": "3.0", "spec_version": "2.3"}
#: What RSGI calls an HTTP version, as ASGI spells it.
HTTP_VERSIONS: Final = {"1": "1.0", "1.0": "1.0", "1.1": "1.1", "2": "2", "2.0": "2", "3": "3"}
#: The characters left as they are when `raw_path` is rebuilt from the decoded path: RFC 3986's
#: `pchar` set and the separator.
PATH_SAFE: Final = "/:@!$&'()*+,;=-._~"
#: The 500 problem answered for an app that failed before it started its response (as the
#: app's own exception handlers answer a bug: no detail of the failure).
FAILED_BODY: Final = msgspec.json.encode(
    {
        "type": PROBLEM_TYPE_BASE + INTERNAL_ERROR,
        "title": title_of(INTERNAL_ERROR),
        "status": 500,
        "detail": "the server failed to answer this request; it is logged",
        "code": INTERNAL_ERROR,
    }
)
FAILED_HEADERS: Final = [("content-type", PROBLEM_MEDIA_TYPE)]

#: The code of a request whose headers cannot be read as text.
MALFORMED_REQUEST: Final = MalformedRequest.code

_DISCONNECT: Final = {"type": "http.disconnect"}


def _address(text: str | None) -> tuple[str, int] | None:
    """RSGI's "host:port" (IPv6 in brackets) as ASGI's (host, port); None if there is none."""
    if not text:
        return None
    host, _, port = text.rpartition(":")
    if not host:
        return None
    try:
        number = int(port)
    except ValueError:
        return None
    return host.strip("[]"), number


def asgi_scope(scope: Any, headers: list[tuple[str, str]], state: dict[str, Any]) -> dict[str, Any]:
    """The ASGI HTTP scope of RSGI's `scope` and its `headers` (`scope.headers.items()`), with a
    shallow copy of the lifespan `state`."""
    path: str = scope.path
    return {
        "type": "http",
        "asgi": ASGI_VERSIONS,
        "http_version": HTTP_VERSIONS.get(scope.http_version, scope.http_version),
        "method": scope.method,
        "scheme": scope.scheme,
        "path": path,
        "raw_path": quote(path, safe=PATH_SAFE).encode("ascii"),
        "query_string": scope.query_string.encode("latin-1"),
        "root_path": "",
        "headers": [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers],
        "client": _address(scope.client),
        "server": _address(scope.server),
        "state": dict(state),
    }


class _Exchange:
    """One request's `receive` and `send`, over RSGI's `protocol`."""

    __slots__ = ("body_done", "chunks", "done", "headers", "protocol", "status", "stream", "whole")

    def __init__(self, protocol: Any, whole: bool) -> None:
        self.protocol = protocol
        #: Whether the body is read with one await (its length was announced).
        self.whole = whole
        self.chunks: Any = None
        self.body_done = False
        self.status = 0
        self.headers: list[tuple[str, str]] | None = None
        #: RSGI's stream transport, once a streamed response started.
        self.stream: Any = None
        #: Whether the response is complete.
        self.done = False

    async def receive(self) -> dict[str, Any]:
        if self.body_done:
            await self.protocol.client_disconnect()
            return _DISCONNECT
        if self.whole:
            self.body_done = True
            return {"type": "http.request", "body": await self.protocol(), "more_body": False}
        if self.chunks is None:
            self.chunks = self.protocol.__aiter__()
        try:
            chunk = await self.chunks.__anext__()
        except StopAsyncIteration:
            self.body_done = True
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.request", "body": bytes(chunk), "more_body": True}

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            if self.headers is not None:
                raise RuntimeError("the response has already started")
            self.status = message["status"]
            self.headers = [
                (name.decode("latin-1"), value.decode("latin-1"))
                for name, value in message.get("headers", ())
            ]
            return
        if kind != "http.response.body":
            raise RuntimeError(f"unexpected ASGI message {kind!r}")
        if self.headers is None:
            raise RuntimeError("a response body was sent before the response started")
        if self.done:
            raise RuntimeError("the response is already complete")
        body = message.get("body", b"")
        more = message.get("more_body", False)
        if self.stream is None and not more:
            self.done = True
            self.protocol.response_bytes(self.status, self.headers, bytes(body))
            return
        if self.stream is None:
            self.stream = self.protocol.response_stream(self.status, self.headers)
        if body:
            await self.stream.send_bytes(bytes(body))
        if not more:
            self.done = True


class RSGIApp:
    """granian's RSGI callable serving the ASGI `app`; `state` is the lifespan's state, copied
    into each request's scope."""

    def __init__(self, app: ASGIApp, state: dict[str, Any] | None = None) -> None:
        self.app: Any = app
        self.state: dict[str, Any] = {} if state is None else state

    def __rsgi_init__(self, loop: Any) -> None:
        """granian calls it as it starts; the lifespan is entered around the server instead."""

    def __rsgi_del__(self, loop: Any) -> None:
        """granian calls it as it stops; the lifespan is left around the server instead."""

    async def __call__(self, scope: Any, protocol: Any) -> None:
        if scope.proto != "http":
            protocol.close(403)  # a websocket: not part of this API
            return
        headers = scope.headers
        items = headers.items()
        names = headers.keys()
        if len(names) != len({name for name, _ in items}):
            _refuse_unreadable(scope, items, names, protocol)
            return
        exchange = _Exchange(protocol, "content-length" in headers)
        request = asgi_scope(scope, items, self.state)
        try:
            await self.app(request, exchange.receive, exchange.send)
        except ProtocolClosed:  # the client went away: nobody to answer
            logger.debug("client gone during %s %s", scope.method, scope.path)
            return
        except Exception:
            logger.exception("the app failed on %s %s", scope.method, scope.path)
            _fail(exchange, request)
            return
        # A stream the app left open ends here, as it does on granian's ASGI.
        if not exchange.done and exchange.stream is None:
            logger.error("the app returned without answering %s %s", scope.method, scope.path)
            _fail(exchange, request)


def _refuse_unreadable(
    scope: Any, items: list[tuple[str, str]], names: list[str], protocol: Any
) -> None:
    """400 `malformed-request` for a request with a header value granian cannot give as text
    (bytes outside visible ASCII, which RFC 9110 keeps for legacy fields only): RSGI leaves such a
    header out, and answering without it would be answering another request (a key taken as
    missing, a user agent dropped from the audit trail)."""
    readable = {name for name, _ in items}
    unreadable = ", ".join(name for name in names if name not in readable)
    body = msgspec.json.encode(
        {
            "type": PROBLEM_TYPE_BASE + MALFORMED_REQUEST,
            "title": title_of(MALFORMED_REQUEST),
            "status": status_of(MALFORMED_REQUEST),
            "detail": f"header {unreadable}: a value must be visible ASCII text; nothing was "
            "recorded",
            "code": MALFORMED_REQUEST,
        }
    )
    request_id = request_id_of(
        {"headers": [(n.encode("latin-1"), v.encode("latin-1")) for n, v in items]}
    )
    headers = [*FAILED_HEADERS, ("x-request-id", request_id)]
    protocol.response_bytes(status_of(MALFORMED_REQUEST), headers, body)


def _fail(exchange: _Exchange, request: dict[str, Any]) -> None:
    """A 500 problem with the request's id, where the response has not started to go out."""
    if exchange.stream is None and not exchange.done:
        exchange.done = True
        headers = [*FAILED_HEADERS, ("x-request-id", request_id_of(request))]
        exchange.protocol.response_bytes(500, headers, FAILED_BODY)
