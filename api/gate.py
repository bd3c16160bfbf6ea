"""What every /v1 request passes before its handler runs (a Litestar `before_request` hook).

In API.md's order: the bearer token (401), the space grant (404, as for a missing space), the
role (403), the path ids (404 with the resource's not-found code); then, for commands, the
`Idempotency-Key` header (400) and the body. A body that is JSON but of the wrong shape is
refused with 422 and that refusal is stored with the key (`RecordRefusal`), so a retry answers it
again and the same key with another body is 409 — the same as for refusals the ledger decides.

Each route declares what it needs in its `opt`: `access` (auth.Access) and, for commands, `body`
(the wire request type). The decoded body is handed to Litestar as the request's parsed JSON, so
the handler's `data` argument is that struct, decoded once, strictly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from litestar import Request
from litestar.exceptions import ClientException, InternalServerException
from litestar.exceptions.http_exceptions import RequestEntityTooLarge
from litestar.types import Receive
from litestar.utils.scope.state import ScopeState

from api import auth, wire
from api.problems import ClientDisconnected, parse_id
from api.request_id import request_id_of
from api.services import Services, services_of
from ledger_core import errors, rules
from ledger_core.commands import RecordRefusal
from ledger_core.types import CommandContext

#: Path parameters that are ids, and the not-found each answers when malformed (API.md).
PATH_IDS: Final[dict[str, type[errors.LedgerError]]] = {
    "space_id": errors.SpaceNotFound,
    "account_id": errors.AccountNotFound,
    "posting_id": errors.PostingNotFound,
    "token_id": errors.TokenNotFound,
}
#: Longest User-Agent recorded in events.
MAX_USER_AGENT_LENGTH: Final = 256

#: Where the gate leaves what it found, in the ASGI scope's state (read without building a
#: Litestar `State` per access).
_ADMITTED: Final = "ledger_admitted"


@dataclass(slots=True)
class Admitted:
    """What the gate established about a request: who, the parsed path ids, the key."""

    principal: auth.Principal
    ids: dict[str, UUID]
    key: str | None = None
    user_agent: str | None = None


def command_opt(access: auth.Access, body: type[wire.RequestBody] | None) -> dict[str, Any]:
    """A command route's `opt`: needs an idempotency key (and a body of type `body`)."""
    return {"access": access, "body": body, "command": True}


def read_opt(access: auth.Access) -> dict[str, Any]:
    return {"access": access}


async def gate(request: Request[Any, Any, Any]) -> None:
    opt = request.route_handler.opt
    access: auth.Access | None = opt.get("access")
    if access is None:
        return
    services = services_of(request)
    headers = request.headers
    admitted = await admit_caught_up(services, access, headers.get, request.path_params)
    remember(request.scope, admitted)
    if opt.get("command"):
        await admit_command(request, services, admitted, headers.get, opt.get("body"))


async def admit_command(
    request: Request[Any, Any, Any],
    services: Services,
    admitted: Admitted,
    header: Callable[[str], str | None],
    body_type: type[wire.RequestBody] | None,
    read: Callable[[], Awaitable[bytes]] | None = None,
) -> Any:
    """What a command needs past `admit`: one sane `Idempotency-Key` (400) and, for a route
    with a body, the body decoded into `body_type` (refusals stored with the key), which is
    returned (and handed to Litestar as the request's parsed JSON); None without a body.
    `read()` reads the body (default: Litestar's `request.body()`)."""
    key = rules.check_idempotency_key(header("idempotency-key"))
    if _header_lines(request, b"idempotency-key") > 1:
        # Which one did the client mean? Not ours to pick (API.md: a bad header is 400).
        raise errors.MalformedRequest("send one Idempotency-Key header, not several")
    admitted.key = key
    if body_type is None:
        return None
    return await _decode_body(
        request, services, body_type, admitted.ids.get("space_id"), key, read or request.body
    )


async def admit_caught_up(
    services: Services,
    access: auth.Access,
    header: Callable[[str], str | None],
    params: Mapping[str, str],
) -> Admitted:
    """`admit`, which catches up on the tokens other processes issued before it answers 401 to
    a token this process does not know (`api.token_catch_up`)."""
    try:
        return admit(services, access, header, params)
    except auth.UnknownToken:
        await services.token_catch_up.wait()
        return admit(services, access, header, params)


def admit(
    services: Services,
    access: auth.Access,
    header: Callable[[str], str | None],
    params: Mapping[str, str],
) -> Admitted:
    """Who sends the request and may they (401, 404, 403), and its path ids (404), in API.md's
    order. `header(name)`: the first value of a header (lowercase name), or None."""
    principal = auth.authenticate(
        header("authorization"), services.ledger, services.admin_token_hash
    )
    ids: dict[str, UUID] = {}
    space_id = None
    if "space_id" in params:
        space_id = ids["space_id"] = parse_id(params["space_id"], errors.SpaceNotFound)
    auth.authorise(principal, access, space_id)
    for name, value in params.items():
        not_found = PATH_IDS.get(name)
        if not_found is not None and name != "space_id":
            ids[name] = parse_id(value, not_found)
    return Admitted(principal, ids, user_agent=header("user-agent"))


