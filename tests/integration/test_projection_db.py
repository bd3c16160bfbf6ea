"""The projections' bulk writes round-trip any text exactly: COPY's text format on PostgreSQL
(escaped here, not by psycopg) and array literals passed as one parameter."""

from __future__ import annotations

from uuid import uuid4

import pytest

from projections.balances import ValueCache
from projections.db import SQLITE_NULL, Database, pg_array, pg_text_array

TRICKY = ["plain", "tab\there", "new\nline", "back\\slash", "cr\rx", 'quote"s', "{brace,comma}",
          "NULL", "\\N", "", "ünïcødé ✓"]  # fmt: skip


def test_insert_rows_round_trips_free_text(database_url: str) -> None:
    database = Database(database_url)
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            cursor.execute("CREATE TABLE t_roundtrip (n integer, a text, b text, c boolean)")
            rows = [(i, text, None if i % 2 else text, i % 3 == 0) for i, text in enumerate(TRICKY)]
            database.insert_rows(cursor, "t_roundtrip", ("n", "a", "b", "c"), rows)
            database.insert_rows(
                cursor,
                "t_roundtrip",
                ("n", "a", "b", "c"),
                [(100 + n, a, b, c) for n, a, b, c in rows],
                free_text=(1, 2),
            )
            cursor.execute("SELECT n, a, b, c FROM t_roundtrip ORDER BY n")
            found = [(n, a, b, bool(c)) for n, a, b, c in cursor.fetchall()]
        assert found == rows + [(100 + n, a, b, c) for n, a, b, c in rows]
    finally:
        connection.close()


def test_array_literals_round_trip(postgres_url: str) -> None:
    database = Database(postgres_url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        cursor.execute(
            "SELECT %s::text[], %s::int8[]", (pg_text_array(TRICKY), pg_array([1, None, -3]))
        )
        assert cursor.fetchone() == (TRICKY, [1, None, -3])
    finally:
        connection.close()


@pytest.mark.parametrize("values", [[], [None]])
def test_array_literal_edges(postgres_url: str, values: list[str | None]) -> None:
    connection = Database(postgres_url).connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT %s::text[]", (pg_text_array(values),))
        assert cursor.fetchone() == (values,)
    finally:
        connection.close()


def test_binary_rows_round_trip(postgres_url: str) -> None:
    import struct
    from datetime import UTC, date, datetime
    from uuid import UUID

    from projections.db import BinaryRows, copy_binary

    values = BinaryRows()
    assert values.date("2000-01-02") == 1 and values.date("1999-12-31") == -1
    assert values.time("2000-01-01T00:00:01Z") == 1_000_000
    layout = struct.Struct(">hi16siiiqi5s")
    ident = "0190d5a4-7b7c-7d5e-8f00-00000000abcd"
    rows = [
        layout.pack(
            4,
            16,
            values.uuid(ident),
            4,
            values.date("2026-02-28"),
            8,
            values.time("2026-11-23T07:51:03.672033Z"),
            5,
            values.text("debit"),
        )
    ]
    connection = Database(postgres_url).connect()
    try:
        cursor = connection.cursor()
        cursor.execute("CREATE TEMP TABLE t_binary (u uuid, d date, t timestamptz, x text)")
        copy_binary(cursor, "t_binary", ("u", "d", "t", "x"), rows)
        copy_binary(cursor, "t_binary", ("u", "d", "t", "x"), [])  # nothing to copy
        cursor.execute("SELECT u, d, t, x FROM t_binary")
        assert cursor.fetchall() == [
            (
                UUID(ident),
                date(2026, 2, 28),
                datetime(2026, 11, 23, 7, 51, 3, 672033, tzinfo=UTC),
                "debit",
            )
        ]
    finally:
        connection.close()


def test_posting_lines_round_trip_free_text(postgres_url: str) -> None:
    from projections.db import copy_text
    from projections.postings import _POSTING_COLUMNS, _line

    row = ["s", "p", 7, "posted", '[["a","debit",1,"USD"]]', "tab\there\nnew \\ line", "2026-01-02",
           "Café\t\"x\"", None, '{"k":"v\\\\w"}', True, None, "2026-01-02T00:00:00Z", None, "r",
           None]  # fmt: skip
    columns = ", ".join(f"{column} text" for column in _POSTING_COLUMNS)
    connection = Database(postgres_url).connect()
    try:
        cursor = connection.cursor()
        cursor.execute(f"CREATE TEMP TABLE t_postings ({columns})")
        copy_text(cursor, "t_postings", _POSTING_COLUMNS, [_line(row), _line(row)])
        copy_text(cursor, "t_postings", _POSTING_COLUMNS, [])
        cursor.execute("SELECT * FROM t_postings")
        expected = tuple(
            None if value is None else "t" if value is True else str(value) for value in row
        )
        assert cursor.fetchall() == [expected, expected]
    finally:
        connection.close()


def test_sqlite_rows_of_bytearrays_and_the_null_stand_in_store_blobs_and_nulls(
    sqlite_url: str,
) -> None:
    """SQLite rows built for speed (ids as bytearrays, NULL as `SQLITE_NULL` in a nullable
    column) store exactly what bytes and None store: BLOBs that equal the bytes, and NULLs;
    text, numbers and a real empty text in a nullable column are kept."""
    database = Database(sqlite_url)
    connection = database.connect()
    values = ValueCache(database.dialect)
    space = uuid4()
    stored = values.uuid(str(space))
    try:
        with database.transaction(connection) as cursor:
            cursor.execute("CREATE TABLE t_blobs (id BLOB, other BLOB, note text, n integer)")
            rows = [
                (values.row_id(stored), values.row_uuid(None), values.row_null, 1),
                (values.row_id(stored), values.row_uuid(str(space)), "", 2),
                (values.row_id(stored), SQLITE_NULL, "note", values.row_null),
            ]
            database.insert_rows(
                cursor, "t_blobs", ("id", "other", "note", "n"), rows, nullable=(1, 2, 3)
            )
            cursor.execute(
                "SELECT typeof(id), id = ?, typeof(other), other, note, n FROM t_blobs "
                "ORDER BY rowid",
                (space.bytes,),
            )
            found = cursor.fetchall()
        assert found == [
            ("blob", 1, "null", None, None, 1),
            ("blob", 1, "blob", space.bytes, "", 2),
            ("blob", 1, "null", None, "note", None),
        ]
        assert values.row_id(stored) is values.row_id(stored)  # one bytearray per id a batch
    finally:
        connection.close()
