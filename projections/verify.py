"""`ledger verify`: the auditor's check that the read tables are what the log says, and that the
log itself keeps the ledger's invariants.

1. Re-derive: every projection is rebuilt from position 0 into fresh tables (`__verify`), up
   to exactly the position the live projection has applied, and the two are compared row by row
   with SQL `EXCEPT` in both directions, inside one snapshot of the live tables. Each difference
   is reported with its table, its primary key, the expected row (re-derived) and the row found.
2. The log: read once, in order, in batches (memory bounded by the number of streams, spaces and
   currencies, plus an 8-byte digest per idempotency key):
   - every posting (and every capture of a hold) has two entries or more, positive amounts, and
     debits equal to credits in each currency;
   - money is conserved: per space and currency, posted debits equal posted credits;
   - each stream's versions run 1, 2, 3, ... without a gap or a repeat;
   - each idempotency key is used by one command only: the events a key caused are one
     contiguous run in their stream (a batch's postings share their command's key);
   - every event decodes.

Every finding is a `Mismatch` (kind, table, row, expected, found); the command prints them and
exits non-zero if there is any.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from ledger_core import events as ev
from ledger_core.store import EVENTS_TABLE
from projections.base import (
    TRACKING_TABLE,
    EventDecodeFailed,
    Projection,
    decode_stored,
    read_rows,
)
from projections.db import Cursor, Database
from projections.rebuild import (
    REBUILD_BATCH_EVENTS,
    build,
    columns_of,
    drop_copies,
    exclusive,
    generation_of,
    prepare_copies,
)
from projections.registry import projection_classes
from projections.tracking import ProjectionFailed, tracked_position

#: SQLite stores UUIDs as their 16 bytes; a report shows them in the usual text form.
UUID_BYTES: Final = 16
#: The suffix of verify's re-derived tables and tracking row.
VERIFY_SUFFIX: Final = "__verify"
#: At most this many differences are reported per table (one corrupt column can differ in
#: every row; the first ones say what is wrong).
MAX_REPORTED_ROWS_PER_TABLE: Final = 50
#: How many times verify re-derives up to a live position that keeps moving before it gives up.
MAX_CATCH_UP_ROUNDS: Final = 20


@dataclass(frozen=True)
class Mismatch:
    """One finding: `kind` says what (row-differs, row-missing, row-unexpected,
    posting-unbalanced, money-not-conserved, stream-version-gap, idempotency-key-reused,
    event-undecodable, event-not-reapplied: the projection failed on an event of its applied
    range when re-deriving it, not-verified, rows-not-shown: more rows of a table differ than
    are reported), `table` and `row` where, `expected` and `found` what."""

    kind: str
    table: str
    row: str
    expected: str
    found: str
    #: How many differences the finding stands for (rows-not-shown: the rows not shown).
    count: int = 1


@dataclass
class VerifyReport:
    positions: dict[str, int]
    events_checked: int
    mismatches: list[Mismatch]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    @property
    def total(self) -> int:
        """Every difference found, shown or not."""
        return sum(mismatch.count for mismatch in self.mismatches)


def verify(database_url: str, names: list[str] | None = None) -> VerifyReport:
    database = Database(database_url)
    connection = database.connect()
    try:
        with exclusive(database, connection, "verify"):  # one at a time: same scratch tables
            mismatches: list[Mismatch] = []
            positions: dict[str, int] = {}
            for cls in projection_classes(names):
                position, found = _verify_projection(database, connection, cls)
                positions[cls.name] = position
                mismatches.extend(found)
            checker = LogChecker()
            events_checked = checker.run(database, connection)
            mismatches.extend(checker.mismatches)
            return VerifyReport(positions, events_checked, mismatches)
    finally:
        connection.close()


# Re-derivation -----------------------------------------------------------------------------------


def _verify_projection(
    database: Database, connection: Any, cls: type[Projection]
) -> tuple[int, list[Mismatch]]:
    live = cls(database)
    copy = cls(database, VERIFY_SUFFIX)
    generation = generation_of(database, connection, cls.name) + 1000
    with database.transaction(connection) as cursor:
        drop_copies(database, cursor, copy)
    prepare_copies(database, connection, copy, generation)
    try:
        for _ in range(MAX_CATCH_UP_ROUNDS):
            target = _live_position(database, connection, cls.name)
            try:
                build(database, connection, [copy], until=target)
            except ProjectionFailed as failed:
                # An event the live projection once applied cannot be applied again: the log
                # was changed under it (or the projection's code was). A finding, not a crash.
                failure = failed.failure
                reason = (failure.reason.strip().splitlines() or ["?"])[0]
                row = f"position={failure.position} ({failure.topic})"
                expected = "an event the projection applies, as it did when it was recorded"
                return target, [Mismatch("event-not-reapplied", cls.name, row, expected, reason)]
            compared = _compare_at(database, connection, live, copy, target)
            if compared is not None:
                return target, compared
        message = "the live projection kept moving; run verify while it is quieter"
        return target, [Mismatch("not-verified", cls.name, "-", "-", message)]
    finally:
        with database.transaction(connection) as cursor:
            drop_copies(database, cursor, copy)


def _live_position(database: Database, connection: Any, name: str) -> int:
    return tracked_position(database, connection.cursor(), name, lock=False) or 0


def _compare_at(
    database: Database, connection: Any, live: Projection, copy: Projection, target: int
) -> list[Mismatch] | None:
    """Compare in one snapshot in which the live projection is at `target`; None if it has
    moved on (the caller re-derives further and tries again)."""
    with _snapshot(database, connection) as cursor:
        if tracked_position(database, cursor, live.name, lock=False) != target:
            return None
        found: list[Mismatch] = []
        for table, key_columns in live.tables.items():
            found.extend(
                _compare_table(database, cursor, table, copy.table_names[table], key_columns)
            )
        return found


class _snapshot:  # noqa: N801 - used as a context manager, like contextlib's
    def __init__(self, database: Database, connection: Any) -> None:
        self.database, self.connection = database, connection

    def __enter__(self) -> Cursor:
        cursor: Cursor = self.connection.cursor()
        if self.database.is_postgres:
            cursor.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        else:
            cursor.execute("BEGIN")
        return cursor

    def __exit__(self, *exc_info: object) -> None:
        self.connection.cursor().execute("ROLLBACK")


def _compare_table(
    database: Database, cursor: Cursor, table: str, copy: str, key_columns: tuple[str, ...]
) -> list[Mismatch]:
    """The rows that differ between the re-derived `copy` and the stored `table`: the first
    `MAX_REPORTED_ROWS_PER_TABLE` keys in key order, each told as differing, missing or
    unexpected, and how many keys differ in all when there are more.

    Each direction's `EXCEPT` is read in key order and cut at the same limit; keys are reported
    only up to the lower of the cut sides' last keys, so that a key differing on both sides is
    seen on both. (PostgreSQL returns `EXCEPT` rows in no particular order: cut unordered, such
    a key was told as missing on one side and unexpected on the other.)"""
    columns = columns_of(database, cursor, table)
    column_list = ", ".join(columns)
    keys = [columns.index(column) for column in key_columns]
    order = ", ".join(key_columns)
    limit = MAX_REPORTED_ROWS_PER_TABLE + 1
    differences = [
        f"SELECT {column_list} FROM {first} EXCEPT SELECT {column_list} FROM {second}"
        for first, second in ((copy, table), (table, copy))
    ]
    sides: list[dict[tuple[Any, ...], Any]] = []
    cut_at: list[tuple[Any, ...]] = []
    for difference in differences:
        cursor.execute(f"SELECT * FROM ({difference}) AS d ORDER BY {order} LIMIT {limit}")
        side = {tuple(row[index] for index in keys): row for row in cursor.fetchall()}
        if len(side) == limit:
            cut_at.append(max(side))
        sides.append(side)
    expected, found = sides
    differing = sorted(set(expected) | set(found))
    if cut_at:
        differing = [key for key in differing if key <= min(cut_at)]
    mismatches: list[Mismatch] = []
    for key in differing[:MAX_REPORTED_ROWS_PER_TABLE]:
        want, have = expected.get(key), found.get(key)
        kind = "row-differs" if want and have else "row-missing" if want else "row-unexpected"
        mismatches.append(
            Mismatch(
                kind,
                table,
                ", ".join(f"{c}={_text(v)}" for c, v in zip(key_columns, key, strict=True)),
                _describe_row(columns, want, have),
                _describe_row(columns, have, want),
            )
        )
    if cut_at or len(differing) > MAX_REPORTED_ROWS_PER_TABLE:
        # Said, with the count, so that the first rows are never read as the whole damage (a
        # count only a damaged table pays for).
        cursor.execute(
            f"SELECT count(*) FROM (SELECT {order} FROM ({differences[0]}) AS e UNION "
            f"SELECT {order} FROM ({differences[1]}) AS f) AS k"
        )
        in_all = int(cursor.fetchone()[0])
        shown = len(mismatches)
        mismatches.append(
            Mismatch(
                "rows-not-shown",
                table,
                "-",
                f"{in_all} differing rows (by key) in all",
                f"the first {shown} in key order are shown; {in_all - shown} more are not",
                count=in_all - shown,
            )
        )
    return mismatches


def _describe_row(columns: list[str], row: Any, other: Any) -> str:
    """The row's columns, only those that differ from `other` when there is one."""
    if row is None:
        return "(no row)"
    pairs = [
        f"{column}={_text(value)}"
        for index, (column, value) in enumerate(zip(columns, row, strict=True))
        if other is None or other[index] != value
    ]
    return ", ".join(pairs)


