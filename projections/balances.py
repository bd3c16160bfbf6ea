"""The `balances` projection: spaces, accounts with their balances, the entries history with a
running balance, and per-day closing balances.

Per batch of events: load the accounts and open holds the batch touches (one query each), apply
the events in log order in memory, then write back with a few bulk statements. Nothing is kept
between batches, so memory depends on the batch, not on the log.

Balances are integers in the account's normal-balance direction (debit for asset and expense,
credit for the rest): a debit to an asset adds, a credit subtracts. `pending_debits` and
`pending_credits` are the totals of open holds' entries; a hold is released when posted, voided
or expired, and its posted part (possibly a partial capture) becomes entries then, with the
hold's effective date and the capture's log position.

Balance as of a date (`rm_daily_balances`): one row per account and effective date that has
posted entries, holding that day's posted delta and the closing balance at the end of that day.
A posting dated `d` adds its amount to the day's delta and to the closing balance of every row
from `d` on. Usually `d` is on or after the account's latest day with a row, so no later row
exists and the closing balance is known from the account's balance: one upsert per batch. A
backdated posting also updates the later days (bounded by the days with activity, not by the
number of postings). Reading the balance at the
end of any date is then one index seek: the closing balance of the latest row on or before it.
"""

from __future__ import annotations

import operator
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import msgspec

from ledger_core import events as ev
from ledger_core.types import NORMAL_BALANCE
from projections import feed
from projections.base import LoggedEvent, Projection, Writer
from projections.db import SQLITE_NULL, BinaryRows, Cursor, Dialect, copy_binary, pg_array

#: Keys looked up per query when a batch loads its accounts or holds (SQLite allows 32766 bound
#: variables per statement; two per key).
LOOKUP_CHUNK_KEYS: Final = 500

_entries_encoder = msgspec.json.Encoder()
_entries_decoder = msgspec.json.Decoder(tuple[ev.EntryRecorded, ...])
_light_entries_decoder = msgspec.json.Decoder(tuple[feed.LightEntry, ...])
_metadata_encoder = msgspec.json.Encoder(order="sorted")
_metadata_decoder = msgspec.json.Decoder(dict[str, str])

_ACCOUNT_COLUMNS: Final = (
    "space_id, account_id, position, name, type, subtype, currency, code, normal_balance, "
    "status, overdraft_limit_minor, metadata, posted_minor, pending_debits_minor, "
    "pending_credits_minor"
)
_SQLITE_TIMESTAMP_FORMAT: Final = "%Y-%m-%dT%H:%M:%S.%fZ"


def encode_entries(entries: Sequence[ev.EntryRecorded] | Sequence[feed.LightEntry]) -> str:
    return _entries_encoder.encode(entries).decode()


def decode_entries(text: str | bytes) -> tuple[ev.EntryRecorded, ...]:
    return _entries_decoder.decode(text)


def decode_light_entries(text: str | bytes) -> tuple[feed.LightEntry, ...]:
    return _light_entries_decoder.decode(text)


def encode_metadata(metadata: dict[str, str]) -> str:
    return _metadata_encoder.encode(metadata).decode() if metadata else "{}"


def decode_metadata(text: str | bytes) -> dict[str, str]:
    return _metadata_decoder.decode(text)


