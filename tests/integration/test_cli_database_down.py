"""Every `ledger` command facing a database that is down or cannot be opened says so in one line
and exits 3 (DATABASE_UNAVAILABLE_EXIT), instead of a driver's traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from api.cli import DATABASE_UNAVAILABLE_EXIT, main


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.mark.parametrize(
    "command", [["status"], ["verify"], ["migrate"], ["replay"], ["project"], ["export"]]
)
def test_commands_say_the_database_is_unreachable(command: list[str], tmp_path: Path) -> None:
    urls = [
        f"postgresql://postgres@127.0.0.1:{_closed_port()}/ledger",
        f"sqlite:///{tmp_path / 'no-such-directory' / 'ledger.db'}",
    ]
    for url in urls:
        result = CliRunner().invoke(main, command, env={"LEDGER_DATABASE_URL": url})
        assert result.exit_code == DATABASE_UNAVAILABLE_EXIT, (url, result.output)
        assert "the database is unreachable or busy" in result.output
        assert "LEDGER_DATABASE_URL" in result.output and "Traceback" not in result.output
