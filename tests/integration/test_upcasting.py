"""Events written by an older version of the ledger stay readable after their class changes.

The test plays a schema change: an `AccountOpened` stored at v1 in an older shape (a decimal-string
`overdraft_limit` and no `subtype`) sits in the store; the class is then raised to v3 and two
upcasters (v1 -> v2 -> v3, one step at a time) are registered. `decode_event` and a Ledger loading
the space must both see the current shape. A topic no version of the ledger knows is a clear error.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest
from eventsourcing.persistence import StoredEvent

from ledger_core import Ledger, codec, errors
from ledger_core import commands as cmd
from ledger_core import events as ev
from ledger_core.codec import UnknownEventTopic, decode_event, encode_event
from ledger_core.state import state_fingerprint
from ledger_core.store import AppendBatch, open_store

RECORDED_AT = datetime(2024, 3, 1, 8, 30, tzinfo=UTC)


def old_account_payload(account_id: UUID) -> dict[str, Any]:
    """How version 1 of the ledger wrote an account: a decimal limit and no subtype."""
    return {
        "recorded_at": RECORDED_AT.isoformat(),
        "idempotency_key": "open-checking",
        "account_id": str(account_id),
        "name": "Checking",
        "type": "asset",
        "currency": "USD",
        "overdraft_limit": "50.00",
    }


def v1_to_v2(payload: dict[str, Any]) -> None:
    """v2 stored the limit in minor units."""
    text = payload.pop("overdraft_limit")
    units, _, cents = text.partition(".")
    payload["overdraft_limit_minor"] = int(units) * 100 + int(cents or 0)


def v2_to_v3(payload: dict[str, Any]) -> None:
    """v3 added the subtype; old accounts are `other`."""
    payload.setdefault("subtype", "other")


@pytest.fixture
def account_opened_at_v3(monkeypatch: pytest.MonkeyPatch) -> None:
    """AccountOpened as if its class had been raised to v3, with its upcasters registered and
    the codec's tables rebuilt as importing the changed module would."""
    monkeypatch.setattr(ev.AccountOpened, "schema_version", 3)
    monkeypatch.setitem(ev.UPCASTERS, ("AccountOpened", 1), v1_to_v2)
    monkeypatch.setitem(ev.UPCASTERS, ("AccountOpened", 2), v2_to_v3)
    decoders = {ev.event_topic(cls): msgspec.json.Decoder(cls) for cls in ev.EVENT_TYPES.values()}
    monkeypatch.setattr(codec, "_decoders", decoders)
    monkeypatch.setattr(
        codec, "_topics", {cls: ev.event_topic(cls) for cls in ev.EVENT_TYPES.values()}
    )


def stored(stream: UUID, version: int, topic: str, payload: bytes) -> StoredEvent:
    return StoredEvent(originator_id=stream, originator_version=version, topic=topic, state=payload)


@pytest.fixture
def old_store(database_url: str) -> Iterator[tuple[str, UUID, UUID]]:
    """A store holding a space whose account was opened by version 1 of the ledger."""
    space_id, account_id = uuid4(), uuid4()
    opened = ev.SpaceOpened(
        space_id=space_id, name="Old", base_currency="USD", recorded_at=RECORDED_AT
    )
    store = open_store(database_url)
    try:
        store.append(
            AppendBatch(
                events=[
                    stored(space_id, 1, *encode_event(opened)),
                    stored(
                        space_id,
                        2,
                        "AccountOpened/v1",
                        msgspec.json.encode(old_account_payload(account_id)),
                    ),
                ]
            )
        )
    finally:
        store.close()
    yield database_url, space_id, account_id


def test_decode_event_upcasts_one_version_at_a_time(account_opened_at_v3: None) -> None:
    account_id = uuid4()
    event = decode_event("AccountOpened/v1", msgspec.json.encode(old_account_payload(account_id)))
    assert isinstance(event, ev.AccountOpened)
    assert (event.account_id, event.subtype, event.overdraft_limit_minor) == (
        account_id,
        "other",
        5000,
    )
    assert (event.recorded_at, event.idempotency_key) == (RECORDED_AT, "open-checking")
    # A v2 payload needs only the last step.
    v2 = old_account_payload(account_id)
    v1_to_v2(v2)
    v2["subtype"] = "savings"
    from_v2 = decode_event("AccountOpened/v2", msgspec.json.encode(v2))
    assert isinstance(from_v2, ev.AccountOpened) and from_v2.subtype == "savings"
    # The current version reads straight, and new events are written at it.
    topic, payload = encode_event(from_v2)
    assert topic == "AccountOpened/v3"
    assert decode_event(topic, payload) == from_v2


