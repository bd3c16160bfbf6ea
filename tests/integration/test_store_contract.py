"""The store contract, on every backend: what the writer relies on."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from ledger_core.store import AppendBatch, AppendConflict, CommandRow, open_store


def _event(stream, version, topic="PostingRecorded/v1", state=b"{}"):
    return StoredEvent(originator_id=stream, originator_version=version, topic=topic, state=state)


def test_append_assigns_increasing_positions(database_url: str) -> None:
    store = open_store(database_url)
    try:
        stream = uuid4()
        first = store.append(AppendBatch(events=[_event(stream, 1), _event(stream, 2)]))
        second = store.append(AppendBatch(events=[_event(stream, 3)]))
        assert first[0] < first[1] < second[0]
        assert store.max_position() == second[0]
        assert [e.originator_version for e in store.stream(stream)] == [1, 2, 3]
        assert [n.id for n in store.notifications(after=first[0], limit=10)] == [
            first[1],
            second[0],
        ]
    finally:
        store.close()


def test_stream_version_conflict_writes_nothing(database_url: str) -> None:
    store = open_store(database_url)
    try:
        stream, scope = uuid4(), uuid4()
        store.append(AppendBatch(events=[_event(stream, 1)]))
        row = CommandRow(
            scope_id=scope,
            id=uuid4(),
            idempotency_key="k",
            fingerprint=b"f",
            outcome=b"{}",
            event_index=1,
        )
        with pytest.raises(AppendConflict):
            store.append(
                AppendBatch(events=[_event(stream, 2), _event(stream, 1)], command_rows=[row])
            )
        assert [e.originator_version for e in store.stream(stream)] == [1]
        assert store.command_rows(scope, [row.id]) == {}
    finally:
        store.close()


def test_command_id_is_unique_forever(database_url: str) -> None:
    store = open_store(database_url)
    try:
        scope, row_id = uuid4(), uuid4()
        row = CommandRow(
            scope_id=scope, id=row_id, idempotency_key="k", fingerprint=b"f", outcome=b"{}"
        )
        store.append(AppendBatch(command_rows=[row]))
        again = CommandRow(
            scope_id=scope, id=row_id, idempotency_key="k", fingerprint=b"g", outcome=b"{}"
        )
        with pytest.raises(AppendConflict):
            store.append(AppendBatch(command_rows=[again]))
        found = store.command_rows(scope, [row_id])
        assert found[row_id].fingerprint == b"f"
    finally:
        store.close()
