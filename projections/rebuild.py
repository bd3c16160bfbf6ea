"""Rebuilding projections from position 0 into fresh tables: `ledger replay` and `ledger verify`.

A rebuild creates a copy of each of a projection's tables, empty, with the same columns,
constraints and indexes as the live one (PostgreSQL: `CREATE TABLE ... (LIKE ... INCLUDING
ALL)`; SQLite: the live table's own `CREATE` statements from `sqlite_master`, renamed), so the
migrations stay the one source of the schema. It applies the log to the copies with the same
projection code and the same exactly-once batches as the live runner, tracked under its own
name (`balances__replay`), so an interrupted rebuild resumes where it stopped.

`replay` then swaps the copies in, in ONE transaction: it locks the live projection's tracking
row (so the live runner waits), applies the last events recorded meanwhile, renames the live
tables away and the copies in, drops the old ones and moves the live position. Readers see the
old tables until that commit and the new ones after it, never a half-built table.

SQLite index names are global and survive a rename, so a copy's indexes are named with the
generation of the rebuild (`rm_postings__by_status__g2`); PostgreSQL chooses free names itself.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from projections.base import TRACKING_TABLE, Projection, decode_row, head_position, read_rows
from projections.db import Cursor, Database
from projections.registry import projection_classes
from projections.tracking import (
    MAX_BATCH_EVENTS,
    ProjectionFailed,
    ProjectionFailure,
    apply_next_batch,
    tracked_position,
)

#: The suffix of a replay's tables and tracking row.
REPLAY_SUFFIX: Final = "__replay"
#: Events per transaction while rebuilding: bigger than the live runner's batches, because a
#: rebuild has the whole log to get through and nobody reads its tables meanwhile.
REBUILD_BATCH_EVENTS: Final = 5000

_GENERATION_SUFFIX = re.compile(r"__g\d+$")
_CREATE_TABLE = re.compile(r'^CREATE TABLE\s+("?)(\w+)\1', re.IGNORECASE)
_CREATE_INDEX = re.compile(
    r'^(CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF NOT EXISTS\s+)?)("?)(\w+)\2\s+ON\s+("?)(\w+)\4',
    re.IGNORECASE,
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class RebuildResult:
    projection: str
    position: int
    events: int
    seconds: float


def columns_of(database: Database, cursor: Cursor, table: str) -> list[str]:
    cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [column[0] for column in cursor.description]  # type: ignore[attr-defined]


def create_copy(database: Database, cursor: Cursor, table: str, copy: str, generation: int) -> None:
    """An empty `copy` of live `table`, with its constraints and indexes."""
    if database.is_postgres:
        cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING ALL)")
        return
    cursor.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    (table_sql,) = cursor.fetchone()
    cursor.execute(_CREATE_TABLE.sub(f'CREATE TABLE "{copy}"', table_sql, count=1))
    cursor.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        (table,),
    )
    for (index_sql,) in cursor.fetchall():
        match = _CREATE_INDEX.match(index_sql)
        assert match is not None, f"unexpected index statement {index_sql!r}"
        name = _GENERATION_SUFFIX.sub("", match.group(3)) + f"__g{generation}"
        cursor.execute(f'{match.group(1)}"{name}" ON "{copy}"' + index_sql[match.end() :])


def drop_copies(database: Database, cursor: Cursor, projection: Projection) -> None:
    for table in projection.table_names.values():
        cursor.execute(f"DROP TABLE IF EXISTS {table}")
    database.execute(
        cursor,
        f"DELETE FROM {TRACKING_TABLE} WHERE name = ?",
        (projection.name + projection.suffix,),
    )


def prepare_copies(database: Database, connection: Any, copy: Projection, generation: int) -> int:
    """Make sure `copy`'s tables and tracking row exist and match the live schema; return the
    position the copy has applied (0 for a fresh start, more when resuming)."""
    tracking_name = copy.name + copy.suffix
    with database.transaction(connection) as cursor:
        position = tracked_position(database, cursor, tracking_name, lock=True)
        if position is not None and _copies_match(database, cursor, copy):
            return position
        drop_copies(database, cursor, copy)
        for table, copy_table in copy.table_names.items():
            create_copy(database, cursor, table, copy_table, generation)
        database.execute(
            cursor,
            f"INSERT INTO {TRACKING_TABLE} (name, position, generation) VALUES (?, 0, ?)",
            (tracking_name, generation),
        )
    return 0


def _copies_match(database: Database, cursor: Cursor, copy: Projection) -> bool:
    for table, copy_table in copy.table_names.items():
        if not database.table_exists(cursor, copy_table):
            return False
        if columns_of(database, cursor, table) != columns_of(database, cursor, copy_table):
            return False
    return True


def build(
    database: Database,
    connection: Any,
    copy: Projection,
    *,
    until: int | None = None,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Apply the log to `copy` up to `until` (the head if None); return events applied."""
    applied = 0
    while True:
        count = apply_next_batch(
            database,
            connection,
            copy,
            tracking_name=copy.name + copy.suffix,
            limit=min(batch_size, MAX_BATCH_EVENTS),
            until=until,
        )
        if count == 0:
            return applied
        applied += count
        if on_progress is not None:
            on_progress(count, _position(database, connection, copy.name + copy.suffix))


