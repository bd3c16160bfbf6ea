"""PostgreSQL going away under a running app (API.md: 503 `unavailable`, with Retry-After).

The app reaches the database through a TCP proxy the test cuts and restores: while it is cut,
every request, write or read, is answered 503 `unavailable` within seconds (none is held until
the client gives up); once the database is back the app recovers by itself, writes and reads
alike; and it shuts down promptly even after an outage."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from litestar.testing import TestClient

from api.app import create_app
from ledger_core.limits import DATABASE_CONNECT_TIMEOUT_S, STORE_ATTEMPTS
from tests.api.conftest import Api, settings_for

#: The longest a request may take to be answered 503 while the database is away: the store's
#: attempts, each waiting for a connection, and slack for a shared machine.
OUTAGE_ANSWER_S = STORE_ATTEMPTS * DATABASE_CONNECT_TIMEOUT_S + 5.0
#: How long after the database is back every route must work again.
RECOVERY_S = 30.0
#: How long the app may take to stop after an outage.
SHUTDOWN_S = 20.0


class Proxy:
    """A TCP proxy to PostgreSQL on a port of its own; `cut()` closes every connection through
    it and stops listening (new connections are refused), `restore()` listens again."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.restore()

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, []
        for sock in [*sockets, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def proxied(postgres_url: str) -> Iterator[tuple[str, Proxy]]:
    parsed = urlparse(postgres_url)
    proxy = Proxy((parsed.hostname or "127.0.0.1", parsed.port or 5432))
    netloc = parsed.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{proxy.port}"
    netloc_through = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    try:
        yield parsed._replace(netloc=netloc_through).geturl(), proxy
    finally:
        proxy.cut()


def _timed(call: object) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()  # type: ignore[operator]
    return response, time.monotonic() - started


def test_a_postgres_outage_is_answered_503_promptly_and_the_app_recovers(
    proxied: tuple[str, Proxy],
) -> None:
    url, proxy = proxied
    client = TestClient(create_app(settings_for(url)), raise_server_exceptions=False)
    client.__enter__()
    try:
        api = Api(client)
        space = api.open_space()
        account = api.open_account(space, "Cash", "asset")
        path = f"/v1/spaces/{space}"

        proxy.cut()
        during = {
            "POST /v1/spaces": lambda: api.post(
                "/v1/spaces", {"name": "x", "base_currency": "USD"}, key="during-1"
            ),
            "POST account": lambda: api.post(
                f"{path}/accounts", {"name": "y", "type": "asset", "currency": "USD"}
            ),
            "GET /v1/assets": lambda: api.get("/v1/assets", wait=False),
            "GET space": lambda: api.get(path, wait=False),
            "GET account": lambda: api.get(f"{path}/accounts/{account}", wait=False),
            "GET postings": lambda: api.get(f"{path}/postings", wait=False),
            "GET /v1/events": lambda: api.get("/v1/events", wait=False),
        }
        for name, call in during.items():
            response, seconds = _timed(call)
            assert response.status_code == 503, (name, response.text)
            assert response.json()["code"] == "unavailable", name
            assert "retry-after" in response.headers, name
            assert seconds < OUTAGE_ANSWER_S, (name, seconds)
        ready, seconds = _timed(lambda: client.get("/ready"))
        assert ready.status_code == 503 and seconds < OUTAGE_ANSWER_S, (ready.text, seconds)

        proxy.restore()
        deadline = time.monotonic() + RECOVERY_S
        while True:  # the first requests may still meet connections the outage broke
            created = api.post("/v1/spaces", {"name": "after", "base_currency": "USD"}, key="after")
            if created.status_code == 201 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert created.status_code == 201, created.text
        retried = api.post("/v1/spaces", {"name": "x", "base_currency": "USD"}, key="during-1")
        assert retried.status_code == 201, retried.text  # a 503 was not stored with its key
        posting = api.record(space, account, api.open_account(space, "Gifts", "income"), "5.00")
        for response in (
            api.get(f"{path}/accounts/{account}"),
            api.get(f"{path}/postings/{posting['id']}"),
            api.get("/v1/assets"),
            client.get("/ready"),
        ):
            assert response.status_code == 200, (response.request.url, response.text)
    finally:
        proxy.cut()  # once more: the shutdown meets a database that is away
        started = time.monotonic()
        client.__exit__(None, None, None)
        assert time.monotonic() - started < SHUTDOWN_S


def test_requests_stuck_behind_a_lock_are_answered_503_then_go_through(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock an operator holds (ACCESS EXCLUSIVE on a read table, then on the events table)
    does not hold requests for as long as it lasts: a read is cancelled at its statement
    timeout and a write gives up at its lock timeout, each answered 503 `unavailable`; the
    write recorded nothing, and once the lock is gone the same key records it, once. (The
    timeouts are shortened to half a second here; READ_CONNECTION_PARAMETERS and
    STORE_CONNECTION_PARAMETERS, checked in tests/integration/test_database_connections.py,
    carry the named limits.)"""
    import psycopg

    import api.account_reader
    import ledger_core.store
    import projections.queries
    from ledger_core.limits import DATABASE_CONNECTION_PARAMETERS
    from tests.api.test_commands import problem_of

    short_read = {**DATABASE_CONNECTION_PARAMETERS, "options": "-c statement_timeout=500"}
    short_store = {**DATABASE_CONNECTION_PARAMETERS, "options": "-c lock_timeout=500"}
    monkeypatch.setattr(projections.queries, "READ_CONNECTION_PARAMETERS", short_read)
    monkeypatch.setattr(api.account_reader, "READ_CONNECTION_PARAMETERS", short_read)
    monkeypatch.setattr(ledger_core.store, "STORE_CONNECTION_PARAMETERS", short_store)
    app = create_app(settings_for(postgres_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client)
        space = api.open_space()
        cash = api.open_account(space, "Cash", "asset")
        gifts = api.open_account(space, "Gifts", "income")
        api.record(space, cash, gifts, "1.00")
        account = f"/v1/spaces/{space}/accounts/{cash}"
        assert api.get(account).status_code == 200  # the projections are there
        with psycopg.connect(postgres_url) as operator:
            operator.execute("LOCK TABLE rm_accounts IN ACCESS EXCLUSIVE MODE")
            for path in (f"/v1/spaces/{space}/accounts", account):  # listed; GET account
                response, seconds = _timed(lambda path=path: api.get(path, wait=False))
                problem_of(response, 503, "unavailable")
                assert seconds < 5, seconds
            operator.rollback()
        assert api.ok(api.get(account), 200)["balances"]["posted"] == "1.00"

        body = api.posting_body(cash, gifts, "2.00")
        postings = f"/v1/spaces/{space}/postings"
        with psycopg.connect(postgres_url) as operator:
            operator.execute("LOCK TABLE ledger_events IN ACCESS EXCLUSIVE MODE")
            response, seconds = _timed(lambda: api.post(postings, body, key="behind-a-lock"))
            problem_of(response, 503, "unavailable")
            assert "ledger-position" not in response.headers and seconds < 5, seconds
            operator.rollback()
        recorded = api.post(postings, body, key="behind-a-lock")
        assert recorded.status_code == 201, recorded.text
        assert "idempotent-replayed" not in recorded.headers
        assert api.ok(api.get(account), 200)["balances"]["posted"] == "3.00"
