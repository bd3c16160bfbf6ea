"""Read routes: the projections' read models (projections.queries.ReadModels), rendered.

The read models are synchronous (SQL), so each read runs in a worker thread, never on the event
loop; GET account, the hottest read, goes through api.account_reader instead (on PostgreSQL,
concurrent reads of accounts share one statement on an asyncio connection). A read honours
`Ledger-Min-Position: n`: it first waits (up to the configured bound) until the projections
applied position n, so a client reads its own writes; past the bound it answers 503
`position-not-reached` with Retry-After. Query parameters are parsed here, so a bad one is a 422
`invalid-request` problem like any other refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, TypeVar, get_args

from litestar import Request, get
from litestar.concurrency import sync_to_thread
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter

from api import render, wire
from api.answers import JsonAnswer, documented
from api.command_routes import problems
from api.gate import admitted_in, path_id, read_opt
from api.limits import DEFAULT_PAGE_LIMIT, MAX_CURSOR_LENGTH, MAX_PAGE_LIMIT, MAX_POSITION
from api.services import Services, services_of
from ledger_core import errors
from ledger_core.types import AccountStatus, AccountType, PostingStatus

T = TypeVar("T")
Req = Request[Any, Any, Any]

#: `Ledger-Min-Position`, declared on every projection read so the OpenAPI document shows it.
MinPosition = Annotated[
    str | None,
    HeaderParameter(
        name="Ledger-Min-Position",
        required=False,
        # Documented as what it is, a log position; parsed by `_parse_position` (not by
        # Litestar), so the document and the server accept exactly the same values.
        schema_extra={"type": "integer", "minimum": 0, "maximum": MAX_POSITION, "oneOf": None},
        description="Wait (up to LEDGER_POSITION_WAIT_SECONDS) until the read models applied "
        "this log position, e.g. the Ledger-Position of your last write; 503 past the bound",
    ),
]
READ: Final = read_opt("space-read")


async def read(
    request: Req, min_position: str | None, query: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Wait for `Ledger-Min-Position` if asked, then run a read model query in a thread."""
    services = services_of(request)
    if min_position is not None:
        await _wait_for_min_position(services, min_position)
    return await in_read_thread(services, query, *args, **kwargs)


async def in_read_thread(
    services: Services, query: Callable[..., T], *args: Any, **kwargs: Any
) -> T:
    """Run a synchronous read-model query on the app's read threads (api.limits.READ_THREADS)."""
    return await services.in_read_thread(query, *args, **kwargs)


async def _wait_for_min_position(services: Services, header: str) -> None:
    position = _parse_position(header)
    timeout = services.settings.position_wait_seconds
    if not await services.read_models.awaitable_wait_for_position(position, timeout):
        raise errors.PositionNotReached(
            f"the read models did not reach position {position} within {timeout:g} s; retry"
        )


def natural(text: str, maximum: int) -> int | None:
    """A non-negative decimal integer up to `maximum`, or None. Digits are counted before any
    conversion, so a 5,000-digit parameter is refused, not converted."""
    if not text.isascii() or not text.isdigit() or len(text) > len(str(maximum)):
        return None
    value = int(text)
    return value if value <= maximum else None


def _parse_position(text: str) -> int:
    position = natural(text, MAX_POSITION)
    if position is None:
        raise errors.MalformedRequest(
            f"Ledger-Min-Position is a log position: an integer from 0 to {MAX_POSITION}"
        )
    return position


def page_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_PAGE_LIMIT
    limit = natural(text, MAX_PAGE_LIMIT)
    if limit is None or limit < 1:
        raise errors.InvalidRequest(f"limit is an integer from 1 to {MAX_PAGE_LIMIT}")
    return limit


def cursor(text: str | None) -> str | None:
    if text is not None and len(text) > MAX_CURSOR_LENGTH:
        raise errors.InvalidRequest("the cursor is not one this server gave")
    return text


def day(text: str | None, name: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text) if len(text) == 10 else _bad_date(name)
    except ValueError:
        return _bad_date(name)


