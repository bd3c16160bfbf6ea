"""Exactly-once application of the log to a projection.

`apply_next_batch` reads the next events after the projection's tracked position, applies them
and moves the position, with the read tables' updates and the new position in ONE database
transaction: a crash at any instant leaves either the whole batch applied and tracked, or none of
it. The events are read and decoded before the write transaction opens (they are immutable), so
SQLite's single write lock is held only while the batch is written; inside the transaction the
tracked position is read again (PostgreSQL: `FOR UPDATE`) and the batch is dropped if another
projector moved it meanwhile, so two projectors of one projection never double an event.

A batch that fails is retried one event at a time to find the event that fails: the events
before it are committed, and the failure (position, topic, reason) is recorded on the tracking
row and raised. The projection never skips it: the next run starts again at that event.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from projections.base import (
    TRACKING_TABLE,
    EventDecodeFailed,
    LoggedEvent,
    Projection,
    Writer,
    decode_row,
    read_feed_rows,
)
from projections.db import Cursor, Database, is_transient

#: Events applied per transaction: large enough that per-transaction costs (commit, fsync,
#: statement set-up) are spread thin, small enough that SQLite's write lock is held for tens of
#: milliseconds and a batch's working set stays small.
DEFAULT_BATCH_EVENTS: Final = 2000
#: The largest batch a caller may ask for.
MAX_BATCH_EVENTS: Final = 20_000


@dataclass(frozen=True)
class ProjectionFailure:
    """The event a projection could not apply, and why. It stops there until fixed."""

    projection: str
    position: int
    topic: str
    reason: str

    def __str__(self) -> str:
        return (
            f"projection {self.projection!r} failed on the event at position {self.position} "
            f"({self.topic}): {self.reason}"
        )


class ProjectionFailed(Exception):
    def __init__(self, failure: ProjectionFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """No cyclic garbage collection while a batch is decoded and applied: a batch makes tens
    of thousands of short-lived tuples and lists (no cycles), and the collector ran ~1,900
    times per 100k events, 20% of the projections' Python time. It runs when the batch is done.
    Process-wide; nested use (threads, re-entry) is counted so the last one out re-enables."""
    with _gc_lock:
        global _gc_pauses
        if _gc_pauses == 0:
            _gc_was_enabled[0] = gc.isenabled()
            gc.disable()
        _gc_pauses += 1
    try:
        yield
    finally:
        with _gc_lock:
            _gc_pauses -= 1
            if _gc_pauses == 0 and _gc_was_enabled[0]:
                gc.enable()


def _release(rows: list[Any], events: list[LoggedEvent]) -> None:
    """Free an applied batch's rows and events while the collector is still paused. Re-enabled
    with them alive, its first run walked every row tuple of the batch: about 4% of a replay's
    CPU, measured on PostgreSQL at 1M events."""
    rows.clear()
    events.clear()


_gc_lock = threading.Lock()
_gc_pauses = 0
_gc_was_enabled = [True]


def tracked_position(database: Database, cursor: Cursor, name: str, *, lock: bool) -> int | None:
    """The position recorded for `name` (None if it has no tracking row)."""
    suffix = " FOR UPDATE" if lock and database.is_postgres else ""
    database.execute(
        cursor, f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?{suffix}", (name,)
    )
    row = cursor.fetchone()
    return int(row[0]) if row else None


def ensure_tracking_row(database: Database, connection: Any, name: str) -> None:
    with database.transaction(connection) as cursor:
        if tracked_position(database, cursor, name, lock=False) is None:
            database.execute(
                cursor, f"INSERT INTO {TRACKING_TABLE} (name, position) VALUES (?, 0)", (name,)
            )


def _decode(projection: Projection, rows: list[Any]) -> list[LoggedEvent]:
    try:
        return [decode_row(row) for row in rows]
    except EventDecodeFailed as error:
        raise ProjectionFailed(
            ProjectionFailure(projection.name, error.position, error.topic, error.reason)
        ) from error


Work = tuple[Projection, str, int, Sequence[LoggedEvent]]


def _prepared(database: Database, connection: Any, work: Sequence[Work]) -> dict[str, Writer]:
    """SQLite has one writer at a time: each (projection, tracking name, start, events) is
    prepared (its reads and its Python work) in a read transaction, so that only its rows are
    written under the write lock. Returns the writers by tracking name, for the projections
    still at `start` (the write transaction checks again; one that moved is prepared there).
    On PostgreSQL, where rows are locked and not the database, none: everything happens in
    the write transaction."""
    writers: dict[str, Writer] = {}
    if database.is_postgres:
        return writers
    with database.transaction(connection, write=False) as cursor:
        for projection, name, start, events in work:
            if tracked_position(database, cursor, name, lock=False) == start:
                writers[name] = projection.prepare(cursor, events)
    return writers


def _commit_batch(
    database: Database,
    connection: Any,
    projection: Projection,
    tracking_name: str,
    start: int,
    events: list[LoggedEvent],
) -> bool:
    """Apply `events` (all after `start`) in one transaction; False if the position moved.
    On SQLite the batch is prepared in a read transaction first (see `_prepared`)."""
    writers = _prepared(database, connection, [(projection, tracking_name, start, events)])
    with database.transaction(connection) as cursor:
        if tracked_position(database, cursor, tracking_name, lock=True) != start:
            return False
        writer = writers.get(tracking_name) or projection.prepare(cursor, events)
        writer(cursor)
        database.execute(
            cursor,
            f"UPDATE {TRACKING_TABLE} SET position = ?, failed_position = NULL, "
            "failed_topic = NULL, failed_reason = NULL, failed_at = NULL WHERE name = ?",
            (events[-1].position, tracking_name),
        )
    return True


def apply_next_batch(
    database: Database,
    connection: Any,
    projection: Projection,
    *,
    tracking_name: str | None = None,
    limit: int = DEFAULT_BATCH_EVENTS,
    until: int | None = None,
) -> int:
    """Apply the next events after the tracked position (up to `until`, if given); return how
    many were applied. Raises `ProjectionFailed` (after recording it) if an event cannot be
    applied."""
    name = tracking_name or projection.name
    cursor = connection.cursor()
    start = tracked_position(database, cursor, name, lock=False)
    if start is None:
        raise LookupError(f"no tracking row for projection {name!r} (run `ledger migrate`)")
    rows = read_feed_rows(database, cursor, start, min(limit, MAX_BATCH_EVENTS), until)
    if not rows:
        return 0
    try:
        with gc_paused():
            events = _decode(projection, rows)
            if not _commit_batch(database, connection, projection, name, start, events):
                return 0
            count = len(events)
            _release(rows, events)
        return count
    except Exception as error:
        if is_transient(error):
            raise
        failure = _find_failure(database, connection, projection, name, start, rows, error)
        _record_failure(database, connection, name, failure)
        raise ProjectionFailed(failure) from error


def _find_failure(
    database: Database,
    connection: Any,
    projection: Projection,
    name: str,
    start: int,
    rows: list[Any],
    error: Exception,
) -> ProjectionFailure:
    """Apply the batch's events one at a time, committing each, up to the one that fails."""
    failing_position = error.failure.position if isinstance(error, ProjectionFailed) else None
    position = start
    for row in rows:
        row_position, _, topic, _ = row
        if row_position == failing_position:
            break
        try:
            event = decode_row(row)
            if not _commit_batch(database, connection, projection, name, position, [event]):
                break
        except Exception as single_error:
            if is_transient(single_error):
                raise
            return ProjectionFailure(projection.name, row_position, topic, _describe(single_error))
        position = row_position
    if isinstance(error, ProjectionFailed):
        return error.failure
    first_position, _, first_topic, _ = rows[0]
    return ProjectionFailure(projection.name, first_position, first_topic, _describe(error))