class ValueCache:
    """Database forms of the feed's text values, for one batch. PostgreSQL takes the canonical
    text as it is. SQLite stores a UUID as its 16 bytes and a time as fixed-width UTC text
    (`projections.db`); ids and times that repeat within a batch (spaces, accounts, the
    `recorded_at` of one append) are converted once."""

    def __init__(self, dialect: Dialect) -> None:
        self.is_postgres = dialect.name == "postgresql"
        self._uuids: dict[str, Any] = {}
        self._times: dict[str, str] = {}
        self._row_ids: dict[bytes, bytearray] = {}
        #: NULL in a row for `insert_rows`' nullable columns (see `projections.db.SQLITE_NULL`).
        self.row_null: Any = None if self.is_postgres else SQLITE_NULL

    def uuid(self, text: str) -> Any:
        """The stored form of a UUID that repeats (a space's or an account's id)."""
        if self.is_postgres:
            return text
        found = self._uuids.get(text)
        if found is None:
            found = self._uuids[text] = bytes.fromhex(text.replace("-", ""))
        return found

    def unique_uuid(self, text: str | None) -> Any:
        """The stored form of a UUID seen once (a posting's id), or None."""
        if self.is_postgres or text is None:
            return text
        return bytes.fromhex(text.replace("-", ""))

    def row_id(self, stored: Any) -> Any:
        """A stored id that repeats, as a value of a row to insert: SQLite binds a bytearray
        as it is and bytes through its adapter registry (`projections.db.SQLITE_NULL`)."""
        if self.is_postgres:
            return stored
        found = self._row_ids.get(stored)
        if found is None:
            found = self._row_ids[stored] = bytearray(stored)
        return found

    def row_uuid(self, text: str | None) -> Any:
        """A UUID seen once, or None, as a value of a row to insert (see `row_id`)."""
        if self.is_postgres:
            return text
        if text is None:
            return SQLITE_NULL
        return bytearray.fromhex(text.replace("-", ""))

    def time(self, text: str | None) -> str | None:
        if self.is_postgres or text is None:
            return text
        found = self._times.get(text)
        if found is None:
            moment = datetime.fromisoformat(text).astimezone(UTC)
            found = self._times[text] = moment.strftime(_SQLITE_TIMESTAMP_FORMAT)
        return found

    def boolean(self, value: bool) -> Any:
        return value if self.is_postgres else int(value)


class AccountRow:
    """An account's row while a batch is applied; `space_id` and `account_id` are in their
    stored form."""

    __slots__ = (
        "account_id",
        "code",
        "currency",
        "described",
        "dirty",
        "entries",
        "is_new",
        "last_day",
        "metadata",
        "name",
        "normal",
        "overdraft_limit",
        "pending_credits",
        "pending_debits",
        "position",
        "posted",
        "posted_at_load",
        "space_id",
        "status",
        "subtype",
        "type",
    )

    space_id: Any
    account_id: Any
    position: int
    name: str
    type: str
    subtype: str
    currency: str
    code: str | None
    normal: str
    status: str
    overdraft_limit: int | None
    metadata: str
    posted: int
    pending_debits: int
    pending_credits: int

    def __init__(self, values: Sequence[Any], *, is_new: bool) -> None:
        for name, value in zip(_ACCOUNT_ROW_FIELDS, values, strict=True):
            setattr(self, name, value)
        self.is_new = is_new
        self.dirty = is_new
        #: An event of the batch changed the name, status, limit or metadata.
        self.described = False
        #: The posted balance before this batch (the closing balance of its latest day), and
        #: that day (None: no posted entry yet).
        self.posted_at_load: int = self.posted
        self.last_day: str | None = None
        #: SQLite: the batch's new rm_entries rows of this account, in log order (so the batch's
        #: rows come out in key order account by account, without sorting them all).
        self.entries: list[tuple[Any, ...]] = []

    def values(self) -> tuple[Any, ...]:
        """The row's values in `_ACCOUNT_COLUMNS` order."""
        return _account_row_values(self)  # type: ignore[no-any-return]


#: AccountRow's attributes for the columns of `_ACCOUNT_COLUMNS`, in their order.
_ACCOUNT_ROW_FIELDS: Final = (
    "space_id",
    "account_id",
    "position",
    "name",
    "type",
    "subtype",
    "currency",
    "code",
    "normal",
    "status",
    "overdraft_limit",
    "metadata",
    "posted",
    "pending_debits",
    "pending_credits",
)
_account_row_values = operator.attrgetter(*_ACCOUNT_ROW_FIELDS)


