"""GET account under load: concurrent reads of accounts coalesced into one query (PostgreSQL).

A read of one account through the read models costs a worker-thread hop, a pool check and a
statement: about 0.4 ms of CPU per request, which held GET account near 1,000 requests/s. Here,
on PostgreSQL, the accounts that concurrent requests ask for are fetched together: a request
queues its (space, account) and waits; a flusher on the event loop takes everything queued (up to
`MAX_ACCOUNTS_PER_QUERY`), fetches it with one statement on an asyncio connection and answers
each waiting request. While a statement is in flight the next requests queue, so a batch grows
with the load and one round trip serves many requests; an idle server answers a lone request
with one statement, as before.

Nothing is cached. Every answer comes from a statement that started after its request was
queued, so it reads at least what the projections had applied when the request got there (after
its `Ledger-Min-Position` wait, if it sent one).

On SQLite (the embedded default: one process, a local file), and with read models given by a
caller, reads stay one query per request on the read threads. The statement and the row mapping
are the read models' own (`projections.queries`), so both paths answer the same view.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar
from uuid import UUID

import psycopg

from ledger_core.limits import (
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_RECONNECT_WINDOW_S,
    READ_CONNECTION_PARAMETERS,
)
from projections.db import is_postgres_url, psycopg_url
from projections.views import AccountView

if TYPE_CHECKING:
    from projections.queries import ReadModels

#: Accounts fetched by one statement at most: bounds the statement's size and the time one
#: batch holds a connection (a few hundred index lookups take about a millisecond).
MAX_ACCOUNTS_PER_QUERY: Final = 256
#: Statements in flight at once, each on its own connection: while one runs, the next batch
#: gathers. Two keep the database busy without connections nobody waits for.
ACCOUNT_QUERY_CONNECTIONS: Final = 2

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    """`await coalescer.get(key)`: the value `fetch` finds for `key` (None if none), fetched
    together with the keys other callers asked for meanwhile. At most `max_keys` keys per
    `fetch`, at most `concurrency` fetches at once; a failed `fetch` fails every caller of that
    batch with its exception. Event-loop only (no locks): callers and flushers share one loop."""

    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
        *,
        max_keys: int,
        concurrency: int,
    ) -> None:
        self._fetch = fetch
        self._max_keys = max_keys
        self._concurrency = concurrency
        self._queued: list[tuple[K, asyncio.Future[V | None]]] = []
        #: The flushers running (a reference keeps a running task from being collected).
        self._flushers: set[asyncio.Task[None]] = set()

    async def get(self, key: K) -> V | None:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[V | None] = loop.create_future()
        self._queued.append((key, future))
        if len(self._flushers) < self._concurrency:
            flusher = loop.create_task(self._flush())
            self._flushers.add(flusher)
            flusher.add_done_callback(self._flushers.discard)
        return await future

    async def _flush(self) -> None:
        """Answer queued keys, one batch per fetch, until none is queued."""
        while self._queued:
            batch = self._queued[: self._max_keys]
            del self._queued[: self._max_keys]
            try:
                found = await self._fetch([key for key, _ in batch])
            except Exception as error:  # each caller gets the failure its own read would
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for key, future in batch:
                if not future.done():  # a caller that went away (cancelled) is skipped
                    future.set_result(found.get(key))


class AccountReader:
    """`await reader.account(space_id, account_id)`: the account's view, or None."""

    def __init__(
        self,
        read_models: ReadModels,
        run_in_thread: Callable[..., Awaitable[Any]],
        database_url: str | None,
    ) -> None:
        """`database_url`: the read models' database, whose reads are coalesced when it is
        PostgreSQL; None to read through `read_models` only (read models given by a caller)."""
        self._read_models = read_models
        self._run_in_thread = run_in_thread
        self._database_url = database_url
        self._pool: Any = None
        self._query: Callable[[list[tuple[UUID, UUID]]], tuple[str, tuple[str, str]]] | None = None
        self._coalescer: Coalescer[tuple[UUID, UUID], AccountView] | None = None

    @property
    def coalesces(self) -> bool:
        return self._coalescer is not None

    async def open(self) -> None:
        """Open the asyncio connections (PostgreSQL only), on the event loop that serves."""
        url = self._database_url
        if url is None or not is_postgres_url(url):
            return
        from psycopg_pool import AsyncConnectionPool

        from projections.queries import accounts_by_keys_query

        self._query = accounts_by_keys_query
        self._pool = AsyncConnectionPool(
            psycopg_url(url),
            min_size=ACCOUNT_QUERY_CONNECTIONS,
            max_size=ACCOUNT_QUERY_CONNECTIONS,
            kwargs={"autocommit": True, **READ_CONNECTION_PARAMETERS},
            timeout=DATABASE_CONNECT_TIMEOUT_S,  # then 503 `unavailable`
            reconnect_timeout=DATABASE_RECONNECT_WINDOW_S,
            open=False,
        )
        await self._pool.open()
        self._coalescer = Coalescer(
            self._fetch, max_keys=MAX_ACCOUNTS_PER_QUERY, concurrency=ACCOUNT_QUERY_CONNECTIONS
        )

    async def close(self) -> None:
        self._coalescer = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def account(self, space_id: UUID, account_id: UUID) -> AccountView | None:
        if self._coalescer is None:
            view: AccountView | None = await self._run_in_thread(
                self._read_models.account, space_id, account_id
            )
            return view
        return await self._coalescer.get((space_id, account_id))

    async def _fetch(self, keys: list[tuple[UUID, UUID]]) -> dict[tuple[UUID, UUID], AccountView]:
        assert self._query is not None, "open() sets the query with the pool"
        statement, params = self._query(keys)
        try:
            rows = await self._rows(statement, params)
        except psycopg.OperationalError:
            # The pool hands out its connections without a check (a round trip per batch, on
            # the hottest read): after the database restarted, they are all broken. Drop them
            # and try once more on a fresh one; a database still away fails again (503).
            await self._pool.check()
            rows = await self._rows(statement, params)
        to_view = self._read_models.account_view
        views = [to_view(row) for row in rows]
        return {(view.space_id, view.id): view for view in views}

    async def _rows(self, statement: Any, params: Any) -> list[Any]:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(statement, params)
            rows: list[Any] = await cursor.fetchall()
            return rows