def _describe(error: BaseException) -> str:
    if isinstance(error, EventDecodeFailed):
        return error.reason
    return f"{type(error).__name__}: {error}"


def _record_failure(
    database: Database, connection: Any, name: str, failure: ProjectionFailure
) -> None:
    with database.transaction(connection) as cursor:
        database.execute(
            cursor,
            f"UPDATE {TRACKING_TABLE} SET failed_position = ?, failed_topic = ?, "
            "failed_reason = ?, failed_at = ? WHERE name = ?",
            (
                failure.position,
                failure.topic,
                failure.reason,
                database.dialect.timestamp(datetime.now(UTC)),
                name,
            ),
        )


def apply_next_batch_together(
    database: Database,
    connection: Any,
    projections: Sequence[Projection],
    *,
    limit: int = DEFAULT_BATCH_EVENTS,
    until: int | None = None,
) -> int:
    """Like `apply_next_batch` for several projections at once: the events after the smallest
    of their positions are read and decoded once, and applied to each projection (those it has
    not applied yet) in ONE transaction with all their new positions. Returns the events read.
    If the batch fails, each projection is retried alone, event by event, so the failing event
    is found and recorded (`ProjectionFailed`) exactly as `apply_next_batch` does."""
    cursor = connection.cursor()
    names = [projection.tracking_name for projection in projections]
    starts = tracked_positions(database, cursor, names, lock=False)
    start = min(starts.get(name, 0) for name in names)
    rows = read_feed_rows(database, cursor, start, min(limit, MAX_BATCH_EVENTS), until)
    if not rows:
        return 0
    try:
        with gc_paused():
            events = [decode_row(row) for row in rows]
            work = [
                (projection, name, starts.get(name, 0), pending)
                for projection, name in zip(projections, names, strict=True)
                if (pending := [e for e in events if e.position > starts.get(name, 0)])
            ]
            writers = _prepared(database, connection, work)
            with database.transaction(connection) as write:
                positions = tracked_positions(database, write, names, lock=True)
                reached: dict[str, int] = {}
                for projection, name in zip(projections, names, strict=True):
                    position = positions.get(name, 0)
                    pending = [event for event in events if event.position > position]
                    if not pending:
                        continue
                    writer = writers.get(name) if position == starts.get(name, 0) else None
                    (writer or projection.prepare(write, pending))(write)
                    reached[name] = pending[-1].position
                _set_positions(database, write, reached)
            count = len(rows)
            del work, writers
            _release(rows, events)
    except Exception as error:
        if is_transient(error):
            raise
        for projection, name in zip(projections, names, strict=True):
            while apply_next_batch(
                database,
                connection,
                projection,
                tracking_name=name,
                limit=limit,
                until=rows[-1][0],
            ):
                pass
        raise
    return count


def tracked_positions(
    database: Database, cursor: Cursor, names: Sequence[str], *, lock: bool
) -> dict[str, int]:
    """The positions recorded for `names` (those that have a tracking row), in one query."""
    suffix = " FOR UPDATE" if lock and database.is_postgres else ""
    marks = ", ".join("?" * len(names))
    database.execute(
        cursor,
        f"SELECT name, position FROM {TRACKING_TABLE} WHERE name IN ({marks}){suffix}",
        tuple(names),
    )
    return {name: int(position) for name, position in cursor.fetchall()}


def _set_positions(database: Database, cursor: Cursor, reached: dict[str, int]) -> None:
    """Move each named projection to its position (and clear any failure), in one statement."""
    if not reached:
        return
    cases = " ".join("WHEN ? THEN ?" for _ in reached)
    marks = ", ".join("?" * len(reached))
    database.execute(
        cursor,
        f"UPDATE {TRACKING_TABLE} SET position = CASE name {cases} END, "
        "failed_position = NULL, failed_topic = NULL, failed_reason = NULL, failed_at = NULL "
        f"WHERE name IN ({marks})",
        (*(value for item in reached.items() for value in item), *reached),
    )