def _text(value: Any) -> str:
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        return str(UUID(bytes=raw)) if len(raw) == UUID_BYTES else raw.hex()
    return str(value)


# The log's own invariants ------------------------------------------------------------------------


class LogChecker:
    """Checks the log's invariants in one ordered pass."""

    def __init__(self) -> None:
        self.mismatches: list[Mismatch] = []
        self.money: dict[tuple[UUID, str], int] = {}
        self.versions: dict[UUID, int] = {}
        self.last_key: dict[UUID, str | None] = {}
        self.key_digests: set[bytes] = set()

    def run(self, database: Database, connection: Any) -> int:
        position, checked = 0, 0
        cursor = connection.cursor()
        while True:
            rows = read_rows(database, cursor, position, REBUILD_BATCH_EVENTS)
            if not rows:
                break
            for row in rows:
                self.check(row)
            checked += len(rows)
            position = rows[-1].position
        for (space_id, currency), net in sorted(self.money.items(), key=str):
            if net != 0:
                self._report(
                    "money-not-conserved",
                    EVENTS_TABLE,
                    f"space_id={space_id}, currency={currency}",
                    "debits - credits = 0",
                    f"debits - credits = {net}",
                )
        return checked

    def _report(self, kind: str, table: str, row: str, expected: str, found: str) -> None:
        self.mismatches.append(Mismatch(kind, table, row, expected, found))

    def check(self, row: Any) -> None:
        where = f"position={row.position}"
        expected_version = self.versions.get(row.stream_id, 0) + 1
        if row.version != expected_version:
            self._report(
                "stream-version-gap",
                EVENTS_TABLE,
                f"{where}, stream={row.stream_id}",
                f"version {expected_version}",
                f"version {row.version}",
            )
        self.versions[row.stream_id] = max(row.version, self.versions.get(row.stream_id, 0))
        try:
            event = decode_stored(row)
        except EventDecodeFailed as error:
            self._report("event-undecodable", EVENTS_TABLE, where, row.topic, error.reason)
            return
        self._check_key(row, event, where)
        if isinstance(event, ev.PostingRecorded | ev.PendingPostingPosted):
            self._check_balanced(row, event.entries, where)
            if isinstance(event, ev.PostingRecorded) and event.pending:
                return
            for entry in event.entries:
                key = (row.stream_id, entry.currency)
                signed = entry.amount_minor if entry.direction == "debit" else -entry.amount_minor
                self.money[key] = self.money.get(key, 0) + signed

    def _check_balanced(self, row: Any, entries: tuple[ev.EntryRecorded, ...], where: str) -> None:
        totals: dict[str, int] = {}
        for entry in entries:
            if entry.amount_minor <= 0:
                self._report(
                    "posting-unbalanced",
                    EVENTS_TABLE,
                    where,
                    "positive amounts",
                    f"amount {entry.amount_minor} on {entry.account_id}",
                )
            signed = entry.amount_minor if entry.direction == "debit" else -entry.amount_minor
            totals[entry.currency] = totals.get(entry.currency, 0) + signed
        if len(entries) < 2:
            self._report(
                "posting-unbalanced",
                EVENTS_TABLE,
                where,
                "2 entries or more",
                f"{len(entries)} entries",
            )
        for currency, net in sorted(totals.items()):
            if net != 0:
                self._report(
                    "posting-unbalanced",
                    EVENTS_TABLE,
                    f"{where}, currency={currency}",
                    "debits - credits = 0",
                    f"debits - credits = {net}",
                )

    def _check_key(self, row: Any, event: ev.Event, where: str) -> None:
        key = event.idempotency_key
        previous = self.last_key.get(row.stream_id)
        self.last_key[row.stream_id] = key
        if key is None or key == previous:
            return
        digest = hashlib.blake2b(row.stream_id.bytes + key.encode(), digest_size=8).digest()
        if digest in self.key_digests:
            self._report(
                "idempotency-key-reused",
                EVENTS_TABLE,
                f"{where}, stream={row.stream_id}",
                f"key {key!r} used by one command",
                f"key {key!r} used again by a later command",
            )
        self.key_digests.add(digest)


# Dumps (replay twice gives byte-identical tables) -----------------------------------------------


def dump_tables(database_url: str, names: list[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """Each read table of the named projections as (table, bytes): its rows in primary-key
    order, every value rendered as text, one row per line."""
    database = Database(database_url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        for cls in projection_classes(names):
            for table, key_columns in cls.tables.items():
                columns = ", ".join(columns_of(database, cursor, table))
                cursor.execute(f"SELECT {columns} FROM {table} ORDER BY {', '.join(key_columns)}")
                lines = (
                    "\t".join(_text(value) for value in row).encode() for row in cursor.fetchall()
                )
                yield table, b"\n".join(lines)
            database.execute(
                cursor, f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?", (cls.name,)
            )
            yield f"{TRACKING_TABLE}:{cls.name}", str(cursor.fetchone()[0]).encode()
    finally:
        connection.close()