def _bad_date(name: str) -> date:
    raise errors.InvalidRequest(f"{name} is a date YYYY-MM-DD")


def choice(text: str | None, allowed: Any, name: str) -> Any:
    if text is not None and text not in get_args(allowed):
        raise errors.InvalidRequest(f"{name} is one of {', '.join(get_args(allowed))}")
    return text


def today() -> date:
    return datetime.now(UTC).date()


async def _found(request: Req, value: T | None, error: errors.LedgerError) -> T:
    """`value`, or the right not-found: the space's when the space itself does not exist."""
    if value is None:
        await _check_space(request)
        raise error
    return value


async def _check_account(request: Req) -> None:
    """An empty list of an account's entries: is there such an account at all?"""
    read_models = services_of(request).read_models
    account_id = path_id(request, "account_id")
    view = await in_read_thread(
        services_of(request), read_models.account, path_id(request, "space_id"), account_id
    )
    await _found(request, view, errors.AccountNotFound(f"no account {account_id} in this space"))


async def _check_space(request: Req) -> None:
    """A missing space answers 404 `space-not-found` for every read on it. Checked only when a
    read found nothing, so a read that finds something costs no extra query."""
    space_id = path_id(request, "space_id")
    if (
        await in_read_thread(services_of(request), services_of(request).read_models.space, space_id)
        is None
    ):
        raise errors.SpaceNotFound(f"no space {space_id}")


# Spaces and accounts ----------------------------------------------------------------------------

SPACE: Final = "/v1/spaces/{space_id:str}"
ACCOUNT: Final = SPACE + "/accounts/{account_id:str}"


@get(SPACE, opt=READ, responses=problems())
async def get_space(
    request: Req, ledger_min_position: MinPosition, space_id: FromPath[str]
) -> wire.Space:
    """A space."""
    space = path_id(request, "space_id")
    view = await read(request, ledger_min_position, services_of(request).read_models.space, space)
    if view is None:
        raise errors.SpaceNotFound(f"no space {space}")
    return render.space(view)


@get(SPACE + "/accounts", opt=READ, responses=problems())
async def list_accounts(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    type: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    cursor_: Annotated[str | None, QueryParameter(name="cursor")] = None,
    limit: FromQuery[str | None] = None,
) -> wire.AccountPage:
    """A page of the space's accounts, in the order they were opened."""
    services = services_of(request)
    page = await read(
        request,
        ledger_min_position,
        services.read_models.accounts,
        path_id(request, "space_id"),
        type=choice(type, AccountType, "type"),
        status=choice(status, AccountStatus, "status"),
        cursor=cursor(cursor_),
        limit=page_limit(limit),
    )
    if not page.items:
        await _check_space(request)
    currencies = services.ledger.currencies
    return wire.AccountPage(
        items=[render.account(item, currencies) for item in page.items],
        next_cursor=page.next_cursor,
    )


@get(
    ACCOUNT,
    opt=READ,
    responses={**problems(), **documented(200, wire.Account, "The account")},
)
async def get_account(request: Req, ledger_min_position: MinPosition) -> JsonAnswer:
    """An account with its balances."""
    # The path's ids are documented from the route's path and parsed by the gate; not asking
    # Litestar for them again saves it a parse per request on the hottest read.
    return await account_answer(request.scope, ledger_min_position)


async def account_answer(scope: Any, min_position: str | None) -> JsonAnswer:
    """GET account's answer, once the gate admitted the request: from the route above, and from
    the app's entry for the plain path (api.fast_path), which builds no Litestar `Request`
    unless the account is not found."""
    services: Services = scope["litestar_app"].services
    if min_position is not None:
        await _wait_for_min_position(services, min_position)
    assert services.account_reader is not None, "the app has started"
    ids = admitted_in(scope).ids
    account_id = ids["account_id"]
    view = await services.account_reader.account(ids["space_id"], account_id)
    if view is None:  # the not-found is built only when it is needed
        missing = errors.AccountNotFound(f"no account {account_id} in this space")
        view = await _found(Request(scope), view, missing)
    return JsonAnswer(render.account(view, services.ledger.currencies))