class Hold:
    """An open hold while a batch is applied: its effective date and entries."""

    __slots__ = ("effective_date", "entries", "is_new")

    def __init__(
        self, effective_date: str, entries: tuple[feed.LightEntry, ...], *, is_new: bool
    ) -> None:
        self.effective_date = effective_date
        self.entries = entries
        self.is_new = is_new


_HOLD_CLOSERS: Final = (feed.PendingPostingPosted, feed.HoldClosed)
_ACCOUNT_EVENTS: Final = (feed.AccountUpdated, feed.AccountStatusChanged)

#: A pair of stored-form ids: (space, account) or (space, posting).
Key = tuple[Any, Any]


class BalancesProjection(Projection):
    name: ClassVar[str] = "balances"
    tables: ClassVar[dict[str, tuple[str, ...]]] = {
        "rm_spaces": ("space_id",),
        "rm_accounts": ("space_id", "account_id"),
        "rm_balance_holds": ("space_id", "posting_id"),
        "rm_entries": ("space_id", "account_id", "position", "leg"),
        "rm_daily_balances": ("space_id", "account_id", "effective_date"),
    }
    deferred_index_tables: ClassVar[tuple[str, ...]] = ("rm_entries",)

    def prepare(self, cursor: Cursor, events: Sequence[LoggedEvent]) -> Writer:
        batch = _Batch(self, cursor)
        batch.load(events)
        handlers = _HANDLERS
        for logged in events:
            handler = handlers.get(logged.event.__class__)
            if handler is not None:
                handler(batch, logged)
        return batch.write


