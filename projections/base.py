"""The projection contract: a named set of read tables built only from the event log.

A projection applies a batch of events, in log order, through one database cursor; the runner
commits its updates together with the projection's position in `ledger_projections` (one
transaction: exactly-once). A projection may read and write only its own tables, so each one can
be rebuilt alone, and it keeps no state between batches except what is in those tables (memory
stays flat however long the log).

Statements name tables as `{rm_accounts}`; `Projection(database, suffix)` binds them to the live
tables (suffix "") or to a replay's fresh tables (suffix "__replay").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final
from uuid import UUID

import msgspec

from ledger_core.codec import decode_event, event_to_builtins
from ledger_core.crypto import CLEAR, Cipher, EncryptionKeyError
from ledger_core.events import GLOBAL_STREAM_ID, Event
from ledger_core.store import EVENTS_TABLE
from projections.db import Cursor, Database
from projections.feed import LightEvent, decode_light
from projections.views import EventView

#: The table of per-projection positions (created by migration m0002).
TRACKING_TABLE: Final = "ledger_projections"


@dataclass(frozen=True, slots=True)
class StoredRow:
    """An event row as stored: position, stream, stream version, topic and state bytes."""

    position: int
    stream_id: UUID
    version: int
    topic: str
    state: bytes


#: An event row as the projections read it: (position, stream id as canonical UUID text, topic,
#: state). A plain tuple, as the driver returns it: a batch has tens of thousands of rows, and
#: building a named tuple per row cost about 250 ns each (about 2% of a replay's CPU, counting the
#: collector's work on them).
FeedRow = tuple[int, str, str, bytes]


class LoggedEvent(msgspec.Struct, frozen=True, gc=False):
    """An event's light view (`projections.feed`, None for a global event) with where it sits
    in the log; the stream id is the space id as canonical UUID text. A struct outside the
    cyclic collector's sight (`gc=False`: it holds strings and untracked structs only), built in
    a quarter of a named tuple's time."""

    position: int
    stream_id: str
    topic: str
    event: Any


class EventDecodeFailed(Exception):
    """A stored event could not be decoded (unknown topic, corrupt state)."""

    def __init__(self, position: int, topic: str, reason: str) -> None:
        super().__init__(f"event at position {position} ({topic}): {reason}")
        self.position = position
        self.topic = topic
        self.reason = reason


def _select_events(
    database: Database,
    cursor: Cursor,
    columns: tuple[str, str],
    after: int,
    limit: int,
    until: int | None,
) -> list[Any]:
    """Rows of `columns` (PostgreSQL's, SQLite's) of up to `limit` events with `after` <
    position <= `until`, in position order. On PostgreSQL the upper bound is sent only when
    there is one: with `<= 2^63-1` and no statistics yet (a log just loaded), the planner
    estimated a few rows, chose a bitmap scan and sorted everything after `after` for every
    batch (quadratic in the log's length). Rows come in binary (bytea as bytes, not hex)."""
    if database.is_postgres:
        bound, bound_params = (
            ("", ()) if until is None else (" AND notification_id <= %s", (until,))
        )
        cursor.execute(
            f"SELECT notification_id, {columns[0]} FROM {EVENTS_TABLE} "
            f"WHERE notification_id > %s{bound} ORDER BY notification_id LIMIT %s",
            (after, *bound_params, limit),
            binary=True,
        )  # type: ignore[call-arg]
    else:
        cursor.execute(
            f"SELECT rowid, {columns[1]} FROM {EVENTS_TABLE} "
            "WHERE rowid > ? AND rowid <= ? ORDER BY rowid LIMIT ?",
            (after, until if until is not None else 2**63 - 1, limit),
        )
    return cursor.fetchall()


