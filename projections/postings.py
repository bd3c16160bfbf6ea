"""The `postings` projection: every posting with its status and links, for the postings list
and the posting read.

A posting's row is written when it is recorded (or declined) and updated when its hold is
posted (its entries become what was captured), voided or expired, and when a reversal names it.
`rm_posting_accounts` lists the accounts each posting touches, so the list filtered by account
is an index range scan in log order. Updates to a posting recorded in the same batch are made in
memory before the row is written; updates to older rows are one bulk UPDATE per batch.

A hold past its `expires_at` whose expiry the ledger has not recorded yet is stored as
`pending`; the reader shows it as `expired` (the answer must not depend on the writer having run
its expiry sweep).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Final
from uuid import UUID

from ledger_core import events as ev
from projections.balances import encode_entries, encode_metadata
from projections.base import LoggedEvent, Projection
from projections.db import Cursor

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
        "rm_postings": ("space_id", "posting_id"),
        "rm_posting_accounts": ("space_id", "account_id", "position"),
    }

    def apply(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> None:
        new_rows: dict[tuple[UUID, UUID], list[Any]] = {}
        touched: list[tuple[Any, ...]] = []
        #: (space, posting) -> [status, entries, reversed_by] for rows older than the batch.
        updates: dict[tuple[UUID, UUID], list[Any]] = {}
        dialect = self.dialect
        for logged in events:
            event = logged.event
            if isinstance(event, ev.PostingRecorded | ev.PostingDeclined):
                key = (logged.stream_id, event.posting_id)
                new_rows[key] = self._row(logged, event)
                space_value, posting_value = dialect.uuid(key[0]), dialect.uuid(key[1])
                touched.extend(
                    (space_value, dialect.uuid(account_id), logged.position, posting_value)
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
        self, logged: LoggedEvent, event: ev.PostingRecorded | ev.PostingDeclined
    ) -> list[Any]:
        dialect = self.dialect
        status = "pending" if event.pending else "posted"
        if isinstance(event, ev.PostingDeclined):
            status = "declined"
        return [
            dialect.uuid(logged.stream_id),
            dialect.uuid(event.posting_id),
            logged.position,
            status,
            encode_entries(event.entries),
            event.description,
            dialect.date(event.effective_date),
            event.merchant,
            dialect.uuid(event.category_id),
            encode_metadata(event.metadata),
            dialect.boolean(event.pending),
            dialect.timestamp(event.expires_at),
            dialect.timestamp(event.recorded_at),
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
        columns = ", ".join(_POSTING_COLUMNS)
        marks = ", ".join("?" * len(_POSTING_COLUMNS))
        database.executemany(
            cursor,
            self.statement("INSERT INTO {rm_postings} (" + columns + ") VALUES (" + marks + ")"),
            rows,
        )
        database.executemany(
            cursor,
            self.statement(
                "INSERT INTO {rm_posting_accounts} (space_id, account_id, position, posting_id) "
                "VALUES (?, ?, ?, ?)"
            ),
            touched,
        )
        database.executemany(
            cursor,
            self.statement(
                "UPDATE {rm_postings} SET status = coalesce(?, status), "
                "entries = coalesce(?, entries), reversed_by = coalesce(?, reversed_by) "
                "WHERE space_id = ? AND posting_id = ?"
            ),
            [
                (*change, dialect.uuid(key[0]), dialect.uuid(key[1]))
                for key, change in updates.items()
            ],
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
