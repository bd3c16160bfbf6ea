"""The README's curl walk-through, executed: `ledger serve` as a real subprocess (the README's
first command, on a free port and a temporary SQLite file), then the shell block between the
walk-through markers, in order, under `set -euo pipefail` so every command must succeed."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx
import pytest

README: Final = Path(__file__).resolve().parents[2] / "README.md"
START_MARKER: Final = "<!-- walkthrough:start -->"
END_MARKER: Final = "<!-- walkthrough:end -->"
DEFAULT_BASE: Final = "http://127.0.0.1:8000"
STARTUP_TIMEOUT_SECONDS: Final = 60.0
WALKTHROUGH_TIMEOUT_SECONDS: Final = 120


def walkthrough_script(readme: str) -> str:
    """The shell code between the markers (the fenced block's content)."""
    start = readme.index(START_MARKER) + len(START_MARKER)
    block = readme[start : readme.index(END_MARKER)]
    match = re.search(r"```(?:sh|bash|shell)\n(?P<code>.*?)```", block, re.DOTALL)
    assert match is not None, "no fenced shell block between the walk-through markers"
    return match.group("code")


def admin_token(readme: str) -> str:
    """The LEDGER_ADMIN_TOKEN the README's serve command starts the server with."""
    match = re.search(r"LEDGER_ADMIN_TOKEN=(\S+)\s+\S*ledger serve", readme)
    assert match is not None, "the README does not start `ledger serve` with LEDGER_ADMIN_TOKEN"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def ledger_command() -> list[str]:
    script = Path(sys.executable).parent / "ledger"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from api.cli import main; main()"]


class Served:
    def __init__(self, base_url: str, process: subprocess.Popen[str], log: Path) -> None:
        self.base_url = base_url
        self.process = process
        self.log = log


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    token = admin_token(README.read_text())
    environment = dict(
        os.environ,
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        LEDGER_ADMIN_TOKEN=token,
    )
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*ledger_command(), "serve", "--port", str(port)],
            env=environment,
            cwd=tmp_path,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, process, log)
        yield Served(base_url, process, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_health(base_url: str, process: subprocess.Popen[str], log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ledger serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("ledger serve did not answer /health in time")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through needs curl")
def run_bash(script: str, **environment: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        ["bash", "-c", "set -euo pipefail -x\n" + script],
        capture_output=True,
        text=True,
        timeout=WALKTHROUGH_TIMEOUT_SECONDS,
        env=dict(os.environ, **environment),
    )
    assert completed.returncode == 0, (
        f"the commands failed (exit {completed.returncode}); the trace ends with:\n"
        + "\n".join(completed.stderr.splitlines()[-15:])
    )
    return completed


def first_start_commands(log: str) -> str:
    """The shell commands `ledger serve` printed under its first-posting heading."""
    from api.serve import FIRST_POSTING_HEADING

    after = log[log.index(FIRST_POSTING_HEADING) + len(FIRST_POSTING_HEADING) :]
    block = after[: after.index("The API is described at")]
    return "\n".join(line.removeprefix("  ") for line in block.strip("\n").splitlines())


def test_the_readme_walkthrough_runs(served: Served) -> None:
    script = walkthrough_script(README.read_text()).replace(DEFAULT_BASE, served.base_url)
    completed = run_bash(script)
    assert '"available":"2413.60"' in completed.stdout
    assert '"totals"' in completed.stdout
    first = first_start_commands(served.log.read_text())
    assert first.startswith(f"BASE={served.base_url}")
    posting = run_bash(first, TOKEN=admin_token(README.read_text()))
    assert '"status":"posted"' in posting.stdout
    served.process.terminate()  # SIGTERM stops the server gracefully (shutdown hooks run)
    assert served.process.wait(timeout=30) == 0


def test_first_start_without_a_token_says_how_to_make_one(tmp_path: Path) -> None:
    """On an empty database without LEDGER_ADMIN_TOKEN, `ledger serve` generates nothing
    silently: it says how to make an admin token."""
    from api.serve import first_start_message
    from ledger_core.settings import LedgerSettings

    settings = LedgerSettings(database_url=f"sqlite:///{tmp_path / 'l.db'}", admin_token=None)
    message = first_start_message(settings, "127.0.0.1", 8000)
    assert "TOKEN=$(ledger token create --role admin)" in message
    assert "LEDGER_ADMIN_TOKEN" in message


def test_the_readme_encryption_example_runs(tmp_path: Path) -> None:
    """The shell block of the README's "Encryption at rest" section, on a fresh database."""
    from click.testing import CliRunner

    from api.cli import main

    readme = README.read_text()
    section = readme[readme.index("### Encryption at rest") :]
    match = re.search(r"```sh\n(?P<code>.*?)```", section, re.DOTALL)
    assert match is not None, "no shell block in the encryption section"
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    migrated = CliRunner().invoke(main, ["migrate"], env={"LEDGER_DATABASE_URL": url})
    assert migrated.exit_code == 0, migrated.output  # every table, the event store's too
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    completed = run_bash(match["code"], LEDGER_DATABASE_URL=url, PATH=path)
    assert completed.stdout.startswith("encryption: on (key "), completed.stdout
