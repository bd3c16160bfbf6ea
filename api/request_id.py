"""Request ids: every request gets one, returned as `X-Request-ID` (stamped on every answer by the
middleware of api.metrics) and written into the events of the commands it sends (CommandContext),
so the audit view can tie a change to a request.

A client may send its own `X-Request-ID`; it is kept if it is sane (1-128 characters of letters,
digits and `-_.:`), replaced by a fresh id otherwise. A fresh id is a random per-process prefix
and a counter: unique, and cheaper than a uuid4 per request (os.urandom is a system call).
"""

from __future__ import annotations

import itertools
import re
import secrets
from typing import Any, Final

from litestar.types import Scope

from api.limits import MAX_REQUEST_ID_LENGTH

_SANE_REQUEST_ID: Final = re.compile(rf"[A-Za-z0-9._:\-]{{1,{MAX_REQUEST_ID_LENGTH}}}")
_SCOPE_KEY: Final = "ledger_request_id"
_HEADER: Final = b"x-request-id"
_PREFIX: Final = secrets.token_hex(8)
_COUNTER: Final = itertools.count(1)


def fresh_request_id() -> str:
    """32 hex characters: the process's random prefix and a counter."""
    return f"{_PREFIX}{next(_COUNTER):016x}"


def request_id_of(scope: Scope | dict[str, Any]) -> str:
    """The id of this request: assigned once, from a sane client header or fresh."""
    state: dict[str, Any] = scope.setdefault("state", {})  # type: ignore[arg-type]
    request_id = state.get(_SCOPE_KEY)
    if request_id is None:
        request_id = _from_headers(scope.get("headers", ())) or fresh_request_id()
        state[_SCOPE_KEY] = request_id
    return str(request_id)


def _from_headers(headers: Any) -> str | None:
    for name, value in headers:
        if name == _HEADER:
            text = value.decode("latin-1")
            return text if _SANE_REQUEST_ID.fullmatch(text) else None
    return None


def with_request_id(headers: Any, request_id: bytes) -> list[tuple[bytes, bytes]]:
    """An answer's raw ASGI headers with `X-Request-ID` set to `request_id` (problems set it
    themselves already: it is not repeated)."""
    kept = [header for header in headers if header[0].lower() != _HEADER]
    kept.append((_HEADER, request_id))
    return kept