def read_rows(
    database: Database, cursor: Cursor, after: int, limit: int, until: int | None = None
) -> list[StoredRow]:
    """Up to `limit` event rows with `after` < position <= `until`, in position order."""
    columns = "originator_id, originator_version, topic, state"
    rows = _select_events(database, cursor, (columns, columns), after, limit, until)
    if database.is_postgres:
        return [StoredRow(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]
    return [StoredRow(r[0], UUID(r[1]), r[2], r[3], bytes(r[4])) for r in rows]


def head_position(database: Database, cursor: Cursor) -> int:
    """The position of the last event in the log (0 if empty)."""
    column = "notification_id" if database.is_postgres else "rowid"
    cursor.execute(f"SELECT max({column}) FROM {EVENTS_TABLE}")
    row = cursor.fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def read_feed_rows(
    database: Database, cursor: Cursor, after: int, limit: int, until: int | None = None
) -> list[FeedRow]:
    """Like `read_rows`, for the projections: the stream id as canonical UUID text."""
    columns = ("originator_id::text, topic, state", "originator_id, topic, state")
    rows = _select_events(database, cursor, columns, after, limit, until)
    if database.is_postgres:
        return rows  # already (position, stream id text, topic, state)
    streams: dict[str, str] = {}
    found = []
    for position, stored_id, topic, state in rows:
        stream_id = streams.get(stored_id)
        if stream_id is None:
            stream_id = streams[stored_id] = str(UUID(stored_id))
        found.append((position, stream_id, topic, state))
    return found


def decode_row(row: FeedRow) -> LoggedEvent:
    """The light view of a feed row's event."""
    position, stream_id, topic, state = row
    try:
        event: LightEvent | None = decode_light(topic, state)
    except Exception as error:  # any decoding failure is this event's failure
        raise EventDecodeFailed(position, topic, f"{type(error).__name__}: {error}") from error
    return LoggedEvent(position, stream_id, topic, event)


def decode_stored(row: StoredRow) -> Event:
    """The full event of a stored row (the audit's view: every field, typed)."""
    try:
        return decode_event(row.topic, row.state)
    except Exception as error:  # any decoding failure is this event's failure
        raise EventDecodeFailed(
            row.position, row.topic, f"{type(error).__name__}: {error}"
        ) from error


def event_view(row: StoredRow, cipher: Cipher = CLEAR) -> EventView:
    """A stored event as the log's readers see it (`GET /v1/events`, `ledger export`): its
    position, space, type, time and every field, sealed text opened with `cipher`."""
    try:
        event = decode_event(row.topic, row.state, cipher)
    except EncryptionKeyError:
        raise  # the key, not the event: answered as such (503 unavailable, exit status 4)
    except Exception as error:  # any other decoding failure is this event's failure
        raise EventDecodeFailed(
            row.position, row.topic, f"{type(error).__name__}: {error}"
        ) from error
    return EventView(
        position=row.position,
        space_id=None if row.stream_id == GLOBAL_STREAM_ID else row.stream_id,
        type=type(event).__name__,
        recorded_at=event.recorded_at,
        data=event_to_builtins(event),
    )


#: Writes a prepared batch's changes through the cursor of the write transaction.
Writer = Callable[[Cursor], None]


class Projection:
    """Base of every projection: a name, its tables (in dependency order for dumps), and
    `apply(cursor, events)`."""

    name: ClassVar[str]
    #: The projection's tables and, for each, the columns of its primary key (dump order).
    tables: ClassVar[dict[str, tuple[str, ...]]]
    #: Tables the projection only ever inserts into (never reads or updates while applying):
    #: a rebuild on PostgreSQL loads their copies without indexes and builds the indexes at the
    #: end, in one sort each (measured 2-3x less database CPU than maintaining them row by row).
    deferred_index_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, database: Database, suffix: str = "") -> None:
        self.database = database
        self.dialect = database.dialect
        self.suffix = suffix
        self.table_names = {table: table + suffix for table in self.tables}
        #: The name of this instance's row in `ledger_projections`.
        self.tracking_name = self.name + suffix

    def statement(self, template: str) -> str:
        """`template` with its `{table}` names bound and placeholders in the dialect's style."""
        return self.dialect.sql(template.format(**self.table_names))

    def prepare(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> Writer:
        """Read what `events` need from the projection's tables and work out their changes;
        return the function that writes them. On SQLite the reading runs in a read
        transaction, before the write lock is taken (`projections.tracking`), so two builders
        or the command side wait for each other only while rows are written."""
        raise NotImplementedError

    def apply(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> None:
        """Prepare and write `events` through one cursor (one transaction)."""
        self.prepare(cursor, events)(cursor)
