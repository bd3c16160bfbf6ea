"""Migrations, on every backend: applied once, a no-op after, and the database's own
constraints refuse what the read models must never hold."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import uuid4

import pytest
from click.testing import CliRunner

from api.cli import main
from ledger_core.store import APPEND_FUNCTION, open_store
from migrations import apply_migrations, migration_ids, yoyo_url
from projections.db import Database


def _insert(url: str, statement: str, params: tuple[Any, ...]) -> None:
    database = Database(url)
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            database.execute(cursor, statement, params)
    finally:
        connection.close()


def _entry(url: str, amount_minor: int, leg: int = 0) -> None:
    dialect = Database(url).dialect
    _insert(
        url,
        "INSERT INTO rm_entries (space_id, account_id, position, leg, posting_id, direction, "
        "amount_minor, currency, effective_date, recorded_at, balance_after_minor) "
        "VALUES (?, ?, 1, ?, ?, 'debit', ?, 'USD', ?, ?, 0)",
        (
            dialect.uuid(uuid4()),
            dialect.uuid(uuid4()),
            leg,
            dialect.uuid(uuid4()),
            amount_minor,
            dialect.date(date(2026, 1, 1)),
            dialect.timestamp(datetime(2026, 1, 1, tzinfo=UTC)),
        ),
    )


def test_migrations_apply_once_then_are_a_no_op(database_url: str) -> None:
    assert apply_migrations(database_url) == migration_ids()
    assert migration_ids()[:2] == ["m0001_commands_table", "m0002_read_models"]
    assert apply_migrations(database_url) == []
    result = CliRunner().invoke(main, ["migrate"], env={"LEDGER_DATABASE_URL": database_url})
    assert result.exit_code == 0 and "schema is up to date" in result.output


def test_the_commands_table_comes_from_the_migrations(database_url: str) -> None:
    apply_migrations(database_url)
    database = Database(database_url)
    connection = database.connect()
    try:
        assert database.table_exists(connection.cursor(), "ledger_commands")
        assert not database.table_exists(connection.cursor(), "ledger_events")
    finally:
        connection.close()
    # The core's store opens on the migrated database and adds only the event store's tables.
    store = open_store(database_url)
    store.close()


def test_the_append_function_comes_from_the_migrations_on_postgres(postgres_url: str) -> None:
    """PostgreSQL only: SQLite has no server-side functions (its append is in-process)."""
    import psycopg

    apply_migrations(postgres_url)
    with psycopg.connect(postgres_url) as connection:
        found = connection.execute("SELECT to_regproc(%s)::text", (APPEND_FUNCTION,)).fetchone()
    assert found == (APPEND_FUNCTION,)


def test_the_database_refuses_a_non_positive_amount(database_url: str) -> None:
    apply_migrations(database_url)
    _entry(database_url, 1)
    for amount in (0, -5):
        with pytest.raises(Exception, match=r"(?i)check"):
            _entry(database_url, amount)
    with pytest.raises(Exception, match=r"(?i)check"):
        _entry(database_url, 10, leg=-1)


def test_the_database_refuses_a_second_account_with_the_same_code(database_url: str) -> None:
    apply_migrations(database_url)
    dialect = Database(database_url).dialect
    space = uuid4()

    def account(code: str | None, position: int) -> None:
        _insert(
            database_url,
            "INSERT INTO rm_accounts (space_id, account_id, position, name, type, subtype, "
            "currency, code, normal_balance, status, overdraft_limit_minor, metadata, "
            "posted_minor, pending_debits_minor, pending_credits_minor) "
            "VALUES (?, ?, ?, 'Cash', 'asset', 'cash', 'USD', ?, 'debit', 'active', NULL, '{}', "
            "0, 0, 0)",
            (dialect.uuid(space), dialect.uuid(uuid4()), position, code),
        )

    account("1000", 1)
    account(None, 2)
    account(None, 3)  # many accounts may have no code
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        account("1000", 4)


def test_yoyo_urls() -> None:
    assert yoyo_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert yoyo_url("sqlite:///rel.db") == "sqlite:///rel.db"
    assert yoyo_url("postgresql://u:p@h:5/d") == "postgresql+psycopg://u:p@h:5/d"
    assert yoyo_url("postgres://h/d") == "postgresql+psycopg://h/d"
    with pytest.raises(ValueError):
        yoyo_url("mysql://h/d")


def _posting(url: str, space: Any, position: int, status: str) -> None:
    dialect = Database(url).dialect
    _insert(
        url,
        "INSERT INTO rm_postings (space_id, posting_id, position, status, entries, description, "
        "effective_date, metadata, pending, recorded_at) VALUES (?, ?, ?, ?, '[]', '', ?, '{}', "
        "?, ?)",
        (
            dialect.uuid(space),
            dialect.uuid(uuid4()),
            position,
            status,
            dialect.date(date(2026, 1, 1)),
            dialect.boolean(False),
            dialect.timestamp(datetime(2026, 1, 1, tzinfo=UTC)),
        ),
    )


def _schema(url: str, table: str) -> str:
    connection = Database(url).connect()
    try:
        (sql,) = connection.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        return str(sql)
    finally:
        connection.close()


def test_the_value_checks_accept_each_value_and_refuse_others(database_url: str) -> None:
    """m0005: on SQLite the CHECKs on lists of values are comparisons (an IN of more than two
    constants builds a temporary index per inserted row there); they accept the same values."""
    apply_migrations(database_url)
    space = uuid4()
    for position, status in enumerate(["posted", "pending", "voided", "expired", "declined"], 1):
        _posting(database_url, space, position, status)
    for status in ("Posted", "", "settled"):
        with pytest.raises(Exception, match=r"(?i)check"):
            _posting(database_url, space, 99, status)
    if database_url.startswith("sqlite"):
        for table in ("rm_postings", "rm_accounts"):
            schema = _schema(database_url, table)
            assert " IN (" not in schema and " OR " in schema, schema


ROLLED_BACK = ("m0005_sqlite_value_checks", "m0006_posting_accounts_without_posting_id")


def test_m0005_and_m0006_roll_back_and_forward_keeping_the_rows(database_url: str) -> None:
    from yoyo import get_backend, read_migrations

    from migrations import VERSIONS_DIRECTORY

    apply_migrations(database_url)
    space, account = uuid4(), uuid4()
    _posting(database_url, space, 7, "pending")
    dialect = Database(database_url).dialect
    _insert(
        database_url,
        "INSERT INTO rm_posting_accounts (space_id, account_id, position) VALUES (?, ?, 7)",
        (dialect.uuid(space), dialect.uuid(account)),
    )
    backend = get_backend(yoyo_url(database_url))
    try:
        later = read_migrations(str(VERSIONS_DIRECTORY)).filter(
            lambda migration: migration.id in ROLLED_BACK
        )
        assert len(later) == 2
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(later))
    finally:
        backend.connection.close()
    database = Database(database_url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        database.execute(
            cursor,
            "SELECT pa.posting_id = p.posting_id FROM rm_posting_accounts AS pa "
            "JOIN rm_postings AS p ON p.position = pa.position",
        )
        assert [bool(same) for (same,) in cursor.fetchall()] == [True]
    finally:
        connection.close()
    if database_url.startswith("sqlite"):
        assert "status IN ('posted', 'pending', 'voided', 'expired', 'declined')" in _schema(
            database_url, "rm_postings"
        )
    assert apply_migrations(database_url) == [migration.id for migration in later]
    with pytest.raises(Exception, match=r"(?i)check"):
        _posting(database_url, space, 8, "settled")
    connection = database.connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT status FROM rm_postings")
        assert cursor.fetchall() == [("pending",)]
        cursor.execute("SELECT * FROM rm_posting_accounts")
        assert [len(row) for row in cursor.fetchall()] == [3]
    finally:
        connection.close()