def test_ledger_loads_upcast_events(
    account_opened_at_v3: None, old_store: tuple[str, UUID, UUID]
) -> None:
    url, space_id, account_id = old_store
    with Ledger.open(url) as ledger:
        account = ledger.account(space_id, account_id)
        assert (account.name, account.subtype, account.overdraft_limit_minor) == (
            "Checking",
            "other",
            5000,
        )
        # The upcast account takes part in new commands: its limit holds.
        equity = ledger.execute(
            cmd.OpenAccount(
                idempotency_key="equity",
                space_id=space_id,
                name="Equity",
                type="equity",
                currency="USD",
            )
        ).outcome
        assert isinstance(equity, type(account))

        def transfer(key: str, amount: str) -> cmd.RecordPosting:
            entries = (
                cmd.EntrySpec(account_id=equity.id, direction="debit", amount=amount),
                cmd.EntrySpec(account_id=account_id, direction="credit", amount=amount),
            )
            return cmd.RecordPosting(
                idempotency_key=key, space_id=space_id, posting=cmd.PostingSpec(entries=entries)
            )

        ledger.execute(transfer("within", "50.00"))
        with pytest.raises(errors.InsufficientFunds):
            ledger.execute(transfer("past", "0.01"))
        live = ledger.inspect(space_id, state_fingerprint)
        reloaded = ledger.load_space(space_id)
        assert reloaded is not None and state_fingerprint(reloaded) == live
        topics = [n.topic for n in ledger.store.notifications(after=0, limit=100)]
        assert topics[:3] == ["SpaceOpened/v1", "AccountOpened/v1", "AccountOpened/v3"]


def test_raised_version_without_an_upcaster_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ev.AccountUpdated, "schema_version", 2)
    monkeypatch.delitem(codec._decoders, "AccountUpdated/v1")
    payload = msgspec.json.encode(
        {"recorded_at": RECORDED_AT.isoformat(), "account_id": str(uuid4())}
    )
    with pytest.raises(UnknownEventTopic, match="no upcaster from AccountUpdated v1 to v2"):
        decode_event("AccountUpdated/v1", payload)


@pytest.mark.parametrize(
    "topic", ["AccountRenamed/v1", "AccountOpened/v99", "AccountOpened", "AccountOpened/vx"]
)
def test_unknown_topic_is_a_clear_error(topic: str) -> None:
    with pytest.raises(UnknownEventTopic) as raised:
        decode_event(topic, b"{}")
    assert repr(topic) in str(raised.value)


def test_ledger_refuses_a_space_with_an_unknown_topic(database_url: str) -> None:
    space_id = uuid4()
    opened = ev.SpaceOpened(
        space_id=space_id, name="Future", base_currency="USD", recorded_at=RECORDED_AT
    )
    store = open_store(database_url)
    try:
        store.append(
            AppendBatch(
                events=[
                    stored(space_id, 1, *encode_event(opened)),
                    stored(space_id, 2, "AccountRenamed/v1", b"{}"),
                ]
            )
        )
    finally:
        store.close()
    with Ledger.open(database_url) as ledger:
        with pytest.raises(UnknownEventTopic, match="AccountRenamed/v1"):
            ledger.load_space(space_id)
        with pytest.raises(UnknownEventTopic, match="AccountRenamed/v1"):
            ledger.inspect(space_id, state_fingerprint)
        with pytest.raises(errors.Unavailable, match="retry with the same key") as refused:
            ledger.execute(
                cmd.FreezeAccount(idempotency_key="f", space_id=space_id, account_id=uuid4())
            )
        # The caller is told what to do; the cause is chained for code (and logged), never
        # put in the detail an HTTP client sees.
        assert "AccountRenamed" not in refused.value.detail
        assert isinstance(refused.value.__cause__, UnknownEventTopic)
        assert "AccountRenamed/v1" in str(refused.value.__cause__)
