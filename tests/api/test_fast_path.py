"""GET account answered at the app's entry (api.fast_path) answers exactly as the Litestar route.

Every case is sent twice to the same app: once with the fast path on, once with it off (the
request then goes through Litestar's routing, gate and handler). Status, headers (all but the
request id, fresh per request) and body must be equal, and the fast path must have answered the
first of each pair. Both backends: on PostgreSQL the read is the coalesced one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.datastructures import Headers
from litestar.testing import TestClient

from api.app import LedgerApp, create_app
from api.fast_path import FastPath, _header_reader, account_path_ids, postings_path
from api.limits import MAX_REQUEST_BODY_BYTES
from api.problems import CLIENT_CLOSED_REQUEST_STATUS
from ledger_core.settings import LedgerSettings
from tests.api.conftest import ADMIN_TOKEN, Api, Book, settings_for
from tests.api.test_hostile_input import _raw_asgi

T = TypeVar("T")

#: The bound of a `Ledger-Min-Position` wait in these tests (a position never reached).
WAIT_SECONDS = 0.2


@pytest.fixture
def app_settings(database_url: str) -> LedgerSettings:
    return settings_for(database_url, position_wait_seconds=WAIT_SECONDS)


@pytest.fixture
def client(app_settings: LedgerSettings) -> Iterator[TestClient[Litestar]]:
    with TestClient(create_app(app_settings), raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def book(api: Api) -> Book:
    """The book, applied by the projections (each pair of answers must read the same state)."""
    opened = Book(api)
    api.ok(api.get(f"/v1/spaces/{opened.space}"), 200)  # waits for the last write's position
    return opened


class Answered:
    """Counts the requests the fast path answered."""

    def __init__(self, fast_path: FastPath) -> None:
        self.count = 0
        self.fast_path = fast_path

    def route(self, scope: Any) -> Any:
        inner = self.fast_path.route(scope)
        if inner is None:
            return None

        async def counting(scope: Any, receive: Any, send: Any) -> None:
            self.count += 1
            await inner(scope, receive, send)

        return counting


def both_ways(client: TestClient[Litestar], send: Callable[[], httpx.Response]) -> httpx.Response:
    """`send()` through the fast path, then through Litestar; assert the answers are the same
    and return the fast path's."""
    fast = fast_only(client, send)
    routed = litestar_only(client, send)
    assert (fast.status_code, _headers(fast), fast.content) == (
        routed.status_code,
        _headers(routed),
        routed.content,
    )
    assert fast.headers["x-request-id"]
    return fast


def fast_only(client: TestClient[Litestar], send: Callable[[], T]) -> T:
    """`send()`, asserting the fast path answered it."""
    app = client.app
    assert isinstance(app, LedgerApp) and app.fast_path is not None, "on by default"
    fast_path = app.fast_path
    answered = Answered(fast_path)
    app.fast_path = answered  # type: ignore[assignment]
    try:
        answer = send()
    finally:
        app.fast_path = fast_path
    assert answered.count == 1, "the fast path did not answer"
    return answer


def litestar_only(client: TestClient[Litestar], send: Callable[[], T]) -> T:
    """`send()` with the fast path off: Litestar answers it."""
    app = client.app
    assert isinstance(app, LedgerApp)
    fast_path = app.fast_path
    app.fast_path = None
    try:
        return send()
    finally:
        app.fast_path = fast_path


def _headers(response: httpx.Response) -> list[tuple[str, str]]:
    return sorted(
        (name, value) for name, value in response.headers.items() if name != "x-request-id"
    )


def get(
    client: TestClient[Litestar], path: str, headers: dict[str, str] | None = None, **options: Any
) -> Callable[[], httpx.Response]:
    def send() -> httpx.Response:
        return client.get(path, headers=headers or {}, **options)

    return send


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


