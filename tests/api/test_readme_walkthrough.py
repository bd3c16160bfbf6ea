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


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    token = admin_token(README.read_text())
    environment = dict(
        os.environ,
        LEDGER_DATABASE_URL=f"sqlite:///{tmp_path / 'ledger.db'}",
        LEDGER_ADMIN_TOKEN=token,
    )
    process = subprocess.Popen(
        [*ledger_command(), "serve", "--port", str(port)],
        env=environment,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(base_url, process)
        yield base_url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_for_health(base_url: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stdout.read() if process.stdout else ""
            pytest.fail(f"ledger serve exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail("ledger serve did not answer /health in time")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the walk-through needs curl")
def test_the_readme_walkthrough_runs(served: tuple[str, subprocess.Popen[str]]) -> None:
    base_url, process = served
    script = walkthrough_script(README.read_text()).replace(DEFAULT_BASE, base_url)
    completed = subprocess.run(
        ["bash", "-c", "set -euo pipefail -x\n" + script],
        capture_output=True,
        text=True,
        timeout=WALKTHROUGH_TIMEOUT_SECONDS,
    )
    assert completed.returncode == 0, (
        f"the walk-through failed (exit {completed.returncode}); the trace ends with:\n"
        + "\n".join(completed.stderr.splitlines()[-15:])
    )
    assert '"available":"2413.60"' in completed.stdout
    assert '"totals"' in completed.stdout
    process.terminate()  # SIGTERM stops the server gracefully (shutdown hooks run), exit 0
    assert process.wait(timeout=30) == 0


def test_first_start_says_how_to_get_a_token(tmp_path: Path) -> None:
    """On an empty database without LEDGER_ADMIN_TOKEN, `ledger serve` generates nothing
    silently: it says how to make an admin token and a first posting."""
    from api.serve import first_start_message
    from ledger_core.settings import LedgerSettings

    settings = LedgerSettings(database_url=f"sqlite:///{tmp_path / 'l.db'}", admin_token=None)
    message = first_start_message(settings, "127.0.0.1", 8000)
    assert "ledger token create --role admin" in message
    assert "LEDGER_ADMIN_TOKEN" in message
    assert "/v1/spaces/$SPACE/postings" in message
