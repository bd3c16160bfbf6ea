"""Fixtures of the HTTP tests: the real app (api.app.create_app) on a fresh database of each
backend, with the real Ledger, read models and in-process projections, driven through Litestar's
TestClient. `Api` is a thin client that keeps the tests readable: it sends a fresh idempotency
key unless told otherwise, and reads wait (`Ledger-Min-Position`) for the last write it saw.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from api.app import create_app
from ledger_core.settings import LedgerSettings

ADMIN_TOKEN = "test-admin-token-0123456789abcdef"


def settings_for(database_url: str, **overrides: Any) -> LedgerSettings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "position_wait_seconds": 5.0,
    }
    values.update(overrides)
    return LedgerSettings(**values)


@contextlib.contextmanager
def api_log_records() -> Iterator[list[logging.LogRecord]]:
    """The records the app's "api" logger emits inside the block, as they are emitted (pytest's
    caplog sees them only if and when they reach the root logger)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    api_logger = logging.getLogger("api")
    api_logger.addHandler(handler)
    try:
        yield records
    finally:
        api_logger.removeHandler(handler)


class Api:
    """A client of the API with one token. `last_position` is the highest `Ledger-Position`
    seen; reads wait for it so a test reads its own writes."""

    _keys = itertools.count(1)

    def __init__(self, client: TestClient[Litestar], token: str | None = ADMIN_TOKEN) -> None:
        self.client = client
        self.token = token
        self.last_position = 0

    def as_token(self, token: str | None) -> Api:
        other = Api(self.client, token)
        other.last_position = self.last_position
        return other

    def as_client(self, client: TestClient[Litestar]) -> Api:
        """The same token on another app (a restart), reading what this one wrote."""
        other = Api(client, self.token)
        other.last_position = self.last_position
        return other

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        headers = dict(extra)
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    def send(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        key: str | None = "auto",
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        if key == "auto":
            key = f"key-{next(self._keys)}"
        all_headers = self.headers(key, **(headers or {}))
        if content is None and body is not None:
            response = self.client.request(method, path, json=body, headers=all_headers)
        else:
            response = self.client.request(method, path, content=content, headers=all_headers)
        if "ledger-position" in response.headers:
            self.last_position = max(self.last_position, int(response.headers["ledger-position"]))
        return response

    def post(self, path: str, body: Any = None, **options: Any) -> httpx.Response:
        return self.send("POST", path, {} if body is None else body, **options)

    def patch(self, path: str, body: Any, **options: Any) -> httpx.Response:
        return self.send("PATCH", path, body, **options)

    def get(self, path: str, *, wait: bool = True, **params: Any) -> httpx.Response:
        headers = self.headers()
        if wait and self.last_position:
            headers["Ledger-Min-Position"] = str(self.last_position)
        return self.client.get(path, params=params or None, headers=headers)

    # Shortcuts that must succeed -------------------------------------------------------------

    def ok(self, response: httpx.Response, status: int) -> Any:
        assert response.status_code == status, response.text
        return response.json() if response.content else None

    def open_space(self, name: str = "Home", base_currency: str = "USD") -> str:
        body = {"name": name, "base_currency": base_currency}
        space_id: str = self.ok(self.post("/v1/spaces", body), 201)["id"]
        return space_id

    def open_account(self, space_id: str, name: str, type_: str, **fields: Any) -> str:
        body = {"name": name, "type": type_, "currency": "USD", **fields}
        response = self.post(f"/v1/spaces/{space_id}/accounts", body)
        account_id: str = self.ok(response, 201)["id"]
        return account_id

    def posting_body(self, debit: str, credit: str, amount: str, **fields: Any) -> dict[str, Any]:
        return {
            "entries": [
                {"account_id": debit, "direction": "debit", "amount": amount},
                {"account_id": credit, "direction": "credit", "amount": amount},
            ],
            **fields,
        }

    def record(self, space_id: str, debit: str, credit: str, amount: str, **fields: Any) -> Any:
        body = self.posting_body(debit, credit, amount, **fields)
        return self.ok(self.post(f"/v1/spaces/{space_id}/postings", body), 201)

    def issue_token(self, role: str, spaces: list[str]) -> str:
        response = self.post("/v1/tokens", {"role": role, "spaces": spaces})
        token: str = self.ok(response, 201)["token"]
        return token


@pytest.fixture
def app_settings(database_url: str) -> LedgerSettings:
    return settings_for(database_url)


@pytest.fixture
def client(app_settings: LedgerSettings) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def api(client: TestClient[Litestar]) -> Api:
    return Api(client)


class Book:
    """A space with a checking account (overdraft limit 0), salary income, groceries expense and
    a credit card liability."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.space = api.open_space()
        self.checking = api.open_account(self.space, "Checking", "asset", overdraft_limit="0.00")
        self.salary = api.open_account(self.space, "Salary", "income")
        self.groceries = api.open_account(self.space, "Groceries", "expense")
        self.card = api.open_account(self.space, "Card", "liability")

    @property
    def postings(self) -> str:
        return f"/v1/spaces/{self.space}/postings"

    def account_path(self, account_id: str) -> str:
        return f"/v1/spaces/{self.space}/accounts/{account_id}"


@pytest.fixture
def book(api: Api) -> Book:
    return Book(api)