def _position(database: Database, connection: Any, name: str) -> int:
    cursor = connection.cursor()
    return tracked_position(database, cursor, name, lock=False) or 0


def swap_in(database: Database, connection: Any, copy: Projection) -> int:
    """Catch the copy up to the head and swap it in for the live tables, in one transaction;
    return the position the live projection is at afterwards."""
    copy_name = copy.name + copy.suffix
    with database.transaction(connection) as cursor:
        tracked_position(database, cursor, copy.name, lock=True)
        position = tracked_position(database, cursor, copy_name, lock=True) or 0
        while True:
            rows = read_rows(database, cursor, position, REBUILD_BATCH_EVENTS)
            if not rows:
                break
            try:
                events = [decode_row(row) for row in rows]
            except Exception as error:
                failure = ProjectionFailure(copy.name, rows[0].position, rows[0].topic, str(error))
                raise ProjectionFailed(failure) from error
            copy.apply(cursor, events)
            position = events[-1].position
        for table, copy_table in copy.table_names.items():
            cursor.execute(f"ALTER TABLE {table} RENAME TO {table}__old")
            cursor.execute(f"ALTER TABLE {copy_table} RENAME TO {table}")
            cursor.execute(f"DROP TABLE {table}__old")
        database.execute(
            cursor,
            f"UPDATE {TRACKING_TABLE} SET position = ?, generation = generation + 1, "
            "failed_position = NULL, failed_topic = NULL, failed_reason = NULL, "
            "failed_at = NULL WHERE name = ?",
            (position, copy.name),
        )
        database.execute(cursor, f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (copy_name,))
    return position


def generation_of(database: Database, connection: Any, name: str) -> int:
    cursor = connection.cursor()
    database.execute(cursor, f"SELECT generation FROM {TRACKING_TABLE} WHERE name = ?", (name,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def replay_projection(
    database: Database,
    connection: Any,
    projection_class: type[Projection],
    *,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_start: Callable[[str, int, int], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> RebuildResult:
    """Rebuild one projection from position 0 (or resume an interrupted rebuild) and swap it
    in. `on_start(name, resumed_at, head)` and `on_progress(events, position)` report."""
    started = time.perf_counter()
    copy = projection_class(database, REPLAY_SUFFIX)
    generation = generation_of(database, connection, projection_class.name) + 1
    resumed_at = prepare_copies(database, connection, copy, generation)
    if on_start is not None:
        on_start(projection_class.name, resumed_at, head_position(database, connection.cursor()))
    applied = build(database, connection, copy, batch_size=batch_size, on_progress=on_progress)
    position = swap_in(database, connection, copy)
    return RebuildResult(projection_class.name, position, applied, time.perf_counter() - started)


def replay(
    database_url: str,
    names: list[str] | None = None,
    *,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_start: Callable[[str, int, int], None] | None = None,
    on_progress: ProgressCallback | None = None,
) -> list[RebuildResult]:
    """Rebuild the named projections (all by default), one after the other."""
    database = Database(database_url)
    classes = projection_classes(names)
    connection = database.connect()
    try:
        return [
            replay_projection(
                database,
                connection,
                cls,
                batch_size=batch_size,
                on_start=on_start,
                on_progress=on_progress,
            )
            for cls in classes
        ]
    finally:
        connection.close()
