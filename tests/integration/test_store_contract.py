"""The store contract, on every backend: what the writer relies on."""

from __future__ import annotations

from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from ledger_core.store import AppendBatch, AppendConflict, CommandRow, PostingUpdate, open_store


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


def test_one_append_writes_events_command_rows_and_posting_updates_together(
    database_url: str,
) -> None:
    """The command rows of a batch take their events' positions, and the batch's posting
    updates land in the same append; a conflicting append applies none of its updates."""
    store = open_store(database_url)
    try:
        stream, scope = uuid4(), uuid4()
        held, later = uuid4(), uuid4()
        hold = CommandRow(
            scope_id=scope, id=held, idempotency_key="hold", event_index=0,
            posting_status="pending", posting_version=1,
        )  # fmt: skip
        store.append(AppendBatch(events=[_event(stream, 1)], command_rows=[hold]))
        posted = CommandRow(
            scope_id=scope, id=later, idempotency_key="post", event_index=1,
            posting_status="posted", posting_version=3,
        )  # fmt: skip
        refused = CommandRow(scope_id=scope, id=uuid4(), idempotency_key="no", outcome=b"{}")
        update = PostingUpdate(
            space_id=scope, posting_id=held, posting_status="posted", posting_version=3
        )
        positions = store.append(
            AppendBatch(
                events=[_event(stream, 2), _event(stream, 3)],
                command_rows=[posted, refused],
                posting_updates=[update],
            )
        )
        rows = store.command_rows(scope, [held, later, refused.id])
        assert rows[later].position == positions[1]
        assert rows[refused.id].position is None
        assert (rows[held].posting_status, rows[held].posting_version) == ("posted", 3)

        void = PostingUpdate(space_id=scope, posting_id=held, posting_status="voided")
        with pytest.raises(AppendConflict):
            store.append(AppendBatch(events=[_event(stream, 3)], posting_updates=[void]))
        assert store.command_rows(scope, [held])[held].posting_status == "posted"
    finally:
        store.close()


def test_an_append_without_events_keeps_the_positions_its_rows_bring(database_url: str) -> None:
    """Command rows and posting updates alone (a refusal answered again, say): a row without an
    event keeps the position it brings."""
    store = open_store(database_url)
    try:
        scope, posting = uuid4(), uuid4()
        first = CommandRow(
            scope_id=scope, id=posting, idempotency_key="a", posting_status="pending"
        )
        store.append(AppendBatch(command_rows=[first]))
        second = CommandRow(scope_id=scope, id=uuid4(), idempotency_key="b", position=42)
        update = PostingUpdate(space_id=scope, posting_id=posting, posting_status="voided")
        assert store.append(AppendBatch(command_rows=[second], posting_updates=[update])) == []
        rows = store.command_rows(scope, [posting, second.id])
        assert rows[second.id].position == 42
        assert rows[posting].posting_status == "voided"
    finally:
        store.close()


def test_an_append_notifies_listeners_on_postgres(postgres_url: str) -> None:
    """`ledger project` is woken by the NOTIFY of each append (PostgreSQL only: on SQLite the
    projections poll)."""
    import psycopg

    store = open_store(postgres_url)
    try:
        with psycopg.connect(postgres_url, autocommit=True) as listener:
            listener.execute(f"LISTEN {store.channel_name}")
            row = CommandRow(scope_id=uuid4(), id=uuid4(), idempotency_key="k")
            store.append(AppendBatch(command_rows=[row]))  # no event: nothing to wake for
            assert list(listener.notifies(timeout=0.2, stop_after=1)) == []
            store.append(AppendBatch(events=[_event(uuid4(), 1)]))
            assert [n.channel for n in listener.notifies(timeout=5, stop_after=1)] == [
                store.channel_name
            ]
    finally:
        store.close()
