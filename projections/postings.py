"""The `postings` projection: every posting with its status and links, for the postings list
and the posting read.

A posting's row is written when it is recorded (or declined) and updated when its hold is
posted (its entries become what was captured), voided or expired, and when a reversal names it.
`rm_posting_accounts` lists the accounts each posting touches, so the list filtered by account
is an index range scan in log order. Updates to a posting recorded in the same batch are made in
memory before the row is written; updates to older rows are one bulk UPDATE per batch, by log
position: the position of a posting recorded in an earlier batch is read from the core's
`ledger_commands` (see migration m0002), which holds it under (space, posting id).

A hold past its `expires_at` whose expiry the ledger has not recorded yet is stored as
`pending`; the reader shows it as `expired` (the answer must not depend on the writer having run
its expiry sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final
from uuid import UUID

from ledger_core import events as ev
from ledger_core.store import COMMANDS_TABLE
from projections.balances import ValueCache, encode_entries, encode_metadata
from projections.base import LoggedEvent, Projection
from projections.db import Cursor, Database

_STATUS_OF_CLOSER: Final[dict[type[ev.Event], str]] = {
    ev.PendingPostingPosted: "posted",
    ev.PendingPostingVoided: "voided",
    ev.PendingPostingExpired: "expired",
}

#: rm_postings columns in insert order; `status`, `entries` and `reversed_by` may change later.
_POSTING_COLUMNS: Final = (
    "space_id",
    "posting_id",
    "position",
    "status",
    "entries",
    "description",
    "effective_date",
    "merchant",
    "category_id",
    "metadata",
    "pending",
    "expires_at",
    "recorded_at",
    "reverses",
    "reversed_by",
    "declined_reason",
)
_STATUS, _ENTRIES, _REVERSED_BY = 3, 4, 14


class PostingsProjection(Projection):
    name: ClassVar[str] = "postings"
    tables: ClassVar[dict[str, tuple[str, ...]]] = {
        "rm_postings": ("space_id", "position"),
        "rm_posting_accounts": ("space_id", "account_id", "position"),
    }

    def apply(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> None:
        new_rows: dict[tuple[UUID, UUID], list[Any]] = {}
        touched: list[tuple[Any, ...]] = []
        #: (space, posting) -> [status, entries, reversed_by] for rows older than the batch.
        updates: dict[tuple[UUID, UUID], list[Any]] = {}
        dialect = self.dialect
        values = ValueCache(dialect)
        for logged in events:
            event = logged.event
            if isinstance(event, ev.PostingRecorded | ev.PostingDeclined):
                key = (logged.stream_id, event.posting_id)
                new_rows[key] = self._row(logged, event, values)
                space_value, posting_value = values.uuid(key[0]), dialect.uuid(key[1])
                touched.extend(
                    (space_value, values.uuid(account_id), logged.position, posting_value)
                    for account_id in dict.fromkeys(e.account_id for e in event.entries)
                )
                if isinstance(event, ev.PostingRecorded) and event.reverses is not None:
                    original = (logged.stream_id, event.reverses)
                    change = (_REVERSED_BY, dialect.uuid(event.posting_id))
                    _change(new_rows, updates, original, *change)
            elif isinstance(event, ev.PendingPostingPosted):
                key = (logged.stream_id, event.posting_id)
                _change(new_rows, updates, key, _STATUS, "posted")
                _change(new_rows, updates, key, _ENTRIES, encode_entries(event.entries))
            elif type(event) in _STATUS_OF_CLOSER:
                key = (logged.stream_id, event.posting_id)  # type: ignore[attr-defined]
                _change(new_rows, updates, key, _STATUS, _STATUS_OF_CLOSER[type(event)])
        self._write(cursor, list(new_rows.values()), touched, updates)

    def _row(
        self,
        logged: LoggedEvent,
        event: ev.PostingRecorded | ev.PostingDeclined,
        values: ValueCache,
    ) -> list[Any]:
        dialect = self.dialect
        status = "pending" if event.pending else "posted"
        if isinstance(event, ev.PostingDeclined):
            status = "declined"
        return [
            values.uuid(logged.stream_id),
            dialect.uuid(event.posting_id),
            logged.position,
            status,
            encode_entries(event.entries),
            event.description,
            values.date(event.effective_date),
            event.merchant,
            dialect.uuid(event.category_id),
            encode_metadata(event.metadata),
            dialect.boolean(event.pending),
            dialect.timestamp(event.expires_at),
            values.timestamp(event.recorded_at),
            dialect.uuid(event.reverses),
            None,
            event.reason if isinstance(event, ev.PostingDeclined) else None,
        ]

    def _write(
        self,
        cursor: Cursor,
        rows: list[list[Any]],
        touched: list[tuple[Any, ...]],
        updates: dict[tuple[UUID, UUID], list[Any]],
    ) -> None:
        database, dialect = self.database, self.dialect
        positions = posting_positions(database, cursor, list(updates))
        database.insert_rows(cursor, self.table_names["rm_postings"], _POSTING_COLUMNS, rows)
        database.insert_rows(
            cursor,
            self.table_names["rm_posting_accounts"],
            ("space_id", "account_id", "position", "posting_id"),
            touched,
        )
        database.executemany(
            cursor,
            self.statement(
                "UPDATE {rm_postings} SET status = coalesce(?, status), "
                "entries = coalesce(?, entries), reversed_by = coalesce(?, reversed_by) "
                "WHERE space_id = ? AND position = ?"
            ),
            [(*change, dialect.uuid(key[0]), positions[key]) for key, change in updates.items()],
        )


def _change(
    new_rows: dict[tuple[UUID, UUID], list[Any]],
    updates: dict[tuple[UUID, UUID], list[Any]],
    key: tuple[UUID, UUID],
    column: int,
    value: Any,
) -> None:
    """Set one changeable column of a posting: in its new row if the batch recorded it, else in
    the batch's pending UPDATE of the stored row."""
    row = new_rows.get(key)
    if row is not None:
        row[column] = value
        return
    change = updates.setdefault(key, [None, None, None])
    change[(_STATUS, _ENTRIES, _REVERSED_BY).index(column)] = value


