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

import struct
from collections.abc import Sequence
from typing import Any, ClassVar, Final
from uuid import UUID

from ledger_core.store import COMMANDS_TABLE
from projections import feed
from projections.balances import ValueCache, encode_entries, encode_metadata
from projections.base import LoggedEvent, Projection, Writer
from projections.db import (
    COPY_ESCAPES,
    NULL,
    BinaryRows,
    Cursor,
    Database,
    copy_binary,
    copy_text,
    pg_array,
)

_STATUS_OF_CLOSER: Final[dict[type[feed.LightEvent], str]] = {
    feed.PendingPostingPosted: "posted",
    feed.PendingPostingVoided: "voided",
    feed.PendingPostingExpired: "expired",
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
#: The rm_postings columns that may be NULL: merchant, category_id, expires_at, reverses,
#: reversed_by, declined_reason (SQLite: `SQLITE_NULL` in the row, see `insert_rows`).
_NULLABLE: Final = (7, 8, 11, 13, 14, 15)


def _line(row: list[Any]) -> str:
    """An rm_postings row (PostgreSQL stored form) as a line of COPY's text format. Only the
    description, merchant and metadata can hold tabs, newlines or backslashes; the rest are
    ids, codes, dates, times and the entries' JSON of ids and codes."""
    (space, posting, position, status, entries, description, day, merchant, category) = row[:9]
    (metadata, pending, expires_at, recorded_at, reverses, reversed_by, reason) = row[9:]
    return (
        f"{space}\t{posting}\t{position}\t{status}\t{entries}\t"
        f"{description.translate(COPY_ESCAPES) if description else ''}\t{day}\t"
        f"{NULL if merchant is None else merchant.translate(COPY_ESCAPES)}\t"
        f"{NULL if category is None else category}\t{metadata.translate(COPY_ESCAPES)}\t"
        f"{'t' if pending else 'f'}\t{NULL if expires_at is None else expires_at}\t"
        f"{recorded_at}\t{NULL if reverses is None else reverses}\t"
        f"{NULL if reversed_by is None else reversed_by}\t{NULL if reason is None else reason}"
    )


_POSTING_ACCOUNT_COLUMNS: Final = ("space_id", "account_id", "position")
_POSTING_ACCOUNT_LAYOUT: Final = struct.Struct(">hi16si16siq")


#: (space id, posting id) as canonical UUID text.
PostingKey = tuple[str, str]


class PostingsProjection(Projection):
    name: ClassVar[str] = "postings"
    tables: ClassVar[dict[str, tuple[str, ...]]] = {
        "rm_postings": ("space_id", "position"),
        "rm_posting_accounts": ("space_id", "account_id", "position"),
    }
    deferred_index_tables: ClassVar[tuple[str, ...]] = ("rm_posting_accounts",)

    def prepare(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> Writer:
        new_rows: dict[PostingKey, list[Any]] = {}
        #: Rows of rm_posting_accounts. PostgreSQL: packed for binary COPY. SQLite: the
        #: positions by (space, account), in log order (the rows come out in key order account by
        #: account, without sorting them all).
        touched: list[Any] = []
        positions_by_account: dict[tuple[Any, Any], list[int]] = {}
        #: (space, posting) -> [status, entries, reversed_by] for rows older than the batch.
        updates: dict[PostingKey, list[Any]] = {}
        values = ValueCache(self.dialect)
        binary = BinaryRows() if self.database.is_postgres else None
        uuid = values.uuid if binary is None else binary.uuid
        pack = _POSTING_ACCOUNT_LAYOUT.pack
        for logged in events:
            event = logged.event
            if isinstance(event, feed.Posting):
                key = (logged.stream_id, event.posting_id)
                row = self._row(logged, event, values)
                new_rows[key] = row
                space, position = values.uuid(logged.stream_id), logged.position
                if binary is not None:  # PostgreSQL: packed for binary COPY at once
                    space = binary.uuid(space)
                entries = event.entries
                if len(entries) == 2 and entries[0].account_id != entries[1].account_id:
                    accounts: Any = (entries[0].account_id, entries[1].account_id)
                else:
                    accounts = dict.fromkeys(e.account_id for e in entries)
                if binary is not None:
                    touched.extend(
                        pack(3, 16, space, 16, uuid(account), 8, position) for account in accounts
                    )
                else:
                    for account in accounts:
                        account_key = (space, uuid(account))
                        found = positions_by_account.get(account_key)
                        if found is None:
                            positions_by_account[account_key] = [position]
                        else:
                            found.append(position)
                if event.reverses is not None and event.__class__ is feed.PostingRecorded:
                    original = (logged.stream_id, event.reverses)
                    _change(new_rows, updates, original, _REVERSED_BY, row[1])
            elif event.__class__ is feed.PendingPostingPosted:
                key = (logged.stream_id, event.posting_id)
                _change(new_rows, updates, key, _STATUS, "posted")
                _change(new_rows, updates, key, _ENTRIES, encode_entries(event.entries))
            elif event.__class__ in _STATUS_OF_CLOSER:
                key = (logged.stream_id, event.posting_id)  # type: ignore[attr-defined]
                _change(new_rows, updates, key, _STATUS, _STATUS_OF_CLOSER[event.__class__])
        positions = posting_positions(self.database, cursor, list(updates))
        rows = list(new_rows.values())
        if binary is None:
            row_id = values.row_id
            touched = [
                (row_id(space), row_id(account), position)
                for (space, account) in sorted(positions_by_account)
                for position in positions_by_account[(space, account)]
            ]
        return lambda write: self._write(write, rows, touched, updates, positions, values)

    def _row(self, logged: LoggedEvent, event: feed.Posting, values: ValueCache) -> list[Any]:
        if event.__class__ is feed.PostingDeclined:
            status, reason = "declined", event.reason  # type: ignore[attr-defined]
        else:
            status, reason = ("pending" if event.pending else "posted"), None
        null = values.row_null
        return [
            values.row_id(values.uuid(logged.stream_id)),
            values.row_uuid(event.posting_id),
            logged.position,
            status,
            encode_entries(event.entries),
            event.description,
            event.effective_date,
            null if event.merchant is None else event.merchant,
            values.row_uuid(event.category_id),
            encode_metadata(event.metadata),
            values.boolean(event.pending),
            null if event.expires_at is None else values.time(event.expires_at),
            values.time(event.recorded_at),
            values.row_uuid(event.reverses),
            null,
            null if reason is None else reason,
        ]

    def _write(
        self,
        cursor: Cursor,
        rows: list[list[Any]],
        touched: list[Any],
        updates: dict[PostingKey, list[Any]],
        positions: dict[PostingKey, int],
        values: ValueCache,
    ) -> None:
        database = self.database
        if database.is_postgres:
            copy_text(cursor, self.table_names["rm_postings"], _POSTING_COLUMNS, map(_line, rows))
        else:
            database.insert_rows(
                cursor, self.table_names["rm_postings"], _POSTING_COLUMNS, rows, nullable=_NULLABLE
            )
        table, columns = self.table_names["rm_posting_accounts"], _POSTING_ACCOUNT_COLUMNS
        if database.is_postgres:
            copy_binary(cursor, table, columns, touched)  # packed as they were found
        else:
            database.insert_rows(cursor, table, columns, touched)
        database.executemany(
            cursor,
            self.statement(
                "UPDATE {rm_postings} SET status = coalesce(?, status), "
                "entries = coalesce(?, entries), reversed_by = coalesce(?, reversed_by) "
                "WHERE space_id = ? AND position = ?"
            ),
            [(*change, values.uuid(key[0]), positions[key]) for key, change in updates.items()],
        )


def _change(
    new_rows: dict[PostingKey, list[Any]],
    updates: dict[PostingKey, list[Any]],
    key: PostingKey,
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
    database: Database, cursor: Cursor, keys: Sequence[PostingKey]
) -> dict[PostingKey, int]:
    """The log position of each (space, posting id), from the core's `ledger_commands`. A key
    that is not there raises KeyError later: the log names a posting it never recorded."""
    found: dict[PostingKey, int] = {}
    by_space: dict[str, list[str]] = {}
    for space_id, posting_id in keys:
        by_space.setdefault(space_id, []).append(posting_id)
    for space_id, posting_ids in by_space.items():
        for start in range(0, len(posting_ids), POSITION_LOOKUP_CHUNK):
            chunk = posting_ids[start : start + POSITION_LOOKUP_CHUNK]
            if database.is_postgres:
                cursor.execute(
                    f"SELECT id::text, position FROM {COMMANDS_TABLE} "
                    "WHERE scope_id = %s AND id = ANY(%s::uuid[])",
                    (space_id, pg_array(chunk)),
                )
                rows = [(row[0], row[1]) for row in cursor.fetchall()]
            else:
                marks = ",".join("?" * len(chunk))
                cursor.execute(
                    f"SELECT id, position FROM {COMMANDS_TABLE} "
                    f"WHERE scope_id = ? AND id IN ({marks})",
                    (UUID(space_id).hex, *(UUID(posting_id).hex for posting_id in chunk)),
                )
                rows = [(str(UUID(row[0])), row[1]) for row in cursor.fetchall()]
            for posting_id, position in rows:
                if position is not None:
                    found[(space_id, posting_id)] = int(position)
    return found
