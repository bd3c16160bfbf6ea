"""Persistence of the ledger: the event log, snapshots and the commands table, on SQLite or
PostgreSQL, built on `eventsourcing`'s datastores and recorders.

The only module of `ledger_core` that speaks SQL. Three tables:

- `ledger_events`: eventsourcing's application-recorder table (stream id, version, topic, state,
  global position). One stream per space. PostgreSQL readers are woken by NOTIFY on it.
- `ledger_snapshots`: eventsourcing's aggregate-recorder table, one snapshot of a space's state
  every `SNAPSHOT_INTERVAL_EVENTS`.
- `ledger_commands`: what each command created, keyed by an id derived from (scope, idempotency
  key), with the request's fingerprint and the stored answer (a recorded posting's or batch's
  as where its events are: `records.PostingStored`, `records.BatchStored`). Its primary key
  makes a key unique
  forever; posting rows (`posting_status`, `posting_version`, `reversed_by`) let the writer find a
  posting that is no longer in memory (to reverse it, or to say why it cannot be voided).

`append()` writes one batch (events, command rows, posting updates) in one database transaction.
On PostgreSQL the events go in with one `INSERT ... SELECT FROM unnest(uuid[], int8[], text[],
bytea[])` in binary, which DESIGN.md measured at twice the stock recorder's composite-array insert;
the table is locked in EXCLUSIVE mode for the append, as eventsourcing does, so positions are
assigned in commit order and a reader never skips a gap that fills in later.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple
from urllib.parse import unquote, urlparse
from uuid import UUID

import msgspec
import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    InterfaceError,
    Notification,
    OperationalError,
    PersistenceError,
    StoredEvent,
)
from eventsourcing.persistence import IntegrityError as RecorderIntegrityError
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
)
from eventsourcing.sqlite import (
    SQLiteAggregateRecorder,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteDatastore,
)
from psycopg.rows import tuple_row
from psycopg_pool import PoolTimeout

from ledger_core.limits import (
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_CONNECTION_PARAMETERS,
    DATABASE_RECONNECT_WINDOW_S,
    STORE_ATTEMPTS,
    STORE_CONNECTION_PARAMETERS,
)

EVENTS_TABLE = "ledger_events"
SNAPSHOTS_TABLE = "ledger_snapshots"
#: The ids of the encryption keys that have sealed anything in this store (`ledger_core.crypto`).
KEYS_TABLE: Final = "ledger_keys"
#: Its DDL, the same on both databases (created by the store and by migration m0004).
KEYS_DDL: Final = f"""
CREATE TABLE IF NOT EXISTS {KEYS_TABLE} (
    key_id TEXT PRIMARY KEY CHECK (length(key_id) = 8),
    first_used_at TEXT NOT NULL
)
"""
COMMANDS_TABLE = "ledger_commands"
#: The scope of global idempotency keys (`/v1/spaces`, `/v1/assets`, tokens).
GLOBAL_SCOPE = UUID(int=0)


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached or answer for now (not that a
    statement is wrong): `StoreUnavailable`, or a driver's operational or interface error, also
    when eventsourcing raised its own from it."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(
            cause,
            StoreUnavailable
            | OperationalError
            | InterfaceError
            | psycopg.OperationalError
            | psycopg.InterfaceError,
        ):
            return True
        cause = cause.__cause__
    return False


class AppendConflict(Exception):
    """Another writer got there first: a stream version or a command id already exists. Nothing
    of the batch was written; the writer catches up and tries again."""


class StoreUnavailable(Exception):
    """The database could not be reached or failed; nothing of the batch was written."""


class CommandRow(msgspec.Struct, kw_only=True, gc=False):
    """One row of `ledger_commands`. `event_index` points into the batch's events: the row's
    position is that event's position (None: the command recorded no event)."""

    scope_id: UUID
    id: UUID
    idempotency_key: str
    fingerprint: bytes | None = None
    outcome: bytes | None = None
    event_index: int | None = None
    position: int | None = None
    posting_status: str | None = None
    posting_version: int | None = None
    reversed_by: UUID | None = None


