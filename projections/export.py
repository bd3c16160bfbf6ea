"""The log as JSON Lines, for auditors and integrations (`ledger export`).

Each line is one event, in the shape of an item of `GET /v1/events`: `{position, space_id, type,
recorded_at, data}`, every field of the event in `data` (the audit context of a command's events
too: token, request id, client address, user agent), sealed text opened with the ledger's keys.

An export is a consistent prefix of the log: it reads up to the head as it was when the export
started, so events recorded meanwhile are left for the next export (`--after` the last position
exported). It reads in pages of `EXPORT_PAGE_EVENTS`, one short read each: memory stays flat
however long the log, and no transaction stays open for the length of the export.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final
from uuid import UUID

import msgspec

from ledger_core.crypto import CLEAR, Cipher
from ledger_core.store import EVENTS_TABLE
from projections.base import event_view, head_position, read_rows
from projections.db import Database

#: Events read per query while exporting.
EXPORT_PAGE_EVENTS: Final = 5_000

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class ExportRange:
    """What an export covers: the events with `after` < position <= `until`."""

    after: int
    until: int


def export_range(url: str, after: int) -> ExportRange:
    """The positions an export started now covers: after `after`, up to the current head."""
    database = Database(url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        if not database.table_exists(cursor, EVENTS_TABLE):  # nothing recorded yet
            return ExportRange(after=after, until=after)
        return ExportRange(after=after, until=max(head_position(database, cursor), after))
    finally:
        connection.close()


def export_lines(
    url: str,
    covered: ExportRange,
    *,
    cipher: Cipher = CLEAR,
    space_id: UUID | None = None,
    on_page: Callable[[int], None] | None = None,
) -> Iterator[bytes]:
    """The events of `covered` as JSON lines (each ending in a newline), in log order; only
    `space_id`'s events if given. `on_page(position)` is called after each page read."""
    database = Database(url)
    connection = database.connect()
    try:
        position = covered.after
        while position < covered.until:
            rows = read_rows(
                database, connection.cursor(), position, EXPORT_PAGE_EVENTS, covered.until
            )
            if not rows:
                break
            for row in rows:
                if space_id is None or row.stream_id == space_id:
                    yield _encoder.encode(event_view(row, cipher)) + b"\n"
            position = rows[-1].position
            if on_page is not None:
                on_page(position)
    finally:
        connection.close()