@get(ACCOUNT + "/balance", opt=READ, responses=problems())
async def get_balance_as_of(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    account_id: FromPath[str],
    as_of: FromQuery[str | None] = None,
) -> wire.BalanceAsOf:
    """The posted balance at the end of an effective date (default today)."""
    services = services_of(request)
    view = await read(
        request,
        ledger_min_position,
        services.read_models.balance_as_of,
        path_id(request, "space_id"),
        path_id(request, "account_id"),
        day(as_of, "as_of") or today(),
    )
    found = await _found(
        request, view, errors.AccountNotFound(f"no account {account_id} in this space")
    )
    return wire.BalanceAsOf(
        account_id=found.account_id,
        as_of=found.as_of,
        currency=found.currency,
        posted=render.amount(found.posted, found.currency, services.ledger.currencies),
    )


@get(ACCOUNT + "/entries", opt=READ, responses=problems())
async def list_entries(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    account_id: FromPath[str],
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    cursor_: Annotated[str | None, QueryParameter(name="cursor")] = None,
    limit: FromQuery[str | None] = None,
) -> wire.EntryPage:
    """The account's posted entries in log order, each with the balance after it."""
    services = services_of(request)
    page = await read(
        request,
        ledger_min_position,
        services.read_models.entries,
        path_id(request, "space_id"),
        path_id(request, "account_id"),
        from_date=day(from_, "from"),
        to_date=day(to, "to"),
        cursor=cursor(cursor_),
        limit=page_limit(limit),
    )
    if not page.items:
        await _check_account(request)
    currencies = services.ledger.currencies
    return wire.EntryPage(
        items=[_entry_line(item, currencies) for item in page.items],
        next_cursor=page.next_cursor,
    )


def _entry_line(view: Any, currencies: render.Exponents) -> wire.EntryLine:
    return wire.EntryLine(
        posting_id=view.posting_id,
        account_id=view.account_id,
        direction=view.direction,
        amount=render.amount(view.amount_minor, view.currency, currencies),
        currency=view.currency,
        effective_date=view.effective_date,
        recorded_at=view.recorded_at,
        position=view.position,
        balance_after=render.amount(view.balance_after, view.currency, currencies),
    )


# Postings and reports ---------------------------------------------------------------------------


@get(SPACE + "/postings", opt=READ, responses=problems())
async def list_postings(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    account_id: FromQuery[str | None] = None,
    status: FromQuery[str | None] = None,
    from_: Annotated[str | None, QueryParameter(name="from")] = None,
    to: FromQuery[str | None] = None,
    cursor_: Annotated[str | None, QueryParameter(name="cursor")] = None,
    limit: FromQuery[str | None] = None,
) -> wire.PostingPage:
    """A page of the space's postings in log order."""
    services = services_of(request)
    page = await read(
        request,
        ledger_min_position,
        services.read_models.postings,
        path_id(request, "space_id"),
        account_id=_account_filter(account_id),
        status=choice(status, PostingStatus, "status"),
        from_date=day(from_, "from"),
        to_date=day(to, "to"),
        cursor=cursor(cursor_),
        limit=page_limit(limit),
    )
    if not page.items:
        await _check_space(request)
    currencies = services.ledger.currencies
    return wire.PostingPage(
        items=[render.posting(item, currencies) for item in page.items],
        next_cursor=page.next_cursor,
    )


def _account_filter(text: str | None) -> Any:
    from uuid import UUID

    if text is None:
        return None
    try:
        return UUID(text)
    except ValueError:
        raise errors.InvalidRequest("account_id is an account's id") from None


