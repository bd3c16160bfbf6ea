"""`ledger export`: the log as JSON Lines, each line an item of `GET /v1/events` with sealed text
opened; `--after` and `--space` select; `--output` writes a file that is whole or not there; a
database that needs a key the command was not given is refused (exit 4) before anything is
written. On both backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import msgspec
import pytest
from click.testing import CliRunner

import projections.base
import projections.export
from api.cli import ENCRYPTION_KEY_EXIT, main
from ledger_core import commands as cmd
from ledger_core.crypto import Cipher, generate_key
from ledger_core.ledger import Ledger
from ledger_core.settings import LedgerSettings
from projections.queries import ReadModels

DESCRIPTION = "Corner shop, receipt 17"


def record_two_spaces(url: str, key: str) -> tuple[UUID, UUID]:
    """Two spaces with accounts and postings (descriptions sealed), and a token (a global
    event); returns the spaces' ids."""
    settings = LedgerSettings(database_url=url, encryption_key=key)
    spaces = []
    with Ledger.open(settings=settings) as ledger:
        for name in ("Home", "Shop"):
            opened = ledger.execute(
                cmd.OpenSpace(idempotency_key=f"space-{name}", name=name, base_currency="USD")
            )
            space = opened.outcome.id  # type: ignore[union-attr]
            accounts = [
                ledger.execute(
                    cmd.OpenAccount(
                        idempotency_key=f"{name}-{kind}",
                        space_id=space,
                        name=f"{name} {kind}",
                        type=kind,  # type: ignore[arg-type]
                        currency="USD",
                    )
                ).outcome.id  # type: ignore[union-attr]
                for kind in ("asset", "income")
            ]
            for number in range(3):
                ledger.execute(
                    cmd.RecordPosting(
                        idempotency_key=f"{name}-posting-{number}",
                        space_id=space,
                        posting=cmd.PostingSpec(
                            entries=(
                                cmd.EntrySpec(
                                    account_id=accounts[0], direction="debit", amount="5.00"
                                ),
                                cmd.EntrySpec(
                                    account_id=accounts[1], direction="credit", amount="5.00"
                                ),
                            ),
                            description=DESCRIPTION,
                        ),
                    )
                )
            spaces.append(space)
        ledger.execute(
            cmd.IssueToken(idempotency_key="token", token_hash="ab" * 32, role="read", spaces=())
        )
    return spaces[0], spaces[1]


def run(url: str, key: str, *arguments: str) -> Any:
    env = {"LEDGER_DATABASE_URL": url, "LEDGER_ENCRYPTION_KEY": key}
    return CliRunner().invoke(main, ["export", *arguments], env=env)


def lines_of(text: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.decode().splitlines()]


def test_export_is_the_events_feed_with_sealed_text_opened(database_url: str) -> None:
    key = generate_key()
    home, shop = record_two_spaces(database_url, key)
    result = run(database_url, key)
    assert result.exit_code == 0, result.output
    exported = lines_of(result.stdout_bytes)
    reads = ReadModels(database_url, cipher=Cipher.from_setting(key))
    try:
        feed = reads.events(after=0, limit=500).items
    finally:
        reads.close()
    assert exported == [json.loads(msgspec.json.encode(item)) for item in feed]
    head = len(feed)
    assert [line["position"] for line in exported] == list(range(1, head + 1))
    postings = [line for line in exported if line["type"] == "PostingRecorded"]
    assert len(postings) == 6
    assert all(line["data"]["description"] == DESCRIPTION for line in postings)
    assert {line["space_id"] for line in exported} == {str(home), str(shop), None}
    assert f"the next export starts with --after {head}" in result.stderr

    after = run(database_url, key, "--after", "5")
    assert lines_of(after.stdout_bytes) == exported[5:]
    only_shop = run(database_url, key, "--space", str(shop))
    assert lines_of(only_shop.stdout_bytes) == [
        line for line in exported if line["space_id"] == str(shop)
    ]
    assert len(lines_of(only_shop.stdout_bytes)) == 6  # the space, 2 accounts, 3 postings
    past_the_head = run(database_url, key, "--after", str(head))
    assert past_the_head.exit_code == 0 and past_the_head.stdout_bytes == b""
    assert "nothing exported" in past_the_head.stderr
    negative = run(database_url, key, "--after", "-1")
    assert negative.exit_code == 2 and "Traceback" not in negative.output


def test_pages_and_the_file_written_whole(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    record_two_spaces(database_url, key)
    expected = run(database_url, key).stdout_bytes
    monkeypatch.setattr(projections.export, "EXPORT_PAGE_EVENTS", 2)  # many page boundaries
    target = tmp_path / "log.jsonl"
    result = run(database_url, key, "--output", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == expected
    assert sorted(path.name for path in tmp_path.iterdir() if "log" in path.name) == ["log.jsonl"]


def test_a_failed_export_leaves_the_earlier_file_untouched(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_key()
    record_two_spaces(database_url, key)
    target = tmp_path / "log.jsonl"
    target.write_bytes(b"an earlier export\n")
    view = projections.base.event_view
    seen = [0]

    def failing(row: Any, cipher: Any) -> Any:
        seen[0] += 1
        if seen[0] == 4:
            raise RuntimeError("the database went away (simulated)")
        return view(row, cipher)

    monkeypatch.setattr(projections.export, "event_view", failing)
    result = run(database_url, key, "--output", str(target))
    assert result.exit_code != 0 and seen[0] == 4
    assert target.read_bytes() == b"an earlier export\n"
    assert [path.name for path in tmp_path.iterdir() if "log" in path.name] == ["log.jsonl"]


def test_a_key_that_does_not_open_the_log_is_refused_before_writing(
    database_url: str, tmp_path: Path
) -> None:
    record_two_spaces(database_url, generate_key())
    target = tmp_path / "log.jsonl"
    for given in ("", generate_key()):
        result = run(database_url, given, "--output", str(target))
        assert result.exit_code == ENCRYPTION_KEY_EXIT, result.output
        assert "Traceback" not in result.output
        assert not target.exists() and list(tmp_path.glob("*.partial")) == []


def test_an_empty_database_exports_nothing(sqlite_url: str) -> None:
    result = run(sqlite_url, "")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"" and "nothing exported" in result.stderr
