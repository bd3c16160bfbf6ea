"""Versioned schema migrations for the tables of ours beside the event store.

yoyo-migrations applies the files in `migrations/versions/` in name order and records each in
its `_yoyo_migration` table, so applying twice is a no-op and a half-applied migration rolls back
(both databases have transactional DDL). yoyo, because it is a maintained library that speaks
SQLite and PostgreSQL through psycopg 3 (`postgresql+psycopg://`) with plain Python steps, and
our migrations must run unchanged on both: each step receives the DB-API connection and branches
on its dialect only for column types (see `migrations.versions` files).

The event store's own tables (`ledger_events`, `ledger_snapshots`) are created by eventsourcing's
recorders (`ledger_core.store.open_store`); everything else comes from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from ledger_core.store import sqlite_path_from_url

#: The directory yoyo reads migrations from.
VERSIONS_DIRECTORY: Final = Path(__file__).parent / "versions"


def yoyo_url(database_url: str) -> str:
    """The yoyo URL of a ledger database URL: yoyo needs the `+psycopg` driver suffix to use
    psycopg 3, and an SQLite path exactly as the ledger resolves it."""
    if database_url.startswith("sqlite:"):
        return "sqlite:///" + sqlite_path_from_url(database_url)
    scheme, separator, rest = database_url.partition("://")
    if not separator or scheme not in ("postgresql", "postgres", "postgresql+psycopg"):
        raise ValueError(f"not an SQLite or PostgreSQL URL: {database_url!r}")
    return "postgresql+psycopg://" + rest


def apply_migrations(database_url: str) -> list[str]:
    """Apply every migration not yet applied; return the ids applied (empty the second time)."""
    from yoyo import get_backend, read_migrations

    backend = get_backend(yoyo_url(database_url))
    try:
        if database_url.startswith("sqlite:"):
            # yoyo's lock retries any failure to write it for ten seconds: a file that is not a
            # database, or that cannot be written, fails here at once with SQLite's own error.
            backend.connection.execute("PRAGMA schema_version")
            backend.connection.execute("BEGIN IMMEDIATE")
            backend.connection.execute("ROLLBACK")
        migrations = read_migrations(str(VERSIONS_DIRECTORY))
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
        return [migration.id for migration in pending]
    finally:
        backend.connection.close()


def migration_ids() -> list[str]:
    """Every migration this version of the ledger knows, in order."""
    return sorted(path.stem for path in VERSIONS_DIRECTORY.glob("m*.py"))
