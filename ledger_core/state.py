"""The in-memory state of one space, built only by applying its events.

A space is the consistency unit (DESIGN.md): its accounts with their balances, limits and
statuses, its open holds, and bounded caches of recent postings and idempotency keys. `apply()`
is the one way state changes, whether the writer just decided an event or a space is being loaded
from its snapshot and stream, so a reloaded space always equals the live one.

The writer applies a whole group-commit batch before it knows whether the append will succeed. If
the append fails (another process wrote to the space first, or the database failed), the writer
drops the space's state and reloads it from its snapshot and stream (DESIGN.md: reload and retry),
so no undo log is kept on the hot path. Everything held is bounded except accounts and open holds,
which are the space's real state.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from datetime import datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from ledger_core import events as ev
from ledger_core.limits import RECENT_KEYS_PER_SPACE
from ledger_core.records import AccountRecord, Balances, PostingRecord
from ledger_core.types import NORMAL_BALANCE, PostingStatus

#: How many recently recorded postings each space keeps in memory (status, posted entries,
#: reversal link), so reversing or capturing a fresh posting needs no database read.
RECENT_POSTINGS_PER_SPACE: Final = 20_000

_MISSING: Final = object()


class AccountState:
    """Mutable state of one account. Balances are integers in minor units: `posted` in the
    normal-balance direction; `pending_debits`/`pending_credits` the open holds' totals."""

    type: str
    subtype: str
    __slots__ = (
        "code",
        "currency",
        "id",
        "metadata",
        "name",
        "normal",
        "open_holds",
        "overdraft_limit",
        "pending_credits",
        "pending_debits",
        "posted",
        "status",
        "subtype",
        "type",
    )

    def __init__(self, opened: ev.AccountOpened) -> None:
        self.id = opened.account_id
        self.name = opened.name
        self.type = opened.type
        self.subtype = opened.subtype
        self.currency = opened.currency
        self.code = opened.code
        self.overdraft_limit = opened.overdraft_limit_minor
        self.metadata = dict(opened.metadata)
        self.status = "active"
        self.normal = NORMAL_BALANCE[opened.type]
        self.posted = 0
        self.pending_debits = 0
        self.pending_credits = 0
        self.open_holds = 0

    def copy(self) -> AccountState:
        clone = AccountState.__new__(AccountState)
        for name in AccountState.__slots__:
            setattr(clone, name, getattr(self, name))
        clone.metadata = dict(self.metadata)
        return clone

    @property
    def available(self) -> int:
        """Posted minus the open holds' entries against the normal direction."""
        held = self.pending_credits if self.normal == "debit" else self.pending_debits
        return self.posted - held

    def record(self, space_id: UUID) -> AccountRecord:
        return AccountRecord(
            id=self.id,
            space_id=space_id,
            name=self.name,
            type=self.type,  # type: ignore[arg-type]
            subtype=self.subtype,  # type: ignore[arg-type]
            currency=self.currency,
            code=self.code,
            overdraft_limit_minor=self.overdraft_limit,
            metadata=dict(self.metadata),
            status=self.status,  # type: ignore[arg-type]
            normal_balance=self.normal,  # type: ignore[arg-type]
            balances=Balances(
                posted=self.posted,
                pending_debits=self.pending_debits,
                pending_credits=self.pending_credits,
                available=self.available,
            ),
        )


class PostingInfo(msgspec.Struct, gc=False):
    """What the writer needs to know of a posting no longer pending: its status, the event
    version holding its posted entries, and the reversal link."""

    status: str
    version: int
    entries: tuple[ev.EntryRecorded, ...]
    reversed_by: UUID | None = None


