"""The ledger's domain events: what happened, in the past tense, frozen.

One event stream per space (originator id = space id); registered assets and API tokens share
the global stream (`GLOBAL_STREAM_ID`). Every event is a frozen msgspec Struct encoded as JSON in
the store. The stored topic is `<EventName>/v<schema version>`; a struct's `schema_version` class
variable says its current version, and `UPCASTERS` turns an older stored payload into the current
shape, one version step at a time (see `ledger_core.codec`). Amounts are integer minor units.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any, ClassVar, Final, Literal
from uuid import UUID

import msgspec

from ledger_core.types import AccountSubtype, AccountType, CommandContext, Entry

#: The stream of global events: registered assets and API tokens (they belong to no space).
GLOBAL_STREAM_ID: Final = UUID("00000000-0000-0000-0000-00000000a55e")


class Event(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Base of every event: when it was recorded, the idempotency key of the command that caused
    it (None for events the ledger records by itself, such as an expiry) and who sent it."""

    schema_version: ClassVar[int] = 1
    recorded_at: datetime
    idempotency_key: str | None = None
    context: CommandContext | None = None


#: One leg of a posting as recorded: [account_id, direction, amount_minor, currency].
EntryRecorded = Entry


class SpaceOpened(Event, frozen=True, kw_only=True):
    space_id: UUID
    name: str
    base_currency: str


class AssetRegistered(Event, frozen=True, kw_only=True):
    code: str
    exponent: int
    name: str = ""


class TokenIssued(Event, frozen=True, kw_only=True):
    """An API token: only its SHA-256 hash is ever recorded."""

    token_id: UUID
    token_hash: str
    role: Literal["admin", "write", "read"]
    spaces: tuple[UUID, ...] = ()


class TokenRevoked(Event, frozen=True, kw_only=True):
    token_id: UUID


class AccountOpened(Event, frozen=True, kw_only=True):
    account_id: UUID
    name: str
    type: AccountType
    subtype: AccountSubtype
    currency: str
    code: str | None = None
    overdraft_limit_minor: int | None = None
    metadata: dict[str, str] = {}


class AccountUpdated(Event, frozen=True, kw_only=True):
    """Only the fields present changed. `overdraft_limit_minor` None removes the limit."""

    account_id: UUID
    name: str | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit_minor: int | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class AccountFrozen(Event, frozen=True, kw_only=True):
    account_id: UUID
    reason: str | None = None


class AccountUnfrozen(Event, frozen=True, kw_only=True):
    account_id: UUID
    reason: str | None = None


class AccountClosed(Event, frozen=True, kw_only=True):
    account_id: UUID
    reason: str | None = None


class PostingRecorded(Event, frozen=True, kw_only=True):
    """A balanced posting. `pending` True makes it a hold until posted, voided or expired.
    `reverses` links a reversal to the posting it mirrors. `batch_index` is its place in a batch
    (None outside a batch)."""

    posting_id: UUID
    entries: tuple[EntryRecorded, ...]
    effective_date: date
    description: str = ""
    merchant: str | None = None
    category_id: UUID | None = None
    metadata: dict[str, str] = {}
    pending: bool = False
    expires_at: datetime | None = None
    reverses: UUID | None = None
    batch_index: int | None = None


class PostingDeclined(Event, frozen=True, kw_only=True):
    """A posting refused for the state of an account, recorded with its reason code so a retry
    gives the same answer and the audit view shows the attempt. Changes no balance."""

    posting_id: UUID
    entries: tuple[EntryRecorded, ...]
    effective_date: date
    reason: str
    detail: str = ""
    description: str = ""
    merchant: str | None = None
    category_id: UUID | None = None
    metadata: dict[str, str] = {}
    pending: bool = False
    expires_at: datetime | None = None
    reverses: UUID | None = None


class PendingPostingPosted(Event, frozen=True, kw_only=True):
    """A hold posted: `entries` are what was posted (all of the hold, or a partial capture); the
    rest of the hold is released."""

    posting_id: UUID
    entries: tuple[EntryRecorded, ...]


class PendingPostingVoided(Event, frozen=True, kw_only=True):
    posting_id: UUID
    reason: str | None = None


class PendingPostingExpired(Event, frozen=True, kw_only=True):
    """A hold reached its `expires_at` unposted; recorded by the ledger itself."""

    posting_id: UUID
    expires_at: datetime


SPACE_EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    SpaceOpened,
    AccountOpened,
    AccountUpdated,
    AccountFrozen,
    AccountUnfrozen,
    AccountClosed,
    PostingRecorded,
    PostingDeclined,
    PendingPostingPosted,
    PendingPostingVoided,
    PendingPostingExpired,
)
GLOBAL_EVENT_TYPES: Final[tuple[type[Event], ...]] = (AssetRegistered, TokenIssued, TokenRevoked)
EVENT_TYPES: Final[dict[str, type[Event]]] = {
    cls.__name__: cls for cls in (*SPACE_EVENT_TYPES, *GLOBAL_EVENT_TYPES)
}

#: Upcasters: (event name, from version) -> function turning a payload of that version into the
#: next version's payload, in place. Add one whenever an event's schema_version is raised.
UPCASTERS: Final[dict[tuple[str, int], Callable[[dict[str, Any]], None]]] = {}


def event_topic(event_type: type[Event]) -> str:
    """The stored topic of an event type at its current schema version."""
    return f"{event_type.__name__}/v{event_type.schema_version}"