@get(SPACE + "/postings/{posting_id:str}", opt=READ, responses=problems())
async def get_posting(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    posting_id: FromPath[str],
) -> wire.Posting:
    """A posting."""
    services = services_of(request)
    view = await read(
        request,
        ledger_min_position,
        services.read_models.posting,
        path_id(request, "space_id"),
        path_id(request, "posting_id"),
    )
    found = await _found(
        request, view, errors.PostingNotFound(f"no posting {posting_id} in this space")
    )
    return render.posting(found, services.ledger.currencies)


@get(SPACE + "/reports/trial-balance", opt=READ, responses=problems())
async def trial_balance(
    request: Req,
    ledger_min_position: MinPosition,
    space_id: FromPath[str],
    as_of: FromQuery[str | None] = None,
) -> wire.TrialBalance:
    """Each account's net posted balance as of a date in its debit or credit column; per
    currency the columns' totals are equal."""
    services = services_of(request)
    view = await read(
        request,
        ledger_min_position,
        services.read_models.trial_balance,
        path_id(request, "space_id"),
        day(as_of, "as_of") or today(),
    )
    if not view.rows:
        await _check_space(request)
    currencies = services.ledger.currencies

    def money(amount_minor: int, currency: str) -> str:
        return render.amount(amount_minor, currency, currencies)

    return wire.TrialBalance(
        as_of=view.as_of,
        rows=[
            wire.TrialBalanceRow(
                account_id=row.account_id,
                code=row.code,
                name=row.name,
                type=row.type,
                currency=row.currency,
                debit=money(row.debit_minor, row.currency),
                credit=money(row.credit_minor, row.currency),
            )
            for row in view.rows
        ],
        totals=[
            wire.TrialBalanceTotal(
                currency=total.currency,
                debit=money(total.debit_minor, total.currency),
                credit=money(total.credit_minor, total.currency),
            )
            for total in view.totals
        ],
    )


# Global reads -----------------------------------------------------------------------------------


@get("/v1/assets", opt=read_opt("any"), responses=problems())
async def list_assets(request: Req, ledger_min_position: MinPosition) -> wire.AssetList:
    """The registered (non-ISO) assets."""
    services = services_of(request)
    if ledger_min_position is not None:  # as every read: API.md makes no exception
        await _wait_for_min_position(services, ledger_min_position)
    assets = await sync_to_thread(services.ledger.assets)
    return wire.AssetList(items=[render.asset(item) for item in assets])


@get("/v1/events", opt=read_opt("admin"), responses=problems())
async def list_events(
    request: Req,
    ledger_min_position: MinPosition,
    after: FromQuery[str | None] = None,
    cursor_: Annotated[str | None, QueryParameter(name="cursor")] = None,
    limit: FromQuery[str | None] = None,
) -> wire.EventPage:
    """The log itself, for integrations (admin): events after a position, in log order.
    `cursor` takes the page's `next_cursor` as every other list does; it is the same position
    as `after`, which API.md names."""
    if cursor_ is not None and after is not None and cursor_ != after:
        raise errors.InvalidRequest("give after or cursor (the same position), not both")
    page = await read(
        request,
        ledger_min_position,
        services_of(request).read_models.events,
        after=_parse_after(after if cursor_ is None else cursor_),
        limit=page_limit(limit),
    )
    return wire.EventPage(
        items=[
            wire.LogEvent(
                position=item.position,
                space_id=item.space_id,
                type=item.type,
                recorded_at=item.recorded_at,
                data=item.data,
            )
            for item in page.items
        ],
        next_cursor=page.next_cursor,
    )


def _parse_after(text: str | None) -> int:
    if text is None:
        return 0
    after = natural(text, MAX_POSITION)
    if after is None:
        raise errors.InvalidRequest("after is a log position (a non-negative integer)")
    return after


#: Every read: each honours `Ledger-Min-Position` (the assets are the core's, not a projection's,
#: but a client waiting for its position gets the same wait there).
READ_ROUTES: Final = (
    get_space,
    list_accounts,
    get_account,
    get_balance_as_of,
    list_entries,
    list_postings,
    get_posting,
    trial_balance,
    list_events,
    list_assets,
)
