"""Every PostgreSQL connection the ledger opens carries the libpq parameters of
`ledger_core.limits.DATABASE_CONNECTION_PARAMETERS` (connect timeout, TCP keepalive, TCP user
timeout), as the server-side session reports them: the store's pool and its writer connection,
the projections' connections, the read models' pool and the API's coalesced GET-account pool.
The API's read connections also carry a server-side statement timeout, and the store's a lock
timeout and a statement timeout (`READ_CONNECTION_PARAMETERS`, `STORE_CONNECTION_PARAMETERS`);
the projections' connections none (their long statements are their work).

A peer that vanishes without a reset cannot be made in a test here (no packet filter on these
machines); what is checked is that no connection is opened without the settings that bound it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from typing import Any

from api.account_reader import AccountReader
from ledger_core.limits import (
    DATABASE_CONNECT_TIMEOUT_S,
    DATABASE_CONNECTION_PARAMETERS,
    DATABASE_KEEPALIVE_IDLE_S,
    DATABASE_KEEPALIVE_INTERVAL_S,
    DATABASE_KEEPALIVE_PROBES,
    DATABASE_TCP_USER_TIMEOUT_MS,
    READ_STATEMENT_TIMEOUT_MS,
    STORE_LOCK_TIMEOUT_MS,
    STORE_STATEMENT_TIMEOUT_MS,
)
from ledger_core.store import PostgresLedgerStore, open_store
from projections.db import Database
from projections.queries import ReadModels

EXPECTED = {
    "connect_timeout": str(DATABASE_CONNECT_TIMEOUT_S),
    "keepalives_idle": str(DATABASE_KEEPALIVE_IDLE_S),
    "keepalives_interval": str(DATABASE_KEEPALIVE_INTERVAL_S),
    "keepalives_count": str(DATABASE_KEEPALIVE_PROBES),
    "tcp_user_timeout": str(DATABASE_TCP_USER_TIMEOUT_MS),
}


#: (statement_timeout, lock_timeout) as PostgreSQL shows them, by kind of connection.
STORE_TIMEOUTS = (f"{STORE_STATEMENT_TIMEOUT_MS // 1000}s", f"{STORE_LOCK_TIMEOUT_MS // 1000}s")
READ_TIMEOUTS = (f"{READ_STATEMENT_TIMEOUT_MS // 1000}s", "0")
NO_TIMEOUTS = ("0", "0")


def timeouts(connection: Any) -> tuple[str, str]:
    shown = []
    for name in ("statement_timeout", "lock_timeout"):
        row = connection.execute(f"SHOW {name}").fetchone()
        shown.append(row[name] if isinstance(row, dict) else row[0])  # the store's rows: dicts
    return shown[0], shown[1]


def bounded(connection: Any, expected_timeouts: tuple[str, str] = NO_TIMEOUTS) -> None:
    assert timeouts(connection) == expected_timeouts
    parameters = connection.info.get_parameters()
    assert {name: parameters.get(name) for name in EXPECTED} == EXPECTED
    assert parameters.get("keepalives", "1") == "1"  # on (libpq's default, so maybe unlisted)
    assert socket_options(connection.pgconn.socket) == SOCKET_OPTIONS


#: What the kernel holds for the connection's socket (TCP: the test server is on 127.0.0.1).
SOCKET_OPTIONS = {
    "SO_KEEPALIVE": 1,
    "TCP_KEEPIDLE": DATABASE_KEEPALIVE_IDLE_S,
    "TCP_KEEPINTVL": DATABASE_KEEPALIVE_INTERVAL_S,
    "TCP_KEEPCNT": DATABASE_KEEPALIVE_PROBES,
    "TCP_USER_TIMEOUT": DATABASE_TCP_USER_TIMEOUT_MS,
}


def socket_options(descriptor: int) -> dict[str, int]:
    sock = socket.socket(fileno=os.dup(descriptor))
    try:
        assert sock.family in (socket.AF_INET, socket.AF_INET6), "a TCP connection"
        return {
            "SO_KEEPALIVE": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            **{
                name: sock.getsockopt(socket.IPPROTO_TCP, getattr(socket, name))
                for name in ("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT", "TCP_USER_TIMEOUT")
            },
        }
    finally:
        sock.close()


def test_the_parameters_are_the_named_limits() -> None:
    assert {name: str(value) for name, value in DATABASE_CONNECTION_PARAMETERS.items()} == {
        **EXPECTED,
        "keepalives": "1",
    }


def test_every_connection_is_opened_with_them(postgres_url: str) -> None:
    store = open_store(postgres_url)
    assert isinstance(store, PostgresLedgerStore)
    try:
        with store.datastore.pool.connection() as connection:
            bounded(connection, STORE_TIMEOUTS)
        bounded(store._writer_connection(), STORE_TIMEOUTS)
    finally:
        store.close()

    database = Database(postgres_url)
    connection = database.connect()
    try:
        bounded(connection)
    finally:
        connection.close()

    read_models = ReadModels(postgres_url)
    try:
        with read_models._postgres_pool().connection() as connection:
            bounded(connection, READ_TIMEOUTS)
    finally:
        read_models.close()

    async def coalesced() -> dict[str, str]:
        reader = AccountReader(read_models, asyncio.to_thread, postgres_url)
        await reader.open()
        try:
            async with reader._pool.connection() as connection:
                shown = []
                for name in ("statement_timeout", "lock_timeout"):
                    cursor = await connection.execute(f"SHOW {name}")
                    shown.append((await cursor.fetchone())[0])  # type: ignore[index]
                assert tuple(shown) == READ_TIMEOUTS
                parameters: dict[str, str] = connection.info.get_parameters()
                assert socket_options(connection.pgconn.socket) == SOCKET_OPTIONS
                return parameters
        finally:
            await reader.close()

    parameters = asyncio.run(coalesced())
    assert {name: parameters.get(name) for name in EXPECTED} == EXPECTED
