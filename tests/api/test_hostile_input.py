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

from tests.api.conftest import Api, Book
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
