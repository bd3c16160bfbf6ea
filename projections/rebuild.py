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

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from ledger_core.store import sqlite_path_from_url
from projections.base import (
    TRACKING_TABLE,
    EventDecodeFailed,
    Projection,
    decode_row,
    head_position,
    read_feed_rows,
)
from projections.db import Cursor, Database
from projections.registry import projection_classes
from projections.tracking import (
    MAX_BATCH_EVENTS,
    ProjectionFailed,
    ProjectionFailure,
    apply_next_batch,
    apply_next_batch_together,
    tracked_position,
)

#: The suffix of a replay's tables and tracking row.
REPLAY_SUFFIX: Final = "__replay"
#: Events per transaction while rebuilding: bigger than the live runner's batches, because a
#: rebuild has the whole log to get through and nobody reads its tables meanwhile.
REBUILD_BATCH_EVENTS: Final = 20_000

#: WAL pages between a rebuild's checkpoints (SQLite's default is 1000): fewer, larger
#: checkpoints write a page that many batches touch once.
REBUILD_SQLITE_CHECKPOINT_PAGES: Final = 20_000
SQLITE_DEFAULT_CHECKPOINT_PAGES: Final = 1000
#: SQLite page cache of a rebuild's connections, in KiB.
REBUILD_SQLITE_CACHE_KIB: Final = 16_384
#: A rebuild of several projections with at least this many events to apply builds each one in
#: its own process (starting a process costs about half a second).
PARALLEL_REBUILD_MIN_EVENTS: Final = 50_000
#: The environment variable that hands a builder process its database URL.
BUILDER_URL_VARIABLE: Final = "LEDGER_REPLAY_BUILDER_DATABASE_URL"
#: How often the parent of parallel builders checks that they are alive while none reports.
BUILDER_POLL_S: Final = 0.5

_GENERATION_SUFFIX = re.compile(r"__g\d+$")
_CREATE_TABLE = re.compile(r'^CREATE TABLE\s+("?)(\w+)\1', re.IGNORECASE)
_CREATE_INDEX = re.compile(
    r'^(CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?:IF NOT EXISTS\s+)?)("?)(\w+)\2\s+ON\s+("?)(\w+)\4',
    re.IGNORECASE,
)

ProgressCallback = Callable[[int, int], None]

#: PostgreSQL session advisory-lock keys (per database) of the tools one at a time may run.
EXCLUSIVE_LOCK_KEYS: Final = {"replay": 0x6C64670001, "verify": 0x6C64670002}


class ToolBusy(Exception):
    """Another process runs the same exclusive tool (`ledger replay`, `ledger verify`) on this
    database: two would build in the same scratch tables."""

    def __init__(self, tool: str) -> None:
        super().__init__(f"another `ledger {tool}` is running on this database")
        self.tool = tool


