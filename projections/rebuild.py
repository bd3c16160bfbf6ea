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

On SQLite, where the whole database has one write lock, parallel builders would take turns at
it. Each builder there builds its copy in its own scratch file beside the database
(`<file>.replay-<projection>`, with its own tracking row, so it resumes exactly once like the
copies in the database do), reading the log from the database attached to it. When a builder is
done, its tables are copied into the database in one transaction (`INSERT INTO ... SELECT *`
between tables of one shape, which SQLite does by moving the stored records), the file is
removed, and the swap goes on as above.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import selectors
import sqlite3
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
from projections.db import SQLITE_BUSY_TIMEOUT_MS, Cursor, Database
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
#: The environment variable that hands an SQLite builder its scratch file (empty: none).
BUILDER_SCRATCH_VARIABLE: Final = "LEDGER_REPLAY_BUILDER_SCRATCH"
#: A builder's scratch file is the database's path with this and the projection's name added.
SCRATCH_FILE_INFIX: Final = ".replay-"
#: The schema name a scratch file is attached under in the database's connection, and the
#: database's in a builder's connection.
SCRATCH_SCHEMA: Final = "scratch"
LEDGER_SCHEMA: Final = "ledger"
#: WAL pages between a scratch file's checkpoints: each checkpoint waits for the disk
#: (`synchronous = NORMAL`), and the builders rewrite the same pages (the end of each account's
#: range) batch after batch, so fewer checkpoints write each page fewer times. Measured at 1M
#: postings: 20,000 pages 50.8k-51.4k events/s, 50,000 and 100,000 pages 51.8k-52.4k.
SCRATCH_CHECKPOINT_PAGES: Final = 50_000
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
    schema: str = "main",
) -> None:
    """An empty `copy` of live `table`, with its constraints and indexes (PostgreSQL, without
    `with_indexes`: its CHECK and NOT NULL constraints only; see `build_deferred_indexes`).
    SQLite: in the attached database `schema` (a builder's scratch file), if not "main"."""
    if database.is_postgres:
        including = "ALL" if with_indexes else "DEFAULTS INCLUDING CONSTRAINTS"
        cursor.execute(f"CREATE TABLE {copy} (LIKE {table} INCLUDING {including})")
        return
    cursor.execute("SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?", (table,))
    (table_sql,) = cursor.fetchone()
    cursor.execute(_CREATE_TABLE.sub(f'CREATE TABLE "{schema}"."{copy}"', table_sql, count=1))
    cursor.execute(
        "SELECT sql FROM main.sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL",
        (table,),
    )
    for (index_sql,) in cursor.fetchall():
        match = _CREATE_INDEX.match(index_sql)
        assert match is not None, f"unexpected index statement {index_sql!r}"
        name = _GENERATION_SUFFIX.sub("", match.group(3)) + f"__g{generation}"
        statement = f'{match.group(1)}"{schema}"."{name}" ON "{copy}"'
        cursor.execute(statement + index_sql[match.end() :])


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


def ledger_copy_position(database: Database, connection: Any, copy: Projection) -> int | None:
    """The position `copy`'s tables in the database have reached, if they are there and match
    the live schema (an interrupted rebuild to resume), else None."""
    cursor = connection.cursor()
    position = tracked_position(database, cursor, copy.tracking_name, lock=False)
    if position is not None and _copies_match(database, cursor, copy):
        return position
    return None


# SQLite: builders in scratch files ------------------------------------------------------------


def scratch_path(database: Database, name: str) -> str | None:
    """The scratch file of projection `name`'s builder (None on PostgreSQL, and for an
    in-memory SQLite database, which no other process can read)."""
    if database.is_postgres:
        return None
    path = sqlite_path_from_url(database.url)
    if path == ":memory:":
        return None
    return f"{path}{SCRATCH_FILE_INFIX}{name}"


def remove_scratch(path: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path + suffix)


@contextlib.contextmanager
def _attached(connection: Any, path: str) -> Iterator[None]:
    connection.execute(f"ATTACH DATABASE ? AS {SCRATCH_SCHEMA}", (path,))
    try:
        yield
    finally:
        connection.execute(f"DETACH DATABASE {SCRATCH_SCHEMA}")


def scratch_position(database: Database, connection: Any, copy: Projection) -> int | None:
    """The position the copy in `copy`'s scratch file has reached, if the file is there, sound
    and of the live schema (an interrupted builder to resume), else None."""
    path = scratch_path(database, copy.name)
    if path is None or not os.path.exists(path):
        return None
    try:
        with _attached(connection, path):
            cursor = connection.cursor()
            cursor.execute(
                f"SELECT position FROM {SCRATCH_SCHEMA}.{TRACKING_TABLE} WHERE name = ?",
                (copy.tracking_name,),
            )
            row = cursor.fetchone()
            for table, copy_table in copy.table_names.items():
                found = _sqlite_shape(cursor, SCRATCH_SCHEMA, copy_table)
                if found is None or found != _sqlite_shape(cursor, "main", table):
                    return None
    except sqlite3.DatabaseError:  # missing tables, or a file that is not (or no more) a database
        return None
    return int(row[0]) if row is not None else None


