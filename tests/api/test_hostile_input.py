"""What a black-box audit of API.md found a single malformed request could do, each now a clear
4xx that changes nothing and disturbs no other request, on both backends:

- a text field holding U+0000 was recorded, then stopped the read models on PostgreSQL (whose
  text cannot hold it) for every space;
- an integer past 64 bits (an asset's exponent) failed the writer's whole batch with 503;
- an empty body was stored as a 422 under its key, so the key could not be used for the body
  the client meant to send;
- `1e400` for an amount was `invalid-request`, not `invalid-amount`;
- an entry naming an unknown currency was `currency-mismatch`, not `unknown-currency`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from api.problems import CLIENT_CLOSED_REQUEST_STATUS
from tests.api.conftest import Api, Book, api_log_records
from tests.api.test_commands import problem_of


def test_nul_in_any_text_is_refused_and_the_read_models_keep_going(api: Api, book: Book) -> None:
    accounts = f"/v1/spaces/{book.space}/accounts"
    refused = [
        (accounts, {"name": "Check\u0000ing", "type": "asset", "currency": "USD"}),
        (accounts, {"name": "Ok", "type": "asset", "currency": "USD", "code": "1\u0000"}),
        (accounts, {"name": "Ok", "type": "asset", "currency": "USD", "metadata": {"k": "\u0000"}}),
        (book.postings, api.posting_body(book.groceries, book.card, "1.00", description="\u0000")),
        (book.postings, api.posting_body(book.groceries, book.card, "1.00", merchant="a\u0000")),
        ("/v1/spaces", {"name": "\u0000", "base_currency": "USD"}),
        ("/v1/assets", {"code": "PTS", "exponent": 0, "name": "P\u0000"}),
    ]
    for path, body in refused:
        body_text = problem_of(api.post(path, body), 422, "invalid-request")
        assert "U+0000" in str(body_text["detail"])
    after = api.record(book.space, book.groceries, book.card, "2.50", description="fine")
    # The read models applied everything up to this write (a stopped projection would 503).
    fetched = api.ok(api.get(f"{book.postings}/{after['id']}"), 200)
    assert fetched["description"] == "fine"
    assert api.ok(api.get(book.account_path(book.groceries)), 200)["balances"]["posted"] == "2.50"


def test_an_integer_past_64_bits_is_invalid_request_not_503(api: Api) -> None:
    huge = {"code": "HUGEX", "exponent": 123456789012345678901234567890}
    problem_of(api.post("/v1/assets", huge, key="huge"), 422, "invalid-request")
    # Nothing was stored under the key: the corrected body is accepted with it.
    fixed = api.post("/v1/assets", {"code": "HUGEX", "exponent": 2}, key="huge")
    assert fixed.status_code == 201, fixed.text


def test_an_empty_body_is_not_json_where_fields_are_required(api: Api, book: Book) -> None:
    accounts = f"/v1/spaces/{book.space}/accounts"
    for body in (b"", b"  \n"):
        problem_of(api.post(accounts, content=body, key="empty"), 400, "malformed-request")
    savings = {"name": "Savings", "type": "asset", "currency": "USD"}
    opened = api.post(accounts, savings, key="empty")
    assert opened.status_code == 201, opened.text  # the key was not used up
    # Where every field is optional, an empty body stands for {}.
    account = book.account_path(book.groceries)
    frozen = api.ok(api.post(f"{account}/freeze", content=b"", key="f"), 200)
    assert frozen["status"] == "frozen"
    assert api.ok(api.post(f"{account}/unfreeze", content=b"", key="u"), 200)["status"] == "active"
    # ... and so does JSON null, which the OpenAPI document allows there; where fields are
    # required, null is JSON of the wrong shape (422, stored like any refusal).
    salary = book.account_path(book.salary)
    assert (
        api.ok(api.post(f"{salary}/freeze", content=b"null", key="f2"), 200)["status"] == "frozen"
    )
    problem_of(api.post(accounts, content=b"null", key="null"), 422, "invalid-request")
    hold = api.record(book.space, book.groceries, book.card, "4.00", pending=True)
    captured = api.ok(api.post(f"{book.postings}/{hold['id']}/post", content=b""), 200)
    assert captured["status"] == "posted"
    reversal = api.ok(api.post(f"{book.postings}/{hold['id']}/reverse", content=b""), 201)
    assert reversal["reverses"] == hold["id"]


def test_amount_number_out_of_range_and_unknown_currency(api: Api, book: Book) -> None:
    body = api.posting_body(book.groceries, book.card, "1.00")
    text = json.dumps(body).replace('"amount": "1.00"', '"amount": 1e400', 1)  # past a float
    assert "1e400" in text
    problem_of(api.post(book.postings, content=text.encode()), 422, "invalid-amount")
    for entry in body["entries"]:
        entry["currency"] = "ZZZ"
    problem_of(api.post(book.postings, body), 422, "unknown-currency")


def _raw_asgi(
    api: Api, path: str, headers: list[tuple[str, str]], messages: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """POST `path` straight into the app's ASGI callable, header lines exactly as given (an HTTP
    client would merge repeated ones) and the receive channel giving `messages`; what the app
    sent."""
    pending = iter(messages)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(pending)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1"))
                    for name, value in headers],
    }  # fmt: skip
    api.client.blocking_portal.call(api.client.app, scope, receive, send)
    return sent


def test_a_client_gone_before_its_body_arrived_is_no_error_and_nothing_is_stored(
    api: Api, book: Book
) -> None:
    """The connection closes halfway through a posting's body: no unhandled-error log (it is
    no bug of ours), counted as 499, nothing decided; the same key with the whole body works."""
    body = json.dumps(api.posting_body(book.groceries, book.card, "3.00")).encode()
    headers = [*api.headers("gone-halfway").items(), ("Content-Type", "application/json")]
    halfway = {"type": "http.request", "body": body[: len(body) // 2], "more_body": True}
    with api_log_records() as records:
        sent = _raw_asgi(api, book.postings, headers, [halfway, {"type": "http.disconnect"}])
    assert sent[0]["status"] == CLIENT_CLOSED_REQUEST_STATUS
    assert [record.levelno for record in records] == [logging.INFO]
    assert "went away" in records[0].getMessage()
    assert 'status="499"' in api.client.get("/metrics").text
    # Nothing was stored under the key: the whole body is recorded with it, once.
    recorded = api.ok(api.post(book.postings, json.loads(body), key="gone-halfway"), 201)
    again = api.post(book.postings, json.loads(body), key="gone-halfway")
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.json()["id"] == recorded["id"]


def test_two_idempotency_key_lines_are_a_bad_header_and_nothing_is_stored(
    api: Api, book: Book
) -> None:
    """Two `Idempotency-Key` lines: which key was meant is not ours to pick. 400, not stored
    under either key."""
    body = json.dumps(api.posting_body(book.groceries, book.card, "4.00")).encode()
    headers = [
        ("Authorization", f"Bearer {api.token}"),
        ("Content-Type", "application/json"),
        ("Idempotency-Key", "first-of-two"),
        ("Idempotency-Key", "second-of-two"),
    ]
    sent = _raw_asgi(
        api, book.postings, headers, [{"type": "http.request", "body": body, "more_body": False}]
    )
    assert sent[0]["status"] == 400
    problem = json.loads(b"".join(message.get("body", b"") for message in sent[1:]))
    assert problem["code"] == "malformed-request" and "one Idempotency-Key" in problem["detail"]
    for key in ("first-of-two", "second-of-two"):
        recorded = api.post(book.postings, json.loads(body), key=key)
        assert recorded.status_code == 201 and "idempotent-replayed" not in recorded.headers