class SpaceState:
    """A space's accounts, open holds and bounded caches, at stream version `version`."""

    def __init__(self, space_id: UUID) -> None:
        self.space_id = space_id
        self.version = 0
        self.name = ""
        self.base_currency = ""
        self.opened_at: datetime | None = None
        self.accounts: dict[UUID, AccountState] = {}
        self.codes: dict[str, UUID] = {}
        #: Open holds: posting id -> (the PostingRecorded event, its stream version).
        self.holds: dict[UUID, tuple[ev.PostingRecorded, int]] = {}
        #: (expires_at, posting id) of open holds with an expiry; stale entries are skipped.
        self.expiries: list[tuple[datetime, UUID]] = []
        self.recent_postings: OrderedDict[UUID, PostingInfo] = OrderedDict()
        #: Recent idempotency keys: derived command id -> answer (kept by the writer).
        self.recent_keys: OrderedDict[UUID, Any] = OrderedDict()

    def remember_key(self, command_id: UUID, answer: Any) -> None:
        keys = self.recent_keys
        keys[command_id] = answer
        if len(keys) > RECENT_KEYS_PER_SPACE:
            keys.popitem(last=False)

    def remember_posting(self, posting_id: UUID, info: PostingInfo) -> None:
        postings = self.recent_postings
        postings[posting_id] = info
        if len(postings) > RECENT_POSTINGS_PER_SPACE:
            postings.popitem(last=False)

    # Holds due to expire -----------------------------------------------------------------------

    def due_holds(self, now: datetime) -> list[tuple[ev.PostingRecorded, int]]:
        """Open holds whose `expires_at` is at or before `now` (popped from the expiry heap)."""
        due: list[tuple[ev.PostingRecorded, int]] = []
        while self.expiries and self.expiries[0][0] <= now:
            item = heapq.heappop(self.expiries)
            hold = self.holds.get(item[1])
            if hold is not None and hold[0].expires_at == item[0]:
                due.append(hold)
        return due

    # Applying events ---------------------------------------------------------------------------

    def apply(self, event: ev.Event) -> None:
        """Apply the next event of the stream (version + 1)."""
        self.version += 1
        handler = _HANDLERS[type(event)]
        handler(self, event)

    def _space_opened(self, event: ev.SpaceOpened) -> None:
        self.name = event.name
        self.base_currency = event.base_currency
        self.opened_at = event.recorded_at

    def _account_opened(self, event: ev.AccountOpened) -> None:
        self.accounts[event.account_id] = AccountState(event)
        if event.code is not None:
            self.codes[event.code] = event.account_id

    def _account_updated(self, event: ev.AccountUpdated) -> None:
        account = self.accounts[event.account_id]
        if event.name is not msgspec.UNSET:
            account.name = event.name
        if event.overdraft_limit_minor is not msgspec.UNSET:
            account.overdraft_limit = event.overdraft_limit_minor
        if event.metadata is not msgspec.UNSET:
            account.metadata = dict(event.metadata)

    def _account_frozen(self, event: ev.AccountFrozen) -> None:
        self.accounts[event.account_id].status = "frozen"

    def _account_unfrozen(self, event: ev.AccountUnfrozen) -> None:
        self.accounts[event.account_id].status = "active"

    def _account_closed(self, event: ev.AccountClosed) -> None:
        self.accounts[event.account_id].status = "closed"

    def _posting_recorded(self, event: ev.PostingRecorded) -> None:
        if event.pending:
            self._hold_entries(event.entries, +1)
            self.holds[event.posting_id] = (event, self.version)
            if event.expires_at is not None:
                heapq.heappush(self.expiries, (event.expires_at, event.posting_id))
        else:
            self._post_entries(event.entries)
            self.remember_posting(
                event.posting_id, PostingInfo("posted", self.version, event.entries)
            )
        if event.reverses is not None:
            self._mark_reversed(event.reverses, event.posting_id)

    def _mark_reversed(self, original_id: UUID, reversal_id: UUID) -> None:
        info = self.recent_postings.get(original_id)
        if info is not None:
            self.remember_posting(
                original_id, PostingInfo(info.status, info.version, info.entries, reversal_id)
            )

    def _posting_declined(self, event: ev.PostingDeclined) -> None:
        del event  # a declined posting changes no balance

    def _pending_posted(self, event: ev.PendingPostingPosted) -> None:
        hold, _ = self._close_hold(event.posting_id)
        self._post_entries(event.entries)
        self.remember_posting(event.posting_id, PostingInfo("posted", self.version, event.entries))
        del hold

    def _pending_voided(self, event: ev.PendingPostingVoided) -> None:
        hold, version = self._close_hold(event.posting_id)
        self.remember_posting(event.posting_id, PostingInfo("voided", version, hold.entries))

    def _pending_expired(self, event: ev.PendingPostingExpired) -> None:
        hold, version = self._close_hold(event.posting_id)
        self.remember_posting(event.posting_id, PostingInfo("expired", version, hold.entries))

    def _close_hold(self, posting_id: UUID) -> tuple[ev.PostingRecorded, int]:
        hold = self.holds.pop(posting_id)
        self._hold_entries(hold[0].entries, -1)
        return hold

    def _post_entries(self, entries: tuple[ev.EntryRecorded, ...]) -> None:
        accounts = self.accounts
        for entry in entries:
            account = accounts[entry.account_id]
            if entry.direction == account.normal:
                account.posted += entry.amount_minor
            else:
                account.posted -= entry.amount_minor

    def _hold_entries(self, entries: tuple[ev.EntryRecorded, ...], sign: int) -> None:
        accounts = self.accounts
        for entry in entries:
            account = accounts[entry.account_id]
            if entry.direction == "debit":
                account.pending_debits += sign * entry.amount_minor
            else:
                account.pending_credits += sign * entry.amount_minor
            account.open_holds += sign

    # Reading -----------------------------------------------------------------------------------

    def posting_record(
        self,
        event: ev.PostingRecorded | ev.PostingDeclined,
        status: PostingStatus,
        entries: tuple[ev.EntryRecorded, ...] | None = None,
        reversed_by: UUID | None = None,
    ) -> PostingRecord:
        return posting_record(self.space_id, event, status, entries, reversed_by)