@contextlib.contextmanager
def exclusive(database: Database, connection: Any, tool: str) -> Iterator[None]:
    """Hold `tool`'s lock on the database for the block, or raise `ToolBusy` at once.
    PostgreSQL: a session advisory lock on `connection`. SQLite: an advisory file lock
    (`flock`) on `<database file>.<tool>.lock` beside the database. Both go with the process
    if it dies, so a killed replay never leaves a stale lock."""
    if database.is_postgres:
        key = EXCLUSIVE_LOCK_KEYS[tool]
        if not connection.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
            raise ToolBusy(tool)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a dropped connection has released it
                connection.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return
    path = sqlite_path_from_url(database.url)
    if path == ":memory:":
        yield
        return
    with open(f"{path}.{tool}.lock", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ToolBusy(tool) from None
        yield


@dataclass(frozen=True)
class RebuildResult:
    projections: tuple[str, ...]
    position: int
    events: int
    seconds: float
    #: The peak resident memory (KiB) of each builder process, when the build ran in parallel
    #: (Linux; empty otherwise).
    builder_peak_rss_kib: tuple[int, ...] = ()


def columns_of(database: Database, cursor: Cursor, table: str) -> list[str]:
    cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
    return [column[0] for column in cursor.description]  # type: ignore[attr-defined]


def create_copy(
    database: Database,
    cursor: Cursor,
    table: str,
    copy: str,
    generation: int,
    *,
    with_indexes: bool = True,
) -> None:
    """An empty `copy` of live `table`, with its constraints and indexes (PostgreSQL, without
    `with_indexes`: its CHECK and NOT NULL constraints only; see `build_deferred_indexes`)."""
    if database.is_postgres:
        including = "ALL" if with_indexes else "DEFAULTS INCLUDING CONSTRAINTS"
        cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING {including})")
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
    tracking_name = copy.tracking_name
    with database.transaction(connection) as cursor:
        position = tracked_position(database, cursor, tracking_name, lock=True)
        if position is not None and _copies_match(database, cursor, copy):
            return position
        drop_copies(database, cursor, copy)
        for table, copy_table in copy.table_names.items():
            deferred = table in copy.deferred_index_tables
            create_copy(database, cursor, table, copy_table, generation, with_indexes=not deferred)
        database.execute(
            cursor,
            f"INSERT INTO {TRACKING_TABLE} (name, position, generation) VALUES (?, 0, ?)",
            (tracking_name, generation),
        )
    return 0


def build_deferred_indexes(database: Database, connection: Any, copy: Projection) -> None:
    """Give the copies of the projection's `deferred_index_tables` the live tables' primary
    key and indexes, those they lack (so a resumed rebuild builds only what is missing)."""
    if not database.is_postgres:
        return  # SQLite's tables are clustered on their primary key: nothing was deferred
    for table in copy.deferred_index_tables:
        copy_table = copy.table_names[table]
        with database.transaction(connection) as cursor:
            present = set(_index_shapes(cursor, copy_table))
            for shape in _index_shapes(cursor, table):
                if shape in present:
                    continue
                primary, unique, method_and_columns = shape
                if primary:
                    columns = method_and_columns.split(" ", 1)[1]
                    cursor.execute(f"ALTER TABLE {copy_table} ADD PRIMARY KEY {columns}")
                else:
                    kind = "UNIQUE INDEX" if unique else "INDEX"
                    cursor.execute(f"CREATE {kind} ON {copy_table} USING {method_and_columns}")


def _index_shapes(cursor: Cursor, table: str) -> list[tuple[bool, bool, str]]:
    """(primary key?, unique?, "btree (columns...)") of each index of a PostgreSQL table."""
    cursor.execute(
        "SELECT indisprimary, indisunique, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid = %s::regclass ORDER BY indexrelid",
        (table,),
    )
    return [
        (bool(primary), bool(unique), definition.split(" USING ", 1)[1])
        for primary, unique, definition in cursor.fetchall()
    ]


def _copies_match(database: Database, cursor: Cursor, copy: Projection) -> bool:
    for table, copy_table in copy.table_names.items():
        if not database.table_exists(cursor, copy_table):
            return False
        if database.is_postgres:
            live = _postgres_shape(database, cursor, table)
            copied = _postgres_shape(database, cursor, copy_table)
            if table in copy.deferred_index_tables:  # its indexes come last: some may be missing
                if live[:2] != copied[:2] or not set(copied[2]) <= set(live[2]):
                    return False
            elif live != copied:
                return False
        elif _sqlite_shape(cursor, "main", table) != _sqlite_shape(cursor, "main", copy_table):
            return False
    return True


def _postgres_shape(
    database: Database, cursor: Cursor, table: str
) -> tuple[list[str], list[str], list[tuple[bool, bool, str]]]:
    """A PostgreSQL table's columns, CHECK constraints and index shapes (without names)."""
    cursor.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype = 'c'",
        (table,),
    )
    checks = sorted(definition for (definition,) in cursor.fetchall())
    return columns_of(database, cursor, table), checks, sorted(_index_shapes(cursor, table))