class _Batch:
    """The in-memory working set of one batch of the balances projection."""

    def __init__(self, projection: BalancesProjection, cursor: Cursor) -> None:
        self.projection = projection
        self.database = projection.database
        self.dialect = projection.dialect
        self.values = ValueCache(projection.dialect)
        self.cursor = cursor
        self.accounts: dict[Key, AccountRow] = {}
        self.holds: dict[Key, Hold] = {}
        self.closed_holds: list[Key] = []
        self.spaces: list[tuple[Any, ...]] = []
        #: New entries: packed for binary COPY on PostgreSQL, tuples on SQLite.
        self.entries: list[Any] = []
        self.binary = BinaryRows() if projection.database.is_postgres else None
        self.daily: dict[tuple[Any, Any, str], int] = {}

    # Loading -----------------------------------------------------------------------------------

    def load(self, events: Sequence[LoggedEvent]) -> None:
        uuid = self.values.uuid
        hold_keys: set[Key] = set()
        account_keys: set[Key] = set()
        for logged in events:
            event = logged.event
            if isinstance(event, feed.PostingRecorded):
                space = uuid(logged.stream_id)
                account_keys.update([(space, uuid(e.account_id)) for e in event.entries])
            elif isinstance(event, _HOLD_CLOSERS):
                hold_keys.add((uuid(logged.stream_id), self.values.unique_uuid(event.posting_id)))
                if isinstance(event, feed.PendingPostingPosted):
                    space = uuid(logged.stream_id)
                    account_keys.update([(space, uuid(e.account_id)) for e in event.entries])
            elif isinstance(event, _ACCOUNT_EVENTS):
                account_keys.add((uuid(logged.stream_id), uuid(event.account_id)))
        self._load_holds(hold_keys)
        for (space, _), hold in self.holds.items():
            account_keys.update([(space, uuid(e.account_id)) for e in hold.entries])
        self._load_accounts(account_keys)

    def _lookup(self, template: str, keys: Iterable[Key]) -> list[Any]:
        """Rows of `template` (a SELECT ending in a join on `keys`) for pairs of stored ids."""
        dialect, found = self.dialect, []
        key_list = list(keys)
        for start in range(0, len(key_list), LOOKUP_CHUNK_KEYS):
            chunk = key_list[start : start + LOOKUP_CHUNK_KEYS]
            if dialect.name == "postgresql":
                join = "JOIN unnest(%s::uuid[], %s::uuid[]) AS k(a, b)"
                params: list[Any] = [pg_array(k[0] for k in chunk), pg_array(k[1] for k in chunk)]
                sql = self.projection.statement(template).replace("{join}", join)
            else:
                values = ",".join(["(?,?)"] * len(chunk))
                join = f"JOIN (VALUES {values}) AS k"
                sql = self.projection.statement(template).replace("{join}", join)
                sql = sql.replace("k.a", "k.column1").replace("k.b", "k.column2")
                params = [v for key in chunk for v in key]
            self.cursor.execute(sql, params)
            found.extend(self.cursor.fetchall())
        return found

    def _ids(self, *columns: str) -> str:
        """Id columns selected in their stored form (PostgreSQL: as canonical text)."""
        if self.dialect.name == "postgresql":
            return ", ".join(f"{column}::text" for column in columns)
        return ", ".join(columns)

    def _load_holds(self, keys: set[Key]) -> None:
        if not keys:
            return
        rows = self._lookup(
            f"SELECT {self._ids('h.space_id', 'h.posting_id')}, h.effective_date, h.entries "
            "FROM {rm_balance_holds} AS h {{join}} "
            "ON h.space_id = k.a AND h.posting_id = k.b",
            keys,
        )
        for space, posting, effective_date, entries in rows:
            self.holds[(space, posting)] = Hold(
                str(effective_date), decode_light_entries(entries), is_new=False
            )

    def _load_accounts(self, keys: set[Key]) -> None:
        if not keys:
            return
        columns = ", ".join("a." + c.strip() for c in _ACCOUNT_COLUMNS.split(",")[2:])
        rows = self._lookup(
            f"SELECT {self._ids('a.space_id', 'a.account_id')}, {columns}, "
            "(SELECT max(d.effective_date) FROM {rm_daily_balances} AS d "
            "WHERE d.space_id = a.space_id AND d.account_id = a.account_id) "
            "FROM {rm_accounts} AS a {{join}} ON a.space_id = k.a AND a.account_id = k.b",
            keys,
        )
        for row in rows:
            account = AccountRow(row[:-1], is_new=False)
            account.last_day = None if row[-1] is None else str(row[-1])
            self.accounts[(account.space_id, account.account_id)] = account

    # Applying ----------------------------------------------------------------------------------

    def _space_opened(self, logged: LoggedEvent) -> None:
        event: feed.SpaceOpened = logged.event
        values = self.values
        self.spaces.append(
            (
                values.uuid(event.space_id),
                logged.position,
                event.name,
                event.base_currency,
                values.time(event.recorded_at),
            )
        )

    def _account_opened(self, logged: LoggedEvent) -> None:
        event: feed.AccountOpened = logged.event
        values = self.values
        row = (
            values.uuid(logged.stream_id),
            values.uuid(event.account_id),
            logged.position,
            event.name,
            event.type,
            event.subtype,
            event.currency,
            event.code,
            NORMAL_BALANCE[event.type],
            "active",
            event.overdraft_limit_minor,
            encode_metadata(event.metadata),
            0,
            0,
            0,
        )
        account = AccountRow(row, is_new=True)
        self.accounts[(account.space_id, account.account_id)] = account

    def _account(self, logged: LoggedEvent, account_id: str) -> AccountRow:
        values = self.values
        account = self.accounts[(values.uuid(logged.stream_id), values.uuid(account_id))]
        account.dirty = True
        return account

    def _account_updated(self, logged: LoggedEvent) -> None:
        event: feed.AccountUpdated = logged.event
        account = self._account(logged, event.account_id)
        account.described = True
        if event.name is not msgspec.UNSET:
            account.name = event.name
        if event.overdraft_limit_minor is not msgspec.UNSET:
            account.overdraft_limit = event.overdraft_limit_minor
        if event.metadata is not msgspec.UNSET:
            account.metadata = encode_metadata(event.metadata)

    def _account_status(self, logged: LoggedEvent) -> None:
        event = logged.event
        account = self._account(logged, event.account_id)
        account.status = _STATUSES[event.__class__]
        account.described = True

    def _posting_recorded(self, logged: LoggedEvent) -> None:
        event: feed.PostingRecorded = logged.event
        if event.pending:
            self._hold(logged, event.entries, +1)
            key = (self.values.uuid(logged.stream_id), self.values.unique_uuid(event.posting_id))
            self.holds[key] = Hold(event.effective_date, event.entries, is_new=True)
        else:
            self._post(logged, event.posting_id, event.entries, event.effective_date)

    def _hold_closed(self, logged: LoggedEvent) -> None:
        event = logged.event
        key = (self.values.uuid(logged.stream_id), self.values.unique_uuid(event.posting_id))
        hold = self.holds.pop(key)
        if not hold.is_new:
            self.closed_holds.append(key)
        self._hold(logged, hold.entries, -1)
        if isinstance(event, feed.PendingPostingPosted):
            self._post(logged, event.posting_id, event.entries, hold.effective_date)

    def _hold(self, logged: LoggedEvent, entries: Sequence[feed.LightEntry], sign: int) -> None:
        for entry in entries:
            account = self._account(logged, entry.account_id)
            if entry.direction == "debit":
                account.pending_debits += sign * entry.amount_minor
            else:
                account.pending_credits += sign * entry.amount_minor

    def _post(
        self,
        logged: LoggedEvent,
        posting_id: str,
        entries: Sequence[feed.LightEntry],
        effective_date: str,
    ) -> None:
        values, accounts, daily = self.values, self.accounts, self.daily
        uuid = values.uuid
        space = uuid(logged.stream_id)
        position = logged.position
        binary = self.binary
        if binary is not None:  # PostgreSQL: each entry packed for binary COPY at once
            space_bytes = binary.uuid(space)
            posting_bytes = bytes.fromhex(posting_id.replace("-", ""))
            day, at = binary.date(effective_date), binary.time(logged.event.recorded_at)
            text, binary_uuid, rows = binary.text, binary.uuid, self.entries
            for leg, entry in enumerate(entries):
                account = accounts[(space, entry.account_id)]
                account.dirty = True
                amount, direction, currency = entry.amount_minor, entry.direction, entry.currency
                signed = amount if direction == account.normal else -amount
                account.posted += signed
                day_key = (space, account.account_id, effective_date)
                daily[day_key] = daily.get(day_key, 0) + signed
                rows.append(
                    _entry_layout(len(direction), len(currency)).pack(
                        11,
                        16,
                        space_bytes,
                        16,
                        binary_uuid(account.account_id),
                        8,
                        position,
                        8,
                        leg,
                        16,
                        posting_bytes,
                        len(direction),
                        text(direction),
                        8,
                        amount,
                        len(currency),
                        text(currency),
                        4,
                        day,
                        8,
                        at,
                        8,
                        account.posted,
                    )
                )
            return
        posting = values.row_uuid(posting_id)
        recorded = values.time(logged.event.recorded_at)
        row_id, space_row_id = values.row_id, values.row_id(space)
        for leg, entry in enumerate(entries):
            account = accounts[(space, uuid(entry.account_id))]
            account.dirty = True
            amount, direction = entry.amount_minor, entry.direction
            signed = amount if direction == account.normal else -amount
            account.posted += signed
            day_key = (space, account.account_id, effective_date)
            daily[day_key] = daily.get(day_key, 0) + signed
            account.entries.append(
                (
                    space_row_id,
                    row_id(account.account_id),
                    position,
                    leg,
                    posting,
                    direction,
                    amount,
                    entry.currency,
                    effective_date,
                    recorded,
                    account.posted,
                )
            )

    # Writing -----------------------------------------------------------------------------------

    def write(self, cursor: Cursor) -> None:
        self.cursor = cursor
        names, database = self.projection.table_names, self.database
        database.insert_rows(
            cursor,
            names["rm_spaces"],
            ("space_id", "position", "name", "base_currency", "opened_at"),
            self.spaces,
        )
        self._write_accounts()
        self._write_holds()
        if self.binary is not None:
            copy_binary(cursor, names["rm_entries"], _ENTRY_COLUMNS, self.entries)
        else:
            # In key order: each account's new entries go in at the end of its range together
            # (SQLite's tables are clustered on their key). Each account's rows are in log
            # order already, so only the accounts are sorted (sorting the rows cost 8% of a
            # replay's balances builder).
            accounts = self.accounts
            rows = [row for key in sorted(accounts) for row in accounts[key].entries]
            database.insert_rows(cursor, names["rm_entries"], _ENTRY_COLUMNS, rows)
        self._write_daily()

    def _write_accounts(self) -> None:
        """New accounts inserted; changed ones updated: only their balances, unless an event of
        the batch changed what describes them (name, status, limit, metadata)."""
        new_rows, described_rows, balance_rows = [], [], []
        for account in self.accounts.values():
            if not account.dirty:
                continue
            if account.is_new:
                new_rows.append(account.values())
            elif account.described:
                described_rows.append(
                    (
                        account.space_id,
                        account.account_id,
                        account.name,
                        account.status,
                        account.overdraft_limit,
                        account.metadata,
                        account.posted,
                        account.pending_debits,
                        account.pending_credits,
                    )
                )
            else:
                balance_rows.append(
                    (
                        account.space_id,
                        account.account_id,
                        account.posted,
                        account.pending_debits,
                        account.pending_credits,
                    )
                )
        table, database, cursor = (
            self.projection.table_names["rm_accounts"],
            self.database,
            self.cursor,
        )
        database.insert_rows(cursor, table, _ACCOUNT_COLUMN_NAMES, new_rows)
        database.update_rows(
            cursor, table, _ACCOUNT_KEYS, _ACCOUNT_CHANGING_COLUMNS, described_rows
        )
        database.update_rows(cursor, table, _ACCOUNT_KEYS, _ACCOUNT_BALANCE_COLUMNS, balance_rows)

    def _write_holds(self) -> None:
        database = self.database
        table = self.projection.table_names["rm_balance_holds"]
        new_holds = [
            (key[0], key[1], hold.effective_date, encode_entries(hold.entries))
            for key, hold in self.holds.items()
            if hold.is_new
        ]
        database.insert_rows(
            self.cursor, table, ("space_id", "posting_id", "effective_date", "entries"), new_holds
        )
        closed = self.closed_holds
        if closed and database.is_postgres:
            self.cursor.execute(
                f"DELETE FROM {table} AS h USING unnest(%s::uuid[], %s::uuid[]) AS u(s, p) "
                "WHERE h.space_id = u.s AND h.posting_id = u.p",
                [pg_array(key[0] for key in closed), pg_array(key[1] for key in closed)],
            )
        elif closed:
            self.cursor.executemany(
                f"DELETE FROM {table} WHERE space_id = ? AND posting_id = ?", closed
            )

    def _write_daily(self) -> None:
        """Each (account, day) the batch posted to. Usually every such day is on or after the
        account's latest day with a row: then no later row exists, and each day's closing
        balance is the balance before the batch plus the batch's amounts dated up to that day,
        known here, so one upsert writes them. For an account with a backdated day, the general
        way: make sure the day's row exists (opening at the previous day's closing balance),
        add the delta to the day, and to the closing balance of that day and every later one."""
        if not self.daily:
            return
        by_account: dict[Key, list[tuple[str, int]]] = {}
        for (space, account_id, day), amount in self.daily.items():
            by_account.setdefault((space, account_id), []).append((day, amount))
        latest: list[tuple[Any, ...]] = []
        backdated: list[tuple[Any, Any, Any, int]] = []
        for key, days in by_account.items():
            account = self.accounts[key]
            days.sort()
            if account.last_day is None or days[0][0] >= account.last_day:
                closing = account.posted_at_load
                for day, amount in days:
                    closing += amount
                    latest.append((key[0], key[1], day, amount, closing))
            else:
                backdated.extend((key[0], key[1], day, amount) for day, amount in days)
        cursor = self.cursor
        if latest and self.database.is_postgres:
            columns = [pg_array(column) for column in zip(*latest, strict=True)]
            cursor.execute(self.projection.statement(_POSTGRES_DAILY_UPSERT), columns)
        elif latest:
            cursor.executemany(self.projection.statement(_SQLITE_DAILY_UPSERT), latest)
        if not backdated:
            return
        backdated.sort()
        if self.database.is_postgres:
            self._write_daily_postgres(backdated)
            return
        cursor.executemany(
            self.projection.statement(_SQLITE_DAILY_INSERT),
            [(s, a, d, s, a, d) for s, a, d, _ in backdated],
        )
        cursor.executemany(
            self.projection.statement(_SQLITE_DAILY_UPDATE),
            [(d, amount, amount, s, a, d) for s, a, d, amount in backdated],
        )

    def _write_daily_postgres(self, keys: list[tuple[Any, Any, Any, int]]) -> None:
        columns = [pg_array(column) for column in zip(*keys, strict=True)]
        self.cursor.execute(self.projection.statement(_POSTGRES_DAILY_INSERT), columns[:3])
        self.cursor.execute(self.projection.statement(_POSTGRES_DAILY_UPDATE), columns)