def remember(scope: Any, admitted: Admitted) -> None:
    """Leave what the gate found in the request's scope (`path_id`, `context_of` read it)."""
    scope.setdefault("state", {})[_ADMITTED] = admitted


def _header_lines(request: Request[Any, Any, Any], name: bytes) -> int:
    """How many lines of header `name` (lowercase) the request has."""
    return sum(1 for header_name, _ in request.scope["headers"] if header_name == name)


async def _decode_body(
    request: Request[Any, Any, Any],
    services: Services,
    body_type: type[wire.RequestBody],
    space_id: UUID | None,
    key: str,
    read: Callable[[], Awaitable[bytes]],
) -> Any:
    try:
        raw = await read()
    except InternalServerException as error:
        # Litestar's only one from reading a body: the ASGI server said `http.disconnect`.
        raise ClientDisconnected(str(error.detail)) from error
    try:
        decoded = wire.decode_request(raw, body_type)
    except errors.LedgerError as refusal:
        if not refusal.stored:
            raise
        await services.ledger.submit(
            RecordRefusal(
                space_id=space_id,
                fingerprint=request_fingerprint(request, raw),
                code=refusal.code,
                detail=refusal.detail,
                idempotency_key=key,
                context=context_of(request),
            )
        )
        raise AssertionError("a stored refusal always raises") from refusal
    # Litestar takes the request's parsed JSON from here for the handler's `data`: a struct
    # converts to itself, so the body is decoded once, by the strict decoder above. (An empty
    # body gives no `data` to Litestar: the routes whose body may be empty default it.)
    ScopeState.from_scope(request.scope).json = decoded
    return decoded


async def read_body(scope: Any, receive: Receive, max_bytes: int) -> bytes:
    """The request's body, read from `receive` as Litestar's `Request.body()` reads it, without
    building Litestar's header objects: 413 (RequestEntityTooLarge) when `Content-Length` or the
    bytes received pass `max_bytes`, 400 for a `Content-Length` that is not an integer, and
    Litestar's exception for a client that disconnected (the gate answers it)."""
    announced = None
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            text = value.decode("latin-1")
            try:
                announced = int(text)
            except ValueError:
                raise ClientException(f"Invalid content-length: {text!r}") from None
            break
    if announced is not None and announced > max_bytes:
        raise RequestEntityTooLarge
    chunks = []
    received = 0
    while True:
        event = await receive()
        if event["type"] == "http.request":
            chunk = event["body"]
            if chunk:
                received += len(chunk)
                if received > max_bytes:
                    raise RequestEntityTooLarge
                chunks.append(chunk)
            if not event.get("more_body", False):
                break
        elif event["type"] == "http.disconnect":
            raise InternalServerException("client disconnected prematurely")
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def request_fingerprint(request: Request[Any, Any, Any], raw: bytes) -> bytes:
    """What identifies a request refused before it became a command: method, route template,
    path parameters and the raw body."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(request.method.encode("ascii") + b"\x00")
    digest.update(request.scope.get("path_template", request.url.path).encode("utf-8") + b"\x00")
    for name, value in sorted(request.path_params.items()):
        digest.update(f"{name}={value}".encode() + b"\x00")
    digest.update(raw)
    return digest.digest()


def admitted_of(request: Request[Any, Any, Any]) -> Admitted | None:
    admitted: Admitted | None = request.scope.get("state", {}).get(_ADMITTED)
    return admitted


def _admitted(request: Request[Any, Any, Any]) -> Admitted:
    return admitted_in(request.scope)


def admitted_in(scope: Any) -> Admitted:
    """What the gate found about the request of `scope` (it passed the gate)."""
    admitted: Admitted | None = scope.get("state", {}).get(_ADMITTED)
    assert admitted is not None, "a /v1 route always passes the gate first"
    return admitted


def path_id(request: Request[Any, Any, Any], name: str) -> UUID:
    return _admitted(request).ids[name]


def idempotency_key_of(request: Request[Any, Any, Any]) -> str:
    key = _admitted(request).key
    assert key is not None, "only command routes have a key"
    return key


def context_of(request: Request[Any, Any, Any]) -> CommandContext:
    """Who and where, recorded in the command's events."""
    admitted = admitted_of(request)
    principal = admitted.principal if admitted else None
    client = request.client
    user_agent = admitted.user_agent if admitted else request.headers.get("user-agent")
    return CommandContext(
        token_id=principal.token_id if principal else None,
        request_id=request_id_of(request.scope),
        client_address=client.host if client else None,
        user_agent=user_agent[:MAX_USER_AGENT_LENGTH] if user_agent else None,
    )
