"""`api.rsgi`: the ASGI app over granian's RSGI interface, as `ledger serve` runs it.

The adapter's rules are checked against doubles of RSGI's scope and protocol (every branch,
deterministically); then `ledger serve` itself, as a subprocess, answers what only a real
server can show: a chunked body, one past the body limit, HEAD, a header granian cannot give as
text, and a request id on each."""

from __future__ import annotations

import asyncio
import json
import select
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.limits import MAX_REQUEST_BODY_BYTES
from api.rsgi import FAILED_BODY, RSGIApp, asgi_scope
from tests.api.test_readme_walkthrough import README, Served, admin_token, ledger_serving

# Doubles of RSGI -------------------------------------------------------------------------------


class Headers:
    """RSGI's headers as granian gives them: `items()` leaves out a value that is not visible
    ASCII, `keys()` names every header once."""

    def __init__(self, raw: list[tuple[str, bytes]]) -> None:
        self.raw = raw

    def items(self) -> list[tuple[str, str]]:
        return [(n, v.decode("ascii")) for n, v in self.raw if all(32 <= b < 127 for b in v)]

    def keys(self) -> list[str]:
        return list(dict.fromkeys(n for n, _ in self.raw))

    def __contains__(self, name: str) -> bool:
        return name in self.keys()


class Scope:
    def __init__(self, headers: list[tuple[str, bytes]], **fields: Any) -> None:
        self.proto = fields.get("proto", "http")
        self.http_version = fields.get("http_version", "1.1")
        self.method = fields.get("method", "POST")
        self.scheme = "http"
        self.path = fields.get("path", "/v1/things")
        self.query_string = fields.get("query_string", "")
        self.client = fields.get("client", "127.0.0.1:50000")
        self.server = fields.get("server", "127.0.0.1:8000")
        self.headers = Headers(headers)


class Stream:
    def __init__(self, sent: list[bytes]) -> None:
        self.sent = sent

    async def send_bytes(self, data: bytes) -> None:
        self.sent.append(data)


class Protocol:
    def __init__(self, body: bytes = b"", chunks: list[bytes] | None = None) -> None:
        self.body = body
        self.chunks = chunks
        self.reads = 0
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.streamed: tuple[int, list[tuple[str, str]]] | None = None
        self.stream_sent: list[bytes] = []
        self.disconnected = asyncio.Event()
        self.closed: int | None = None

    async def __call__(self) -> bytes:
        self.reads += 1
        return self.body

    def __aiter__(self) -> Any:
        async def chunks() -> Any:
            for chunk in self.chunks or []:
                self.reads += 1
                yield chunk

        return chunks()

    async def client_disconnect(self) -> None:
        await self.disconnected.wait()

    def response_bytes(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        assert self.answer is None and self.streamed is None, "answered twice"
        self.answer = (status, headers, body)

    def response_stream(self, status: int, headers: list[tuple[str, str]]) -> Stream:
        assert self.answer is None and self.streamed is None, "answered twice"
        self.streamed = (status, headers)
        return Stream(self.stream_sent)

    def close(self, status: int) -> None:
        self.closed = status


def serve(app: Any, scope: Scope, protocol: Protocol, state: dict[str, Any] | None = None) -> None:
    asyncio.run(RSGIApp(app, state)(scope, protocol))


# The scope -------------------------------------------------------------------------------------


def test_the_scope_is_asgi_http_with_bytes_and_repeated_headers_in_order() -> None:
    headers = [("host", b"a"), ("x-a", b"1"), ("content-type", b"text/plain"), ("x-a", b"2")]
    scope = Scope(
        headers,
        path="/v1/sp ace/caf\u00e9",
        query_string="x=%20y&z=1",
        http_version="1",
        client="[::1]:4321",
        server="127.0.0.1:8000",
    )
    state = {"lifespan": "value"}
    asgi = asgi_scope(scope, scope.headers.items(), state)
    assert asgi["type"] == "http" and asgi["asgi"]["version"] == "3.0"
    assert asgi["http_version"] == "1.0"
    assert asgi["method"] == "POST" and asgi["scheme"] == "http" and asgi["root_path"] == ""
    assert asgi["path"] == "/v1/sp ace/caf\u00e9"
    assert asgi["raw_path"] == b"/v1/sp%20ace/caf%C3%A9"
    assert asgi["query_string"] == b"x=%20y&z=1"
    assert asgi["headers"] == [
        (b"host", b"a"),
        (b"x-a", b"1"),
        (b"content-type", b"text/plain"),
        (b"x-a", b"2"),
    ]
    assert asgi["client"] == ("::1", 4321) and asgi["server"] == ("127.0.0.1", 8000)
    asgi["state"]["request"] = "mine"  # each request gets its own copy of the lifespan state
    assert state == {"lifespan": "value"} and asgi["state"]["lifespan"] == "value"


@pytest.mark.parametrize("address", ["", "nohost", "host:port", ":80"])
def test_an_address_that_is_not_host_and_port_is_none(address: str) -> None:
    scope = Scope([], client=address)
    assert asgi_scope(scope, [], {})["client"] is None


# Bodies in -------------------------------------------------------------------------------------


def recording_app(received: list[dict[str, Any]], reads: int) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        for _ in range(reads):
            received.append(await receive())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def test_an_announced_body_is_read_with_one_await() -> None:
    received: list[dict[str, Any]] = []
    protocol = Protocol(body=b'{"a":1}')
    serve(recording_app(received, 1), Scope([("content-length", b"7")]), protocol)
    assert received == [{"type": "http.request", "body": b'{"a":1}', "more_body": False}]
    assert protocol.reads == 1 and protocol.answer == (200, [], b"ok")


def test_a_chunked_body_is_given_chunk_by_chunk_so_the_limit_sees_it_arrive() -> None:
    received: list[dict[str, Any]] = []
    protocol = Protocol(chunks=[b"ab", b"cd"])
    serve(recording_app(received, 3), Scope([("transfer-encoding", b"chunked")]), protocol)
    assert received == [
        {"type": "http.request", "body": b"ab", "more_body": True},
        {"type": "http.request", "body": b"cd", "more_body": True},
        {"type": "http.request", "body": b"", "more_body": False},
    ]


def test_after_the_body_receive_waits_for_the_client_to_go() -> None:
    protocol = Protocol(body=b"")
    events: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        events.append(await receive())
        waiting = asyncio.ensure_future(receive())
        await asyncio.sleep(0.01)
        events.append(waiting.done())  # still waiting: the client is there
        protocol.disconnected.set()
        events.append(await waiting)
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    serve(app, Scope([("content-length", b"0")]), protocol)
    assert events[1] is False and events[2] == {"type": "http.disconnect"}


# Answers out -----------------------------------------------------------------------------------


def test_a_one_message_answer_is_written_with_one_call() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"set-cookie", b"a"),
            (b"set-cookie", b"b"),
        ]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": bytearray(b"{}")})

    protocol = Protocol()
    serve(app, Scope([]), protocol)
    assert protocol.answer == (
        201,
        [("content-type", "application/json"), ("set-cookie", "a"), ("set-cookie", "b")],
        b"{}",
    )
    assert protocol.streamed is None