def _sqlite_shape(cursor: Cursor, schema: str, table: str) -> tuple[str, list[str]] | None:
    """An SQLite table's CREATE statement and its indexes' statements, without their names:
    equal for a live table and a copy made of it while the schema stays the same (a copy made
    before a migration changed the table, say one of its CHECKs, is not resumed)."""
    cursor.execute(
        f"SELECT sql FROM {schema}.sqlite_master WHERE type = 'table' AND name = ?", (table,)
    )
    row = cursor.fetchone()
    if row is None:
        return None
    cursor.execute(
        f"SELECT sql FROM {schema}.sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL",
        (table,),
    )
    indexes = []
    for (index_sql,) in cursor.fetchall():
        match = _CREATE_INDEX.match(index_sql)
        assert match is not None, f"unexpected index statement {index_sql!r}"
        indexes.append(f'{match.group(1)}"" ON ""' + index_sql[match.end() :])
    return _CREATE_TABLE.sub('CREATE TABLE ""', row[0], count=1), sorted(indexes)


def build(
    database: Database,
    connection: Any,
    copies: Sequence[Projection],
    *,
    until: int | None = None,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_progress: ProgressCallback | None = None,
) -> int:
    """Apply the log to `copies` up to `until` (the head if None), reading and decoding each
    batch once for all of them; return the events read."""
    applied = 0
    while True:
        count = apply_next_batch_together(
            database, connection, copies, limit=min(batch_size, MAX_BATCH_EVENTS), until=until
        )
        if count == 0:
            return applied
        applied += count
        if on_progress is not None:
            on_progress(
                count, min(_position(database, connection, c.tracking_name) for c in copies)
            )


def build_in_parallel(
    database: Database,
    names: Sequence[str],
    *,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_progress: ProgressCallback | None = None,
    peaks_kib: list[int] | None = None,
) -> int:
    """Like `build`, with each projection's copy built by its own process (`python -m
    projections.rebuild NAME BATCH`, the URL in its environment; each reads and decodes the log
    itself): on this 2-core machine two builders and their two database sessions measured 1.5x
    faster than one builder applying both. Progress is reported as the position every builder
    has passed. Returns the events that position moved by."""
    builders = {
        name: subprocess.Popen(
            [sys.executable, "-m", "projections.rebuild", name, str(batch_size)],
            stdout=subprocess.PIPE,
            text=True,
            # In the environment, not the arguments: a URL may hold a password, and any user
            # of the machine can read a process's arguments.
            env={**os.environ, BUILDER_URL_VARIABLE: database.url},
        )
        for name in names
    }
    positions: dict[str, int | None] = dict.fromkeys(names)
    done: set[str] = set()
    started_at: int | None = None
    reported = 0
    try:
        with selectors.DefaultSelector() as selector:
            for name, builder in builders.items():
                assert builder.stdout is not None
                selector.register(builder.stdout, selectors.EVENT_READ, name)
            while len(done) < len(builders):
                for key, _ in selector.select(timeout=BUILDER_POLL_S):
                    name = key.data
                    line = key.fileobj.readline()  # type: ignore[union-attr]
                    if not line:
                        selector.unregister(key.fileobj)
                        if name not in done:
                            code = builders[name].wait()
                            raise RuntimeError(f"the builder of {name} exited ({code}) unfinished")
                        continue
                    message = json.loads(line)
                    if message["kind"] == "failed":
                        raise ProjectionFailed(ProjectionFailure(**message["failure"]))
                    if message["kind"] == "error":
                        raise RuntimeError(f"rebuilding {name} failed: {message['error']}")
                    if message["kind"] == "done":
                        done.add(name)
                        if peaks_kib is not None and message.get("peak_rss_kib"):
                            peaks_kib.append(message["peak_rss_kib"])
                        continue
                    positions[name] = message["position"]
                if any(position is None for position in positions.values()):
                    continue
                low = min(position for position in positions.values() if position is not None)
                if started_at is None:
                    started_at = reported = low
                if low > reported and on_progress is not None:
                    on_progress(low - reported, low)
                reported = max(reported, low)
    finally:
        for builder in builders.values():
            if builder.poll() is None:
                builder.terminate()
            builder.wait()
            if builder.stdout is not None:
                builder.stdout.close()
    return reported - (started_at or 0)