_ENTRY_COLUMNS: Final = (
    "space_id",
    "account_id",
    "position",
    "leg",
    "posting_id",
    "direction",
    "amount_minor",
    "currency",
    "effective_date",
    "recorded_at",
    "balance_after_minor",
)
#: Binary row layouts of rm_entries by the lengths of (direction, currency).
_ENTRY_LAYOUTS: dict[tuple[int, int], struct.Struct] = {}


def _entry_layout(direction_length: int, currency_length: int) -> struct.Struct:
    """The binary COPY layout of an rm_entries row (11 columns, each length-prefixed)."""
    layout = _ENTRY_LAYOUTS.get((direction_length, currency_length))
    if layout is None:
        layout = _ENTRY_LAYOUTS[(direction_length, currency_length)] = struct.Struct(
            f">hi16si16siqiqi16si{direction_length}siqi{currency_length}siiiqiq"
        )
    return layout


_ACCOUNT_COLUMN_NAMES: Final = tuple(column.strip() for column in _ACCOUNT_COLUMNS.split(","))
_ACCOUNT_KEYS: Final = {"space_id": "uuid", "account_id": "uuid"}
#: What postings change on an account (PostgreSQL types for bulk updates).
_ACCOUNT_BALANCE_COLUMNS: Final = {
    "posted_minor": "int8",
    "pending_debits_minor": "int8",
    "pending_credits_minor": "int8",
}
#: What events change on an account after it is opened (PostgreSQL types for bulk updates).
_ACCOUNT_CHANGING_COLUMNS: Final = {
    "name": "text",
    "status": "text",
    "overdraft_limit_minor": "int8",
    "metadata": "text",
    "posted_minor": "int8",
    "pending_debits_minor": "int8",
    "pending_credits_minor": "int8",
}