def test_an_account_and_its_balances(api: Api, book: Book) -> None:
    api.record(book.space, book.checking, book.salary, "25.00")
    client = api.client
    path = book.account_path(book.checking)
    position = {"Ledger-Min-Position": str(api.last_position)}
    answer = both_ways(client, get(client, path, {**ADMIN, **position}))
    assert answer.status_code == 200
    assert answer.json()["balances"]["posted"] == "25.00"
    assert answer.headers["content-type"] == "application/json"
    # Without the wait (the position is reached by now), a query string, HEAD.
    assert both_ways(client, get(client, path, ADMIN)).json() == answer.json()
    assert both_ways(client, get(client, path, ADMIN, params={"x": "1"})).status_code == 200
    head = both_ways(client, lambda: client.head(path, headers=ADMIN))
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == answer.headers["content-length"]


def test_tokens(api: Api, book: Book) -> None:
    client = api.client
    path = book.account_path(book.checking)
    other_space = api.open_space("Other")
    reader = api.issue_token("read", [book.space])
    outsider = api.issue_token("write", [other_space])
    revoked_id = api.ok(api.post("/v1/tokens", {"role": "read", "spaces": [book.space]}), 201)
    api.ok(api.send("DELETE", f"/v1/tokens/{revoked_id['id']}", key=None), 204)
    cases = {
        "reader": (bearer(reader), 200),
        "outsider": (bearer(outsider), 404),
        "revoked": (bearer(revoked_id["token"]), 401),
        "none": ({}, 401),
        "unknown": (bearer("ldg_nobody"), 401),
        "not bearer": ({"Authorization": f"Basic {ADMIN_TOKEN}"}, 401),
        "empty bearer": ({"Authorization": "Bearer "}, 401),
        "too long": (bearer("x" * 300), 401),
    }
    for name, (headers, status) in cases.items():
        answer = both_ways(client, get(client, path, headers))
        assert answer.status_code == status, name
    assert both_ways(client, get(client, path, bearer(outsider))).json()["code"] == (
        "space-not-found"
    )
    unauthenticated = both_ways(client, get(client, path))
    assert unauthenticated.headers["www-authenticate"]


def test_not_found(api: Api, book: Book) -> None:
    client = api.client
    other_space = api.open_space("Other")
    foreign = api.open_account(other_space, "Foreign", "asset")
    api.ok(api.get(f"/v1/spaces/{other_space}"), 200)  # applied
    cases = {
        f"/v1/spaces/{book.space}/accounts/{uuid.uuid4()}": "account-not-found",
        f"/v1/spaces/{book.space}/accounts/{foreign}": "account-not-found",
        f"/v1/spaces/{uuid.uuid4()}/accounts/{book.checking}": "space-not-found",
        f"/v1/spaces/not-a-uuid/accounts/{book.checking}": "space-not-found",
        f"/v1/spaces/{book.space}/accounts/not-a-uuid": "account-not-found",
        f"/v1/spaces/{book.space}/accounts/{'9' * 5000}": "account-not-found",
    }
    for path, code in cases.items():
        answer = both_ways(client, get(client, path, ADMIN))
        assert (answer.status_code, answer.json()["code"]) == (404, code), path
    # Another spelling of a UUID is the same id to both.
    braced = f"/v1/spaces/{{{book.space}}}/accounts/{book.checking.upper()}"
    assert both_ways(client, get(client, braced, ADMIN)).status_code == 200


def test_min_position(api: Api, book: Book) -> None:
    client = api.client
    path = book.account_path(book.checking)
    for value in ("abc", "-1", "1.5", "9" * 40, "", " 1"):
        answer = both_ways(client, get(client, path, {**ADMIN, "Ledger-Min-Position": value}))
        assert (answer.status_code, answer.json()["code"]) == (400, "malformed-request"), value
    far = {**ADMIN, "Ledger-Min-Position": str(10**12)}
    answer = both_ways(client, get(client, path, far))
    assert (answer.status_code, answer.json()["code"]) == (503, "position-not-reached")
    assert answer.headers["retry-after"]


