"""Database access for the projections: connections and the two SQL dialects.

The read tables live in the same database as the event store (DESIGN.md), on SQLite or
PostgreSQL. This module is the only place that knows how the two differ:

- placeholders: statements are written with `?` and turned into `%s` for psycopg;
- value types: PostgreSQL stores `uuid`, `date` and `timestamptz` natively; SQLite stores a UUID
  as its 16 bytes (a BLOB: half the size of hex text in every key and index), a date as
  `YYYY-MM-DD` and a timestamp as fixed-width UTC text (`2026-11-20T10:00:00.000000Z`), so text
  order is time order;
- transactions: a write transaction on SQLite is `BEGIN IMMEDIATE` (one writer at a time, taken
  up front so it never fails half-way on a lock upgrade); on PostgreSQL the projection's tracking
  row is locked `FOR UPDATE`, so two projectors of the same projection never interleave.

SQLite connections use WAL with `synchronous=FULL` (durability is never turned off) and a busy
timeout, because the writer of the command side shares the file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any, Final, Protocol
from uuid import UUID

from ledger_core.limits import DATABASE_CONNECTION_PARAMETERS
from ledger_core.store import is_unavailable, sqlite_path_from_url

#: How long an SQLite connection waits for the write lock before failing (the command side's
#: group commit holds it for milliseconds; a replay's swap for well under a second).
SQLITE_BUSY_TIMEOUT_MS: Final = 30_000

#: SQLite page cache per connection, in KiB: a batch touches the end of every account's range of
#: entries, so a cache that holds those pages saves re-reading them (bounded: memory stays flat).
SQLITE_CACHE_KIB: Final = 65_536
#: SQLite: the parameter that stands for NULL in the nullable columns of `insert_rows`.
#: Python's sqlite3 (3.11) binds an int, float, str or bytearray as it is, and passes every
#: other value, None and bytes included, through its adapter registry first (a tuple, a dict
#: lookup and two attribute lookups: about 250 ns a value, measured; a projection's insert binds
#: millions of them). So ids go in as bytearrays (`ValueCache.row_id`) and NULL as this empty
#: bytearray, which the statement turns back into NULL with `nullif(?, x'')`: no value of a
#: nullable column is an empty blob (ids are 16 bytes, the others text or numbers).
SQLITE_NULL: Final = bytearray()

#: How the projections' PostgreSQL connections name themselves (pg_stat_activity).
APPLICATION_NAME: Final = "ledger-projections"

_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


class Cursor(Protocol):
    def execute(self, sql: Any, params: Any = ...) -> Any: ...
    def executemany(self, sql: Any, params_seq: Any) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


def is_postgres_url(url: str) -> bool:
    return url.startswith(("postgresql:", "postgres:", "postgresql+psycopg:"))


def psycopg_url(url: str) -> str:
    """A URL psycopg accepts (it does not know the `+psycopg` driver suffix)."""
    if url.startswith("postgresql+psycopg:"):
        return "postgresql:" + url[len("postgresql+psycopg:") :]
    return url


class Dialect:
    """How values and statements are written for one database."""

    name = "abstract"

    def sql(self, statement: str) -> str:
        raise NotImplementedError

    def uuid(self, value: UUID | None) -> Any:
        raise NotImplementedError

    def date(self, value: dt.date | None) -> Any:
        raise NotImplementedError

    def timestamp(self, value: datetime | None) -> Any:
        raise NotImplementedError

    def to_uuid(self, value: Any) -> UUID | None:
        raise NotImplementedError

    def to_date(self, value: Any) -> dt.date | None:
        raise NotImplementedError

    def to_timestamp(self, value: Any) -> datetime | None:
        raise NotImplementedError

    def boolean(self, value: bool) -> Any:
        return value

    def to_bytes(self, value: Any) -> bytes:
        return bytes(value)


class PostgresDialect(Dialect):
    name = "postgresql"

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}

    def sql(self, statement: str) -> str:
        converted = self._cache.get(statement)
        if converted is None:
            converted = statement.replace("?", "%s")
            self._cache[statement] = converted
        return converted

    def uuid(self, value: UUID | None) -> Any:
        # As text: psycopg writes a str into COPY and parameters in C (PostgreSQL casts it to
        # uuid), while a UUID object goes through a Python-level dumper for every value.
        return str(value) if value is not None else None

    def date(self, value: dt.date | None) -> Any:
        return value

    def timestamp(self, value: datetime | None) -> Any:
        return value

    def to_uuid(self, value: Any) -> UUID | None:
        return value  # type: ignore[no-any-return]

    def to_date(self, value: Any) -> dt.date | None:
        return value  # type: ignore[no-any-return]

    def to_timestamp(self, value: Any) -> datetime | None:
        if value is None:
            return None
        result: datetime = value.astimezone(UTC)
        return result


class SQLiteDialect(Dialect):
    name = "sqlite"

    def sql(self, statement: str) -> str:
        return statement

    def uuid(self, value: UUID | None) -> Any:
        return value.bytes if value is not None else None

    def date(self, value: dt.date | None) -> Any:
        return value.isoformat() if value is not None else None

    def timestamp(self, value: datetime | None) -> Any:
        if value is None:
            return None
        return value.astimezone(UTC).strftime(_TIMESTAMP_FORMAT)

    def to_uuid(self, value: Any) -> UUID | None:
        return UUID(bytes=value) if value is not None else None

    def to_date(self, value: Any) -> dt.date | None:
        return dt.date.fromisoformat(value) if value is not None else None

    def to_timestamp(self, value: Any) -> datetime | None:
        if value is None:
            return None
        return datetime.strptime(value, _TIMESTAMP_FORMAT).replace(tzinfo=UTC)

    def boolean(self, value: bool) -> Any:
        return 1 if value else 0


POSTGRES: Final = PostgresDialect()
SQLITE: Final = SQLiteDialect()


def dialect_for(url: str) -> Dialect:
    return POSTGRES if is_postgres_url(url) else SQLITE


class Database:
    """Opens connections to one database and runs transactions on them."""

    #: How a write transaction starts on SQLite: taking the write lock up front.
    sqlite_write_begin = "BEGIN IMMEDIATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = dialect_for(url)
        self.is_postgres = self.dialect is POSTGRES

    def connect(self) -> Any:
        """A new connection: psycopg in autocommit mode (transactions are explicit), or sqlite3
        with `isolation_level=None` (likewise)."""
        if self.is_postgres:
            import psycopg

            return psycopg.connect(
                psycopg_url(self.url),
                autocommit=True,
                application_name=APPLICATION_NAME,
                **DATABASE_CONNECTION_PARAMETERS,
            )
        connection = sqlite3.connect(
            sqlite_path_from_url(self.url),
            isolation_level=None,
            check_same_thread=False,
            timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        )
        connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        return connection

    @contextlib.contextmanager
    def transaction(self, connection: Any, *, write: bool = True) -> Iterator[Cursor]:
        """One database transaction on `connection`: committed if the block returns, rolled
        back if it raises."""
        if self.is_postgres:
            with connection.transaction():
                yield connection.cursor()
            return
        cursor = connection.cursor()
        cursor.execute(self.sqlite_write_begin if write else "BEGIN")
        try:
            yield cursor
        except BaseException:
            connection.rollback()
            raise
        else:
            cursor.execute("COMMIT")

    def execute(self, cursor: Cursor, statement: str, params: Sequence[Any] = ()) -> Any:
        return cursor.execute(self.dialect.sql(statement), params)

    def executemany(self, cursor: Cursor, statement: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            cursor.executemany(self.dialect.sql(statement), rows)

    def insert_rows(
        self,
        cursor: Cursor,
        table: str,
        columns: Sequence[str],
        rows: Sequence[Sequence[Any]],
        *,
        plain: bool = False,
        free_text: Sequence[int] | None = None,
        nullable: Sequence[int] = (),
    ) -> None:
        """Insert many rows: one COPY stream on PostgreSQL, formatted here in COPY's text
        format (psycopg's per-value `write_row` measured 3x slower), executemany on SQLite
        (in-process, so a statement per row is cheap). `plain` says every value is an int or a
        str without tabs, newlines or backslashes (ids, dates, times, codes), which skips the
        escaping; `free_text` names the only columns that may need it (the others may still be
        None or booleans). SQLite: the columns at the `nullable` indexes take `SQLITE_NULL`
        for NULL."""
        if not rows:
            return
        column_list = ", ".join(columns)
        if self.is_postgres:
            if plain:
                lines = ["\t".join(map(str, row)) for row in rows]
            elif free_text is not None:
                lines = [_copy_line(row, free_text) for row in rows]
            else:
                lines = ["\t".join([_copy_text(value) for value in row]) for row in rows]
            lines.append("")
            with cursor.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                copy.write("\n".join(lines))
            return
        marks = ", ".join(
            "nullif(?, x'')" if index in nullable else "?" for index in range(len(columns))
        )
        cursor.executemany(f"INSERT INTO {table} ({column_list}) VALUES ({marks})", rows)

    def update_rows(
        self,
        cursor: Cursor,
        table: str,
        keys: dict[str, str],
        values: dict[str, str],
        rows: Sequence[Sequence[Any]],
    ) -> None:
        """Set the `values` columns of the rows found by their `keys` columns; each row gives
        the keys then the values, in the dicts' order (the dicts map column -> PostgreSQL
        type). PostgreSQL: one `UPDATE ... FROM unnest(arrays)`; SQLite: executemany."""
        if not rows:
            return
        names = [*keys, *values]
        if self.is_postgres:
            types = (*keys.values(), *values.values())
            arrays = ", ".join(f"%s::{pg_type}[]" for pg_type in types)
            assignments = ", ".join(f"{column} = u.{column}" for column in values)
            matches = " AND ".join(f"t.{column} = u.{column}" for column in keys)
            columns = [
                pg_text_array(column) if pg_type == "text" else pg_array(column)
                for pg_type, column in zip(types, zip(*rows, strict=True), strict=True)
            ]
            cursor.execute(
                f"UPDATE {table} AS t SET {assignments} FROM unnest({arrays}) "
                f"AS u({', '.join(names)}) WHERE {matches}",
                columns,
            )
            return
        assignments = ", ".join(f"{column} = ?" for column in values)
        matches = " AND ".join(f"{column} = ?" for column in keys)
        key_count = len(keys)
        cursor.executemany(
            f"UPDATE {table} SET {assignments} WHERE {matches}",
            [(*row[key_count:], *row[:key_count]) for row in rows],
        )

    def table_exists(self, cursor: Cursor, table: str) -> bool:
        if self.is_postgres:
            self.execute(cursor, "SELECT to_regclass(?) IS NOT NULL", (table,))
        else:
            self.execute(
                cursor,
                "SELECT count(*) > 0 FROM sqlite_master WHERE type='table' AND name=?",
                (table,),
            )
        return bool(cursor.fetchone()[0])


def pg_array(values: Iterable[Any]) -> str:
    """A PostgreSQL array literal of plain values (ints, UUID or date text; None is NULL), to
    pass as one text parameter cast to the array type: psycopg's list adaptation quotes each
    element in Python and measured 10x slower."""
    return "{" + ",".join(["NULL" if value is None else str(value) for value in values]) + "}"


def pg_text_array(values: Iterable[str | None]) -> str:
    """A PostgreSQL array literal of any text values, each quoted and escaped."""
    return (
        "{"
        + ",".join(
            [
                "NULL"
                if value is None
                else '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
                for value in values
            ]
        )
        + "}"
    )


class BinaryRows:
    """Rows in PostgreSQL's binary COPY format, for tables of fixed-width values (UUIDs,
    integers, dates, times) and short codes: PostgreSQL parses no text, which measured about
    3x less of its CPU than COPY's text format for the entries. Values come in their stored
    form on PostgreSQL (canonical text for ids, dates and times); the ones that repeat are
    converted once."""

    HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    TRAILER: Final = b"\xff\xff"

    def __init__(self) -> None:
        self._uuids: dict[str, bytes] = {}
        self._texts: dict[str, bytes] = {}
        self._dates: dict[str, int] = {}
        self._times: dict[str, int] = {}

    def uuid(self, text: str) -> bytes:
        found = self._uuids.get(text)
        if found is None:
            found = self._uuids[text] = bytes.fromhex(text.replace("-", ""))
        return found

    def text(self, text: str) -> bytes:
        found = self._texts.get(text)
        if found is None:
            found = self._texts[text] = text.encode()
        return found

    def date(self, text: str) -> int:
        """Days since 2000-01-01 (PostgreSQL's epoch)."""
        found = self._dates.get(text)
        if found is None:
            found = self._dates[text] = dt.date.fromisoformat(text).toordinal() - _PG_EPOCH_DAY
        return found

    def time(self, text: str) -> int:
        """Microseconds since 2000-01-01 00:00 UTC."""
        found = self._times.get(text)
        if found is None:
            moment = datetime.fromisoformat(text)
            found = self._times[text] = (moment - _PG_EPOCH) // _MICROSECOND
        return found


_PG_EPOCH_DAY: Final = dt.date(2000, 1, 1).toordinal()
_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = dt.timedelta(microseconds=1)


def copy_text(cursor: Cursor, table: str, columns: Sequence[str], lines: Iterable[str]) -> None:
    """COPY `lines` (rows already in COPY's text format, without newlines) into `table`."""
    data = "\n".join(lines)
    if not data:
        return
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
        copy.write(data + "\n")


def copy_binary(cursor: Cursor, table: str, columns: Sequence[str], chunks: list[bytes]) -> None:
    """COPY `chunks` (rows packed by a `BinaryRows` user, without header or trailer) into
    `table`."""
    if not chunks:
        return
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    with cursor.copy(statement) as copy:  # type: ignore[attr-defined]
        copy.write(BinaryRows.HEADER + b"".join(chunks) + BinaryRows.TRAILER)


#: NULL in COPY's text format.
NULL: Final = "\\N"
COPY_ESCAPES: Final = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    """A value in COPY's text format: NULL as \\N, booleans as t/f, text escaped."""
    if value is None:
        return "\\N"
    if value.__class__ is str:
        return value.translate(COPY_ESCAPES)  # type: ignore[no-any-return]
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


def _copy_line(row: Sequence[Any], free_text: Sequence[int]) -> str:
    values = [
        "\\N" if value is None else "t" if value is True else "f" if value is False else str(value)
        for value in row
    ]
    for index in free_text:
        value = row[index]
        if value is not None:
            values[index] = value.translate(COPY_ESCAPES)
    return "\t".join(values)


_SQLITE_TRANSIENT_MESSAGES: Final = ("locked", "busy", "disk i/o", "unable to open")


def is_transient(error: BaseException) -> bool:
    """True if `error` says the database is (for now) unreachable or busy, not that an event
    cannot be applied: the runner reconnects and retries on these and never records a failure.
    PostgreSQL: what the store counts as unavailable (`ledger_core.store.is_unavailable`)."""
    if is_unavailable(error):
        return True
    if isinstance(error, sqlite3.OperationalError):
        message = str(error).lower()
        return any(text in message for text in _SQLITE_TRANSIENT_MESSAGES)
    return False