class PostingUpdate(msgspec.Struct, kw_only=True):
    """A change to a posting row: its new status (and the version of the event holding its
    posted entries), or the posting that reversed it."""

    space_id: UUID
    posting_id: UUID
    posting_status: str | None = None
    posting_version: int | None = None
    reversed_by: UUID | None = None


class NewEvent(NamedTuple):
    """An event to append (lighter than eventsourcing's StoredEvent on the hot path)."""

    originator_id: UUID
    originator_version: int
    topic: str
    state: bytes


@dataclass
class AppendBatch:
    events: list[NewEvent] = field(default_factory=list)
    command_rows: list[CommandRow] = field(default_factory=list)
    posting_updates: list[PostingUpdate] = field(default_factory=list)


class LedgerStore:
    """The interface the writer and the readers use; one subclass per database. Reading streams,
    snapshots and the notification log goes through eventsourcing's recorders (`events`,
    `snapshots`), the same on both databases."""

    kind = "abstract"
    #: The driver's parameter placeholder.
    _mark: str
    #: eventsourcing's datastore of the backend (connections and transactions).
    datastore: Any
    events: ApplicationRecorder
    snapshots: AggregateRecorder

    def create_tables(self) -> None:
        raise NotImplementedError

    def append(self, batch: AppendBatch) -> list[int]:
        """Write the batch atomically; return the position of each event, in order."""
        raise NotImplementedError

    def stream(self, stream_id: UUID, after_version: int = 0) -> list[StoredEvent]:
        return list(self.events.select_events(stream_id, gt=after_version))

    def stream_range(self, stream_id: UUID, first_version: int, count: int) -> list[StoredEvent]:
        """The events at versions `first_version` to `first_version + count - 1` (those that
        exist), in order."""
        return list(
            self.events.select_events(
                stream_id, gt=first_version - 1, lte=first_version + count - 1
            )
        )

    def stream_event(self, stream_id: UUID, version: int) -> StoredEvent | None:
        events = self.stream_range(stream_id, version, 1)
        return events[0] if events else None

    def latest_snapshot(self, stream_id: UUID) -> StoredEvent | None:
        found = self.snapshots.select_events(stream_id, desc=True, limit=1)
        return found[0] if found else None

    def save_snapshot(self, snapshot: StoredEvent) -> None:
        # Another process may have written the same snapshot version first: equal by construction.
        with contextlib.suppress(RecorderIntegrityError):
            self.snapshots.insert_events([snapshot])

    def command_rows(self, scope_id: UUID, ids: Sequence[UUID]) -> dict[UUID, CommandRow]:
        raise NotImplementedError

    def notifications(self, after: int, limit: int) -> Sequence[Notification]:
        """Events with position > `after`, in position order."""
        found: Sequence[Notification] = self.events.select_notifications(
            start=after, limit=limit, inclusive_of_start=False
        )
        return found

    def max_position(self) -> int:
        return self.events.max_notification_id() or 0

    def key_ids(self) -> set[str]:
        """The ids of the encryption keys that have sealed values in this store."""
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT key_id FROM {KEYS_TABLE}")
            # PostgreSQL's datastore gives mappings, SQLite's tuples.
            return {row["key_id"] if isinstance(row, dict) else row[0] for row in cursor.fetchall()}

    def register_key_id(self, key_id: str) -> None:
        """Record that the key `key_id` seals values in this store from now on."""
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                f"INSERT INTO {KEYS_TABLE} (key_id, first_used_at) VALUES ({self._mark}, "
                f"{self._mark}) ON CONFLICT (key_id) DO NOTHING",
                (key_id, datetime.now(UTC).isoformat()),
            )

    def stream_ids(self) -> list[UUID]:
        """Every stream's id (spaces and the assets stream)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


# PostgreSQL ---------------------------------------------------------------------------------------


#: Advisory lock key held while creating the tables (any fixed 64-bit number).
_CREATE_TABLES_LOCK_ID = 0x1ED6E5

_PG_COMMANDS_DDL = f"""
CREATE TABLE IF NOT EXISTS {COMMANDS_TABLE} (
    scope_id uuid NOT NULL,
    id uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint bytea,
    outcome bytea,
    position bigint,
    posting_status text CHECK (posting_status IN
        ('posted', 'pending', 'voided', 'expired', 'declined')),
    posting_version bigint,
    reversed_by uuid,
    PRIMARY KEY (scope_id, id)
)
"""

#: The append of a batch, as one server-side function: the table lock and the notification (when
#: the batch has events), the events-and-commands insert and the posting updates run in the
#: implicit transaction of ONE statement, so an append is one round trip. (As a pipeline of five
#: statements it waited on the socket about 12 times per batch, and in the API's process each
#: wait gave the GIL away: the appends took ~4 ms where the database needed ~0.5.)
#: Every argument is an array; the function returns each event's position. A command row takes
#: its event's position, or the one it brings (`c_position`) if it has no event.
APPEND_FUNCTION: Final = "ledger_append_batch"
#: The channel the append notifies: eventsourcing's name for it (the events table's name), which
#: `ledger project` listens on.
EVENTS_CHANNEL: Final = EVENTS_TABLE.replace(".", "_")

_PG_APPEND_FUNCTION_DDL = f"""
CREATE OR REPLACE FUNCTION {APPEND_FUNCTION}(
    e_stream uuid[], e_version int8[], e_topic text[], e_state bytea[],
    c_scope uuid[], c_id uuid[], c_key text[], c_fingerprint bytea[], c_outcome bytea[],
    c_status text[], c_posting_version int8[], c_reversed_by uuid[],
    c_event_stream uuid[], c_event_version int8[], c_position int8[],
    u_scope uuid[], u_id uuid[], u_status text[], u_posting_version int8[], u_reversed_by uuid[]
) RETURNS TABLE (out_stream uuid, out_version int8, out_position int8)
LANGUAGE plpgsql AS $body$
BEGIN
    IF cardinality(e_stream) > 0 THEN
        LOCK TABLE {EVENTS_TABLE} IN EXCLUSIVE MODE;
        PERFORM pg_notify('{EVENTS_CHANNEL}', '');
    END IF;
    RETURN QUERY
    WITH inserted AS (
        INSERT INTO {EVENTS_TABLE} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(e_stream, e_version, e_topic, e_state)
        RETURNING originator_id, originator_version, notification_id
    ), commands AS (
        INSERT INTO {COMMANDS_TABLE} (scope_id, id, idempotency_key, fingerprint, outcome,
            position, posting_status, posting_version, reversed_by)
        SELECT c.scope_id, c.id, c.idempotency_key, c.fingerprint, c.outcome,
            coalesce(i.notification_id, c.position), c.posting_status, c.posting_version,
            c.reversed_by
        FROM unnest(c_scope, c_id, c_key, c_fingerprint, c_outcome, c_status,
            c_posting_version, c_reversed_by, c_event_stream, c_event_version, c_position)
            AS c(scope_id, id, idempotency_key, fingerprint, outcome, posting_status,
                posting_version, reversed_by, event_stream, event_version, position)
        LEFT JOIN inserted AS i
            ON i.originator_id = c.event_stream AND i.originator_version = c.event_version
    )
    SELECT inserted.originator_id, inserted.originator_version, inserted.notification_id
    FROM inserted;
    IF cardinality(u_scope) > 0 THEN
        UPDATE {COMMANDS_TABLE} AS c SET
            posting_status = coalesce(u.posting_status, c.posting_status),
            posting_version = coalesce(u.posting_version, c.posting_version),
            reversed_by = coalesce(u.reversed_by, c.reversed_by)
        FROM unnest(u_scope, u_id, u_status, u_posting_version, u_reversed_by)
            AS u(scope_id, id, posting_status, posting_version, reversed_by)
        WHERE c.scope_id = u.scope_id AND c.id = u.id;
    END IF;
