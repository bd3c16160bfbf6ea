"""What commands answer: frozen records of spaces, accounts, postings and assets.

A record is the state at the moment the command was applied; it is stored with the command's
idempotency key, so a retry answers exactly the same record forever. Amounts are integer minor
units; the HTTP layer renders them with the currency's exponent.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

import msgspec

from ledger_core.types import (
    AccountStatus,
    AccountSubtype,
    AccountType,
    CommandContext,
    Direction,
    Entry,
    PostingStatus,
)


class SpaceRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="space", tag_field="record", gc=False
):
    id: UUID
    name: str
    base_currency: str
    recorded_at: datetime


class AssetRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="asset", tag_field="record", gc=False
):
    code: str
    exponent: int
    name: str = ""


class TokenRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="token", tag_field="record", gc=False
):
    id: UUID
    role: Literal["admin", "write", "read"]
    spaces: tuple[UUID, ...]
    token_hash: str
    revoked: bool = False


class Balances(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """In the account's normal-balance direction (API.md). `pending_debits`/`pending_credits`
    are the non-negative totals of open holds' entries; `available` is `posted` minus the open
    holds' entries against the normal direction."""

    posted: int = 0
    pending_debits: int = 0
    pending_credits: int = 0
    available: int = 0


class AccountRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="account", tag_field="record", gc=False
):
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
    balances: Balances


#: An entry of a posting's answer (the same value type the events record).
EntryRecord = Entry


class PostingRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="posting", tag_field="record", gc=False
):
    id: UUID
    space_id: UUID
    status: PostingStatus
    entries: tuple[EntryRecord, ...]
    description: str
    effective_date: date
    merchant: str | None
    category_id: UUID | None
    metadata: dict[str, str]
    pending: bool
    expires_at: datetime | None
    recorded_at: datetime
    reverses: UUID | None = None
    reversed_by: UUID | None = None
    declined_reason: str | None = None


class BatchRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="batch", tag_field="record", gc=False
):
    postings: tuple[PostingRecord, ...]


class BatchStored(
    msgspec.Struct, frozen=True, kw_only=True, tag="batch-events", tag_field="record", gc=False
):
    """How a recorded batch's answer is stored with its key: its postings are the events it
    recorded, at versions `first_version` to `first_version + count - 1` of its space's stream,
    each answered as it was recorded (posted, or pending for a hold). The writer rebuilds the
    `BatchRecord` from them when a retry finds the key in the store (`Writer._resolved`).

    The answer used to be stored whole: a second copy of what the events hold, about 400 bytes
    a posting (tens of kilobytes a batch, sealed, out of line in the database). Measured on the
    HTTP benchmark (batches of 100, PostgreSQL), writing that copy cost about 15% of the
    postings/s and doubled p99. Answers stored whole before still decode (`BatchRecord`)."""

    first_version: int
    count: int


class PostingStored(
    msgspec.Struct, frozen=True, kw_only=True, tag="posting-event", tag_field="record", gc=False
):
    """How a recorded posting's answer (a `RecordPosting` that was not declined) is stored with
    its key: the version of its event in its space's stream, answered as it was recorded
    (posted, or pending for a hold), as `BatchStored` does for each posting of a batch. Measured
    on the HTTP benchmark (single postings, PostgreSQL, about 104,000 in 10 s): the commands
    table 31 MB against 83 MB with the answer stored whole (about 300 bytes a posting against
    800), the same postings/s within noise."""

    version: int


class RefusalRecord(
    msgspec.Struct, frozen=True, kw_only=True, tag="refusal", tag_field="record", gc=False
):
    """A stored refusal: its code, detail and extra problem fields, and who sent the command
    from where (`context`: kept with the key for the audit view, as events keep theirs; never
    part of the answer, so a replay from another request answers the same)."""

    code: str
    detail: str
    extra: dict[str, Any] = {}
    posting: PostingRecord | None = None
    context: CommandContext | None = None


Outcome = (
    SpaceRecord
    | AssetRecord
    | TokenRecord
    | AccountRecord
    | PostingRecord
    | BatchRecord
    | RefusalRecord
)

#: What `ledger_commands.outcome` holds: an answer, or for a batch where to find it in the log.
StoredOutcome = Outcome | BatchStored | PostingStored


class CommandResult(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """The answer to a command that succeeded. `position` is the log position that made it true
    (None if it recorded nothing); `replayed` is True for the stored answer to a retry."""

    outcome: SpaceRecord | AssetRecord | TokenRecord | AccountRecord | PostingRecord | BatchRecord
    position: int | None
    replayed: bool = False
