"""RFC 9457 problem details: every refusal's code mapped to its HTTP status in ONE table.

The domain raises `LedgerError`s with stable codes (ledger_core.errors); this module is the only
place that knows which status each code answers (API.md's error table, plus the core's extra
codes). Litestar's own HTTP exceptions (unknown route, wrong method, body too large) are answered
in the same shape, and any other exception is a bug: it is logged with its traceback and the
client gets a generic 500 problem with no internals.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Final
from uuid import UUID

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap

from api.request_id import request_id_of
from ledger_core import errors
from ledger_core.crypto import EncryptionKeyMissing
from projections.db import is_transient

logger = logging.getLogger("api")

PROBLEM_MEDIA_TYPE: Final = "application/problem+json"
PROBLEM_TYPE_BASE: Final = "https://ledger-core.dev/errors/"

#: Codes the HTTP layer itself answers (not refusals of the ledger).
UNAUTHENTICATED: Final = "unauthenticated"
FORBIDDEN: Final = "forbidden"
NOT_FOUND: Final = "not-found"
METHOD_NOT_ALLOWED: Final = "method-not-allowed"
REQUEST_TOO_LARGE: Final = "request-too-large"
INTERNAL_ERROR: Final = "internal-error"

#: The one table: code -> HTTP status (API.md "Errors").
STATUS_BY_CODE: Final[Mapping[str, int]] = {
    "malformed-request": 400,
    "idempotency-key-missing": 400,
    UNAUTHENTICATED: 401,
    FORBIDDEN: 403,
    "space-not-found": 404,
    "account-not-found": 404,
    "posting-not-found": 404,
    "token-not-found": 404,
    NOT_FOUND: 404,
    METHOD_NOT_ALLOWED: 405,
    "idempotency-key-reused": 409,
    "idempotency-key-in-flight": 409,
    "account-code-taken": 409,
    "posting-not-pending": 409,
    "posting-not-posted": 409,
    "posting-already-reversed": 409,
    "account-not-empty": 409,
    "asset-exists": 409,
    REQUEST_TOO_LARGE: 413,
    "invalid-request": 422,
    "invalid-amount": 422,
    "unknown-currency": 422,
    "unbalanced-posting": 422,
    "currency-mismatch": 422,
    "too-few-entries": 422,
    "too-many-entries": 422,
    "insufficient-funds": 422,
    "account-frozen": 422,
    "account-closed": 422,
    "exceeds-pending-amount": 422,
    "pending-expired": 422,
    "batch-too-large": 422,
    "batch-item-failed": 422,
    "limit-below-available": 422,
    INTERNAL_ERROR: 500,
    "unavailable": 503,
    "position-not-reached": 503,
}

#: Litestar's own HTTP exceptions by status -> our code.
_CODE_BY_HTTP_STATUS: Final[Mapping[int, str]] = {
    400: "malformed-request",
    401: UNAUTHENTICATED,
    403: FORBIDDEN,
    404: NOT_FOUND,
    405: METHOD_NOT_ALLOWED,
    413: REQUEST_TOO_LARGE,
    503: "unavailable",
}

#: Seconds a client should wait before retrying a 503.
RETRY_AFTER_SECONDS: Final = 1
#: The challenge of every 401 (RFC 9110 15.5.2: a 401 carries WWW-Authenticate): a bearer token.
AUTHENTICATE_CHALLENGE: Final = 'Bearer realm="ledger"'


class Unauthenticated(errors.LedgerError):
    """No valid bearer token was sent."""

    code = UNAUTHENTICATED
    stored = False


class Forbidden(errors.LedgerError):
    """The token's role does not allow this request."""

    code = FORBIDDEN
    stored = False


def status_of(code: str) -> int:
    """The HTTP status of a code; an unknown code is a bug in this table, answered as 500."""
    return STATUS_BY_CODE.get(code, 500)


def title_of(code: str) -> str:
    return code.replace("-", " ").capitalize()


