"""Every read route of API.md through the real app and projections: shapes, filters, pages
(stable under concurrent inserts), read-your-writes with `Ledger-Min-Position`, and the 422s of
bad query parameters."""

from __future__ import annotations

from typing import Any

from litestar.testing import TestClient

from api.app import create_app
from api.limits import MAX_PAGE_LIMIT
from api.read_routes import READ_ROUTES
from projections.queries import encode_cursor
from tests.api.conftest import Api, Book, settings_for
from tests.api.test_commands import problem_of


def all_pages(api: Api, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = api.ok(api.get(path, **query), 200)
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_space_accounts_balances_entries_and_trial_balance(api: Api, book: Book) -> None:
    api.record(book.space, book.checking, book.salary, "100.00", effective_date="2026-01-10")
    api.record(book.space, book.groceries, book.checking, "30.00", effective_date="2026-01-20")
    api.record(book.space, book.groceries, book.card, "5.00", pending=True)
    space = api.ok(api.get(f"/v1/spaces/{book.space}"), 200)
    assert space["id"] == book.space and space["base_currency"] == "USD"
    checking = api.ok(api.get(book.account_path(book.checking)), 200)
    assert checking["balances"]["posted"] == "70.00"
    card = api.ok(api.get(book.account_path(book.card)), 200)
    assert card["balances"]["pending_credits"] == "5.00"
    as_of = api.ok(api.get(book.account_path(book.checking) + "/balance", as_of="2026-01-15"), 200)
    assert as_of == {
        "account_id": book.checking,
        "as_of": "2026-01-15",
        "currency": "USD",
        "posted": "100.00",
    }
    entries = api.ok(api.get(book.account_path(book.checking) + "/entries"), 200)["items"]
    assert [(e["direction"], e["amount"], e["balance_after"]) for e in entries] == [
        ("debit", "100.00", "100.00"),
        ("credit", "30.00", "70.00"),
    ]
    january_20 = api.get(book.account_path(book.checking) + "/entries", **{"from": "2026-01-15"})
    assert [e["amount"] for e in api.ok(january_20, 200)["items"]] == ["30.00"]
    report = api.ok(api.get(f"/v1/spaces/{book.space}/reports/trial-balance"), 200)
    assert report["totals"] == [{"currency": "USD", "debit": "100.00", "credit": "100.00"}]
    rows = {row["account_id"]: (row["debit"], row["credit"]) for row in report["rows"]}
    assert rows[book.checking] == ("70.00", "0.00")
    assets = api.get(f"/v1/spaces/{book.space}/accounts", type="asset")
    assert [a["id"] for a in api.ok(assets, 200)["items"]] == [book.checking]


def test_postings_filters_and_events(api: Api, book: Book) -> None:
    posted = api.record(book.space, book.checking, book.salary, "10.00")
    hold = api.record(book.space, book.groceries, book.card, "2.00", pending=True)
    pending = api.ok(api.get(book.postings, status="pending"), 200)["items"]
    assert [p["id"] for p in pending] == [hold["id"]]
    by_account = api.ok(api.get(book.postings, account_id=book.salary), 200)["items"]
    assert [p["id"] for p in by_account] == [posted["id"]]
    fetched = api.ok(api.get(f"{book.postings}/{posted['id']}"), 200)
    assert fetched == posted
    problem_of(api.get(f"{book.postings}/not-an-id"), 404, "posting-not-found")
    missing = "00000000-0000-0000-0000-000000000005"
    problem_of(api.get(f"{book.postings}/{missing}"), 404, "posting-not-found")
    problem_of(api.get(book.account_path(missing)), 404, "account-not-found")
    problem_of(api.get(book.account_path(missing) + "/entries"), 404, "account-not-found")
    events = api.ok(api.get("/v1/events", after="0", limit="3"), 200)
    assert [e["position"] for e in events["items"]] == [1, 2, 3]
    assert events["items"][0]["type"] == "SpaceOpened"
    assert events["items"][0]["space_id"] == book.space
    assert events["next_cursor"] is not None
    rest = api.ok(api.get("/v1/events", after=events["next_cursor"]), 200)["items"]
    assert rest[0]["position"] == 4
    # A client that pages every list alike sends next_cursor back as `cursor`.
    walked = api.ok(api.get("/v1/events", cursor=events["next_cursor"], limit="3"), 200)
    assert [e["position"] for e in walked["items"]] == [4, 5, 6]
    same = {"after": events["next_cursor"], "cursor": events["next_cursor"]}
    assert api.ok(api.get("/v1/events", limit="3", **same), 200)["items"] == walked["items"]
    problem_of(api.get("/v1/events", after="1", cursor="2"), 422, "invalid-request")
    problem_of(api.get("/v1/events", cursor="-1"), 422, "invalid-request")


def test_pages_are_stable_under_concurrent_inserts(api: Api, book: Book) -> None:
    for n in range(1, 8):
        api.record(book.space, book.checking, book.salary, f"{n}.00")
    before = {p["id"] for p in all_pages(api, book.postings)}
    seen: list[dict[str, Any]] = []
    cursor = None
    inserted = 0
    while True:
        page = api.ok(api.get(book.postings, limit="2", **({"cursor": cursor} if cursor else {})),
                      200)  # fmt: skip
        seen.extend(page["items"])
        cursor = page["next_cursor"]
        if inserted < 5:  # another client writes while this one pages
            api.record(book.space, book.checking, book.salary, "0.50")
            inserted += 1
        if cursor is None:
            break
    ids = [p["id"] for p in seen]
    assert len(ids) == len(set(ids)), "an item was repeated"
    assert before <= set(ids), "an item was skipped"
    recorded = [p["recorded_at"] for p in seen]
    assert recorded == sorted(recorded), "pages are in log order"


def test_page_limits_and_bad_parameters(api: Api, book: Book) -> None:
    for n in range(3):
        api.open_account(book.space, f"Extra {n}", "expense")
    accounts = f"/v1/spaces/{book.space}/accounts"
    assert len(api.ok(api.get(accounts, limit=str(MAX_PAGE_LIMIT)), 200)["items"]) == 7
    first = api.ok(api.get(accounts, limit="1"), 200)
    assert len(first["items"]) == 1 and first["next_cursor"]
    for bad in ("0", str(MAX_PAGE_LIMIT + 1), "-1", "ten", "9" * 5000, "\u00b2"):
        problem_of(api.get(accounts, limit=bad), 422, "invalid-request")
    problem_of(api.get(accounts, cursor="garbage"), 422, "invalid-request")
    problem_of(api.get(accounts, cursor="x" * 600), 422, "invalid-request")
    # A forged cursor with a key past 64 bits (SQLite cannot bind it) is refused, never a 500.
    problem_of(api.get(accounts, cursor=encode_cursor("accounts", 2**63)), 422, "invalid-request")
    problem_of(
        api.get(book.postings, cursor=encode_cursor("postings", 10**30)), 422, "invalid-request"
    )
    problem_of(api.get(accounts, type="plant"), 422, "invalid-request")
    problem_of(api.get(book.postings, status="lost"), 422, "invalid-request")
    problem_of(api.get(book.postings, account_id="nope"), 422, "invalid-request")
    problem_of(api.get(book.postings, to="2026-13-01"), 422, "invalid-request")
    balance = book.account_path(book.checking) + "/balance"
    problem_of(api.get(balance, as_of="yesterday"), 422, "invalid-request")
    problem_of(api.get("/v1/events", after="-3"), 422, "invalid-request")
    problem_of(api.get("/v1/events", after="1" * 5000), 422, "invalid-request")
    problem_of(api.get("/v1/events", after=str(2**63)), 422, "invalid-request")


def test_reads_wait_for_min_position_or_answer_503(sqlite_url: str) -> None:
    settings = settings_for(sqlite_url, position_wait_seconds=0.2)
    with TestClient(create_app(settings)) as client:
        api = Api(client)
        book = Book(api)
        posting = api.record(book.space, book.checking, book.salary, "5.00")["id"]
        account = book.account_path(book.checking)
        reads = [  # every read route of API.md, the global ones included
            f"/v1/spaces/{book.space}",
            f"/v1/spaces/{book.space}/accounts",
            account,
            f"{account}/balance",
            f"{account}/entries",
            book.postings,
            f"{book.postings}/{posting}",
            f"/v1/spaces/{book.space}/reports/trial-balance",
            "/v1/assets",
            "/v1/events",
        ]
        assert len(READ_ROUTES) == len(reads)  # a new read route must be added here
        for path in reads:
            assert api.get(path).status_code == 200, path  # waits for the last write
        api.last_position = 10_000
        for path in reads:
            response = api.get(path)
            problem_of(response, 503, "position-not-reached")
            assert response.headers["retry-after"] == "1"
        for header in ("soon", "-1", "1.5", str(2**63), "9" * 5000):
            for path in reads:
                bad = client.get(path, headers={**api.headers(), "Ledger-Min-Position": header})
                problem_of(bad, 400, "malformed-request")
        edge = {**api.headers(), "Ledger-Min-Position": str(2**63 - 1)}  # the largest: waits
        problem_of(client.get(reads[0], headers=edge), 503, "position-not-reached")
