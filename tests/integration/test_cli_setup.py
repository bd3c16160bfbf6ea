"""What the `ledger` commands say about how the database and the settings are set up, each in one
line with its own exit status, never a traceback: settings out of their bounds (2), a database
whose read models were never migrated (5, for the commands that only read them; `demo` and
`replay` apply the migrations themselves), and an export to a directory that does not exist."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from yoyo.exceptions import LockTimeout

import api.cli
from api.cli import DATABASE_UNAVAILABLE_EXIT, SETTINGS_EXIT, LedgerGroup, main
from api.cli_projections import READ_MODELS_MISSING_EXIT
from ledger_core import Ledger
from ledger_core.limits import MAX_COMMANDS_PER_APPEND


def run(url: str, *command: str, **env: str) -> Result:
    return CliRunner().invoke(main, list(command), env={"LEDGER_DATABASE_URL": url, **env})


@pytest.mark.parametrize(
    ("variable", "value", "told"),
    [
        ("LEDGER_MAX_COMMANDS_PER_APPEND", str(MAX_COMMANDS_PER_APPEND + 1), "less than or equal"),
        ("LEDGER_MAX_COMMANDS_PER_APPEND", "0", "greater than or equal"),
        ("LEDGER_POSITION_WAIT_SECONDS", "abc", "valid number"),
        ("LEDGER_POSTGRES_POOL_SIZE", "65", "less than or equal"),
        ("LEDGER_DATABASE_URL", "mysql://user@host/ledger", "sqlite:/// or postgresql://"),
    ],
)
def test_a_setting_out_of_bounds_is_named_in_one_line(
    sqlite_url: str, variable: str, value: str, told: str
) -> None:
    result = run(sqlite_url, "status", **{variable: value})
    assert result.exit_code == SETTINGS_EXIT, result.output
    output: str = result.output
    assert f"{variable}: " in output and told in output and repr(value) in output
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1


def test_settings_at_their_bounds_are_taken(sqlite_url: str) -> None:
    result = run(sqlite_url, "status", LEDGER_MAX_COMMANDS_PER_APPEND=str(MAX_COMMANDS_PER_APPEND))
    assert result.exit_code == 0, result.output


def test_a_database_never_migrated_is_told_to_migrate(database_url: str) -> None:
    Ledger.open(database_url).close()  # the event store's tables, none of the read models
    for command in (["verify"], ["project"]):
        result = run(database_url, *command)
        output: str = result.output
        assert result.exit_code == READ_MODELS_MISSING_EXIT, (command, output)
        assert "run `ledger migrate` first" in output and "Traceback" not in output
    status = run(database_url, "status")
    assert status.exit_code == 0 and "read models: none yet" in status.output
    migrated = run(database_url, "migrate")
    assert migrated.exit_code == 0
    assert run(database_url, "verify").exit_code == 0


def test_demo_makes_a_whole_database_that_verify_and_replay_take(sqlite_url: str) -> None:
    assert run(sqlite_url, "demo").exit_code == 0
    verified = run(sqlite_url, "verify")
    assert verified.exit_code == 0 and "no mismatches" in verified.output
    replayed = run(sqlite_url, "replay")
    assert replayed.exit_code == 0 and "swapped in" in replayed.output


def test_replay_applies_the_migrations_it_needs(sqlite_url: str) -> None:
    Ledger.open(sqlite_url).close()
    replayed = run(sqlite_url, "replay")
    assert replayed.exit_code == 0, replayed.output


def test_export_to_a_directory_that_does_not_exist(sqlite_url: str, tmp_path: Path) -> None:
    target = tmp_path / "no-such-directory" / "log.jsonl"
    result = run(sqlite_url, "export", "--output", str(target))
    output: str = result.output
    assert result.exit_code == 2 and "no directory" in output and "Traceback" not in output
    assert not target.parent.exists()


def test_an_unknown_projection_is_a_usage_error(sqlite_url: str) -> None:
    assert run(sqlite_url, "migrate").exit_code == 0  # verify needs the read models first
    for command in (["replay", "--projection", "nope"], ["verify", "--projection", "nope"]):
        result = run(sqlite_url, *command)
        assert result.exit_code == 2, (command, result.output)
        assert "unknown projection(s) nope; known: balances, postings" in result.output
        assert "Traceback" not in result.output


def test_an_sqlite_file_held_locked_is_busy_not_a_traceback(sqlite_url: str) -> None:
    """Another process holding the file (here: an exclusive transaction) past the migrations'
    lock timeout: one line, exit 3, as for a database that cannot be reached."""
    import sqlite3

    from api.cli import DATABASE_UNAVAILABLE_EXIT
    from ledger_core.store import sqlite_path_from_url

    holder = sqlite3.connect(sqlite_path_from_url(sqlite_url), isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        result = run(sqlite_url, "migrate")
    finally:
        holder.close()
    assert result.exit_code == DATABASE_UNAVAILABLE_EXIT, result.output
    assert "the database is busy" in result.output or "unreachable or busy" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["status", "migrate", "verify", "replay", "export", "serve"])
def test_a_file_that_is_not_a_database_is_one_line_and_status_3(
    tmp_path: Path, command: str
) -> None:
    path = tmp_path / "notes.db"
    path.write_text("not a database\n")
    result = run(f"sqlite:///{path}", command)
    assert result.exit_code == DATABASE_UNAVAILABLE_EXIT, result.output
    assert result.output.strip().splitlines() == [
        "Error: LEDGER_DATABASE_URL names a file that is not an SQLite database"
    ]
    assert path.read_text() == "not a database\n"  # left as it was


def _failing_group(error: Exception) -> click.Group:
    """The ledger's group with one command that raises `error` (how a read-only file fails)."""
    group = LedgerGroup()

    @group.command()
    def fail() -> None:
        raise error

    return group


@pytest.mark.parametrize(
    ("error", "writable", "expected"),
    [
        (sqlite3.OperationalError("attempt to write a readonly database"), True, "read-only"),
        (LockTimeout("timed out"), False, "read-only"),  # yoyo's retries on a file it cannot write
        (LockTimeout("timed out"), True, "busy"),  # a file another process holds locked
    ],
)
def test_a_read_only_database_is_told_as_such_not_as_busy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception, writable: bool, expected: str
) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(b"")
    monkeypatch.setenv("LEDGER_DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setattr(api.cli.os, "access", lambda *_args: writable)
    result = CliRunner().invoke(_failing_group(error), ["fail"])
    assert result.exit_code == DATABASE_UNAVAILABLE_EXIT
    [line] = result.output.strip().splitlines()
    assert f"the database is {expected}" in line
