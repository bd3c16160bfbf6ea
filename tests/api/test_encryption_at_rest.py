"""Encryption at rest (DESIGN.md): with LEDGER_ENCRYPTION_KEY set, no name, description,
merchant or metadata value reaches any table in clear (the event store, the commands' stored
answers, the snapshots, the read tables), every read answers the clear text, replay and verify
work on sealed data, and a database holding sealed text is never opened without its key.
On both backends, through the real app."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from litestar.testing import TestClient

import ledger_core.writer
from api.app import create_app
from ledger_core import commands as cmd
from ledger_core import errors
from ledger_core.crypto import Cipher, EncryptionKeyMissing, generate_key
from ledger_core.ledger import Ledger
from ledger_core.store import sqlite_path_from_url
from projections.rebuild import replay
from projections.verify import dump_tables, verify
from tests.api.conftest import Api, api_log_records, settings_for

#: Every piece of sensitive text the test writes carries this, so a scan of the raw tables finds
#: any of it left in clear.
MARK = "Zq7Marker"


def _all_values(database_url: str) -> Iterator[tuple[str, Any]]:
    """(table, value) for every column value of every table of the database."""
    connection: Any
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(sqlite_path_from_url(database_url))
        tables_sql = "SELECT name FROM sqlite_master WHERE type = 'table'"
    else:
        connection = psycopg.connect(database_url)
        tables_sql = "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    try:
        for (table,) in connection.execute(tables_sql).fetchall():
            for row in connection.execute(f'SELECT * FROM "{table}"').fetchall():
                for value in row:
                    yield table, value
    finally:
        connection.close()


def clear_text_found(database_url: str) -> list[str]:
    """The tables where MARK is stored in clear (as text, or inside bytes)."""
    found = set()
    for table, value in _all_values(database_url):
        if isinstance(value, (bytes, memoryview)):
            if MARK.encode() in bytes(value):
                found.add(table)
        elif MARK in str(value):
            found.add(table)
    return sorted(found)


def _write_everything(api: Api) -> dict[str, str]:
    """Every command that takes sensitive text, each with MARK in it."""
    space = api.open_space(name=f"{MARK} household")
    checking = api.open_account(
        space, f"{MARK} checking", "asset", overdraft_limit="0.00", metadata={"iban": MARK}
    )
    salary = api.open_account(space, f"{MARK} salary", "income")
    path = f"/v1/spaces/{space}"
    api.ok(api.patch(f"{path}/accounts/{salary}", {"name": f"{MARK} wages",
           "metadata": {"employer": f"{MARK} Ltd"}}), 200)  # fmt: skip
    posting = api.record(space, checking, salary, "100.00", description=f"{MARK} pay",
                         merchant=f"{MARK} payroll", metadata={"ref": f"{MARK}-1"})  # fmt: skip
    hold = api.record(space, salary, checking, "10.00", description=f"{MARK} hold", pending=True)
    declined = api.post(f"{path}/postings", api.posting_body(
        salary, checking, "500.00", description=f"{MARK} too much"))  # fmt: skip
    assert declined.status_code == 422, declined.text
    batch = api.post(f"{path}/postings/batch", {"postings": [api.posting_body(
        checking, salary, "1.00", description=f"{MARK} batch")]})  # fmt: skip
    assert batch.status_code == 201, batch.text
    api.ok(api.post("/v1/assets", {"code": "ZQM", "exponent": 2, "name": f"{MARK} points"}), 201)
    api.ok(api.post(f"{path}/postings/{hold['id']}/void", {"reason": f"{MARK} void"}), 200)
    for action in ("freeze", "unfreeze"):
        api.ok(api.post(f"{path}/accounts/{salary}/{action}", {"reason": f"{MARK} {action}"}), 200)
    return {"space": space, "checking": checking, "salary": salary, "posting": posting["id"],
            "hold": hold["id"]}  # fmt: skip


@pytest.fixture
def key() -> str:
    return generate_key()


def test_nothing_sensitive_is_stored_in_clear_and_reads_answer_it(
    database_url: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_INTERVAL_EVENTS", 3)  # snapshots too
    settings = settings_for(database_url, encryption_key=key)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = Api(client)
        ids = _write_everything(api)
        space = f"/v1/spaces/{ids['space']}"
        assert api.ok(api.get(space), 200)["name"] == f"{MARK} household"
        account = api.ok(api.get(f"{space}/accounts/{ids['checking']}"), 200)
        assert account["name"] == f"{MARK} checking" and account["metadata"] == {"iban": MARK}
        wages = api.ok(api.get(f"{space}/accounts/{ids['salary']}"), 200)
        assert wages["name"] == f"{MARK} wages"
        assert wages["metadata"] == {"employer": f"{MARK} Ltd"}
        posting = api.ok(api.get(f"{space}/postings/{ids['posting']}"), 200)
        assert posting["description"] == f"{MARK} pay"
        assert posting["merchant"] == f"{MARK} payroll"
        assert posting["metadata"] == {"ref": f"{MARK}-1"}
        listed = api.ok(api.get(f"{space}/postings", status="declined"), 200)["items"]
        assert [item["description"] for item in listed] == [f"{MARK} too much"]
        trial = api.ok(api.get(f"{space}/reports/trial-balance", as_of="2100-01-01"), 200)
        assert {row["name"] for row in trial["rows"]} == {f"{MARK} checking", f"{MARK} wages"}
        events = api.ok(api.get("/v1/events", limit=100), 200)["items"]
        assert any(e["data"].get("description") == f"{MARK} pay" for e in events)
        reasons = {e["data"]["reason"] for e in events if e["data"].get("reason")}
        assert {f"{MARK} void", f"{MARK} freeze", f"{MARK} unfreeze"} <= reasons
        assets = api.ok(api.get("/v1/assets"), 200)
        assert f"{MARK} points" in str(assets)
    assert clear_text_found(database_url) == []

    # The projections never needed the key: replay rebuilds the same sealed tables, verify agrees.
    before = dict(dump_tables(database_url))
    replay(database_url)
    assert dict(dump_tables(database_url)) == before
    assert verify(database_url).ok

    # Restarted with the key: the state (from snapshot and events) and stored answers open.
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = api.as_client(client)
        again = api.post(f"/v1/spaces/{ids['space']}/accounts/{ids['checking']}/freeze", {})
        assert again.status_code == 200, again.text
        renamed = api.ok(api.get(f"/v1/spaces/{ids['space']}/accounts/{ids['checking']}"), 200)
        assert renamed["name"] == f"{MARK} checking"


def test_an_encrypted_database_is_never_opened_without_its_key(database_url: str, key: str) -> None:
    with TestClient(create_app(settings_for(database_url, encryption_key=key))) as client:
        first = Api(client)
        space = first.open_space(name=f"{MARK} home")
        token = first.post("/v1/tokens", {"role": "read", "spaces": [space]}, key="token-1")
        issued = first.ok(token, 201)
    for wrong in (None, generate_key()):
        with pytest.raises(EncryptionKeyMissing):
            Ledger.open(settings=settings_for(database_url, encryption_key=wrong))
    # Rotation: a new key first, the old one kept after it; new text is sealed with the new key.
    new = generate_key()
    rotated = settings_for(database_url, encryption_key=f"{new},{key}")
    with TestClient(create_app(rotated)) as client:
        api = first.as_client(client)
        assert api.ok(api.get(f"/v1/spaces/{space}"), 200)["name"] == f"{MARK} home"
        # A token issued before the rotation is answered again, the same, to its retry.
        retry = api.post("/v1/tokens", {"role": "read", "spaces": [space]}, key="token-1")
        assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
        assert retry.json() == issued
        later = api.open_space(name=f"{MARK} second home")
    with pytest.raises(EncryptionKeyMissing):  # the old key alone cannot open the new text
        Ledger.open(settings=settings_for(database_url, encryption_key=key))
    with TestClient(create_app(rotated)) as client:
        api = api.as_client(client)
        assert api.ok(api.get(f"/v1/spaces/{later}"), 200)["name"] == f"{MARK} second home"
    assert clear_text_found(database_url) == []


def test_clear_text_written_before_a_key_was_set_stays_readable(
    database_url: str, key: str
) -> None:
    with TestClient(create_app(settings_for(database_url))) as client:
        first = Api(client)
        before = first.open_space(name=f"{MARK} clear")
    assert clear_text_found(database_url) != []  # no key: stored as it came
    with TestClient(create_app(settings_for(database_url, encryption_key=key))) as client:
        api = first.as_client(client)
        assert api.ok(api.get(f"/v1/spaces/{before}"), 200)["name"] == f"{MARK} clear"
        after = api.open_space(name="sealed from now on")
        assert api.ok(api.get(f"/v1/spaces/{after}"), 200)["name"] == "sealed from now on"
    with pytest.raises(EncryptionKeyMissing):
        Ledger.open(settings=settings_for(database_url))


def test_a_process_missing_a_newer_key_answers_503_not_sealed_text(
    database_url: str, key: str
) -> None:
    """A rotation under way: this app runs with the old key only while another process seals
    with a new one. What it cannot open it refuses with 503 `unavailable` (logged as an error),
    never answering sealed text, and once restarted with the new list it answers."""
    new = generate_key()
    rotated = settings_for(database_url, encryption_key=f"{new},{key}")
    with TestClient(create_app(settings_for(database_url, encryption_key=key))) as client:
        api = Api(client)
        mine = api.open_space(name=f"{MARK} mine")
        with Ledger.open(settings=rotated) as other:
            result = other.execute(cmd.OpenSpace(name=f"{MARK} newer", base_currency="USD",
                                                 idempotency_key="newer"))  # fmt: skip
        api.last_position = max(api.last_position, result.position or 0)
        assert api.ok(api.get(f"/v1/spaces/{mine}"), 200)["name"] == f"{MARK} mine"
        with api_log_records() as records:
            refused = api.get(f"/v1/spaces/{result.outcome.id}")
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "unavailable" and MARK not in refused.text
        assert "ldgenc1" not in refused.text
        assert any("encryption key" in r.getMessage() or "LEDGER_ENCRYPTION_KEY" in
                   r.getMessage() for r in records if r.levelname == "ERROR")  # fmt: skip
    with TestClient(create_app(rotated)) as client:
        api = api.as_client(client)
        answered = api.ok(api.get(f"/v1/spaces/{result.outcome.id}"), 200)
        assert answered["name"] == f"{MARK} newer"


def _stored_fingerprints(database_url: str) -> dict[str, bytes]:
    """idempotency key -> stored fingerprint, of every command row."""
    connection: Any
    if database_url.startswith("sqlite"):
        connection = sqlite3.connect(sqlite_path_from_url(database_url))
    else:
        connection = psycopg.connect(database_url)
    try:
        rows = connection.execute(
            "SELECT idempotency_key, fingerprint FROM ledger_commands"
        ).fetchall()
    finally:
        connection.close()
    return {key: bytes(fingerprint) for key, fingerprint in rows}


def test_fingerprints_are_stored_keyed_and_retries_match_across_key_changes(
    database_url: str, key: str
) -> None:
    """A stored fingerprint is keyed once a key is set (a guess of a sealed field cannot be
    tested against the database), and a retry still matches one stored before the key was set
    or under a key that a rotation moved down the list; another body is still refused."""
    new = generate_key()
    phases = {
        "plain": settings_for(database_url),
        "keyed": settings_for(database_url, encryption_key=key),
        "rotated": settings_for(database_url, encryption_key=f"{new},{key}"),
    }

    def space_command(phase: str, name: str = "home") -> cmd.OpenSpace:
        return cmd.OpenSpace(name=f"{MARK} {name}", base_currency="USD", idempotency_key=phase)

    def refusal(phase: str, detail: str = "unknown field") -> cmd.RecordRefusal:
        return cmd.RecordRefusal(
            space_id=None,
            fingerprint=bytes(range(16)) if detail == "unknown field" else bytes(16),
            code="invalid-request",
            detail=detail,
            idempotency_key=f"refused-{phase}",
        )

    first: dict[str, Any] = {}
    for phase, settings in phases.items():
        with Ledger.open(settings=settings) as ledger:
            first[phase] = ledger.execute(space_command(phase))
            with pytest.raises(errors.InvalidRequest):
                ledger.execute(refusal(phase))
    stored = _stored_fingerprints(database_url)
    for phase in phases:
        digest = cmd.command_fingerprint(space_command(phase))
        refused = cmd.command_fingerprint(refusal(phase))
        assert len(stored[phase]) == len(digest) == 16
        if phase == "plain":  # no key: the digest as it is
            assert (stored[phase], stored[f"refused-{phase}"]) == (digest, refused)
        else:  # keyed: not the digest anyone holding the database could compute
            assert stored[phase] != digest and stored[f"refused-{phase}"] != refused
    # The rotated keys fingerprint with the new (sealing) key, not the one it replaced.
    assert stored["rotated"] != Cipher.from_setting(key).fingerprint(
        cmd.command_fingerprint(space_command("rotated"))
    )

    with Ledger.open(settings=phases["rotated"]) as ledger:
        for phase in phases:
            again = ledger.execute(space_command(phase))
            assert (again.replayed, again.outcome, again.position) == (
                True,
                first[phase].outcome,
                first[phase].position,
            ), phase
            with pytest.raises(errors.InvalidRequest) as replayed:
                ledger.execute(refusal(phase))
            assert replayed.value.replayed, phase
            with pytest.raises(errors.IdempotencyKeyReused):
                ledger.execute(space_command(phase, name="elsewhere"))
            with pytest.raises(errors.IdempotencyKeyReused):
                ledger.execute(refusal(phase, detail="another body"))
    assert _stored_fingerprints(database_url) == stored  # retries record nothing
