"""The read side: what the HTTP API and the CLI ask of the projections.

`ReadModels(database_url)` answers from the read tables (and `events` from the event store
itself). Every method is synchronous, opens its own connections (a pool on PostgreSQL, one
connection per thread on SQLite) and is safe to call from a thread pool. Each answer is one SQL
statement, so it reads one consistent snapshot.

Lists are in log order and paginated by keyset on the log position (never OFFSET), so an item
recorded while a client pages appears only after the last page and no item is skipped or
repeated. A cursor is an opaque string (URL-safe base64 of the list's name and the sort key of
the last item); a cursor that is malformed, or belongs to another list, is `InvalidRequest`.
`limit` is 1..`MAX_PAGE_LIMIT` (default `DEFAULT_PAGE_LIMIT`).

Balance as of a date is one index seek in `rm_daily_balances` (the closing balance of the
account's latest day on or before the date: see `projections.balances`), never a scan of the
history; the trial balance does that seek per account of the space.

Read-your-writes: `wait_for_position(position, timeout_s)` (threads) and
`awaitable_wait_for_position` (asyncio) wait, polling with a growing interval, until every
projection has applied `position`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, Final
from uuid import UUID

import msgspec

from ledger_core.crypto import CLEAR, Cipher
from ledger_core.errors import InvalidRequest
from ledger_core.limits import (
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_RECONNECT_WINDOW_S,
    READ_CONNECTION_PARAMETERS,
)
from ledger_core.store import COMMANDS_TABLE
from ledger_core.types import ACCOUNT_TYPES, DIRECTIONS
from projections.balances import decode_entries, decode_metadata
from projections.base import TRACKING_TABLE, event_view, read_rows
from projections.db import Database
from projections.registry import PROJECTIONS
from projections.views import (
    AccountView,
    BalanceAsOfView,
    BalancesView,
    EntryView,
    EventView,
    Page,
    PostingLegView,
    PostingView,
    SpaceView,
    TrialBalanceRow,
    TrialBalanceTotal,
    TrialBalanceView,
)

#: Items per page when the client does not say (API.md).
DEFAULT_PAGE_LIMIT: Final = 50
#: The most items one page may hold (API.md): bounds the work and the size of one answer.
MAX_PAGE_LIMIT: Final = 500
#: Polling of `wait_for_position`: the first interval, and the longest one it grows to.
WAIT_FIRST_INTERVAL_S: Final = 0.001
WAIT_MAX_INTERVAL_S: Final = 0.05
#: The longest a cursor string may be (a real one is under 100 characters).
MAX_CURSOR_LENGTH: Final = 200
#: The largest sort key a cursor may hold: log positions and legs are 64-bit signed integers in
#: both databases, so a larger key cannot name an item (SQLite would refuse to bind it).
MAX_CURSOR_KEY: Final = 2**63 - 1
#: PostgreSQL connections a `ReadModels` keeps at most.
READ_POOL_MAX_CONNECTIONS: Final = 8

ACCOUNT_STATUSES: Final = ("active", "frozen", "closed")
POSTING_STATUSES: Final = ("posted", "pending", "voided", "expired", "declined")

_ACCOUNT_SELECT: Final = (
    "SELECT space_id, account_id, position, name, type, subtype, currency, code, "
    "normal_balance, status, overdraft_limit_minor, metadata, posted_minor, "
    "pending_debits_minor, pending_credits_minor FROM rm_accounts"
)
#: PostgreSQL: the accounts named by two comma-separated lists of ids (spaces and accounts, in
#: pairs), in one statement. Two text parameters: psycopg dumps a str in C but a list element
#: by element in Python; PostgreSQL splits and casts them.
_ACCOUNTS_BY_KEYS: Final = (
    _ACCOUNT_SELECT + " JOIN unnest(string_to_array(%s, ',')::uuid[],"
    " string_to_array(%s, ',')::uuid[]) AS wanted(space, account)"
    " ON space_id = wanted.space AND account_id = wanted.account"
)


def accounts_by_keys_query(keys: Sequence[tuple[UUID, UUID]]) -> tuple[str, tuple[str, str]]:
    """PostgreSQL: the statement and parameters that read the accounts with these (space id,
    account id) pairs at once (rows for `ReadModels.account_view`; a missing pair gives no
    row). For callers that run it on their own connections, such as the API's batched reads
    on asyncio connections."""
    # 32 hex digits: PostgreSQL reads a uuid without its hyphens too, and `.hex` is one format
    # where `str()` is a format, four slices and a join (it showed in GET account's profile).
    spaces = ",".join([space_id.hex for space_id, _ in keys])
    accounts = ",".join([account_id.hex for _, account_id in keys])
    return _ACCOUNTS_BY_KEYS, (spaces, accounts)


_POSTING_COLUMNS: Final = (
    "p.space_id, p.posting_id, p.position, p.status, p.entries, p.description, "
    "p.effective_date, p.merchant, p.category_id, p.metadata, p.pending, p.expires_at, "
    "p.recorded_at, p.reverses, p.reversed_by, p.declined_reason"
)
_ENTRY_COLUMNS: Final = (
    "posting_id, account_id, direction, amount_minor, currency, effective_date, recorded_at, "
    "position, leg, balance_after_minor"
)

_cursor_encoder = msgspec.json.Encoder()


def encode_cursor(kind: str, *keys: int) -> str:
    """An opaque cursor for list `kind` after the item with sort key `keys`."""
    return base64.urlsafe_b64encode(_cursor_encoder.encode([kind, *keys])).decode().rstrip("=")


def decode_cursor(cursor: str, kind: str, key_count: int) -> tuple[int, ...]:
    """The sort key in `cursor`; `InvalidRequest` if it is not a cursor of list `kind`."""
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise InvalidRequest("cursor is too long", field="cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        decoded = msgspec.json.decode(raw, type=list[str | int])
    except (binascii.Error, ValueError, msgspec.DecodeError) as error:
        raise InvalidRequest("cursor is not valid", field="cursor") from error
    keys = decoded[1:]
    if (
        not decoded
        or decoded[0] != kind
        or len(keys) != key_count
        or not all(isinstance(key, int) and 0 <= key <= MAX_CURSOR_KEY for key in keys)
    ):
        raise InvalidRequest("cursor is not valid for this list", field="cursor")
    return tuple(int(key) for key in keys)


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_PAGE_LIMIT}", field="limit")
    return limit


def _balances(normal: str, posted: int, pending_debits: int, pending_credits: int) -> BalancesView:
    held = pending_credits if normal == "debit" else pending_debits
    return BalancesView(
        posted=posted,
        pending_debits=pending_debits,
        pending_credits=pending_credits,
        available=posted - held,
    )


class ReadModels:
    """Reads of the projections of one database. Close it when done."""

    def __init__(
        self,
        database_url: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cipher: Cipher = CLEAR,
    ) -> None:
        self.database = Database(database_url)
        #: Opens the sealed text the read tables hold (`ledger_core.crypto`).
        self.cipher = cipher
        self.dialect = self.database.dialect
        self._clock = clock
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        self._pool: Any = None
        self._names = tuple(PROJECTIONS)

    # Connections -------------------------------------------------------------------------------

    def _fetch(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        sql = self.dialect.sql(statement)
        if self.database.is_postgres:
            with self._postgres_pool().connection() as connection:
                rows: list[Any] = connection.execute(sql, params).fetchall()
                return rows
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self.database.connect()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection.execute(sql, params).fetchall()  # type: ignore[no-any-return]

    def _postgres_pool(self) -> Any:
        with self._lock:
            if self._pool is None:
                from psycopg_pool import ConnectionPool

                from projections.db import psycopg_url

                self._pool = ConnectionPool(
                    psycopg_url(self.database.url),
                    min_size=1,
                    max_size=READ_POOL_MAX_CONNECTIONS,
                    kwargs={"autocommit": True, **READ_CONNECTION_PARAMETERS},
                    check=ConnectionPool.check_connection,
                    # A read waits this long for a connection, then answers 503 `unavailable`.
                    timeout=DATABASE_CONNECT_TIMEOUT_S,
                    reconnect_timeout=DATABASE_RECONNECT_WINDOW_S,
                    open=True,
                )
            return self._pool

    def close(self) -> None:
        with self._lock:
            for connection in self._connections:
                connection.close()
            self._connections.clear()
            if self._pool is not None:
                self._pool.close()
                self._pool = None

    def __enter__(self) -> ReadModels:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Positions ---------------------------------------------------------------------------------

    def applied_position(self) -> int:
        """The position every projection has applied (the smallest of their positions)."""
        marks = ", ".join("?" * len(self._names))
        rows = self._fetch(
            f"SELECT min(position) FROM {TRACKING_TABLE} WHERE name IN ({marks})", self._names
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def projection_failures(self) -> list[tuple[str, int, str, str]]:
        """The projections stopped on an event they could not apply, as (name, position,
        topic, reason); empty when every one is running (see `projections.tracking`)."""
        marks = ", ".join("?" * len(self._names))
        rows = self._fetch(
            f"SELECT name, failed_position, failed_topic, failed_reason FROM {TRACKING_TABLE} "
            f"WHERE failed_position IS NOT NULL AND name IN ({marks}) ORDER BY name",
            self._names,
        )
        return [(row[0], int(row[1]), row[2], row[3]) for row in rows]

    def wait_for_position(self, position: int, timeout_s: float) -> bool:
        """Wait until every projection has applied `position`; False if `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        interval = WAIT_FIRST_INTERVAL_S
        while self.applied_position() < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, WAIT_MAX_INTERVAL_S)
        return True

    async def awaitable_wait_for_position(self, position: int, timeout_s: float) -> bool:
        """`wait_for_position` for asyncio callers: the event loop is never blocked."""
        deadline = time.monotonic() + timeout_s
        interval = WAIT_FIRST_INTERVAL_S
        while await asyncio.to_thread(self.applied_position) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await asyncio.sleep(min(interval, remaining))
            interval = min(interval * 2, WAIT_MAX_INTERVAL_S)
        return True

    # Spaces and accounts -----------------------------------------------------------------------

    def space(self, space_id: UUID) -> SpaceView | None:
        rows = self._fetch(
            "SELECT space_id, name, base_currency, opened_at FROM rm_spaces WHERE space_id = ?",
            (self.dialect.uuid(space_id),),
        )
        if not rows:
            return None
        row = rows[0]
        recorded_at = self.dialect.to_timestamp(row[3])
        assert recorded_at is not None
        return SpaceView(
            id=space_id,
            name=self.cipher.open(row[1]),
            base_currency=row[2],
            recorded_at=recorded_at,
        )

    def account(self, space_id: UUID, account_id: UUID) -> AccountView | None:
        rows = self._fetch(
            _ACCOUNT_SELECT + " WHERE space_id = ? AND account_id = ?",
            (self.dialect.uuid(space_id), self.dialect.uuid(account_id)),
        )
        return self._account_view(rows[0]) if rows else None

    def accounts(
        self,
        space_id: UUID,
        *,
        type: str | None = None,
        status: str | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
    ) -> Page[AccountView]:
        """The space's accounts in the order they were opened, filtered by type and status."""
        check_limit(limit)
        conditions, params = ["space_id = ?"], [self.dialect.uuid(space_id)]
        if type is not None:
            if type not in ACCOUNT_TYPES:
                raise InvalidRequest(f"unknown account type {type!r}", field="type")
            conditions.append("type = ?")
            params.append(type)
        if status is not None:
            if status not in ACCOUNT_STATUSES:
                raise InvalidRequest(f"unknown account status {status!r}", field="status")
            conditions.append("status = ?")
            params.append(status)
        if cursor is not None:
            conditions.append("position > ?")
            params.append(decode_cursor(cursor, "accounts", 1)[0])
        rows = self._fetch(
            f"{_ACCOUNT_SELECT} WHERE {' AND '.join(conditions)} ORDER BY position LIMIT ?",
            [*params, limit + 1],
        )
        items = [self._account_view(row) for row in rows[:limit]]
        next_cursor = encode_cursor("accounts", items[-1].position) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def account_view(self, row: Sequence[Any]) -> AccountView:
        """The view of an rm_accounts row selected as `accounts_by_keys_query` selects it."""
        return self._account_view(row)

    def _account_view(self, row: Sequence[Any]) -> AccountView:
        dialect = self.dialect
        space_id, account_id = dialect.to_uuid(row[0]), dialect.to_uuid(row[1])
        assert space_id is not None and account_id is not None
        return AccountView(
            id=account_id,
            space_id=space_id,
            position=row[2],
            name=self.cipher.open(row[3]),
            type=row[4],
            subtype=row[5],
            currency=row[6],
            code=row[7],
            normal_balance=row[8],
            status=row[9],
            overdraft_limit_minor=row[10],
            metadata=self.cipher.open_metadata(decode_metadata(row[11])),
            balances=_balances(row[8], row[12], row[13], row[14]),
        )

    # Balances and entries ----------------------------------------------------------------------

    def balance_as_of(
        self, space_id: UUID, account_id: UUID, as_of: date
    ) -> BalanceAsOfView | None:
        """The posted balance at the end of `as_of` (postings effective on or before it,
        whenever recorded); None if the account does not exist."""
        dialect = self.dialect
        rows = self._fetch(
            "SELECT a.currency, (SELECT d.closing_posted_minor FROM rm_daily_balances AS d "
            "WHERE d.space_id = a.space_id AND d.account_id = a.account_id "
            "AND d.effective_date <= ? ORDER BY d.effective_date DESC LIMIT 1) "
            "FROM rm_accounts AS a WHERE a.space_id = ? AND a.account_id = ?",
            (dialect.date(as_of), dialect.uuid(space_id), dialect.uuid(account_id)),
        )
        if not rows:
            return None
        return BalanceAsOfView(
            account_id=account_id, as_of=as_of, currency=rows[0][0], posted=rows[0][1] or 0
        )

    def entries(
        self,
        space_id: UUID,
        account_id: UUID,
        *,
        from_date: date | None = None,
        to_date: date | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
    ) -> Page[EntryView]:
        """The account's posted entries in log order, each with the posted balance after it
        (in log order); `from_date`/`to_date` are inclusive effective dates. An account that
        does not exist has no entries (ask `account()` to tell the two apart)."""
        check_limit(limit)
        dialect = self.dialect
        conditions = ["space_id = ?", "account_id = ?"]
        params: list[Any] = [dialect.uuid(space_id), dialect.uuid(account_id)]
        if from_date is not None:
            conditions.append("effective_date >= ?")
            params.append(dialect.date(from_date))
        if to_date is not None:
            conditions.append("effective_date <= ?")
            params.append(dialect.date(to_date))
        if cursor is not None:
            position, leg = decode_cursor(cursor, "entries", 2)
            conditions.append("(position > ? OR (position = ? AND leg > ?))")
            params.extend((position, position, leg))
        rows = self._fetch(
            f"SELECT {_ENTRY_COLUMNS} FROM rm_entries WHERE {' AND '.join(conditions)} "
            "ORDER BY position, leg LIMIT ?",
            [*params, limit + 1],
        )
        items = [self._entry_view(row) for row in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor("entries", last[7], last[8])
        return Page(items=items, next_cursor=next_cursor)

    def _entry_view(self, row: Sequence[Any]) -> EntryView:
        dialect = self.dialect
        return EntryView(
            posting_id=dialect.to_uuid(row[0]),  # type: ignore[arg-type]
            account_id=dialect.to_uuid(row[1]),  # type: ignore[arg-type]
            direction=row[2],
            amount_minor=row[3],
            currency=row[4],
            effective_date=dialect.to_date(row[5]),  # type: ignore[arg-type]
            recorded_at=dialect.to_timestamp(row[6]),  # type: ignore[arg-type]
            position=row[7],
            balance_after=row[9],
        )

    # Postings ----------------------------------------------------------------------------------

    def posting(self, space_id: UUID, posting_id: UUID) -> PostingView | None:
        """The posting, found by id through the core's `ledger_commands` (space, posting id ->
        position: see migration m0002), then by position in `rm_postings`."""
        command_key: tuple[Any, Any] = (space_id, posting_id)
        if not self.database.is_postgres:
            command_key = (space_id.hex, posting_id.hex)
        rows = self._fetch(
            f"SELECT {_POSTING_COLUMNS} FROM {COMMANDS_TABLE} AS c "
            "JOIN rm_postings AS p ON p.space_id = ? AND p.position = c.position "
            "WHERE c.scope_id = ? AND c.id = ? AND p.posting_id = ?",
            (
                self.dialect.uuid(space_id),
                *command_key,
                self.dialect.uuid(posting_id),
            ),
        )
        return self._posting_view(rows[0], self._clock()) if rows else None

    def postings(
        self,
        space_id: UUID,
        *,
        account_id: UUID | None = None,
        status: str | None = None,
        from_date: date | None = None,
        to_date: date | None = None,
        cursor: str | None = None,
        limit: int = DEFAULT_PAGE_LIMIT,
    ) -> Page[PostingView]:
        """The space's postings in log order (declined ones included), filtered by an account
        they touch, their status (as shown: a hold past its expiry is `expired`) and an
        inclusive range of effective dates."""
        check_limit(limit)
        dialect, now = self.dialect, self._clock()
        sql = f"SELECT {_POSTING_COLUMNS} FROM rm_postings AS p"
        if account_id is not None:
            sql += (
                " JOIN rm_posting_accounts AS pa ON pa.space_id = p.space_id "
                "AND pa.position = p.position"
            )
            conditions = ["pa.space_id = ?", "pa.account_id = ?"]
            params: list[Any] = [dialect.uuid(space_id), dialect.uuid(account_id)]
            order = "pa.position"
        else:
            conditions, params, order = ["p.space_id = ?"], [dialect.uuid(space_id)], "p.position"
        if status is not None:
            self._status_condition(status, dialect.timestamp(now), conditions, params)
        if from_date is not None:
            conditions.append("p.effective_date >= ?")
            params.append(dialect.date(from_date))
        if to_date is not None:
            conditions.append("p.effective_date <= ?")
            params.append(dialect.date(to_date))
        if cursor is not None:
            conditions.append(f"{order} > ?")
            params.append(decode_cursor(cursor, "postings", 1)[0])
        rows = self._fetch(
            f"{sql} WHERE {' AND '.join(conditions)} ORDER BY {order} LIMIT ?",
            [*params, limit + 1],
        )
        items = [self._posting_view(row, now) for row in rows[:limit]]
        next_cursor = encode_cursor("postings", items[-1].position) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    @staticmethod
    def _status_condition(status: str, now: Any, conditions: list[str], params: list[Any]) -> None:
        if status not in POSTING_STATUSES:
            raise InvalidRequest(f"unknown posting status {status!r}", field="status")
        if status == "pending":
            conditions.append("p.status = 'pending' AND (p.expires_at IS NULL OR p.expires_at > ?)")
            params.append(now)
        elif status == "expired":
            conditions.append(
                "(p.status = 'expired' OR (p.status = 'pending' AND p.expires_at <= ?))"
            )
            params.append(now)
        else:
            conditions.append("p.status = ?")
            params.append(status)

    def _posting_view(self, row: Sequence[Any], now: datetime) -> PostingView:
        dialect = self.dialect
        status = row[3]
        expires_at = dialect.to_timestamp(row[11])
        if status == "pending" and expires_at is not None and expires_at <= now:
            status = "expired"
        return PostingView(
            space_id=dialect.to_uuid(row[0]),  # type: ignore[arg-type]
            id=dialect.to_uuid(row[1]),  # type: ignore[arg-type]
            position=row[2],
            status=status,
            entries=tuple(
                PostingLegView(
                    account_id=e.account_id,
                    direction=e.direction,
                    amount_minor=e.amount_minor,
                    currency=e.currency,
                )
                for e in decode_entries(row[4])
            ),
            description=self.cipher.open(row[5]),
            effective_date=dialect.to_date(row[6]),  # type: ignore[arg-type]
            merchant=self.cipher.open_optional(row[7]),
            category_id=dialect.to_uuid(row[8]),
            metadata=self.cipher.open_metadata(decode_metadata(row[9])),
            pending=bool(row[10]),
            expires_at=expires_at,
            recorded_at=dialect.to_timestamp(row[12]),  # type: ignore[arg-type]
            reverses=dialect.to_uuid(row[13]),
            reversed_by=dialect.to_uuid(row[14]),
            declined_reason=row[15],
        )

    # Reports -----------------------------------------------------------------------------------

    def trial_balance(self, space_id: UUID, as_of: date) -> TrialBalanceView:
        """Each account's net posted balance at the end of `as_of` in its debit or credit
        column, in the order accounts were opened; per currency the two totals are equal."""
        dialect = self.dialect
        rows = self._fetch(
            "SELECT a.account_id, a.code, a.name, a.type, a.currency, a.normal_balance, "
            "(SELECT d.closing_posted_minor FROM rm_daily_balances AS d "
            "WHERE d.space_id = a.space_id AND d.account_id = a.account_id "
            "AND d.effective_date <= ? ORDER BY d.effective_date DESC LIMIT 1) "
            "FROM rm_accounts AS a WHERE a.space_id = ? ORDER BY a.position",
            (dialect.date(as_of), dialect.uuid(space_id)),
        )
        report_rows: list[TrialBalanceRow] = []
        totals: dict[str, list[int]] = {}
        for row in rows:
            balance = row[6] or 0
            debit_side = (balance >= 0) == (row[5] == DIRECTIONS[0])
            debit, credit = (abs(balance), 0) if debit_side else (0, abs(balance))
            report_rows.append(
                TrialBalanceRow(
                    account_id=dialect.to_uuid(row[0]),  # type: ignore[arg-type]
                    code=row[1],
                    name=self.cipher.open(row[2]),
                    type=row[3],
                    currency=row[4],
                    debit_minor=debit,
                    credit_minor=credit,
                )
            )
            total = totals.setdefault(row[4], [0, 0])
            total[0] += debit
            total[1] += credit
        return TrialBalanceView(
            as_of=as_of,
            rows=report_rows,
            totals=[
                TrialBalanceTotal(currency=currency, debit_minor=debit, credit_minor=credit)
                for currency, (debit, credit) in sorted(totals.items())
            ],
        )

    # The log -----------------------------------------------------------------------------------

    def events(self, *, after: int = 0, limit: int = DEFAULT_PAGE_LIMIT) -> Page[EventView]:
        """Events with position > `after`, in log order, from the event store itself.
        `next_cursor` is the last item's position as a decimal string (pass it as `after`)."""
        check_limit(limit)
        if after < 0:
            raise InvalidRequest("after must be 0 or more", field="after")
        rows = self._event_rows(after, limit + 1)
        items: list[EventView] = []
        for row in rows[:limit]:
            items.append(event_view(row, self.cipher))
        next_cursor = str(items[-1].position) if len(rows) > limit else None
        return Page(items=items, next_cursor=next_cursor)

    def _event_rows(self, after: int, limit: int) -> list[Any]:
        if self.database.is_postgres:
            with self._postgres_pool().connection() as connection:
                return read_rows(self.database, connection.cursor(), after, limit)
        self._fetch("SELECT 1")  # opens this thread's connection
        return read_rows(self.database, self._local.connection.cursor(), after, limit)