#: A day on or after the account's latest: its delta added, its closing balance set.
_DAILY_UPSERT_CONFLICT: Final = (
    "ON CONFLICT (space_id, account_id, effective_date) DO UPDATE SET "
    "posted_delta_minor = {rm_daily_balances}.posted_delta_minor + excluded.posted_delta_minor, "
    "closing_posted_minor = excluded.closing_posted_minor"
)
_SQLITE_DAILY_UPSERT: Final = (
    "INSERT INTO {rm_daily_balances} (space_id, account_id, effective_date, "
    "posted_delta_minor, closing_posted_minor) VALUES (?, ?, ?, ?, ?) " + _DAILY_UPSERT_CONFLICT
)
_POSTGRES_DAILY_UPSERT: Final = (
    "INSERT INTO {rm_daily_balances} (space_id, account_id, effective_date, "
    "posted_delta_minor, closing_posted_minor) "
    "SELECT * FROM unnest(?::uuid[], ?::uuid[], ?::date[], ?::int8[], ?::int8[]) "
    + _DAILY_UPSERT_CONFLICT
)
_SQLITE_DAILY_INSERT: Final = (
    "INSERT INTO {rm_daily_balances} (space_id, account_id, effective_date, "
    "posted_delta_minor, closing_posted_minor) "
    "SELECT ?, ?, ?, 0, coalesce((SELECT d.closing_posted_minor "
    "FROM {rm_daily_balances} AS d WHERE d.space_id = ? AND d.account_id = ? "
    "AND d.effective_date < ? ORDER BY d.effective_date DESC LIMIT 1), 0) "
    "WHERE true ON CONFLICT (space_id, account_id, effective_date) DO NOTHING"
)
_SQLITE_DAILY_UPDATE: Final = (
    "UPDATE {rm_daily_balances} SET "
    "posted_delta_minor = posted_delta_minor + (CASE WHEN effective_date = ? THEN ? ELSE 0 END), "
    "closing_posted_minor = closing_posted_minor + ? "
    "WHERE space_id = ? AND account_id = ? AND effective_date >= ?"
)
#: The same two steps for all the batch's (account, day) pairs at once. A row later than several
#: of the batch's days of its account gets the sum of their deltas (UPDATE ... FROM would apply
#: only one matching source row).
_POSTGRES_DAILY_INSERT: Final = (
    "INSERT INTO {rm_daily_balances} (space_id, account_id, effective_date, "
    "posted_delta_minor, closing_posted_minor) "
    "SELECT u.s, u.a, u.d, 0, coalesce((SELECT d.closing_posted_minor "
    "FROM {rm_daily_balances} AS d WHERE d.space_id = u.s AND d.account_id = u.a "
    "AND d.effective_date < u.d ORDER BY d.effective_date DESC LIMIT 1), 0) "
    "FROM unnest(?::uuid[], ?::uuid[], ?::date[]) AS u(s, a, d) "
    "ON CONFLICT (space_id, account_id, effective_date) DO NOTHING"
)
_POSTGRES_DAILY_UPDATE: Final = (
    "UPDATE {rm_daily_balances} AS t SET "
    "posted_delta_minor = t.posted_delta_minor + c.same_day, "
    "closing_posted_minor = t.closing_posted_minor + c.total "
    "FROM (SELECT d.space_id, d.account_id, d.effective_date, sum(u.x) AS total, "
    "sum(CASE WHEN u.d = d.effective_date THEN u.x ELSE 0 END) AS same_day "
    "FROM {rm_daily_balances} AS d "
    "JOIN unnest(?::uuid[], ?::uuid[], ?::date[], ?::int8[]) AS u(s, a, d, x) "
    "ON d.space_id = u.s AND d.account_id = u.a AND d.effective_date >= u.d "
    "GROUP BY d.space_id, d.account_id, d.effective_date) AS c "
    "WHERE t.space_id = c.space_id AND t.account_id = c.account_id "
    "AND t.effective_date = c.effective_date"
)


_STATUSES: Final[dict[type[feed.LightEvent], str]] = {
    feed.AccountFrozen: "frozen",
    feed.AccountUnfrozen: "active",
    feed.AccountClosed: "closed",
}

_HANDLERS: Final[dict[type[feed.LightEvent], Any]] = {
    feed.SpaceOpened: _Batch._space_opened,
    feed.AccountOpened: _Batch._account_opened,
    feed.AccountUpdated: _Batch._account_updated,
    feed.AccountFrozen: _Batch._account_status,
    feed.AccountUnfrozen: _Batch._account_status,
    feed.AccountClosed: _Batch._account_status,
    feed.PostingRecorded: _Batch._posting_recorded,
    feed.PendingPostingPosted: _Batch._hold_closed,
    feed.PendingPostingVoided: _Batch._hold_closed,
    feed.PendingPostingExpired: _Batch._hold_closed,
}