END
$body$
"""

_PG_APPEND_CALL = (
    f"SELECT * FROM {APPEND_FUNCTION}(%b::uuid[], %b::int8[], %b::text[], %b::bytea[], "
    "%b::uuid[], %b::uuid[], %b::text[], %b::bytea[], %b::bytea[], %b::text[], %b::int8[], "
    "%b::uuid[], %b::uuid[], %b::int8[], %b::int8[], "
    "%b::uuid[], %b::uuid[], %b::text[], %b::int8[], %b::uuid[])"
)

_COMMAND_COLUMNS = (
    "scope_id, id, idempotency_key, fingerprint, outcome, position, posting_status, "
    "posting_version, reversed_by"
)


def _row_to_command(row: Sequence[Any]) -> CommandRow:
    def as_uuid(value: Any) -> UUID | None:
        if value is None or isinstance(value, UUID):
            return value
        return UUID(value)

    scope_id, row_id, reversed_by = as_uuid(row[0]), as_uuid(row[1]), as_uuid(row[8])
    assert scope_id is not None and row_id is not None
    return CommandRow(
        scope_id=scope_id,
        id=row_id,
        idempotency_key=row[2],
        fingerprint=bytes(row[3]) if row[3] is not None else None,
        outcome=bytes(row[4]) if row[4] is not None else None,
        position=row[5],
        posting_status=row[6],
        posting_version=row[7],
        reversed_by=reversed_by,
    )


@dataclass(frozen=True)
class PostgresLocation:
    dbname: str
    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_url(cls, url: str) -> PostgresLocation:
        parsed = urlparse(url)
        if parsed.scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
            raise ValueError(f"not a PostgreSQL URL: {url!r}")
        return cls(
            dbname=unquote(parsed.path.lstrip("/")) or "postgres",
            host=parsed.hostname or "127.0.0.1",
            port=parsed.port or 5432,
            user=unquote(parsed.username or "postgres"),
            password=unquote(parsed.password or ""),
        )


def _bounded(method: Callable[..., Any]) -> Callable[..., Any]:
    """An eventsourcing recorder method without the library's retry decorator (ten attempts,
    each waiting up to the pool's timeout for a connection: minutes of waiting while the
    database is down), made at most `STORE_ATTEMPTS` times instead, and once only when no
    connection came in time."""
    undecorated: Callable[..., Any] = method.__wrapped__  # type: ignore[attr-defined]

    @functools.wraps(undecorated)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for _ in range(STORE_ATTEMPTS - 1):
            try:
                return undecorated(*args, **kwargs)
            except (InterfaceError, OperationalError) as error:
                if isinstance(error.__cause__, PoolTimeout):
                    raise
        return undecorated(*args, **kwargs)

    return bounded


class _PostgresEventsRecorder(PostgresApplicationRecorder):
    select_events = _bounded(PostgresApplicationRecorder.select_events)
    select_notifications = _bounded(PostgresApplicationRecorder.select_notifications)
    max_notification_id = _bounded(PostgresApplicationRecorder.max_notification_id)


class _PostgresSnapshotsRecorder(PostgresAggregateRecorder):
    select_events = _bounded(PostgresAggregateRecorder.select_events)
    insert_events = _bounded(PostgresAggregateRecorder.insert_events)


class PostgresLedgerStore(LedgerStore):
    _mark = "%s"
    kind = "postgresql"
    events: PostgresApplicationRecorder
    snapshots: PostgresAggregateRecorder

    def __init__(self, url: str, *, pool_size: int = 4, max_overflow: int = 8) -> None:
        location = PostgresLocation.from_url(url)
        self.url = url
        self.datastore = PostgresDatastore(
            dbname=location.dbname,
            host=location.host,
            port=location.port,
            user=location.user,
            password=location.password,
            pool_size=pool_size,
            max_overflow=max_overflow,
            max_waiting=0,
            pre_ping=True,
            connect_timeout=DATABASE_CONNECT_TIMEOUT_S,  # the wait for a pooled connection
        )
        # ... and for a new one (the datastore passes no libpq timeout: none by default).
        self.datastore.pool.kwargs.update(STORE_CONNECTION_PARAMETERS)
        self.datastore.pool.reconnect_timeout = DATABASE_RECONNECT_WINDOW_S
        self.events = _PostgresEventsRecorder(self.datastore, events_table_name=EVENTS_TABLE)
        self.snapshots = _PostgresSnapshotsRecorder(
            self.datastore, events_table_name=SNAPSHOTS_TABLE
        )
        self.channel_name = self.events.channel_name
        assert self.channel_name == EVENTS_CHANNEL, "the append function notifies EVENTS_CHANNEL"
        self._append_connection: psycopg.Connection[Any] | None = None

    def create_tables(self) -> None:
        # Processes often start together (API workers, `ledger project`, tests): PostgreSQL
        # refuses concurrent CREATE OR REPLACE FUNCTION ("tuple concurrently updated"), so table
        # creation is serialised by a session advisory lock (on a connection of its own, so a
        # pool of one connection cannot deadlock).
        with psycopg.connect(
            self.url, autocommit=True, **DATABASE_CONNECTION_PARAMETERS
        ) as connection:
            connection.execute("SELECT pg_advisory_lock(%s)", (_CREATE_TABLES_LOCK_ID,))
            try:
                self.events.create_table()
                self.snapshots.create_table()
                with self.datastore.transaction(commit=True) as cursor:
                    cursor.execute(_PG_COMMANDS_DDL)
                    cursor.execute(KEYS_DDL)
                    cursor.execute(_PG_APPEND_FUNCTION_DDL)
            finally:
                connection.execute("SELECT pg_advisory_unlock(%s)", (_CREATE_TABLES_LOCK_ID,))

    def _writer_connection(self) -> psycopg.Connection[Any]:
        """The append connection: one per store, used only by the writer thread, so no pool
        checkout and no ping per batch. Reopened after a failure."""
        connection = self._append_connection
        if connection is None or connection.closed or connection.broken:
            connection = psycopg.connect(
                self.url,
                autocommit=True,
                row_factory=tuple_row,
                **STORE_CONNECTION_PARAMETERS,
            )
            self._append_connection = connection
        return connection

    def append(self, batch: AppendBatch) -> list[int]:
        """Write the batch atomically, in one statement: the append function (see
        `APPEND_FUNCTION`)."""
        try:
            returned = (
                self._writer_connection()
                .execute(
                    _PG_APPEND_CALL,
                    (*_events_and_commands(batch), *_posting_updates(batch.posting_updates)),
                )
                .fetchall()
            )
        except psycopg.IntegrityError as error:
            raise AppendConflict(str(error)) from error
        except psycopg.Error as error:
            self._close_append_connection()
            raise StoreUnavailable(str(error)) from error
        return _positions(batch, returned)

    def _close_append_connection(self) -> None:
        connection, self._append_connection = self._append_connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    def command_rows(self, scope_id: UUID, ids: Sequence[UUID]) -> dict[UUID, CommandRow]:
        if not ids:
            return {}
        from psycopg.rows import tuple_row

        with self.datastore.get_connection() as connection:
            cursor = connection.cursor(row_factory=tuple_row)
            cursor.execute(
                f"SELECT {_COMMAND_COLUMNS} FROM {COMMANDS_TABLE} "
                "WHERE scope_id = %s AND id = ANY(%s::uuid[])",
                (scope_id, list(ids)),
            )
            return {row.id: row for row in map(_row_to_command, cursor.fetchall())}

    def stream_ids(self) -> list[UUID]:
        with self.datastore.get_connection() as connection:
            cursor = connection.cursor()
            cursor.execute(
                f"SELECT originator_id FROM {EVENTS_TABLE} WHERE originator_version = 1 "
                "ORDER BY notification_id"
            )
            return [row["originator_id"] for row in cursor.fetchall()]

    def close(self) -> None:
        self._close_append_connection()
        self.datastore.close()


def _events_and_commands(batch: AppendBatch) -> tuple[list[Any], ...]:
    events, rows = batch.events, batch.command_rows
    event_streams: list[Any] = []
    event_versions: list[int | None] = []
    for row in rows:
        if row.event_index is None:
            event_streams.append(None)
            event_versions.append(None)
        else:
            event = events[row.event_index]
            event_streams.append(event.originator_id)
            event_versions.append(event.originator_version)
    return (
        [e.originator_id for e in events],
        [e.originator_version for e in events],
        [e.topic for e in events],
        [e.state for e in events],
        [r.scope_id for r in rows],
        [r.id for r in rows],
        [r.idempotency_key for r in rows],
        [r.fingerprint for r in rows],
        [r.outcome for r in rows],
        [r.posting_status for r in rows],
        [r.posting_version for r in rows],
        [r.reversed_by for r in rows],
        event_streams,
        event_versions,
        [r.position for r in rows],
    )


def _posting_updates(updates: list[PostingUpdate]) -> tuple[list[Any], ...]:
    return (
        [u.space_id for u in updates],
        [u.posting_id for u in updates],
        [u.posting_status for u in updates],
        [u.posting_version for u in updates],
        [u.reversed_by for u in updates],
    )


def _positions(batch: AppendBatch, returned: Sequence[Sequence[Any]]) -> list[int]:
    """Each event's position, in batch order; each command row gets its event's position."""
    by_key = {(row[0], row[1]): row[2] for row in returned}
    positions = [by_key[(e.originator_id, e.originator_version)] for e in batch.events]
    for row in batch.command_rows:
        if row.event_index is not None:
            row.position = positions[row.event_index]
    return positions


# SQLite -------------------------------------------------------------------------------------------


class _DurableSQLitePool(SQLiteConnectionPool):
    """eventsourcing's pool with durability stated explicitly: WAL with synchronous=FULL, so a
    commit is on disk when it returns (DESIGN.md: durability is never turned off)."""

    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        raw: sqlite3.Connection = connection._sqlite_conn
        raw.execute("PRAGMA synchronous=FULL")
        raw.execute("PRAGMA busy_timeout=10000")
        return connection


_SQLITE_COMMANDS_DDL = f"""
CREATE TABLE IF NOT EXISTS {COMMANDS_TABLE} (
    scope_id TEXT NOT NULL,
    id TEXT NOT NULL,
    idempotency_key TEXT NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint BLOB,
    outcome BLOB,
    position INTEGER,
    posting_status TEXT CHECK (posting_status IN
        ('posted', 'pending', 'voided', 'expired', 'declined')),
    posting_version INTEGER,
    reversed_by TEXT,
    PRIMARY KEY (scope_id, id)
) WITHOUT ROWID
"""


def _hex(value: UUID | None) -> str | None:
    return value.hex if value is not None else None


class SQLiteLedgerStore(LedgerStore):
    _mark = "?"
    kind = "sqlite"
    events: SQLiteApplicationRecorder
    snapshots: SQLiteAggregateRecorder

    def __init__(self, path: str) -> None:
        self.path = path
        self.datastore = SQLiteDatastore(db_name=path, pool_size=4, max_overflow=8)
        self.datastore.pool = _DurableSQLitePool(
            db_name=path, pool_size=4, max_overflow=8, pool_timeout=10.0
        )
        self.events = SQLiteApplicationRecorder(self.datastore, events_table_name=EVENTS_TABLE)
        self.snapshots = SQLiteAggregateRecorder(self.datastore, events_table_name=SNAPSHOTS_TABLE)
        self._append_lock = threading.Lock()

    def create_tables(self) -> None:
        self.events.create_table()
        self.snapshots.create_table()
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(_SQLITE_COMMANDS_DDL)
            cursor.execute(KEYS_DDL)

    def append(self, batch: AppendBatch) -> list[int]:
        events_sql = f"INSERT INTO {EVENTS_TABLE} VALUES (?,?,?,?)"
        commands_sql = (
            f"INSERT INTO {COMMANDS_TABLE} ({_COMMAND_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"
        )
        update_sql = (
            f"UPDATE {COMMANDS_TABLE} SET posting_status = coalesce(?, posting_status), "
            "posting_version = coalesce(?, posting_version), "
            "reversed_by = coalesce(?, reversed_by) WHERE scope_id = ? AND id = ?"
        )
        try:
            with self._append_lock, self.datastore.transaction(commit=True) as cursor:
                positions: list[int] = []
                if batch.events:
                    cursor.executemany(
                        events_sql,
                        [
                            (e.originator_id.hex, e.originator_version, e.topic, e.state)
                            for e in batch.events
                        ],
                    )
                    # SQLite has one writer at a time and this table has no AUTOINCREMENT: the
                    # rows of this transaction took the rowids just below the new maximum.
                    cursor.execute(f"SELECT max(rowid) FROM {EVENTS_TABLE}")
                    last = cursor.fetchone()[0]
                    positions = list(range(last - len(batch.events) + 1, last + 1))
                for row in batch.command_rows:
                    if row.event_index is not None:
                        row.position = positions[row.event_index]
                cursor.executemany(
                    commands_sql,
                    [
                        (
                            r.scope_id.hex,
                            r.id.hex,
                            r.idempotency_key,
                            r.fingerprint,
                            r.outcome,
                            r.position,
                            r.posting_status,
                            r.posting_version,
                            _hex(r.reversed_by),
                        )
                        for r in batch.command_rows
                    ],
                )
                cursor.executemany(
                    update_sql,
                    [
                        (
                            u.posting_status,
                            u.posting_version,
                            _hex(u.reversed_by),
                            u.space_id.hex,
                            u.posting_id.hex,
                        )
                        for u in batch.posting_updates
                    ],
                )
                return positions
        except RecorderIntegrityError as error:
            raise AppendConflict(str(error)) from error
        except sqlite3.IntegrityError as error:
            raise AppendConflict(str(error)) from error
        except (PersistenceError, sqlite3.Error) as error:
            raise StoreUnavailable(str(error)) from error

    def command_rows(self, scope_id: UUID, ids: Sequence[UUID]) -> dict[UUID, CommandRow]:
        if not ids:
            return {}
        found: dict[UUID, CommandRow] = {}
        with self.datastore.transaction(commit=False) as cursor:
            for chunk in _chunks([i.hex for i in ids], 500):
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    f"SELECT {_COMMAND_COLUMNS} FROM {COMMANDS_TABLE} "
                    f"WHERE scope_id = ? AND id IN ({marks})",
                    [scope_id.hex, *chunk],
                )
                for row in cursor.fetchall():
                    command = _row_to_command(tuple(row))
                    found[command.id] = command
        return found

    def stream_ids(self) -> list[UUID]:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                f"SELECT originator_id FROM {EVENTS_TABLE} WHERE originator_version = 1 "
                "ORDER BY rowid"
            )
            return [UUID(row[0]) for row in cursor.fetchall()]

    def close(self) -> None:
        self.datastore.close()


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def sqlite_path_from_url(url: str) -> str:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or `sqlite:///:memory:` -> a path."""
    if not url.startswith("sqlite://"):
        raise ValueError(f"not an SQLite URL: {url!r}")
    path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else url[len("sqlite://") :]
    return path or ":memory:"


def open_store(url: str, *, create_tables: bool = True, **options: int) -> LedgerStore:
    """The store named by a database URL (`sqlite:///path` or `postgresql://...`)."""
    store: LedgerStore
    if url.startswith("sqlite:"):
        store = SQLiteLedgerStore(sqlite_path_from_url(url))
    elif url.startswith(("postgresql:", "postgres:", "postgresql+psycopg:")):
        store = PostgresLedgerStore(url, **options)
    else:
        raise ValueError(
            f"LEDGER_DATABASE_URL must start with sqlite:/// or postgresql://: {url!r}"
        )
    if create_tables:
        store.create_tables()
    return store
