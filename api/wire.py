"""Wire types of the HTTP API: msgspec Structs, separate from the domain's commands and records.

Requests forbid unknown fields (API.md: 422 `invalid-request`) and carry amounts as decimal
strings; `decode_request` turns a body into one of them and classifies what is wrong with it
(400 for what is not JSON at all, 422 `invalid-amount` for a JSON number where an amount goes,
422 `invalid-request` for the rest). Responses render every amount with exactly its currency's
exponent (`ledger_core.money.format_amount`). The renderers take the core's records; read views
are rendered by `api.read_render`.
"""

from __future__ import annotations

import functools
import re
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from ledger_core import errors
from ledger_core.types import AccountStatus, AccountSubtype, AccountType, Direction, PostingStatus

Role = Literal["admin", "write", "read"]

# Requests ----------------------------------------------------------------------------------------


class RequestBody(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Base of every request body: unknown fields are refused."""


class OpenSpaceRequest(RequestBody, frozen=True, kw_only=True):
    name: str
    base_currency: str


class OpenAccountRequest(RequestBody, frozen=True, kw_only=True):
    name: str
    type: AccountType
    currency: str
    subtype: AccountSubtype = "other"
    code: str | None = None
    overdraft_limit: str | None = None
    metadata: dict[str, str] | None = None


class UpdateAccountRequest(RequestBody, frozen=True, kw_only=True):
    """Fields left out stay as they are; `overdraft_limit: null` removes the limit."""

    name: str | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit: str | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class ReasonRequest(RequestBody, frozen=True, kw_only=True):
    reason: str | None = None


class EntryRequest(RequestBody, frozen=True, kw_only=True):
    account_id: UUID
    direction: Direction
    amount: str
    currency: str | None = None


class PostingRequest(RequestBody, frozen=True, kw_only=True):
    entries: list[EntryRequest]
    description: str = ""
    effective_date: date | None = None
    merchant: str | None = None
    category_id: UUID | None = None
    metadata: dict[str, str] | None = None
    pending: bool = False
    expires_at: datetime | None = None


class BatchRequest(RequestBody, frozen=True, kw_only=True):
    postings: list[PostingRequest]


class CaptureRequest(RequestBody, frozen=True, kw_only=True):
    """Post a pending posting; `amount` captures part of a two-entry hold."""

    amount: str | None = None


class ReverseRequest(RequestBody, frozen=True, kw_only=True):
    description: str | None = None
    effective_date: date | None = None


class RegisterAssetRequest(RequestBody, frozen=True, kw_only=True):
    code: str
    exponent: int
    name: str = ""


class IssueTokenRequest(RequestBody, frozen=True, kw_only=True):
    role: Role
    spaces: list[UUID] = []


# Responses ---------------------------------------------------------------------------------------


class Space(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    name: str
    base_currency: str
    recorded_at: datetime


class Balances(msgspec.Struct, frozen=True, kw_only=True):
    posted: str
    pending_debits: str
    pending_credits: str
    available: str


class Account(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    space_id: UUID
    name: str
    type: AccountType
    subtype: AccountSubtype
    currency: str
    code: str | None
    overdraft_limit: str | None
    metadata: dict[str, str]
    status: AccountStatus
    normal_balance: Direction
    balances: Balances


class Entry(msgspec.Struct, frozen=True, kw_only=True):
    account_id: UUID
    direction: Direction
    amount: str
    currency: str


class Posting(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    space_id: UUID
    status: PostingStatus
    entries: list[Entry]
    description: str
    effective_date: date
    merchant: str | None
    category_id: UUID | None
    metadata: dict[str, str]
    pending: bool
    expires_at: datetime | None
    recorded_at: datetime
    reverses: UUID | None
    reversed_by: UUID | None
    declined_reason: str | None


class Batch(msgspec.Struct, frozen=True, kw_only=True):
    postings: list[Posting]


class Asset(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    exponent: int
    name: str


class AssetList(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Asset]


class IssuedToken(msgspec.Struct, frozen=True, kw_only=True):
    """A new token: `token` is shown here once; the ledger keeps only its hash."""

    id: UUID
    token: str
    role: Role
    spaces: list[UUID]


class AccountPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Account]
    next_cursor: str | None


class PostingPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[Posting]
    next_cursor: str | None


class EntryLine(msgspec.Struct, frozen=True, kw_only=True):
    posting_id: UUID
    account_id: UUID
    direction: Direction
    amount: str
    currency: str
    effective_date: date
    recorded_at: datetime
    position: int
    balance_after: str


class EntryPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[EntryLine]
    next_cursor: str | None


class BalanceAsOf(msgspec.Struct, frozen=True, kw_only=True):
    account_id: UUID
    as_of: date
    currency: str
    posted: str


class TrialBalanceRow(msgspec.Struct, frozen=True, kw_only=True):
    account_id: UUID
    code: str | None
    name: str
    type: AccountType
    currency: str
    debit: str
    credit: str


class TrialBalanceTotal(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    debit: str
    credit: str


class TrialBalance(msgspec.Struct, frozen=True, kw_only=True):
    as_of: date
    rows: list[TrialBalanceRow]
    totals: list[TrialBalanceTotal]


class LogEvent(msgspec.Struct, frozen=True, kw_only=True):
    position: int
    space_id: UUID | None
    type: str
    recorded_at: datetime | None
    data: dict[str, Any]


class EventPage(msgspec.Struct, frozen=True, kw_only=True):
    items: list[LogEvent]
    next_cursor: str | None


class Problem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """RFC 9457 problem details, plus the stable `code` and a refusal's extra fields."""

    type: str
    title: str
    status: int
    detail: str
    code: str
    index: int | None = None
    item_code: str | None = None
    posting_id: UUID | None = None


class Health(msgspec.Struct, frozen=True, kw_only=True):
    status: str


class FailedProjection(msgspec.Struct, frozen=True, kw_only=True):
    """A projection stopped on an event it could not apply: it resumes there once fixed."""

    name: str
    position: int
    topic: str
    #: Why, as the projection's error said it: only to an admin token (the message may quote
    #: stored rows, and /ready needs no token); `ledger status` and the log say it too.
    reason: str | None


class Readiness(msgspec.Struct, frozen=True, kw_only=True):
    status: Literal["ready", "unavailable"]
    database: bool
    applied_position: int | None
    log_position: int | None
    projection_lag: int | None
    failed_projections: list[FailedProjection] = []


# Decoding ----------------------------------------------------------------------------------------

#: Request fields that hold amounts: a JSON number there is `invalid-amount`, not a shape error.
AMOUNT_FIELDS = frozenset({"amount", "overdraft_limit"})
_ERROR_PATH = re.compile(r" - at `(?P<path>[^`]*)`$")
#: An entry's account id in a posting (`$.entries[0].account_id`) or a batch item
#: (`$.postings[3].entries[0].account_id`).
_ENTRY_ACCOUNT_PATH = re.compile(r"\$(?:\.postings\[(?P<index>\d+)\])?\.entries\[\d+\]\.account_id")
_NUMBER_GIVEN = re.compile(r"^(Expected `[^`]*`, got `(int|float)`|Number out of range)")


@functools.cache
def _decoder(request_type: type[RequestBody]) -> msgspec.json.Decoder[Any]:
    return msgspec.json.Decoder(request_type)


def decode_request(body: bytes, request_type: type[RequestBody]) -> RequestBody:
    """Decode a request body, or raise what is wrong with it: 400 `malformed-request` if it is
    not JSON, 422 `invalid-amount` for a number where an amount goes, 422 `invalid-request` for
    anything else of the wrong shape. Where the command needs no field (`POST .../freeze`), no
    body, an empty one or JSON `null` (as the OpenAPI document allows there) stands for `{}`;
    where it needs one, an empty body is not JSON: 400, not stored, so the client can send the
    body with the same key."""
    stripped = body.strip()
    if not stripped or stripped == b"null":
        empty = _empty_body(request_type)
        if empty is not None:
            return empty
        if not stripped:
            raise errors.MalformedRequest("the body is empty; this command needs a JSON object")
    try:
        decoded: RequestBody = _decoder(request_type).decode(body)
    except msgspec.ValidationError as error:
        raise classify_validation_error(str(error)) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as error:
        raise errors.MalformedRequest(f"the body is not valid JSON (UTF-8): {error}") from None
    return decoded


@functools.cache
def _empty_body(request_type: type[RequestBody]) -> RequestBody | None:
    """What `{}` decodes to, or None if the command needs a field."""
    try:
        empty: RequestBody = _decoder(request_type).decode(b"{}")
    except msgspec.ValidationError:
        return None
    return empty


def classify_validation_error(message: str) -> errors.LedgerError:
    match = _ERROR_PATH.search(message)
    path = match.group("path") if match else ""
    field = path.rsplit(".", 1)[-1]
    entry = _ENTRY_ACCOUNT_PATH.fullmatch(path)
    if entry is not None and message.startswith("Invalid UUID"):
        # API.md: an entry naming an unknown account is 404 `account-not-found`, like a
        # malformed id in a path (not stored: the client fixes the id, retries with the key).
        extra = {} if entry.group("index") is None else {"index": int(entry.group("index"))}
        return errors.AccountNotFound("an entry names an account id that is not a UUID", **extra)
    if field in AMOUNT_FIELDS and _NUMBER_GIVEN.match(message):
        return errors.InvalidAmount(
            f'{path.removeprefix("$.")} is a decimal string such as "12.50", not a JSON number'
        )
    return errors.InvalidRequest(message.replace("`$.", "`").replace("`$`", "the body"))