def posting_record(
    space_id: UUID,
    event: ev.PostingRecorded | ev.PostingDeclined,
    status: PostingStatus,
    entries: tuple[ev.EntryRecorded, ...] | None = None,
    reversed_by: UUID | None = None,
) -> PostingRecord:
    """The answer for a posting: its request fields, status and links."""
    return PostingRecord(
        id=event.posting_id,
        space_id=space_id,
        status=status,
        entries=entries if entries is not None else event.entries,
        description=event.description,
        effective_date=event.effective_date,
        merchant=event.merchant,
        category_id=event.category_id,
        metadata=dict(event.metadata),
        pending=event.pending,
        expires_at=event.expires_at,
        recorded_at=event.recorded_at,
        reverses=event.reverses,
        reversed_by=reversed_by,
        declined_reason=event.reason if isinstance(event, ev.PostingDeclined) else None,
    )


_HANDLERS: Final[dict[type[ev.Event], Any]] = {
    ev.SpaceOpened: SpaceState._space_opened,
    ev.AccountOpened: SpaceState._account_opened,
    ev.AccountUpdated: SpaceState._account_updated,
    ev.AccountFrozen: SpaceState._account_frozen,
    ev.AccountUnfrozen: SpaceState._account_unfrozen,
    ev.AccountClosed: SpaceState._account_closed,
    ev.PostingRecorded: SpaceState._posting_recorded,
    ev.PostingDeclined: SpaceState._posting_declined,
    ev.PendingPostingPosted: SpaceState._pending_posted,
    ev.PendingPostingVoided: SpaceState._pending_voided,
    ev.PendingPostingExpired: SpaceState._pending_expired,
}


# Snapshots ---------------------------------------------------------------------------------------


class AccountSnapshot(msgspec.Struct, array_like=True):
    id: UUID
    name: str
    type: str
    subtype: str
    currency: str
    code: str | None
    overdraft_limit: int | None
    metadata: dict[str, str]
    status: str
    posted: int
    pending_debits: int
    pending_credits: int
    open_holds: int


class HoldSnapshot(msgspec.Struct, array_like=True):
    event: ev.PostingRecorded
    version: int


class SpaceSnapshot(msgspec.Struct):
    """A space's state at `version` (not the bounded caches: they refill from the store)."""

    space_id: UUID
    version: int
    name: str
    base_currency: str
    opened_at: datetime | None
    accounts: list[AccountSnapshot]
    holds: list[HoldSnapshot]
    schema_version: int = 1


SNAPSHOT_TOPIC: Final = "SpaceSnapshot/v1"
_snapshot_encoder = msgspec.msgpack.Encoder()
_snapshot_decoder = msgspec.msgpack.Decoder(SpaceSnapshot)


def encode_snapshot(state: SpaceState) -> bytes:
    snapshot = SpaceSnapshot(
        space_id=state.space_id,
        version=state.version,
        name=state.name,
        base_currency=state.base_currency,
        opened_at=state.opened_at,
        accounts=[
            AccountSnapshot(
                a.id,
                a.name,
                a.type,
                a.subtype,
                a.currency,
                a.code,
                a.overdraft_limit,
                a.metadata,
                a.status,
                a.posted,
                a.pending_debits,
                a.pending_credits,
                a.open_holds,
            )
            for a in state.accounts.values()
        ],
        holds=[HoldSnapshot(event, version) for event, version in state.holds.values()],
    )
    return _snapshot_encoder.encode(snapshot)


def decode_snapshot(data: bytes) -> SpaceState:
    snapshot = _snapshot_decoder.decode(data)
    state = SpaceState(snapshot.space_id)
    state.version = snapshot.version
    state.name = snapshot.name
    state.base_currency = snapshot.base_currency
    state.opened_at = snapshot.opened_at
    for saved in snapshot.accounts:
        account = AccountState.__new__(AccountState)
        account.id, account.name, account.type = saved.id, saved.name, saved.type
        account.subtype, account.currency, account.code = saved.subtype, saved.currency, saved.code
        account.overdraft_limit, account.metadata = saved.overdraft_limit, saved.metadata
        account.status, account.normal = saved.status, NORMAL_BALANCE[saved.type]
        account.posted, account.pending_debits = saved.posted, saved.pending_debits
        account.pending_credits, account.open_holds = saved.pending_credits, saved.open_holds
        state.accounts[account.id] = account
        if account.code is not None:
            state.codes[account.code] = account.id
    for hold in snapshot.holds:
        state.holds[hold.event.posting_id] = (hold.event, hold.version)
        if hold.event.expires_at is not None:
            state.expiries.append((hold.event.expires_at, hold.event.posting_id))
    heapq.heapify(state.expiries)
    return state


def state_fingerprint(state: SpaceState) -> Any:
    """Everything of a space's state that must survive a reload (for tests and `verify`)."""
    return (
        state.version,
        state.name,
        state.base_currency,
        sorted(
            (
                a.id,
                a.name,
                a.type,
                a.subtype,
                a.currency,
                a.code,
                a.overdraft_limit,
                tuple(sorted(a.metadata.items())),
                a.status,
                a.posted,
                a.pending_debits,
                a.pending_credits,
                a.open_holds,
            )
            for a in state.accounts.values()
        ),
        sorted((posting_id, version) for posting_id, (_, version) in state.holds.items()),
    )
