"""The answer of the hottest routes: a wire struct encoded once by msgspec and sent as is.

Litestar turns what a handler returns into a `Response`, then into an `ASGIResponse`, each
building its own header objects: about a fifth of the CPU of a GET account or a POST posting.
A handler that returns a `JsonAnswer` skips both: Litestar hands an `ASGIResponse` to the server
as it is. The body is what Litestar would have sent (msgspec encodes the same structs the same
way); headers are the content type and length plus the route's own (`Ledger-Position`, ...); the
app's middleware still adds `X-Request-ID`.

A route returning one declares its success answer for the OpenAPI document itself
(`documented`), since its return annotation no longer names the wire type.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec
from litestar.openapi.datastructures import ResponseSpec
from litestar.response.base import ASGIResponse
from litestar.types import Receive, Scope, Send

JSON_MEDIA_TYPE: Final = "application/json"
_CONTENT_TYPE: Final = (b"content-type", JSON_MEDIA_TYPE.encode("ascii"))
_encode = msgspec.json.Encoder().encode


class JsonAnswer(ASGIResponse):
    """`content` (a wire struct) as a JSON answer with `status_code` and extra `headers`."""

    __slots__ = ("_raw_headers",)

    def __init__(  # Litestar's constructor is not called: none of its header objects are needed
        self, content: Any, status_code: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        self.body = _encode(content)
        self.status_code = status_code
        raw = [_CONTENT_TYPE, (b"content-length", str(len(self.body)).encode("ascii"))]
        for name, value in (headers or {}).items():
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        self._raw_headers = raw
        self.background = None
        self.is_head_response = False

    def encode_headers(self) -> list[tuple[bytes, bytes]]:
        return self._raw_headers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code,
                    "headers": self._raw_headers})  # fmt: skip
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


def documented(status_code: int, wire_type: Any, description: str) -> dict[int, ResponseSpec]:
    """The OpenAPI entry of a route's success answer sent as a `JsonAnswer`."""
    return {
        status_code: ResponseSpec(
            data_container=wire_type, description=description, generate_examples=False
        )
    }
