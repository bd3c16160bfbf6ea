"""Shared fixtures: every storage test runs on both backends through `database_url`.

PostgreSQL is the server named by `LEDGER_TEST_POSTGRES_URL` (default: the local server on
127.0.0.1:5432, database `test`). Each test gets a fresh database of its own, dropped afterwards.
Where PostgreSQL is not reachable its tests skip with a clear message, except under CI
(`CI=true` or `LEDGER_REQUIRE_POSTGRES=1`), where that is a failure: CI never skips them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_admin_url() -> str:
    return os.environ.get("LEDGER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def postgres_required() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get(
        "LEDGER_REQUIRE_POSTGRES", ""
    ) in ("1", "true", "yes")


def _postgres_problem() -> str | None:
    try:
        import psycopg

        with psycopg.connect(postgres_admin_url(), connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as error:  # any failure to connect means: no server here
        return f"{type(error).__name__}: {error}"
    return None


_problem: str | bool | None = False


def require_postgres() -> None:
    """Skip (or, under CI, fail) when the PostgreSQL test server is not reachable."""
    global _problem
    if _problem is False:
        _problem = _postgres_problem()
    if _problem:
        message = (
            f"PostgreSQL is not reachable at {postgres_admin_url()} ({_problem}); "
            "set LEDGER_TEST_POSTGRES_URL to run the PostgreSQL tests"
        )
        if postgres_required():
            pytest.fail("CI requires PostgreSQL: " + message)
        pytest.skip(message)


def _with_database(url: str, dbname: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{dbname}"


def create_postgres_database() -> str:
    """A fresh, empty database on the test server; returns its URL."""
    import psycopg

    require_postgres()
    name = f"ledger_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_admin_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_database(postgres_admin_url(), name)


def drop_postgres_database(url: str) -> None:
    import psycopg

    name = url.rpartition("/")[2]
    with psycopg.connect(postgres_admin_url(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty database of each backend in turn."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)
