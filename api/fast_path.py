"""GET account, the hottest read, answered at the app's entry without Litestar's routing.

Measured on this project's HTTP benchmark (64 connections, PostgreSQL), Litestar's per-request
machinery (routing, the route's middleware stack, the `before_request` hook, the signature model
and its header parsing, the exception middleware's wrapped `send`) was about half of the CPU of
a GET account: the event loop, which holds the GIL nearly all the time under that load, spent
~230 us per request and answered ~4,300/s with p99 26 ms.

So `LedgerApp` (api.app) answers a GET or HEAD of exactly `/v1/spaces/{id}/accounts/{id}` here,
with the same parts the Litestar route uses, in the same order:
- the app's metrics middleware (counted under the route's template; `X-Request-ID` stamped),
- the gate's `admit` (401, 404 for a space without a grant, 403, 404 for a malformed id),
- `api.read_routes.account_answer` (the `Ledger-Min-Position` wait, the coalesced read, the
  space-or-account not-found, the render),
- the app's exception handlers for anything raised (`api.problems.error_response`).

Every other path, including ones Litestar would also route there (a trailing slash), goes to
Litestar, whose route stays the documented one (OpenAPI) and answers the same.
`tests/api/test_fast_path.py` sends each case to both and compares status, headers and body.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from litestar import Request
from litestar.types import ASGIApp, Receive, Scope, Send

from api import gate, read_routes
from api.problems import error_response

if TYPE_CHECKING:
    from litestar import Litestar

#: The paths answered here: `/v1/spaces/<segment>/accounts/<segment>`, nothing more.
_ACCOUNT_PATH: Final = re.compile(r"/v1/spaces/([^/]+)/accounts/([^/]+)")
#: What a GET account needs (as its route's `opt`).
_ACCESS: Final = read_routes.READ["access"]


def account_path_ids(scope: Any) -> tuple[str, str] | None:
    """The (space_id, account_id) path segments of a GET or HEAD (served as GET by LedgerApp)
    of an account, or None for any other request."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    match = _ACCOUNT_PATH.fullmatch(scope["path"])
    return None if match is None else (match[1], match[2])


def account_app(app: Litestar, metrics_middleware: Any) -> ASGIApp:
    """The ASGI app answering GET account for `app`, inside `metrics_middleware`. It expects
    the scope's `path_params` set from `account_path_ids`."""
    template = route_template(app, read_routes.ACCOUNT)

    async def answer_account(scope: Scope, receive: Receive, send: Send) -> None:
        header = _header_reader(scope)
        try:
            services = app.services  # type: ignore[attr-defined]
            admitted = await gate.admit_caught_up(services, _ACCESS, header, scope["path_params"])
            gate.remember(scope, admitted)
            answer = await read_routes.account_answer(scope, header("ledger-min-position"))
        except Exception as error:  # answered by the app's exception handlers, as in Litestar
            request: Request[Any, Any, Any] = Request(scope, receive, send)
            response = error_response(request, error)
            await response.to_asgi_response(app=None, request=request)(scope, receive, send)
            return
        await answer(scope, receive, send)

    observed: ASGIApp = metrics_middleware(answer_account)

    async def entry(scope: Any, receive: Receive, send: Send) -> None:
        # What Litestar's entry and router put in the scope, as the parts above read it.
        scope["app"] = scope["litestar_app"] = app
        scope.setdefault("state", {})
        scope["path_template"] = template
        await observed(scope, receive, send)

    return entry


def route_template(app: Litestar, path: str) -> str:
    """The template Litestar's router records for the route declared at `path` (the metrics
    label requests by it): `{name}` where the declaration says `{name:type}`."""
    for route in app.routes:
        if route.path == path:
            return route.path_format
    raise LookupError(f"no route {path}")


def _header_reader(scope: Scope) -> Any:
    """`header(name)`: the first value of header `name` (lowercase) as Litestar's `Headers.get`
    gives it (names compared case-insensitively, values decoded as latin-1), or None."""
    headers = scope["headers"]

    def header(name: str) -> str | None:
        wanted = name.encode("latin-1")
        for key, value in headers:
            if key == wanted or key.lower() == wanted:
                return str(value.decode("latin-1"))
        return None

    return header
