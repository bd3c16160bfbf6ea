"""Command routes (every POST and PATCH of API.md, and DELETE /v1/tokens/{id}).

Each handler is a few lines: the gate (api.gate) has authenticated the caller, checked the
grants, the key and the body; the handler builds a ledger_core command from the wire struct and
`answer` submits it and renders the outcome. The ledger does idempotency: the same key with the
same content answers the stored outcome (`Idempotent-Replayed: true`), so the status of a replay
is derived from the command type and outcome exactly as the first time.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Request, Response, delete, patch, post
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, HeaderParameter, JSONBody

from api import auth, render, wire
from api.answers import JsonAnswer, documented
from api.gate import command_opt, context_of, idempotency_key_of, path_id
from api.problems import PROBLEM_MEDIA_TYPE
from api.services import services_of
from ledger_core import commands as cmd
from ledger_core import errors
from ledger_core.limits import MAX_IDEMPOTENCY_KEY_LENGTH
from ledger_core.records import (
    AccountRecord,
    AssetRecord,
    BatchRecord,
    CommandResult,
    PostingRecord,
    SpaceRecord,
    TokenRecord,
)

#: The success status of each command (API.md's table); a replay answers the same.
SUCCESS_STATUS: Final[dict[type[cmd.Command], int]] = {
    cmd.OpenSpace: 201,
    cmd.RegisterAsset: 201,
    cmd.IssueToken: 201,
    cmd.OpenAccount: 201,
    cmd.UpdateAccount: 200,
    cmd.FreezeAccount: 200,
    cmd.UnfreezeAccount: 200,
    cmd.CloseAccount: 200,
    cmd.RecordPosting: 201,
    cmd.RecordBatch: 201,
    cmd.PostPending: 200,
    cmd.VoidPending: 200,
    cmd.ReversePosting: 201,
}

Req = Request[Any, Any, Any]
#: What an empty body stands for on the routes whose fields are all optional (`{}`: see
#: `wire.decode_request`; Litestar gives such a handler no body at all); frozen, shared.
NO_CHANGES: Final = wire.UpdateAccountRequest()
NO_REASON: Final = wire.ReasonRequest()
FULL_CAPTURE: Final = wire.CaptureRequest()
PLAIN_REVERSAL: Final = wire.ReverseRequest()
#: The `Idempotency-Key` header, declared so the OpenAPI document shows it (api.gate checks it).
IdempotencyKey = Annotated[
    str,
    HeaderParameter(
        name="Idempotency-Key",
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY_LENGTH,
        description="1-255 printable ASCII characters; a retry with the same key and body "
        "answers the stored result",
    ),
]


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem answers a route can give."""
    return {
        status: ResponseSpec(
            data_container=wire.Problem,
            description="A problem (RFC 9457)",
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in (400, 401, 403, 404, 409, 413, 422, 503, *statuses)
    }


def base(request: Req, key: str) -> dict[str, Any]:
    """The key and the who-and-where every command carries."""
    return {"idempotency_key": key, "context": context_of(request)}


async def answer(request: Req, command: cmd.Command) -> Response[Any]:
    result, content = await _decide(request, command)
    return Response(content, status_code=SUCCESS_STATUS[type(command)], headers=headers_of(result))


async def json_answer(request: Req, command: cmd.Command) -> JsonAnswer:
    """`answer` for the hottest routes (postings): the same answer, sent as a JsonAnswer."""
    result, content = await _decide(request, command)
    return JsonAnswer(content, SUCCESS_STATUS[type(command)], headers_of(result))


async def _decide(request: Req, command: cmd.Command) -> tuple[CommandResult, Any]:
    """Submit the command; its result and rendered outcome (a refusal raises)."""
    services = services_of(request)
    try:
        result = await services.ledger.submit(command)
    except errors.LedgerError as error:
        if error.posting_id is not None and not error.replayed:
            services.metrics.declines.labels(error.code).inc()
        raise
    if not result.replayed:
        services.metrics.postings.inc(_postings_recorded(command, result))
    return result, _render(result, services.ledger.currencies, request)


def headers_of(result: CommandResult) -> dict[str, str]:
    headers: dict[str, str] = {}
    if result.replayed:
        headers["Idempotent-Replayed"] = "true"
    if result.position is not None:
        headers["Ledger-Position"] = str(result.position)
    return headers


def _render(result: CommandResult, exponents: render.Exponents, request: Req) -> Any:
    outcome = result.outcome
    if isinstance(outcome, AccountRecord):
        return render.account(outcome, exponents)
    if isinstance(outcome, PostingRecord):
        return render.posting(outcome, exponents)
    if isinstance(outcome, BatchRecord):
        return render.batch(outcome, exponents)
    if isinstance(outcome, SpaceRecord):
        return render.space(outcome)
    if isinstance(outcome, AssetRecord):
        return render.asset(outcome)
    assert isinstance(outcome, TokenRecord), outcome
    return _issued_token(request, outcome)


def _postings_recorded(command: cmd.Command, result: CommandResult) -> int:
    """New postings a command recorded (posting or voiding a hold records none)."""
    if isinstance(result.outcome, BatchRecord):
        return len(result.outcome.postings)
    return 1 if isinstance(command, (cmd.RecordPosting, cmd.ReversePosting)) else 0


# Spaces, assets, tokens (global keys) ----------------------------------------------------------


@post("/v1/spaces", opt=command_opt("admin", wire.OpenSpaceRequest), responses=problems())
async def open_space(
    request: Req, key: IdempotencyKey, data: JSONBody[wire.OpenSpaceRequest]
) -> Response[wire.Space]:
    """Open a space (a tenant's book). Admin."""
    command = cmd.OpenSpace(name=data.name, base_currency=data.base_currency, **base(request, key))
    return await answer(request, command)


@post("/v1/assets", opt=command_opt("admin", wire.RegisterAssetRequest), responses=problems())
async def register_asset(
    request: Req, key: IdempotencyKey, data: JSONBody[wire.RegisterAssetRequest]
) -> Response[wire.Asset]:
    """Register a non-ISO asset (BTC, a share, hours) with its exponent. Admin."""
    command = cmd.RegisterAsset(
        code=data.code, exponent=data.exponent, name=data.name, **base(request, key)
    )
    return await answer(request, command)


@post("/v1/tokens", opt=command_opt("admin", wire.IssueTokenRequest), responses=problems())
async def issue_token(
    request: Req, key: IdempotencyKey, data: JSONBody[wire.IssueTokenRequest]
) -> Response[wire.IssuedToken]:
    """Issue an API token; the token is in this answer only (replays derive the same one)."""
    token = _token_for(request)
    command = cmd.IssueToken(
        token_hash=auth.hash_token(token),
        role=data.role,
        spaces=tuple(data.spaces),
        **base(request, key),
    )
    return await answer(request, command)


def _token_for(request: Req) -> str:
    """The token for this request's key (auth.derived_token). Without a server secret
    configured, the caller's own bearer token is the secret."""
    secret = services_of(request).token_secret
    if secret is None:
        secret = auth.bearer_token(request.headers.get("authorization"))
    return auth.derived_token(secret, idempotency_key_of(request))


def _issued_token(request: Req, record: TokenRecord) -> wire.IssuedToken:
    token = _token_for(request)
    if auth.hash_token(token) != record.token_hash:
        raise errors.IdempotencyKeyReused("this idempotency key was used for another token")
    return wire.IssuedToken(id=record.id, token=token, role=record.role, spaces=list(record.spaces))


@delete(
    "/v1/tokens/{token_id:str}",
    opt={"access": "admin"},
    responses=problems(),
    status_code=204,
)
async def revoke_token(request: Req, token_id: FromPath[str]) -> Response[None]:
    """Revoke a token (no key needed: revoking twice is revoking once)."""
    target = path_id(request, "token_id")
    result = await services_of(request).ledger.submit(
        cmd.RevokeToken(
            token_id=target, idempotency_key=f"revoke:{target}", context=context_of(request)
        )
    )
    headers = {"Ledger-Position": str(result.position)} if result.position is not None else {}
    return Response(None, status_code=204, headers=headers)


# Accounts -----------------------------------------------------------------------------------

ACCOUNTS: Final = "/v1/spaces/{space_id:str}/accounts"
ACCOUNT: Final = ACCOUNTS + "/{account_id:str}"


@post(ACCOUNTS, opt=command_opt("space-write", wire.OpenAccountRequest), responses=problems())
async def open_account(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    data: JSONBody[wire.OpenAccountRequest],
) -> Response[wire.Account]:
    """Open an account in the space."""
    command = cmd.OpenAccount(
        space_id=path_id(request, "space_id"),
        name=data.name,
        type=data.type,
        currency=data.currency,
        subtype=data.subtype,
        code=data.code,
        overdraft_limit=data.overdraft_limit,
        metadata=data.metadata,
        **base(request, key),
    )
    return await answer(request, command)


@patch(ACCOUNT, opt=command_opt("space-write", wire.UpdateAccountRequest), responses=problems())
async def update_account(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    account_id: FromPath[str],
    data: JSONBody[wire.UpdateAccountRequest | None] = None,
) -> Response[wire.Account]:
    """Change an account's name, overdraft limit (null removes it) or metadata."""
    data = data or NO_CHANGES  # no body (or an empty one) stands for {}
    command = cmd.UpdateAccount(
        space_id=path_id(request, "space_id"),
        account_id=path_id(request, "account_id"),
        name=data.name,
        overdraft_limit=data.overdraft_limit,
        metadata=data.metadata,
        **base(request, key),
    )
    return await answer(request, command)


def _status_change(
    command_type: type[cmd.FreezeAccount | cmd.UnfreezeAccount | cmd.CloseAccount],
    request: Req,
    key: str,
    data: wire.ReasonRequest,
) -> cmd.Command:
    return command_type(
        space_id=path_id(request, "space_id"),
        account_id=path_id(request, "account_id"),
        reason=data.reason,
        **base(request, key),
    )


REASON: Final = command_opt("space-write", wire.ReasonRequest)


@post(ACCOUNT + "/freeze", opt=REASON, status_code=200, responses=problems())
async def freeze_account(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    account_id: FromPath[str],
    data: JSONBody[wire.ReasonRequest | None] = None,
) -> Response[wire.Account]:
    """Freeze an account: it accepts no new postings until unfrozen."""
    data = data or NO_REASON  # no body (or an empty one) stands for {}
    return await answer(request, _status_change(cmd.FreezeAccount, request, key, data))


@post(ACCOUNT + "/unfreeze", opt=REASON, status_code=200, responses=problems())
async def unfreeze_account(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    account_id: FromPath[str],
    data: JSONBody[wire.ReasonRequest | None] = None,
) -> Response[wire.Account]:
    """Unfreeze a frozen account."""
    data = data or NO_REASON  # no body (or an empty one) stands for {}
    return await answer(request, _status_change(cmd.UnfreezeAccount, request, key, data))


@post(ACCOUNT + "/close", opt=REASON, status_code=200, responses=problems())
async def close_account(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    account_id: FromPath[str],
    data: JSONBody[wire.ReasonRequest | None] = None,
) -> Response[wire.Account]:
    """Close an account (at a zero balance with no open holds), for good."""
    data = data or NO_REASON  # no body (or an empty one) stands for {}
    return await answer(request, _status_change(cmd.CloseAccount, request, key, data))


# Postings -----------------------------------------------------------------------------------

POSTINGS: Final = "/v1/spaces/{space_id:str}/postings"
POSTING: Final = POSTINGS + "/{posting_id:str}"
BATCH: Final = POSTINGS + "/batch"


def posting_spec(data: wire.PostingRequest) -> cmd.PostingSpec:
    return cmd.PostingSpec(
        entries=tuple(
            cmd.EntrySpec(
                account_id=entry.account_id,
                direction=entry.direction,
                amount=entry.amount,
                currency=entry.currency,
            )
            for entry in data.entries
        ),
        description=data.description,
        effective_date=data.effective_date,
        merchant=data.merchant,
        category_id=data.category_id,
        metadata=data.metadata,
        pending=data.pending,
        expires_at=data.expires_at,
    )


@post(
    POSTINGS,
    opt=command_opt("space-write", wire.PostingRequest),
    responses={**problems(), **documented(201, wire.Posting, "The posting recorded")},
)
async def record_posting(
    request: Req, key: IdempotencyKey, data: JSONBody[wire.PostingRequest]
) -> JsonAnswer:
    """Record a posting (or a hold, with `pending: true`)."""
    return await json_answer(request, posting_command(request, key, data))


def posting_command(request: Req, key: str, data: wire.PostingRequest) -> cmd.RecordPosting:
    """The command of a POST posting (also answered at the app's entry: api.fast_path)."""
    return cmd.RecordPosting(
        space_id=path_id(request, "space_id"), posting=posting_spec(data), **base(request, key)
    )


@post(
    BATCH,
    opt=command_opt("space-write", wire.BatchRequest),
    responses={**problems(), **documented(201, wire.Batch, "The postings recorded")},
)
async def record_batch(
    request: Req, key: IdempotencyKey, space_id: FromPath[str], data: JSONBody[wire.BatchRequest]
) -> JsonAnswer:
    """Record 1-1000 postings, all or none."""
    return await json_answer(request, batch_command(request, key, data))


def batch_command(request: Req, key: str, data: wire.BatchRequest) -> cmd.RecordBatch:
    """The command of a POST batch (also answered at the app's entry: api.fast_path)."""
    return cmd.RecordBatch(
        space_id=path_id(request, "space_id"),
        postings=tuple(posting_spec(item) for item in data.postings),
        **base(request, key),
    )


@post(
    POSTING + "/post",
    opt=command_opt("space-write", wire.CaptureRequest),
    status_code=200,
    responses=problems(),
)
async def post_pending(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    posting_id: FromPath[str],
    data: JSONBody[wire.CaptureRequest | None] = None,
) -> Response[wire.Posting]:
    """Post a pending posting, fully or (two-entry holds) partly."""
    data = data or FULL_CAPTURE  # no body (or an empty one) stands for {}
    command = cmd.PostPending(
        space_id=path_id(request, "space_id"),
        posting_id=path_id(request, "posting_id"),
        amount=data.amount,
        **base(request, key),
    )
    return await answer(request, command)


@post(
    POSTING + "/void",
    opt=command_opt("space-write", wire.ReasonRequest),
    status_code=200,
    responses=problems(),
)
async def void_pending(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    posting_id: FromPath[str],
    data: JSONBody[wire.ReasonRequest | None] = None,
) -> Response[wire.Posting]:
    """Void a pending posting: its hold is released."""
    data = data or NO_REASON  # no body (or an empty one) stands for {}
    command = cmd.VoidPending(
        space_id=path_id(request, "space_id"),
        posting_id=path_id(request, "posting_id"),
        reason=data.reason,
        **base(request, key),
    )
    return await answer(request, command)


@post(
    POSTING + "/reverse", opt=command_opt("space-write", wire.ReverseRequest), responses=problems()
)
async def reverse_posting(
    request: Req,
    key: IdempotencyKey,
    space_id: FromPath[str],
    posting_id: FromPath[str],
    data: JSONBody[wire.ReverseRequest | None] = None,
) -> Response[wire.Posting]:
    """Reverse a posted posting with a new, mirrored one (at most once)."""
    data = data or PLAIN_REVERSAL  # no body (or an empty one) stands for {}
    command = cmd.ReversePosting(
        space_id=path_id(request, "space_id"),
        posting_id=path_id(request, "posting_id"),
        description=data.description,
        effective_date=data.effective_date,
        **base(request, key),
    )
    return await answer(request, command)


COMMAND_ROUTES: Final = (
    open_space,
    register_asset,
    issue_token,
    revoke_token,
    open_account,
    update_account,
    freeze_account,
    unfreeze_account,
    close_account,
    record_posting,
    record_batch,
    post_pending,
    void_pending,
    reverse_posting,
)
