"""What the read models answer: frozen msgspec Structs, amounts in integer minor units plus the
currency (the HTTP layer renders them with the currency's exponent).

Field names follow `ledger_core.records` where the same thing is described (an `AccountView` has
the fields of an `AccountRecord`, a `PostingView` those of a `PostingRecord`), so one renderer
can serve a command's answer and a read alike.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

import msgspec

from ledger_core.types import (
    AccountStatus,
    AccountSubtype,
    AccountType,
    Direction,
    PostingStatus,
)

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], frozen=True, kw_only=True):
    """One page of a list, in log order; `next_cursor` None on the last page."""

    items: list[T]
    next_cursor: str | None = None


class SpaceView(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    name: str
    base_currency: str
    recorded_at: datetime


class BalancesView(msgspec.Struct, frozen=True, kw_only=True):
    """In the account's normal-balance direction (API.md)."""

    posted: int
    pending_debits: int
    pending_credits: int
    available: int


class AccountView(msgspec.Struct, frozen=True, kw_only=True):
    id: UUID
    space_id: UUID
    name: str
    type: AccountType
    subtype: AccountSubtype
    currency: str
    code: str | None
    overdraft_limit_minor: int | None
    metadata: dict[str, str]
    status: AccountStatus
    normal_balance: Direction
    balances: BalancesView
    position: int


class BalanceAsOfView(msgspec.Struct, frozen=True, kw_only=True):
    """The posted balance at the end of `as_of`: every posted posting with that effective date
    or earlier, whenever it was recorded."""

    account_id: UUID
    as_of: date
    currency: str
    posted: int


class EntryView(msgspec.Struct, frozen=True, kw_only=True):
    """One posted leg on an account; `balance_after` is the posted balance after it, in log
    order."""

    posting_id: UUID
    account_id: UUID
    direction: Direction
    amount_minor: int
    currency: str
    effective_date: date
    recorded_at: datetime
    position: int
    balance_after: int


class PostingLegView(msgspec.Struct, frozen=True, kw_only=True):
    account_id: UUID
    direction: Direction
    amount_minor: int
    currency: str


class PostingView(msgspec.Struct, frozen=True, kw_only=True):
    """A posting as API.md shows it. `status` reads `expired` for a hold past its `expires_at`
    even before the ledger records the expiry. `entries` of a captured hold are what was
    posted."""

    id: UUID
    space_id: UUID
    status: PostingStatus
    entries: tuple[PostingLegView, ...]
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
    position: int


class TrialBalanceRow(msgspec.Struct, frozen=True, kw_only=True):
    """An account's net posted balance as of the date, in its debit or its credit column."""

    account_id: UUID
    code: str | None
    name: str
    type: AccountType
    currency: str
    debit_minor: int
    credit_minor: int


class TrialBalanceTotal(msgspec.Struct, frozen=True, kw_only=True):
    currency: str
    debit_minor: int
    credit_minor: int


class TrialBalanceView(msgspec.Struct, frozen=True, kw_only=True):
    as_of: date
    rows: list[TrialBalanceRow]
    totals: list[TrialBalanceTotal]


class EventView(msgspec.Struct, frozen=True, kw_only=True):
    """One event of the log. `space_id` is None for global events (assets, tokens)."""

    position: int
    space_id: UUID | None
    type: str
    recorded_at: datetime
    data: dict[str, Any]