def test_request_ids(api: Api, book: Book) -> None:
    client = api.client
    path = book.account_path(book.checking)
    sane = both_ways(client, get(client, path, {**ADMIN, "X-Request-ID": "trace-1:a.b"}))
    assert sane.headers["x-request-id"] == "trace-1:a.b"
    insane = both_ways(client, get(client, path, {**ADMIN, "X-Request-ID": "a b"}))
    assert insane.headers["x-request-id"] != "a b"
    missing = both_ways(client, get(client, f"/v1/spaces/{book.space}/accounts/x", ADMIN))
    assert missing.status_code == 404 and missing.headers["x-request-id"]


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (RuntimeError("a bug"), 500, "internal-error"),
        (psycopg.OperationalError("connection lost"), 503, "unavailable"),
    ],
)
def test_failures_of_the_read(
    api: Api, book: Book, failure: Exception, status: int, code: str, monkeypatch: Any
) -> None:
    """A bug is a 500 problem (logged, no internals); a lost database a 503 with Retry-After."""
    client = api.client
    services = client.app.services  # type: ignore[attr-defined]

    async def failing(space_id: Any, account_id: Any) -> None:
        raise failure

    monkeypatch.setattr(services.account_reader, "account", failing)
    answer = both_ways(client, get(client, book.account_path(book.checking), ADMIN))
    assert (answer.status_code, answer.json()["code"]) == (status, code)
    assert "a bug" not in answer.text and "Traceback" not in answer.text


