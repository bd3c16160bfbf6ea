"""Idempotency keys as API.md says: replays answer the original status and body with
`Idempotent-Replayed: true`; the same key with another body or route is 409; refusals are
replayed too; 400/401/403/404 are not stored; keys are per space (global on /v1/spaces,
/v1/assets, /v1/tokens); concurrent duplicates record once; and it survives a restart."""

from __future__ import annotations

import asyncio

from litestar.testing import AsyncTestClient, TestClient

from api.app import create_app
from ledger_core.limits import MAX_IDEMPOTENCY_KEY_LENGTH
from ledger_core.settings import LedgerSettings
from tests.api.conftest import ADMIN_TOKEN, Api, Book, settings_for
from tests.api.test_commands import problem_of

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_a_replay_answers_the_same_status_body_and_position(api: Api, book: Book) -> None:
    body = api.posting_body(book.checking, book.salary, "5.00")
    first = api.post(book.postings, body, key="pay-1")
    again = api.post(book.postings, body, key="pay-1")
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["ledger-position"] == first.headers["ledger-position"]
    freeze = book.account_path(book.card) + "/freeze"
    assert api.post(freeze, {}, key="f").status_code == 200
    replayed = api.post(freeze, {}, key="f")
    assert replayed.status_code == 200 and replayed.headers["idempotent-replayed"] == "true"
    postings = api.ok(api.get(book.postings), 200)["items"]
    assert len(postings) == 1


def test_the_same_key_with_another_body_or_route_is_409(api: Api, book: Book) -> None:
    api.ok(
        api.post(book.postings, api.posting_body(book.checking, book.salary, "5.00"), key="k"), 201
    )
    other_body = api.posting_body(book.checking, book.salary, "6.00")
    problem_of(api.post(book.postings, other_body, key="k"), 409, "idempotency-key-reused")
    other_route = f"/v1/spaces/{book.space}/accounts"
    problem_of(
        api.post(other_route, {"name": "N", "type": "asset", "currency": "USD"}, key="k"),
        409,
        "idempotency-key-reused",
    )
    problem_of(api.post(f"{book.postings}/batch", {"postings": []}, key="k"), 409,
               "idempotency-key-reused")  # fmt: skip


def test_refusals_are_replayed(api: Api, book: Book) -> None:
    overdraw = api.posting_body(book.groceries, book.checking, "9.00")
    first = problem_of(api.post(book.postings, overdraw, key="d"), 422, "insufficient-funds")
    again_response = api.post(book.postings, overdraw, key="d")
    again = problem_of(again_response, 422, "insufficient-funds")
    assert again["posting_id"] == first["posting_id"]
    assert again_response.headers["idempotent-replayed"] == "true"
    shape = {"name": "Home", "base_currency": "USD", "colour": "blue"}
    problem_of(api.post("/v1/spaces", shape, key="shape"), 422, "invalid-request")
    replay = api.post("/v1/spaces", shape, key="shape")
    problem_of(replay, 422, "invalid-request")
    assert replay.headers["idempotent-replayed"] == "true"
    fixed = {"name": "Home", "base_currency": "USD"}
    problem_of(api.post("/v1/spaces", fixed, key="shape"), 409, "idempotency-key-reused")
    number = api.posting_body(book.checking, book.salary, "1.00")
    number["entries"][0]["amount"] = 1
    problem_of(api.post(book.postings, number, key="n"), 422, "invalid-amount")
    replay = api.post(book.postings, number, key="n")
    assert replay.headers["idempotent-replayed"] == "true"


def test_answers_that_are_not_stored_leave_the_key_free(api: Api, book: Book) -> None:
    good = api.posting_body(book.checking, book.salary, "5.00")
    stranger = api.posting_body("00000000-0000-0000-0000-000000000009", book.salary, "5.00")
    problem_of(api.post(book.postings, stranger, key="retry"), 404, "account-not-found")
    problem_of(api.post(book.postings, content=b"{not json", key="retry"), 400,
               "malformed-request")  # fmt: skip
    problem_of(api.as_token(None).post(book.postings, good, key="retry"), 401, "unauthenticated")
    reader = api.as_token(api.issue_token("read", [book.space]))
    problem_of(reader.post(book.postings, good, key="retry"), 403, "forbidden")
    first = api.post(book.postings, good, key="retry")
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers


