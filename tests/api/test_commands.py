"""Every command route of API.md through the real app, with its success status and shape, and
every refusal code a command can answer, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from tests.api.conftest import Api, Book


def problem_of(response: object, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    assert response.headers["content-type"].startswith("application/problem+json")  # type: ignore[attr-defined]
    body: dict[str, object] = response.json()  # type: ignore[attr-defined]
    assert body["code"] == code, body
    assert body["status"] == status
    assert body["type"] == f"https://ledger-core.dev/errors/{code}"
    assert body["title"] and isinstance(body["detail"], str)
    if status == 401:  # RFC 9110: a 401 names the scheme it wants
        assert response.headers["www-authenticate"] == 'Bearer realm="ledger"'  # type: ignore[attr-defined]
    return body


def test_spaces_accounts_and_their_lifecycle(api: Api) -> None:
    response = api.post("/v1/spaces", {"name": "Home", "base_currency": "JPY"})
    space = api.ok(response, 201)
    assert space["name"] == "Home" and space["base_currency"] == "JPY"
    assert int(response.headers["ledger-position"]) >= 1
    path = f"/v1/spaces/{space['id']}/accounts"
    account = api.ok(
        api.post(
            path,
            {
                "name": "Wallet",
                "type": "asset",
                "currency": "JPY",
                "subtype": "cash",
                "code": "1000",
                "overdraft_limit": "500",
                "metadata": {"colour": "red"},
            },
        ),
        201,
    )
    assert account["overdraft_limit"] == "500"
    assert account["balances"] == {
        "posted": "0",
        "pending_debits": "0",
        "pending_credits": "0",
        "available": "0",
    }
    assert (account["status"], account["normal_balance"], account["subtype"]) == (
        "active",
        "debit",
        "cash",
    )
    account_path = f"{path}/{account['id']}"
    updated = api.ok(api.patch(account_path, {"name": "Purse", "overdraft_limit": None}), 200)
    assert updated["name"] == "Purse" and updated["overdraft_limit"] is None
    assert updated["metadata"] == {"colour": "red"}
    frozen = api.ok(api.post(account_path + "/freeze", {"reason": "lost"}), 200)
    assert frozen["status"] == "frozen"
    assert api.ok(api.post(account_path + "/unfreeze", {}), 200)["status"] == "active"
    assert api.ok(api.post(account_path + "/close"), 200)["status"] == "closed"
    problem_of(api.post(account_path + "/freeze"), 422, "account-closed")


def test_postings_holds_captures_voids_and_reversals(api: Api, book: Book) -> None:
    salary = api.record(book.space, book.checking, book.salary, "100.00", description="Pay")
    assert salary["status"] == "posted" and salary["description"] == "Pay"
    assert [e["amount"] for e in salary["entries"]] == ["100.00", "100.00"]
    assert all(e["currency"] == "USD" for e in salary["entries"])
    hold = api.record(book.space, book.groceries, book.checking, "30.00", pending=True)
    assert hold["status"] == "pending" and hold["pending"] is True
    captured = api.ok(api.post(f"{book.postings}/{hold['id']}/post", {"amount": "25.00"}), 200)
    assert captured["status"] == "posted"
    assert [e["amount"] for e in captured["entries"]] == ["25.00", "25.00"]
    hold2 = api.record(book.space, book.groceries, book.checking, "10.00", pending=True)
    voided = api.ok(api.post(f"{book.postings}/{hold2['id']}/void", {"reason": "cancel"}), 200)
    assert voided["status"] == "voided"
    bonus = api.record(book.space, book.checking, book.salary, "10.00", description="Bonus")
    reversal = api.ok(
        api.post(f"{book.postings}/{bonus['id']}/reverse", {"description": "oops"}), 201
    )
    assert reversal["reverses"] == bonus["id"] and reversal["description"] == "oops"
    assert reversal["entries"][0]["direction"] == "credit"
    account = api.ok(api.get(book.account_path(book.checking)), 200)
    assert account["balances"]["posted"] == "75.00"
    original = api.ok(api.get(f"{book.postings}/{bonus['id']}"), 200)
    assert original["reversed_by"] == reversal["id"]


def test_batches_are_all_or_nothing(api: Api, book: Book) -> None:
    items = [api.posting_body(book.checking, book.salary, f"{n}.00") for n in range(1, 4)]
    batch = api.ok(api.post(f"{book.postings}/batch", {"postings": items}), 201)
    assert [p["entries"][0]["amount"] for p in batch["postings"]] == ["1.00", "2.00", "3.00"]
    overdraw = [
        api.posting_body(book.groceries, book.checking, "5.00"),
        api.posting_body(book.groceries, book.checking, "50.00"),
    ]
    body = problem_of(
        api.post(f"{book.postings}/batch", {"postings": overdraw}), 422, "batch-item-failed"
    )
    assert body["index"] == 1 and body["item_code"] == "insufficient-funds"
    problem_of(api.post(f"{book.postings}/batch", {"postings": []}), 422, "invalid-request")
    unknown = [
        items[0],
        api.posting_body(book.checking, "00000000-0000-0000-0000-000000000009", "1.00"),
    ]
    body = problem_of(
        api.post(f"{book.postings}/batch", {"postings": unknown}), 404, "account-not-found"
    )
    assert body["index"] == 1
    account = api.ok(api.get(book.account_path(book.checking)), 200)
    assert account["balances"]["posted"] == "6.00"


def test_a_declined_posting_is_answered_with_its_id_and_position(api: Api, book: Book) -> None:
    response = api.post(book.postings, api.posting_body(book.groceries, book.checking, "1.00"))
    body = problem_of(response, 422, "insufficient-funds")
    assert "ledger-position" in response.headers
    declined = api.ok(api.get(f"{book.postings}/{body['posting_id']}"), 200)
    assert declined["status"] == "declined"
    assert declined["declined_reason"] == "insufficient-funds"


def test_assets_and_tokens(api: Api) -> None:
    asset = api.ok(api.post("/v1/assets", {"code": "BTC", "exponent": 8, "name": "Bitcoin"}), 201)
    assert asset == {"code": "BTC", "exponent": 8, "name": "Bitcoin"}
    problem_of(api.post("/v1/assets", {"code": "BTC", "exponent": 2}), 409, "asset-exists")
    problem_of(api.post("/v1/assets", {"code": "b", "exponent": 2}), 422, "invalid-request")
    assert api.ok(api.get("/v1/assets"), 200)["items"] == [asset]
    space = api.open_space(base_currency="BTC")
    wallet = api.open_account(space, "Wallet", "asset", currency="BTC")
    income = api.open_account(space, "Mining", "income", currency="BTC")
    posting = api.record(space, wallet, income, "0.00000001")
    assert posting["entries"][0]["amount"] == "0.00000001"
    issued = api.ok(api.post("/v1/tokens", {"role": "read", "spaces": [space]}), 201)
    assert issued["role"] == "read" and issued["spaces"] == [space]
    assert len(issued["token"]) >= 32
    reader = api.as_token(issued["token"])
    assert api.ok(reader.get(f"/v1/spaces/{space}"), 200)["id"] == space
    deleted = api.send("DELETE", f"/v1/tokens/{issued['id']}", key=None)
    assert deleted.status_code == 204 and deleted.content == b""
    assert int(deleted.headers["ledger-position"]) > 0
    problem_of(reader.get(f"/v1/spaces/{space}"), 401, "unauthenticated")
    again = api.send("DELETE", f"/v1/tokens/{issued['id']}", key=None)
    assert again.status_code == 204
    missing = "00000000-0000-0000-0000-000000000000"
    problem_of(api.send("DELETE", f"/v1/tokens/{missing}", key=None), 404, "token-not-found")
    problem_of(api.send("DELETE", "/v1/tokens/nope", key=None), 404, "token-not-found")


def test_conflicts(api: Api, book: Book) -> None:
    accounts = f"/v1/spaces/{book.space}/accounts"
    api.ok(api.post(accounts, {"name": "A", "type": "asset", "currency": "USD", "code": "9"}), 201)
    unknown = {"name": "X", "type": "asset", "currency": "XYZ"}
    problem_of(api.post(accounts, unknown), 422, "unknown-currency")
    problem_of(
        api.post("/v1/spaces", {"name": "X", "base_currency": "ZZZ"}), 422, "unknown-currency"
    )
    problem_of(
        api.post(accounts, {"name": "B", "type": "asset", "currency": "USD", "code": "9"}),
        409,
        "account-code-taken",
    )
    posted = api.record(book.space, book.checking, book.salary, "10.00")
    problem_of(api.post(f"{book.postings}/{posted['id']}/void"), 409, "posting-not-pending")
    hold = api.record(book.space, book.groceries, book.card, "1.00", pending=True)
    problem_of(api.post(f"{book.postings}/{hold['id']}/reverse"), 409, "posting-not-posted")
    api.ok(api.post(f"{book.postings}/{posted['id']}/reverse"), 201)
    problem_of(api.post(f"{book.postings}/{posted['id']}/reverse"), 409, "posting-already-reversed")
    problem_of(api.post(book.account_path(book.card) + "/close"), 409, "account-not-empty")


def test_posting_refusals(api: Api, book: Book) -> None:
    def refused(body: dict[str, object], code: str, status: int = 422) -> None:
        problem_of(api.post(book.postings, body), status, code)

    one = {"account_id": book.checking, "direction": "debit", "amount": "1.00"}
    refused({"entries": [one]}, "too-few-entries")
    refused({"entries": [one] * 101}, "too-many-entries")
    refused(api.posting_body(book.checking, book.salary, "1.001"), "invalid-amount")
    refused(api.posting_body(book.checking, book.salary, "-1.00"), "invalid-amount")
    number = api.posting_body(book.checking, book.salary, "1.00")
    number["entries"][0]["amount"] = 1  # type: ignore[index]
    refused(number, "invalid-amount")
    unbalanced = api.posting_body(book.checking, book.salary, "1.00")
    unbalanced["entries"][1]["amount"] = "2.00"  # type: ignore[index]
    refused(unbalanced, "unbalanced-posting")
    mismatch = api.posting_body(book.checking, book.salary, "1.00")
    mismatch["entries"][0]["currency"] = "EUR"  # type: ignore[index]
    refused(mismatch, "currency-mismatch")
    refused({"entries": [one, {**one, "direction": "sideways"}]}, "invalid-request")
    refused(
        {**api.posting_body(book.checking, book.salary, "1.00"), "colour": 1}, "invalid-request"
    )
    stranger = "00000000-0000-0000-0000-000000000001"
    refused(api.posting_body(stranger, book.salary, "1.00"), "account-not-found", 404)
    api.ok(api.post(book.account_path(book.groceries) + "/freeze"), 200)
    refused(api.posting_body(book.groceries, book.card, "1.00"), "account-frozen")


def test_hold_refusals(api: Api, book: Book) -> None:
    api.record(book.space, book.checking, book.salary, "50.00")
    hold = api.record(book.space, book.groceries, book.checking, "20.00", pending=True)
    hold_path = f"{book.postings}/{hold['id']}"
    problem_of(api.post(hold_path + "/post", {"amount": "20.01"}), 422, "exceeds-pending-amount")
    expires_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    short = api.record(book.space, book.groceries, book.checking, "5.00", pending=True,
                       expires_at=expires_at)  # fmt: skip
    time.sleep(1.5)
    problem_of(api.post(f"{book.postings}/{short['id']}/post"), 422, "pending-expired")
    missing = "00000000-0000-0000-0000-000000000002"
    problem_of(api.post(f"{book.postings}/{missing}/void"), 404, "posting-not-found")
    problem_of(api.post(f"{book.postings}/not-a-uuid/void"), 404, "posting-not-found")


def test_limit_below_available(api: Api, book: Book) -> None:
    path = book.account_path(book.card)
    api.ok(api.patch(path, {"overdraft_limit": "100.00"}), 200)
    api.record(book.space, book.card, book.salary, "60.00")
    problem_of(api.patch(path, {"overdraft_limit": "10.00"}), 422, "limit-below-available")


def test_missing_spaces_and_accounts(api: Api, book: Book) -> None:
    missing = "00000000-0000-0000-0000-000000000003"
    problem_of(api.post(f"/v1/spaces/{missing}/postings", {"entries": []}), 404, "space-not-found")
    problem_of(api.post("/v1/spaces/xyz/accounts", {}), 404, "space-not-found")
    problem_of(api.post(book.account_path(missing) + "/freeze"), 404, "account-not-found")
    problem_of(api.patch(book.account_path("xyz"), {"name": "n"}), 404, "account-not-found")


def test_times_are_answered_in_utc_whatever_offset_the_client_sent(api: Api, book: Book) -> None:
    """API.md: times are RFC 3339 UTC. A hold's `expires_at` sent with an offset is the same
    instant in UTC in the answer, its replay, the read and the events feed."""
    body = api.posting_body(book.checking, book.salary, "1.00", pending=True,
                            expires_at="2099-01-01T02:30:00+02:00")  # fmt: skip
    first = api.post(book.postings, body, key="utc-hold")
    hold = api.ok(first, 201)
    assert hold["expires_at"] == "2099-01-01T00:30:00Z"
    replayed = api.post(book.postings, body, key="utc-hold")
    assert replayed.headers["idempotent-replayed"] == "true" and replayed.json() == hold
    same_instant = dict(body, expires_at="2099-01-01T00:30:00Z")  # the same request
    assert api.post(book.postings, same_instant, key="utc-hold").json() == hold
    assert api.ok(api.get(f"{book.postings}/{hold['id']}"), 200)["expires_at"] == hold["expires_at"]
    events = api.ok(api.get("/v1/events", after=0, limit=500), 200)["items"]
    (recorded,) = [e for e in events if e["data"].get("posting_id") == hold["id"]]
    assert recorded["data"]["expires_at"] == "2099-01-01T00:30:00Z"


def test_an_entry_naming_a_malformed_account_id_is_account_not_found(api: Api, book: Book) -> None:
    """API.md: an entry naming an unknown account is 404 `account-not-found`; an id that is not
    a UUID names none either (as a malformed id in a path). Not stored with the key: the fixed
    request goes through with the same key."""
    malformed = api.posting_body("nope", book.salary, "1.00")
    problem_of(api.post(book.postings, malformed, key="fix-me"), 404, "account-not-found")
    fixed = api.posting_body(book.checking, book.salary, "1.00")
    api.ok(api.post(book.postings, fixed, key="fix-me"), 201)
    items = [fixed, api.posting_body(book.checking, "12345", "1.00")]
    body = problem_of(
        api.post(f"{book.postings}/batch", {"postings": items}), 404, "account-not-found"
    )
    assert body["index"] == 1
    number = dict(fixed, entries=[dict(fixed["entries"][0], account_id=7), fixed["entries"][1]])
    problem_of(api.post(book.postings, number), 422, "invalid-request")  # not an id at all


def test_an_asset_with_exponent_18_holds_whole_units_up_to_the_64_bit_edge(api: Api) -> None:
    api.ok(api.post("/v1/assets", {"code": "WEI18", "exponent": 18}), 201)
    space = api.open_space(base_currency="WEI18")
    wallet = api.open_account(space, "Wallet", "asset", currency="WEI18", overdraft_limit="5")
    income = api.open_account(space, "Staking", "income", currency="WEI18")
    posting = api.record(space, wallet, income, "1")
    assert posting["entries"][0]["amount"] == "1.000000000000000000"
    account = api.ok(api.get(f"/v1/spaces/{space}/accounts/{wallet}"), 200)
    assert account["overdraft_limit"] == "5.000000000000000000"
    assert account["balances"]["posted"] == "1.000000000000000000"
    past = api.posting_body(wallet, income, "9.223372036854775808")
    problem_of(api.post(f"/v1/spaces/{space}/postings", past), 422, "invalid-amount")
    # At the edge the amount is accepted; the balance it would give is past the edge: refused.
    edge = api.posting_body(wallet, income, "9.223372036854775807")
    problem_of(api.post(f"/v1/spaces/{space}/postings", edge), 422, "invalid-amount")
    api.record(space, wallet, income, "8.223372036854775807")
    account = api.ok(api.get(f"/v1/spaces/{space}/accounts/{wallet}"), 200)
    assert account["balances"]["posted"] == "9.223372036854775807"