def test_counted_under_the_route(api: Api, book: Book) -> None:
    client = api.client
    path = book.account_path(book.checking)

    def count(status: str, method: str = "GET") -> float:
        for line in client.get("/metrics").text.splitlines():
            if line.startswith("ledger_http_requests_total{") and (
                'route="/v1/spaces/{space_id}/accounts/{account_id}"' in line
                and f'method="{method}"' in line
                and f'status="{status}"' in line
            ):
                return float(line.rpartition(" ")[2])
        return 0.0

    before = (count("200"), count("404"), count("200", "HEAD"))
    both_ways(client, get(client, path, ADMIN))
    both_ways(client, get(client, f"/v1/spaces/{book.space}/accounts/{uuid.uuid4()}", ADMIN))
    both_ways(client, lambda: client.head(path, headers=ADMIN))
    after = (count("200"), count("404"), count("200", "HEAD"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    "lines",
    [
        [(b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")],
        [(b"user-agent", b"x"), (b"Authorization", b"Bearer c")],
        [(b"authorization", b""), (b"authorization", b"Bearer d")],
        [(b"authorization", "Bearer \u00e9".encode("latin-1"))],
        [(b"host", b"h")],
    ],
)
def test_headers_are_read_as_litestar_reads_them(lines: list[tuple[bytes, bytes]]) -> None:
    """(The test client joins repeated header lines into one, so this is checked on scopes.)"""
    scope: Any = {"type": "http", "headers": lines}
    litestar_headers = Headers.from_scope(scope)
    for name in ("authorization", "user-agent", "ledger-min-position"):
        assert _header_reader(scope)(name) == litestar_headers.get(name), name


@pytest.mark.parametrize(
    ("method", "path", "answered"),
    [
        ("GET", "/v1/spaces/a/accounts/b", ("a", "b")),
        ("GET", "/v1/spaces/a/accounts/b/", None),  # Litestar's, which strips the slash
        ("GET", "/v1/spaces/a/accounts/b/entries", None),
        ("GET", "/v1/spaces/a/accounts", None),
        ("GET", "/v1/spaces//accounts/b", None),
        ("GET", "/v2/spaces/a/accounts/b", None),
        ("GET", "//v1/spaces/a/accounts/b", None),
        ("POST", "/v1/spaces/a/accounts/b", None),
        ("PATCH", "/v1/spaces/a/accounts/b", None),
    ],
)
def test_which_requests_take_the_fast_path(
    method: str, path: str, answered: tuple[str, str] | None
) -> None:
    assert account_path_ids({"type": "http", "method": method, "path": path}) == answered


def test_other_spellings_of_the_path_answer_the_same(api: Api, book: Book) -> None:
    """A trailing slash goes to Litestar's route, which answers what the fast path does."""
    client = api.client
    path = book.account_path(book.checking)
    fast = client.get(path, headers=ADMIN)
    routed = client.get(path + "/", headers=ADMIN)
    assert (fast.status_code, fast.json()) == (routed.status_code, routed.json())
    assert fast.status_code == 200


# POST posting and POST batch ------------------------------------------------------------------


def post(
    api: Api, path: str, body: Any = None, *, key: str | None = "auto", **options: Any
) -> Callable[[], httpx.Response]:
    """A POST sent with `api.send`: each send with a fresh key unless `key` names one."""

    def send() -> httpx.Response:
        return api.send("POST", path, body, key=key, **options)

    return send


def batch_of(api: Api, book: Book, *amounts: str) -> dict[str, Any]:
    return {"postings": [api.posting_body(book.groceries, book.card, a) for a in amounts]}


def test_a_posting_and_a_batch_answer_as_litestar_replays_them(api: Api, book: Book) -> None:
    """A new posting's answer is the same as Litestar's replay of it (but the replay header);
    a replay through the fast path is the same as a replay through Litestar."""
    client = api.client
    for path, body in (
        (book.postings, api.posting_body(book.groceries, book.card, "12.34")),
        (book.postings + "/batch", batch_of(api, book, "1.00", "2.50")),
    ):
        first = fast_only(client, post(api, path, body, key=f"first {path}"))
        assert first.status_code == 201, first.text
        assert "idempotent-replayed" not in first.headers
        assert int(first.headers["ledger-position"]) > 0
        replayed = both_ways(client, post(api, path, body, key=f"first {path}"))
        assert replayed.headers["idempotent-replayed"] == "true"
        assert replayed.content == first.content
        assert _headers(replayed) == sorted([*_headers(first), ("idempotent-replayed", "true")])
        # The same key with another body, or on the other route: 409, both ways.
        other = {"postings": [body]} if path == book.postings else body["postings"][0]
        other_path = path + "/batch" if path == book.postings else book.postings
        for conflict in (post(api, path, {**body, "x": 1}, key=f"first {path}"),
                         post(api, other_path, other, key=f"first {path}")):  # fmt: skip
            answer = both_ways(client, conflict)
            assert answer.status_code in (409, 422), answer.text


def test_a_posting_the_ledger_declines(api: Api, book: Book) -> None:
    client = api.client
    overdrawn = api.posting_body(book.groceries, book.checking, "5.00")  # checking: limit 0
    declined = fast_only(client, post(api, book.postings, overdrawn, key="declined"))
    assert (declined.status_code, declined.json()["code"]) == (422, "insufficient-funds")
    # Stored: a retry answers the same refusal, both ways.
    again = both_ways(client, post(api, book.postings, overdrawn, key="declined"))
    assert again.json() == declined.json() and again.headers["idempotent-replayed"] == "true"
    unknown = api.posting_body(book.groceries, str(uuid.uuid4()), "5.00")
    answer = both_ways(client, post(api, book.postings, unknown))
    assert (answer.status_code, answer.json()["code"]) == (404, "account-not-found")


def test_tokens_and_spaces_on_commands(api: Api, book: Book) -> None:
    client = api.client
    other_space = api.open_space("Other")
    reader = api.issue_token("read", [book.space])
    outsider = api.issue_token("write", [other_space])
    body = api.posting_body(book.groceries, book.card, "1.00")
    cases = {
        "reader": (api.as_token(reader), book.postings, 403),
        "outsider": (api.as_token(outsider), book.postings, 404),
        "none": (api.as_token(None), book.postings, 401),
        "unknown": (api.as_token("ldg_nobody"), book.postings, 401),
        "unknown space": (api, f"/v1/spaces/{uuid.uuid4()}/postings", 404),
        "malformed space": (api, "/v1/spaces/not-a-uuid/postings", 404),
    }
    for name, (caller, path, status) in cases.items():
        for route in (path, path + "/batch"):
            sent = body if route == path else {"postings": [body]}
            answer = both_ways(client, post(caller, route, sent))
            assert answer.status_code == status, (name, route, answer.text)


def test_keys_and_bodies_refused(api: Api, book: Book) -> None:
    client = api.client
    body = api.posting_body(book.groceries, book.card, "1.00")
    path = book.postings
    refused = {
        "no key": (post(api, path, body, key=None), 400),
        "empty key": (post(api, path, body, key=""), 400),
        "key too long": (post(api, path, body, key="k" * 256), 400),
        "not JSON": (
            post(api, path, key=None, content=b"{", headers={"Idempotency-Key": "nj"}),
            400,
        ),
        "empty body": (
            post(api, path, key=None, content=b"", headers={"Idempotency-Key": "e"}),
            None,
        ),
        "wrong shape": (post(api, path, {"entries": "no"}), 422),
        "one entry": (post(api, path, {"entries": body["entries"][:1]}), 422),
        "empty batch": (post(api, path + "/batch", {"postings": []}), 422),
        "batch too big": (post(api, path + "/batch", {"postings": [body] * 1001}), 422),
        "too large": (
            post(
                api,
                path,
                key=None,
                content=b" " * (2 * 1024 * 1024 + 1),
                headers={"Idempotency-Key": "big"},
            ),
            413,
        ),
    }
    for name, (send, status) in refused.items():
        answer = both_ways(client, send)
        assert 400 <= answer.status_code < 500, (name, answer.text)
        assert status is None or answer.status_code == status, (name, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", name
    # Two Idempotency-Key lines (sent raw: an HTTP client merges them): 400, both ways.
    two_keys = [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
    message = {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
    assert raw_both_ways(api, path, two_keys, [message])[0]["status"] == 400


def raw_both_ways(
    api: Api, path: str, headers: list[tuple[str, str]], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST `path` straight into the app (header lines and body messages exactly as given, with
    the admin token) through the fast path, then through Litestar; assert both sent the same
    messages (but the request id) and return the fast path's."""
    send = _raw_post(api, path, headers, messages)
    fast = fast_only(api.client, send)
    routed = litestar_only(api.client, send)
    assert _without_request_id(fast) == _without_request_id(routed)
    return fast


def _raw_post(
    api: Api, path: str, headers: list[tuple[str, str]], messages: list[dict[str, Any]]
) -> Callable[[], list[dict[str, Any]]]:
    lines = [("Authorization", f"Bearer {ADMIN_TOKEN}"), *headers]
    return lambda: _raw_asgi(api, path, lines, messages)


def _without_request_id(sent: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**message, "headers": [h for h in message["headers"] if h[0] != b"x-request-id"]}
        if "headers" in message
        else message
        for message in sent
    ]


def test_bodies_read_in_pieces_and_refused_on_the_way(api: Api, book: Book) -> None:
    """The fast path reads a body as Litestar does: in pieces, up to MAX_REQUEST_BODY_BYTES
    announced or received, a Content-Length that is no number, a client gone halfway."""
    body = json.dumps(api.posting_body(book.groceries, book.card, "2.00")).encode()
    path = book.postings

    def pieces(data: bytes, size: int, last: bool = True) -> list[dict[str, Any]]:
        parts = [data[i : i + size] for i in range(0, len(data), size)]
        return [
            {"type": "http.request", "body": part, "more_body": not last or i < len(parts) - 1}
            for i, part in enumerate(parts)
        ]

    def status(sent: list[dict[str, Any]]) -> int:
        return int(sent[0]["status"])

    # In pieces: recorded (then replayed, both ways, from the first send's key).
    key = ("Idempotency-Key", "in pieces")
    first = fast_only(api.client, _raw_post(api, path, [key], pieces(body, 7)))
    assert status(first) == 201
    assert status(raw_both_ways(api, path, [key], pieces(body, 7))) == 201
    # At the limit (spaces are JSON whitespace): not refused for its size.
    padded = body + b" " * (MAX_REQUEST_BODY_BYTES - len(body))
    at_limit = [("Idempotency-Key", "at limit")]
    assert (
        status(fast_only(api.client, _raw_post(api, path, at_limit, pieces(padded, 65536)))) == 201
    )
    assert status(raw_both_ways(api, path, at_limit, pieces(padded, 65536))) == 201
    over = padded + b" "
    cases: dict[str, tuple[list[tuple[str, str]], list[dict[str, Any]], int]] = {
        "received past the limit": ([], pieces(over, 65536), 413),
        "announced past the limit": (
            [("Content-Length", str(len(over)))],
            pieces(body, 65536),
            413,
        ),
        "announced at the limit, sent past it": (
            [("Content-Length", str(len(padded)))],
            pieces(over, 65536),
            413,
        ),
        "Content-Length not a number": ([("Content-Length", "12x")], pieces(body, 65536), 400),
        "gone halfway": (
            [],
            [*pieces(body[:20], 10, last=False), {"type": "http.disconnect"}],
            CLIENT_CLOSED_REQUEST_STATUS,
        ),
    }
    for name, (headers, messages, expected) in cases.items():
        keyed = [("Idempotency-Key", f"refused {name}"), *headers]
        assert status(raw_both_ways(api, path, keyed, messages)) == expected, name


def test_a_command_records_who_and_where(api: Api, book: Book) -> None:
    """The fast path records the token, request id, user agent and client address in the
    events as Litestar does."""
    headers = {"X-Request-ID": "fast-trace-1", "User-Agent": "fast-agent/1"}
    body = api.posting_body
    sends = [
        post(api, book.postings, body(book.groceries, book.card, amount), headers=headers)
        for amount in ("3.00", "4.00")
    ]
    answer = fast_only(api.client, sends[0])
    assert answer.headers["x-request-id"] == "fast-trace-1"
    assert litestar_only(api.client, sends[1]).status_code == answer.status_code == 201
    events = api.ok(api.get("/v1/events", limit="500"), 200)["items"]
    contexts = [e["data"]["context"] for e in events if e["type"] == "PostingRecorded"]
    fast, routed = contexts[-2:]
    assert fast == routed
    assert fast["request_id"] == "fast-trace-1" and fast["user_agent"] == "fast-agent/1"
    assert fast["token_id"] == "bootstrap-admin" and fast["client_address"]


def test_commands_are_counted_under_their_route(api: Api, book: Book) -> None:
    body = api.posting_body(book.groceries, book.card, "1.00")
    api.ok(api.post(book.postings, body), 201)
    api.ok(api.post(book.postings + "/batch", {"postings": [body]}), 201)
    metrics = api.client.get("/metrics").text
    for template in ("/v1/spaces/{space_id}/postings", "/v1/spaces/{space_id}/postings/batch"):
        labels = f'method="POST",route="{template}",status="201"'
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("ledger_http_requests_total{") and labels in line
        ]
        assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 1, (template, metrics[:2000])


@pytest.mark.parametrize(
    ("method", "path", "answered"),
    [
        ("POST", "/v1/spaces/a/postings", ("a", False)),
        ("POST", "/v1/spaces/a/postings/batch", ("a", True)),
        ("POST", "/v1/spaces/a/postings/", None),
        ("POST", "/v1/spaces/a/postings/batch/", None),
        ("POST", "/v1/spaces/a/postings/b/void", None),
        ("POST", "/v1/spaces/a/postings/b", None),
        ("POST", "/v1/spaces//postings", None),
        ("POST", "/v1/spaces/a/accounts", None),
        ("GET", "/v1/spaces/a/postings", None),
        ("PATCH", "/v1/spaces/a/postings", None),
    ],
)
def test_which_commands_take_the_fast_path(
    method: str, path: str, answered: tuple[str, bool] | None
) -> None:
    assert postings_path({"type": "http", "method": method, "path": path}) == answered