def _build_alone(url: str, name: str, batch_size: int) -> None:
    """A builder process: apply the log to one projection's copy, reporting its position on
    stdout as JSON lines."""

    def say(**message: Any) -> None:
        print(json.dumps(message), flush=True)

    try:
        database = Database(url)
        connection = _rebuild_connection(database)
        try:
            (cls,) = projection_classes([name])
            copy = cls(database, REPLAY_SUFFIX)
            say(kind="position", position=_position(database, connection, copy.tracking_name))
            with _rebuild_checkpoints(database, connection):
                while apply_next_batch(
                    database,
                    connection,
                    copy,
                    tracking_name=copy.tracking_name,
                    limit=min(batch_size, MAX_BATCH_EVENTS),
                ):
                    say(
                        kind="position",
                        position=_position(database, connection, copy.tracking_name),
                    )
            build_deferred_indexes(database, connection, copy)
        finally:
            connection.close()
    except ProjectionFailed as failed:
        say(kind="failed", failure=dataclasses.asdict(failed.failure))
    except Exception as error:  # reported to the parent, which raises it
        say(kind="error", error=f"{type(error).__name__}: {error}")
    else:
        say(kind="done", peak_rss_kib=peak_rss_kib())


def peak_rss_kib() -> int | None:
    """This process's peak resident memory in KiB (VmHWM; None where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _position(database: Database, connection: Any, name: str) -> int:
    cursor = connection.cursor()
    return tracked_position(database, cursor, name, lock=False) or 0


def swap_in(database: Database, connection: Any, copies: Sequence[Projection]) -> int:
    """Catch the copies up to the head and swap them in for the live tables, all in one
    transaction; return the position the live projections are at afterwards."""
    with database.transaction(connection) as cursor:
        for copy in copies:
            tracked_position(database, cursor, copy.name, lock=True)
        positions = {
            copy.name: tracked_position(database, cursor, copy.tracking_name, lock=True) or 0
            for copy in copies
        }
        position = min(positions.values())
        while True:
            rows = read_feed_rows(database, cursor, position, REBUILD_BATCH_EVENTS)
            if not rows:
                break
            events = _decode_for(copies[0], rows)
            for copy in copies:
                mine = [event for event in events if event.position > positions[copy.name]]
                if mine:
                    copy.apply(cursor, mine)
            position = events[-1].position
        position = max(position, *positions.values())
        for copy in copies:
            _swap_tables(database, cursor, copy, position)
    return position


def _decode_for(copy: Projection, rows: list[Any]) -> list[Any]:
    events = []
    for row in rows:
        try:
            events.append(decode_row(row))
        except EventDecodeFailed as error:
            failure = ProjectionFailure(copy.name, error.position, error.topic, error.reason)
            raise ProjectionFailed(failure) from error
    return events


def _swap_tables(database: Database, cursor: Cursor, copy: Projection, position: int) -> None:
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
    database.execute(cursor, f"DELETE FROM {TRACKING_TABLE} WHERE name = ?", (copy.tracking_name,))


def _rebuild_connection(database: Database) -> Any:
    """A connection for a rebuild. SQLite: with a page cache of `REBUILD_SQLITE_CACHE_KIB`
    (the inserts touch the end of each account's range, a few MiB), so the rebuild's memory
    does not grow with the log up to the usual cache size."""
    connection = database.connect()
    if not database.is_postgres:
        connection.execute(f"PRAGMA cache_size = -{REBUILD_SQLITE_CACHE_KIB}")
    return connection


@contextlib.contextmanager
def _rebuild_checkpoints(database: Database, connection: Any) -> Iterator[None]:
    """How a rebuild's batches commit. PostgreSQL: as the server is configured
    (`synchronous_commit` is left alone: DESIGN.md never turns durability off; with 20,000
    events a batch there are five commits per 100,000 events, and turning it off measured no
    faster). SQLite: WAL with `synchronous = NORMAL`, the setting DESIGN.md allows for WAL,
    stated here explicitly (the database stays consistent; a power cut can lose the last
    commits, whole: each batch's rows and its tracked position commit together, and the next
    run resumes before them; measured 10% faster than FULL), and a checkpoint every
    `REBUILD_SQLITE_CHECKPOINT_PAGES` WAL pages. The swap that readers see commits with
    `synchronous = FULL`, like every write of the ledger's."""
    if database.is_postgres:
        yield
        return
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute(f"PRAGMA wal_autocheckpoint = {REBUILD_SQLITE_CHECKPOINT_PAGES}")
    try:
        yield
    finally:
        connection.execute("PRAGMA synchronous = FULL")
        connection.execute(f"PRAGMA wal_autocheckpoint = {SQLITE_DEFAULT_CHECKPOINT_PAGES}")


def generation_of(database: Database, connection: Any, name: str) -> int:
    cursor = connection.cursor()
    database.execute(cursor, f"SELECT generation FROM {TRACKING_TABLE} WHERE name = ?", (name,))
    row = cursor.fetchone()
    return int(row[0]) if row else 0


def replay(
    database_url: str,
    names: list[str] | None = None,
    *,
    batch_size: int = REBUILD_BATCH_EVENTS,
    on_start: Callable[[int, int], None] | None = None,
    on_progress: ProgressCallback | None = None,
    parallel: bool | None = None,
) -> RebuildResult:
    """Rebuild the named projections (all by default) from position 0, or resume an
    interrupted rebuild; then swap them all in at once. Each projection is built by its own
    process when there are `PARALLEL_REBUILD_MIN_EVENTS` events or more to apply (or
    `parallel` says so), else all in one pass over the log here.
    `on_start(resumed_at, head)` and `on_progress(events, position)` report progress."""
    started = time.perf_counter()
    database = Database(database_url)
    connection = _rebuild_connection(database)
    try:
        with exclusive(database, connection, "replay"):
            copies = [cls(database, REPLAY_SUFFIX) for cls in projection_classes(names)]
            resumed_at = min(
                prepare_copies(
                    database, connection, copy, generation_of(database, connection, copy.name) + 1
                )
                for copy in copies
            )
            head = head_position(database, connection.cursor())
            peaks: list[int] = []
            if on_start is not None:
                on_start(resumed_at, head)
            if parallel is None:
                parallel = (
                    len(copies) > 1
                    and head - resumed_at >= PARALLEL_REBUILD_MIN_EVENTS
                    and sys.platform != "win32"  # the builders' pipes are watched with selectors
                )
            if parallel:
                applied = build_in_parallel(
                    database,
                    [copy.name for copy in copies],
                    peaks_kib=peaks,
                    batch_size=batch_size,
                    on_progress=on_progress,
                )
            else:
                with _rebuild_checkpoints(database, connection):
                    applied = build(
                        database, connection, copies, batch_size=batch_size, on_progress=on_progress
                    )
                for copy in copies:
                    build_deferred_indexes(database, connection, copy)
            position = swap_in(database, connection, copies)
            return RebuildResult(
                tuple(copy.name for copy in copies),
                position,
                applied,
                time.perf_counter() - started,
                tuple(peaks),
            )
    finally:
        connection.close()


if __name__ == "__main__":  # a builder of `build_in_parallel`
    _build_alone(os.environ[BUILDER_URL_VARIABLE], sys.argv[1], int(sys.argv[2]))