#: Posting ids looked up per query in `ledger_commands`.
POSITION_LOOKUP_CHUNK: Final = 500


def posting_positions(
    database: Database, cursor: Cursor, keys: Sequence[tuple[UUID, UUID]]
) -> dict[tuple[UUID, UUID], int]:
    """The log position of each (space, posting id), from the core's `ledger_commands`. A key
    that is not there raises KeyError later: the log names a posting it never recorded."""
    found: dict[tuple[UUID, UUID], int] = {}
    by_space: dict[UUID, list[UUID]] = {}
    for space_id, posting_id in keys:
        by_space.setdefault(space_id, []).append(posting_id)
    for space_id, posting_ids in by_space.items():
        for start in range(0, len(posting_ids), POSITION_LOOKUP_CHUNK):
            chunk = posting_ids[start : start + POSITION_LOOKUP_CHUNK]
            if database.is_postgres:
                cursor.execute(
                    f"SELECT id, position FROM {COMMANDS_TABLE} "
                    "WHERE scope_id = %s AND id = ANY(%s::uuid[])",
                    (space_id, chunk),
                )
                rows = [(row[0], row[1]) for row in cursor.fetchall()]
            else:
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    f"SELECT id, position FROM {COMMANDS_TABLE} "
                    f"WHERE scope_id = ? AND id IN ({marks})",
                    (space_id.hex, *(posting_id.hex for posting_id in chunk)),
                )
                rows = [(UUID(row[0]), row[1]) for row in cursor.fetchall()]
            for posting_id, position in rows:
                if position is not None:
                    found[(space_id, posting_id)] = int(position)
    return found