def problem_response(
    request: Request[Any, Any, Any] | None,
    code: str,
    detail: str,
    *,
    extra: Mapping[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[bytes]:
    status = status_of(code)
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + code,
        "title": title_of(code),
        "status": status,
        "detail": detail,
        "code": code,
    }
    for name, value in (extra or {}).items():
        body.setdefault(name, value)
    all_headers = dict(headers or {})
    if status == 503:
        all_headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    elif status == 401:
        all_headers["WWW-Authenticate"] = AUTHENTICATE_CHALLENGE
    if request is not None:
        all_headers["X-Request-ID"] = request_id_of(request.scope)
    return Response(
        content=msgspec.json.encode(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=all_headers,
    )


def ledger_error_response(
    request: Request[Any, Any, Any], error: errors.LedgerError
) -> Response[bytes]:
    """A refusal as a problem; a stored answer carries `Idempotent-Replayed`, a refusal that
    recorded something (a declined posting) `Ledger-Position` and its `posting_id`."""
    headers: dict[str, str] = {}
    if error.replayed:
        headers["Idempotent-Replayed"] = "true"
    if error.position is not None:
        headers["Ledger-Position"] = str(error.position)
    extra = dict(error.extra)
    if error.posting_id is not None:
        extra["posting_id"] = str(error.posting_id)
    return problem_response(request, error.code, error.detail, extra=extra, headers=headers)


def http_exception_response(
    request: Request[Any, Any, Any], error: HTTPException
) -> Response[bytes]:
    code = _CODE_BY_HTTP_STATUS.get(error.status_code)
    if code is None:
        return internal_error_response(request, error)
    headers = dict(error.headers or {})
    return problem_response(request, code, str(error.detail), headers=headers)


def internal_error_response(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """A bug: log everything, tell the client nothing but the request id to quote. Except when
    the database is unreachable or busy for now (a read's connection lost, PostgreSQL
    restarting, no pooled connection free): that is 503 `unavailable` with Retry-After, as on
    the write path, so clients retry instead of reporting a bug; logged as a warning. And when
    stored text is sealed with a key this process was not given: 503 too, logged as an error."""
    if isinstance(error, EncryptionKeyMissing):
        # Not a bug and not the client's: this process lacks a key another one seals with (a
        # rotation not yet rolled out to every process). The operator must act; clients retry.
        logger.error(
            "cannot open stored text answering %s %s (request %s): %s",
            request.method,
            request.url.path,
            request_id_of(request.scope),
            error,
        )
        return problem_response(
            request,
            "unavailable",
            "the server cannot open this data for now (an encryption key is missing; logged); "
            "retry later",
        )
    if is_transient(error):
        logger.warning(
            "database unavailable answering %s %s (request %s): %s",
            request.method,
            request.url.path,
            request_id_of(request.scope),
            error,
        )
        return problem_response(
            request, "unavailable", "the database is unavailable for now; retry shortly"
        )
    logger.error(
        "unhandled error answering %s %s (request %s)",
        request.method,
        request.url.path,
        request_id_of(request.scope),
        exc_info=error,
    )
    return problem_response(
        request,
        INTERNAL_ERROR,
        "the server failed to answer this request; quote the X-Request-ID when reporting it",
    )


#: The status logged and counted for a request whose client went away before its body arrived
#: (nginx's 499): nobody receives the answer.
CLIENT_CLOSED_REQUEST_STATUS: Final = 499


class ClientDisconnected(Exception):
    """The client closed the connection before its request's body arrived: nothing was decided
    or stored, and nobody is there to answer."""


def client_disconnected_response(
    request: Request[Any, Any, Any], error: ClientDisconnected
) -> Response[bytes]:
    """Not a failure of ours: noted at info level (not as an unhandled error), counted as 499."""
    logger.info(
        "client went away before the body of %s %s arrived (request %s)",
        request.method,
        request.url.path,
        request_id_of(request.scope),
    )
    return Response(content=b"", status_code=CLIENT_CLOSED_REQUEST_STATUS)


def exception_handlers() -> ExceptionHandlersMap:
    return {
        ClientDisconnected: client_disconnected_response,
        errors.LedgerError: ledger_error_response,
        HTTPException: http_exception_response,
        Exception: internal_error_response,
    }


def error_response(request: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    """What the app's exception handlers (the table above) answer to `error`: the handler of its
    nearest class, as Litestar looks it up. For requests answered outside Litestar's routing
    (api.fast_path), so their problems are the same as everywhere else."""
    handlers = exception_handlers()
    for cls in type(error).__mro__:
        handler = handlers.get(cls)
        if handler is not None:
            return handler(request, error)  # type: ignore[arg-type,return-value]
    return internal_error_response(request, error)  # unreachable: Exception is in the table


def parse_id(text: str, not_found: type[errors.LedgerError]) -> UUID:
    """A path id; a malformed one is the resource's not-found (API.md)."""
    try:
        return UUID(text)
    except ValueError:
        raise not_found(f"no such id {text[:64]!r}") from None