def test_key_header_is_required_and_bounded(api: Api, book: Book) -> None:
    body = api.posting_body(book.checking, book.salary, "1.00")
    problem_of(api.post(book.postings, body, key=None), 400, "idempotency-key-missing")
    too_long = "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)
    problem_of(api.post(book.postings, body, key=too_long), 400, "malformed-request")
    problem_of(api.post(book.postings, body, key="tab\there"), 400, "malformed-request")
    longest = "k" * MAX_IDEMPOTENCY_KEY_LENGTH
    assert api.post(book.postings, body, key=longest).status_code == 201


def test_keys_are_per_space_and_global_on_global_routes(api: Api, book: Book) -> None:
    other = Book(api)
    body = {"name": "Shared key", "type": "asset", "currency": "USD"}
    assert api.post(f"/v1/spaces/{book.space}/accounts", body, key="same").status_code == 201
    assert api.post(f"/v1/spaces/{other.space}/accounts", body, key="same").status_code == 201
    api.ok(api.post("/v1/spaces", {"name": "G", "base_currency": "USD"}, key="global"), 201)
    problem_of(api.post("/v1/assets", {"code": "PTS", "exponent": 0}, key="global"), 409,
               "idempotency-key-reused")  # fmt: skip


def test_a_token_replay_answers_the_same_working_token(api: Api, book: Book) -> None:
    body = {"role": "write", "spaces": [book.space]}
    first = api.ok(api.post("/v1/tokens", body, key="tok"), 201)
    replay = api.post("/v1/tokens", body, key="tok")
    assert replay.status_code == 201 and replay.json() == first
    assert replay.headers["idempotent-replayed"] == "true"
    writer = api.as_token(first["token"])
    writer.record(book.space, book.checking, book.salary, "1.00")


async def test_concurrent_duplicates_record_once(sqlite_url: str) -> None:
    async with AsyncTestClient(create_app(settings_for(sqlite_url))) as client:
        api_headers = {**ADMIN, "Idempotency-Key": "space"}
        space = (await client.post("/v1/spaces", json={"name": "S", "base_currency": "USD"},
                                   headers=api_headers)).json()["id"]  # fmt: skip
        accounts = []
        for name, kind in (("A", "asset"), ("I", "income")):
            response = await client.post(
                f"/v1/spaces/{space}/accounts",
                json={"name": name, "type": kind, "currency": "USD"},
                headers={**ADMIN, "Idempotency-Key": name},
            )
            accounts.append(response.json()["id"])
        body = {
            "entries": [
                {"account_id": accounts[0], "direction": "debit", "amount": "1.00"},
                {"account_id": accounts[1], "direction": "credit", "amount": "1.00"},
            ]
        }
        headers = {**ADMIN, "Idempotency-Key": "dup"}
        responses = await asyncio.gather(
            *(client.post(f"/v1/spaces/{space}/postings", json=body, headers=headers)
              for _ in range(20))
        )  # fmt: skip
    fresh = [
        r for r in responses if r.status_code == 201 and "idempotent-replayed" not in r.headers
    ]
    replays = [r for r in responses if r.headers.get("idempotent-replayed") == "true"]
    in_flight = [r for r in responses if r.status_code == 409]
    assert len(fresh) == 1
    assert len(replays) + len(in_flight) == 19
    assert all(r.json() == fresh[0].json() for r in replays)
    assert all(r.json()["code"] == "idempotency-key-in-flight" for r in in_flight)


def test_keys_are_permanent_across_a_restart(database_url: str) -> None:
    settings: LedgerSettings = settings_for(database_url)
    body = {"name": "Home", "base_currency": "USD"}
    headers = {**ADMIN, "Idempotency-Key": "forever"}
    with TestClient(create_app(settings)) as client:
        first = client.post("/v1/spaces", json=body, headers=headers)
        refused = client.post("/v1/spaces", json={**body, "x": 1}, headers={**ADMIN,
                              "Idempotency-Key": "refused"})  # fmt: skip
    with TestClient(create_app(settings)) as client:
        again = client.post("/v1/spaces", json=body, headers=headers)
        refused_again = client.post("/v1/spaces", json={**body, "x": 1}, headers={**ADMIN,
                                    "Idempotency-Key": "refused"})  # fmt: skip
        other = client.post("/v1/spaces", json={**body, "name": "Other"}, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["idempotent-replayed"] == "true"
    assert refused.status_code == refused_again.status_code == 422
    assert refused_again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
