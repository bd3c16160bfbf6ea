"""The hottest routes, answered at the app's entry without Litestar's routing: GET account,
POST posting and POST batch.

Measured on this project's HTTP benchmark (64 connections, PostgreSQL), Litestar's per-request
machinery (routing, the route's middleware stack, the `before_request` hook, the signature model
and its header parsing, the exception middleware's wrapped `send`) was about half of the CPU of
a GET account: the event loop, which holds the GIL nearly all the time under that load, spent
~230 us per request and answered ~4,300/s with p99 26 ms. A POST posting pays the same machinery
on top of the writer's work, in the same process and under the same GIL.

So `LedgerApp` (api.app) answers a GET or HEAD of exactly `/v1/spaces/{id}/accounts/{id}`, and a
POST of exactly `/v1/spaces/{id}/postings` or `/v1/spaces/{id}/postings/batch`, here, with the
same parts the Litestar routes use, in the same order:
- the app's metrics middleware (counted under the route's template; `X-Request-ID` stamped),
- the gate's `admit` (401, 404 for a space without a grant, 403, 404 for a malformed id),
- for the commands, the gate's `admit_command` (the `Idempotency-Key`, the body read under the
  route's size limit by `gate.read_body`, which reads it as Litestar does without building
  Litestar's header objects, decoded strictly, refusals stored with the key), then the route's own
  command builder (`api.command_routes.posting_command` / `batch_command`) and `json_answer`,
- for GET account, `api.read_routes.account_answer` (the `Ledger-Min-Position` wait, the
  coalesced read, the space-or-account not-found, the render),
- the app's exception handlers for anything raised (`api.problems.error_response`).

Every other path, including ones Litestar would also route there (a trailing slash), goes to
Litestar, whose routes stay the documented ones (OpenAPI) and answer the same.
`tests/api/test_fast_path.py` sends each case to both and compares status, headers and body.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from litestar import Request
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import ASGIApp, Receive, Scope, Send

from api import command_routes, gate, read_routes
from api.problems import error_response
from ledger_core.commands import Command

if TYPE_CHECKING:
    from litestar import Litestar

#: The GETs answered here: `/v1/spaces/<segment>/accounts/<segment>`, nothing more.
_ACCOUNT_PATH: Final = re.compile(r"/v1/spaces/([^/]+)/accounts/([^/]+)")
#: The POSTs answered here: `/v1/spaces/<segment>/postings`, with or without `/batch`.
_POSTINGS_PATH: Final = re.compile(r"/v1/spaces/([^/]+)/postings(/batch)?")
#: What a GET account needs (as its route's `opt`).
_ACCESS: Final = read_routes.READ["access"]

#: A command's builder: (request, idempotency key, decoded body) -> the command.
CommandBuilder = Callable[[Request[Any, Any, Any], str, Any], Command]


def account_path_ids(scope: Any) -> tuple[str, str] | None:
    """The (space_id, account_id) path segments of a GET or HEAD (served as GET by LedgerApp)
    of an account, or None for any other request."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return None
    match = _ACCOUNT_PATH.fullmatch(scope["path"])
    return None if match is None else (match[1], match[2])


def postings_path(scope: Any) -> tuple[str, bool] | None:
    """The space_id path segment of a POST of a posting or a batch, and whether it is a batch;
    None for any other request."""
    if scope["type"] != "http" or scope["method"] != "POST":
        return None
    match = _POSTINGS_PATH.fullmatch(scope["path"])
    return None if match is None else (match[1], match[2] is not None)


class FastPath:
    """The apps answering the hottest routes of `app`, each inside `metrics_middleware`."""

    def __init__(self, app: Litestar, metrics_middleware: Any) -> None:
        self.account = account_app(app, metrics_middleware)
        self.posting = command_app(
            app, metrics_middleware, command_routes.POSTINGS, command_routes.posting_command
        )
        self.batch = command_app(
            app, metrics_middleware, command_routes.BATCH, command_routes.batch_command
        )

    def route(self, scope: Any) -> ASGIApp | None:
        """The app answering this request here (its `path_params` set in the scope), or None:
        Litestar answers it."""
        if (ids := account_path_ids(scope)) is not None:
            scope["path_params"] = {"space_id": ids[0], "account_id": ids[1]}
            return self.account
        if (posted := postings_path(scope)) is not None:
            scope["path_params"] = {"space_id": posted[0]}
            return self.batch if posted[1] else self.posting
        return None


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
            await _problem(request, error)
            return
        await answer(scope, receive, send)

    return _entry(app, template, metrics_middleware(answer_account))


def command_app(
    app: Litestar, metrics_middleware: Any, path: str, build: CommandBuilder
) -> ASGIApp:
    """The ASGI app answering the POST route declared at `path` for `app`, inside
    `metrics_middleware`, with the command `build` makes. It expects the scope's `path_params`
    set from `postings_path`."""
    template = route_template(app, path)
    handler = route_handler(app, path, "POST")
    access = handler.opt["access"]
    body_type = handler.opt["body"]
    max_body_bytes = handler.resolve_request_max_body_size()
    assert max_body_bytes is not None, "the app limits every request's body"

    async def answer_command(scope: Scope, receive: Receive, send: Send) -> None:
        scope["route_handler"] = handler  # as Litestar's router leaves it
        request: Request[Any, Any, Any] = Request(scope, receive, send)
        header = _header_reader(scope)

        def read() -> Awaitable[bytes]:
            return gate.read_body(scope, receive, max_body_bytes)

        try:
            services = app.services  # type: ignore[attr-defined]
            admitted = await gate.admit_caught_up(services, access, header, scope["path_params"])
            gate.remember(scope, admitted)
            data = await gate.admit_command(request, services, admitted, header, body_type, read)
            assert admitted.key is not None, "admit_command sets the key"
            command = build(request, admitted.key, data)
            answer = await command_routes.json_answer(request, command)
        except Exception as error:  # answered by the app's exception handlers, as in Litestar
            await _problem(request, error)
            return
        await answer(scope, receive, send)

    return _entry(app, template, metrics_middleware(answer_command))


def _entry(app: Litestar, template: str, observed: ASGIApp) -> ASGIApp:
    async def entry(scope: Any, receive: Receive, send: Send) -> None:
        # What Litestar's entry and router put in the scope, as the parts above read it.
        scope["app"] = scope["litestar_app"] = app
        scope.setdefault("state", {})
        scope["path_template"] = template
        await observed(scope, receive, send)

    return entry


async def _problem(request: Request[Any, Any, Any], error: Exception) -> None:
    response = error_response(request, error)
    scope = request.scope
    await response.to_asgi_response(app=None, request=request)(scope, request.receive, request.send)


def route_handler(app: Litestar, path: str, method: str) -> HTTPRouteHandler:
    """The handler `app` registered for `method` at the route declared at `path`."""
    for route in app.routes:
        if route.path == path and isinstance(route, HTTPRoute):
            for handler in route.route_handlers:
                if method in handler.http_methods:
                    return handler
    raise LookupError(f"no {method} route {path}")


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