def prepare_scratch(database: Database, connection: Any, copy: Projection, generation: int) -> int:
    """Make sure `copy`'s builder has a scratch file to build in: resume the one there, or
    start a new one with empty copies and a tracking row at 0. Returns its position."""
    position = scratch_position(database, connection, copy)
    if position is not None:
        return position
    path = scratch_path(database, copy.name)
    assert path is not None, "scratch files are for SQLite databases on disk"
    remove_scratch(path)
    with _attached(connection, path):
        connection.execute(f"PRAGMA {SCRATCH_SCHEMA}.journal_mode = WAL")
        with database.transaction(connection) as cursor:
            cursor.execute(
                "SELECT sql FROM main.sqlite_master WHERE type = 'table' AND name = ?",
                (TRACKING_TABLE,),
            )
            (tracking_sql,) = cursor.fetchone()
            target = f'CREATE TABLE "{SCRATCH_SCHEMA}"."{TRACKING_TABLE}"'
            cursor.execute(_CREATE_TABLE.sub(target, tracking_sql, count=1))
            for table, copy_table in copy.table_names.items():
                create_copy(database, cursor, table, copy_table, generation, schema=SCRATCH_SCHEMA)
            cursor.execute(
                f"INSERT INTO {SCRATCH_SCHEMA}.{TRACKING_TABLE} (name, position, generation) "
                "VALUES (?, 0, ?)",
                (copy.tracking_name, generation),
            )
    return 0


def bring_in(database: Database, connection: Any, copy: Projection, generation: int) -> int:
    """Copy the tables a builder built in its scratch file into the database, as the copies
    to swap in, with the position they reached; then remove the file. Returns that position.

    Each table is copied whole with `INSERT INTO ... SELECT *` into an empty table of the same
    shape, which SQLite does by moving the stored records as they are (its transfer
    optimisation): about 0.5 us a row, where inserting them cost 3 to 6 us. One table a
    transaction, so the database's write lock (which the command side waits for) is held for
    one table's copy at a time. The copy's tracking row is deleted in the first and written in
    the last: a copy-in cut short leaves nothing to resume in the database, and the next run
    copies the scratch file in again."""
    path = scratch_path(database, copy.name)
    assert path is not None, "scratch files are for SQLite databases on disk"
    with _attached(connection, path), _rebuild_checkpoints(database, connection):
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT position FROM {SCRATCH_SCHEMA}.{TRACKING_TABLE} WHERE name = ?",
            (copy.tracking_name,),
        )
        (position,) = cursor.fetchone()
        for table, copy_table in copy.table_names.items():
            with database.transaction(connection) as cursor:
                cursor.execute(
                    f"DELETE FROM main.{TRACKING_TABLE} WHERE name = ?", (copy.tracking_name,)
                )
                cursor.execute(f'DROP TABLE IF EXISTS main."{copy_table}"')
                create_copy(database, cursor, table, copy_table, generation)
                cursor.execute(
                    f'INSERT INTO main."{copy_table}" SELECT * FROM {SCRATCH_SCHEMA}."{copy_table}"'
                )
        with database.transaction(connection) as cursor:
            cursor.execute(
                f"INSERT INTO main.{TRACKING_TABLE} (name, position, generation) VALUES (?, ?, ?)",
                (copy.tracking_name, position, generation),
            )
    remove_scratch(path)
    return int(position)