def test_a_streamed_answer_is_streamed_and_ends_with_its_last_message() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"x", b"1")]})
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": True})
        await send({"type": "http.response.body", "body": b"two", "more_body": False})
        with pytest.raises(RuntimeError, match="already complete"):
            await send({"type": "http.response.body", "body": b"three"})

    protocol = Protocol()
    serve(app, Scope([]), protocol)
    assert protocol.streamed == (200, [("x", "1")]) and protocol.stream_sent == [b"one", b"two"]
    assert protocol.answer is None


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"type": "http.response.body", "body": b"x"}], "before the response started"),
        (
            [{"type": "http.response.start", "status": 200}] * 2,
            "already started",
        ),
        ([{"type": "http.response.trailers"}], "unexpected ASGI message"),
    ],
)
def test_messages_out_of_order_are_refused(messages: list[dict[str, Any]], error: str) -> None:
    raised: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        try:
            for message in messages:
                await send(message)
        except RuntimeError as failure:
            raised.append(str(failure))
            raise

    protocol = Protocol()
    serve(app, Scope([]), protocol)
    assert error in raised[0]
    assert protocol.answer is not None and protocol.answer[0] == 500


def assert_internal_error(protocol: Protocol, request_id: str | None = None) -> None:
    assert protocol.answer is not None
    status, headers, body = protocol.answer
    assert status == 500 and body == FAILED_BODY
    problem = json.loads(body)
    assert problem["code"] == "internal-error" and problem["status"] == 500
    assert ("content-type", "application/problem+json") in headers
    ids = [value for name, value in headers if name == "x-request-id"]
    assert len(ids) == 1 and (request_id is None or ids[0] == request_id)


def test_an_app_that_fails_before_answering_gives_a_500_problem_without_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("secret internals")

    protocol = Protocol()
    serve(app, Scope([("x-request-id", b"req-1")]), protocol)
    assert_internal_error(protocol, "req-1")
    assert b"secret" not in protocol.answer[2]  # type: ignore[index]
    assert "secret internals" in caplog.text  # the log has it all


