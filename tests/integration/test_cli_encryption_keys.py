"""`ledger keygen` prints a key the ledger takes; a command given keys that are malformed or that
cannot open what the database holds says so in one line and exits 4 (ENCRYPTION_KEY_EXIT), before
anything is served or written."""

from __future__ import annotations

from unittest import mock

from click.testing import CliRunner

from api.cli import ENCRYPTION_KEY_EXIT, main
from ledger_core import commands as cmd
from ledger_core.crypto import Cipher
from ledger_core.ledger import Ledger
from ledger_core.settings import LedgerSettings
from migrations import apply_migrations


def test_keygen_prints_a_fresh_valid_key() -> None:
    first = CliRunner().invoke(main, ["keygen"])
    second = CliRunner().invoke(main, ["keygen"])
    assert first.exit_code == 0 and second.exit_code == 0
    key = first.output.strip()
    assert key != second.output.strip()
    assert Cipher.from_setting(key).enabled


def test_commands_refuse_keys_that_do_not_fit_the_database(database_url: str) -> None:
    key = CliRunner().invoke(main, ["keygen"]).output.strip()
    settings = LedgerSettings(database_url=database_url, encryption_key=key)
    with Ledger.open(settings=settings) as ledger:
        ledger.execute(cmd.OpenSpace(name="Sealed", base_currency="USD", idempotency_key="s"))
    other = CliRunner().invoke(main, ["keygen"]).output.strip()
    cases = {
        "": "set LEDGER_ENCRYPTION_KEY",
        other: "does not list",
        "not-a-key": "base64",
    }
    with mock.patch("api.serve.run_server") as run_server:
        for given, expected in cases.items():
            env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_ENCRYPTION_KEY": given}
            for command in (["serve"], ["token", "create", "--role", "admin"]):
                result = CliRunner().invoke(main, command, env=env)
                assert result.exit_code == ENCRYPTION_KEY_EXIT, (given, command, result.output)
                assert expected in result.output and "Traceback" not in result.output
        run_server.assert_not_called()
        # With its key, serve goes on to run the server.
        env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_ENCRYPTION_KEY": key}
        result = CliRunner().invoke(main, ["serve"], env=env)
        assert result.exit_code == 0, result.output
        run_server.assert_called_once()


def test_serve_without_a_key_says_text_is_stored_unencrypted(sqlite_url: str) -> None:
    with mock.patch("api.serve.run_server") as run_server:
        result = CliRunner().invoke(main, ["serve"], env={"LEDGER_DATABASE_URL": sqlite_url})
    assert result.exit_code == 0 and run_server.called
    assert "LEDGER_ENCRYPTION_KEY is not set" in result.output
    assert "export LEDGER_ENCRYPTION_KEY=$(ledger keygen)" in result.output  # first start


def test_status_tells_whether_text_is_sealed_and_with_which_keys(database_url: str) -> None:
    def status_line(key: str | None) -> str:
        env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_ENCRYPTION_KEY": key or ""}
        result = CliRunner().invoke(main, ["status"], env=env)
        assert result.exit_code == 0, result.output
        return result.output.strip().splitlines()[-1]

    apply_migrations(database_url)
    with Ledger.open(settings=LedgerSettings(database_url=database_url)):
        pass  # the store's tables, no key
    assert status_line(None).startswith("encryption: off")
    key = CliRunner().invoke(main, ["keygen"]).output.strip()
    key_id = Cipher.from_setting(key).key_ids[0]
    assert "recorded in the database when the ledger first opens" in status_line(key)
    with Ledger.open(settings=LedgerSettings(database_url=database_url, encryption_key=key)):
        pass  # opening with a key records it
    assert status_line(key).endswith(f"lists {key_id}: all given")
    assert status_line(None).endswith(f"lists none: MISSING {key_id}")