class ScratchDatabase(Database):
    """An SQLite builder's database: its connections open the builder's scratch file as `main`
    and attach the database as `ledger`. Unqualified names find the scratch file's tables first
    (the copies, and a tracking table of the same name as the database's, which holds the
    copy's row) and the database's next (the log, the core's tables). Write transactions are a
    plain (deferred) `BEGIN`: `BEGIN IMMEDIATE` would take the write lock of every attached
    database, the ledger's too, while a builder writes only its own file."""

    sqlite_write_begin = "BEGIN"

    def __init__(self, url: str, path: str) -> None:
        super().__init__(url)
        self.scratch_path = path

    def connect(self) -> Any:
        connection = sqlite3.connect(
            self.scratch_path,
            isolation_level=None,
            check_same_thread=False,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")  # see `_rebuild_checkpoints`
        connection.execute(
            f"ATTACH DATABASE ? AS {LEDGER_SCHEMA}", (sqlite_path_from_url(self.url),)
        )
        return connection


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
    scratches: dict[str, str] | None = None,
    on_built: Callable[[str], None] | None = None,
) -> int:
    """Like `build`, with each projection's copy built by its own process (`python -m
    projections.rebuild NAME BATCH`, the URL in its environment; each reads and decodes the log
    itself): on this 2-core machine two builders and their two database sessions measured 1.5x
    faster than one builder applying both. A projection named in `scratches` is built in that
    scratch file (SQLite; see `ScratchDatabase`). `on_built(name)` runs here as each builder
    finishes, while the others go on. Progress is reported as the position every builder has
    passed. Returns the events that position moved by."""
    scratches = scratches or {}
    builders = {
        name: subprocess.Popen(
            [sys.executable, "-m", "projections.rebuild", name, str(batch_size)],
            stdout=subprocess.PIPE,
            text=True,
            # In the environment, not the arguments: a URL may hold a password, and any user
            # of the machine can read a process's arguments.
            env={
                **os.environ,
                BUILDER_URL_VARIABLE: database.url,
                BUILDER_SCRATCH_VARIABLE: scratches.get(name, ""),
            },
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
                        if on_built is not None:
                            on_built(name)
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


def _build_alone(url: str, name: str, batch_size: int, scratch: str = "") -> None:
    """A builder process: apply the log to one projection's copy (in the database, or in the
    `scratch` file), reporting its position on stdout as JSON lines."""

    def say(**message: Any) -> None:
        print(json.dumps(message), flush=True)

    try:
        database = ScratchDatabase(url, scratch) if scratch else Database(url)
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
    `REBUILD_SQLITE_CHECKPOINT_PAGES` WAL pages (`SCRATCH_CHECKPOINT_PAGES` in a builder's
    scratch file, whose connections are always `synchronous = NORMAL`). The swap that readers
    see commits with `synchronous = FULL`, like every write of the ledger's."""
    if database.is_postgres:
        yield
        return
    if isinstance(database, ScratchDatabase):
        connection.execute(f"PRAGMA wal_autocheckpoint = {SCRATCH_CHECKPOINT_PAGES}")
        yield  # synchronous = NORMAL, as for every connection to a scratch file
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
    `parallel` says so), else all in one pass over the log here. On SQLite each builder
    builds in its own scratch file (see the module's description), unless its copy is in the
    database already (a rebuild that got that far before it stopped).
    `on_start(resumed_at, head)` and `on_progress(events, position)` report progress."""
    started = time.perf_counter()
    database = Database(database_url)
    connection = _rebuild_connection(database)
    try:
        with exclusive(database, connection, "replay"):
            copies = [cls(database, REPLAY_SUFFIX) for cls in projection_classes(names)]
            generations = {
                copy.name: generation_of(database, connection, copy.name) + 1 for copy in copies
            }
            # Where each copy is: in the database, in a scratch file, or nowhere yet.
            positions: dict[str, int] = {}
            scratches: dict[str, str] = {}
            for copy in copies:
                path = scratch_path(database, copy.name)
                position = ledger_copy_position(database, connection, copy)
                if position is None and path is not None:
                    position = scratch_position(database, connection, copy)
                    if position is not None:
                        scratches[copy.name] = path
                elif path is not None:
                    remove_scratch(path)  # left by a rebuild stopped after it was copied in
                positions[copy.name] = position or 0
            resumed_at = min(positions.values())
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
                for copy in copies:
                    generation = generations[copy.name]
                    path = scratch_path(database, copy.name)
                    in_ledger = copy.name not in scratches and positions[copy.name] > 0
                    if path is None or in_ledger:
                        prepare_copies(database, connection, copy, generation)
                    else:
                        prepare_scratch(database, connection, copy, generation)
                        scratches[copy.name] = path
                by_name = {copy.name: copy for copy in copies}

                def built(name: str) -> None:
                    if name in scratches:
                        bring_in(database, connection, by_name[name], generations[name])

                applied = build_in_parallel(
                    database,
                    [copy.name for copy in copies],
                    peaks_kib=peaks,
                    batch_size=batch_size,
                    on_progress=on_progress,
                    scratches=scratches,
                    on_built=built,
                )
            else:
                for copy in copies:  # a scratch file's copy is finished in the database
                    if copy.name in scratches:
                        bring_in(database, connection, copy, generations[copy.name])
                    prepare_copies(database, connection, copy, generations[copy.name])
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
    _build_alone(
        os.environ[BUILDER_URL_VARIABLE],
        sys.argv[1],
        int(sys.argv[2]),
        os.environ.get(BUILDER_SCRATCH_VARIABLE, ""),
    )