def test_an_app_that_returns_without_answering_gives_a_500_problem(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    protocol = Protocol()
    serve(app, Scope([]), protocol)
    assert_internal_error(protocol)
    assert "returned without answering" in caplog.text


def test_an_app_that_fails_mid_stream_ends_the_stream_with_no_second_answer() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise ValueError("mid-stream")

    protocol = Protocol()
    serve(app, Scope([]), protocol)  # the double asserts it is not answered twice
    assert protocol.answer is None and protocol.stream_sent == [b"part"]


def test_a_header_granian_cannot_give_as_text_is_refused_not_dropped() -> None:
    called: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        called.append(True)

    protocol = Protocol()
    headers = [("idempotency-key", b"caf\xe9"), ("x-request-id", b"req-2"), ("user-agent", b"a")]
    serve(app, Scope(headers), protocol)
    assert not called
    assert protocol.answer is not None
    status, answer_headers, body = protocol.answer
    problem = json.loads(body)
    assert status == 400 and problem["code"] == "malformed-request"
    assert "idempotency-key" in problem["detail"] and "user-agent" not in problem["detail"]
    assert ("x-request-id", "req-2") in answer_headers


def test_a_websocket_is_refused() -> None:
    protocol = Protocol()
    serve(recording_app([], 0), Scope([], proto="ws"), protocol)
    assert protocol.closed == 403 and protocol.answer is None


# `ledger serve` --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, str]]:
    with ledger_serving(tmp_path_factory.mktemp("rsgi"), "--server", "granian") as served:
        yield served, admin_token(README.read_text())


@pytest.fixture(scope="module")
def book(ledger: tuple[Served, str]) -> dict[str, Any]:
    served, token = ledger
    client = httpx.Client(
        base_url=served.base_url, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    space = client.post(
        "/v1/spaces",
        json={"name": "RSGI", "base_currency": "USD"},
        headers={"Idempotency-Key": "rsgi-space"},
    ).json()["id"]
    opened = [
        client.post(
            f"/v1/spaces/{space}/accounts",
            json={"name": f"Account {n}", "type": "asset", "currency": "USD"},
            headers={"Idempotency-Key": f"rsgi-account-{n}"},
        )
        for n in range(2)
    ]
    return {
        "client": client,
        "space": space,
        "accounts": [answer.json()["id"] for answer in opened],
        "position": opened[-1].headers["ledger-position"],
        "base_url": served.base_url,
        "token": token,
    }


def posting(book: dict[str, Any]) -> bytes:
    debit, credit = book["accounts"]
    entries = [
        {"account_id": debit, "direction": "debit", "amount": "1.00"},
        {"account_id": credit, "direction": "credit", "amount": "1.00"},
    ]
    return json.dumps({"entries": entries}).encode()


def test_a_chunked_posting_is_recorded_and_replayed(book: dict[str, Any]) -> None:
    client: httpx.Client = book["client"]
    body = posting(book)

    def chunked() -> Iterator[bytes]:  # no Content-Length: Transfer-Encoding: chunked
        yield body[:10]
        yield body[10:]

    url = f"/v1/spaces/{book['space']}/postings"
    first = client.post(url, content=chunked(), headers={"Idempotency-Key": "rsgi-chunked"})
    assert first.status_code == 201, first.text
    assert first.headers["x-request-id"] and first.headers["ledger-position"]
    again = client.post(url, content=body, headers={"Idempotency-Key": "rsgi-chunked"})
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


def test_a_chunked_body_past_the_limit_is_413_not_read_whole(book: dict[str, Any]) -> None:
    """Chunks go out until the server answers: it must answer 413 before twice the limit."""
    host, port = book["base_url"].removeprefix("http://").split(":")
    chunk = b" " * 65536
    sent = 0
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, len(chunk))  # sent is near read
        sock.settimeout(10)
        sock.connect((host, int(port)))
        sock.sendall(
            (
                f"POST /v1/spaces/{book['space']}/postings HTTP/1.1\r\nHost: {host}\r\n"
                f"Authorization: Bearer {book['token']}\r\nIdempotency-Key: rsgi-big\r\n"
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            ).encode()
        )
        try:
            while sent < 2 * MAX_REQUEST_BODY_BYTES:
                if select.select([sock], [], [], 0.02)[0]:
                    break  # the answer is there
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except OSError:  # the server answered and closed while this side still sent
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 2 * MAX_REQUEST_BODY_BYTES
    assert b'"code":"request-too-large"' in answer


def test_head_answers_as_get_without_the_body(book: dict[str, Any]) -> None:
    client: httpx.Client = book["client"]
    url = f"/v1/spaces/{book['space']}/accounts/{book['accounts'][0]}"
    caught_up = {"Ledger-Min-Position": book["position"]}
    got = client.get(url, headers=caught_up)
    head = client.head(url, headers=caught_up)
    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
    assert head.headers["content-type"] == got.headers["content-type"]


def test_a_header_value_outside_ascii_is_a_400_problem_over_the_wire(book: dict[str, Any]) -> None:
    host, port = book["base_url"].removeprefix("http://").split(":")
    request = (
        f"POST /v1/spaces/{book['space']}/postings HTTP/1.1\r\nHost: {host}\r\n"
        "Content-Length: 2\r\nConnection: close\r\nIdempotency-Key: caf\xe9\r\n\r\n{}"
    ).encode("latin-1")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"x-request-id: " in head.lower()
    assert json.loads(body)["code"] == "malformed-request"


def test_an_unknown_path_with_escapes_is_a_404_problem(book: dict[str, Any]) -> None:
    response = httpx.get(book["base_url"] + "/v1/no%20such/caf%C3%A9?x=%20")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["x-request-id"]


def test_the_log_has_no_failure(ledger: tuple[Served, str], book: dict[str, Any]) -> None:
    text = Path(ledger[0].log).read_text()
    assert "Traceback" not in text, text
