"""Authentication and authorisation for every route: no token 401, a space outside the token's
grants 404 exactly like a missing space (whatever the role, admin included), a read token
writing 403, admin routes 403 for the other roles and for an admin token limited to some
spaces; tokens are stored hashed and revocable; `ledger token create` makes a working token;
LEDGER_ADMIN_TOKEN bootstraps an admin."""

from __future__ import annotations

import time
from typing import Any

import pytest
from click.testing import CliRunner
from litestar.testing import TestClient

from api.app import create_app
from api.cli import main
from tests.api.conftest import Api, Book, settings_for
from tests.api.test_commands import problem_of

MISSING = "00000000-0000-0000-0000-00000000abcd"


def space_routes(book: Book, posting_id: str) -> list[tuple[str, str, Any]]:
    """(method, path, body) of every route on a space; body None marks a read."""
    space = f"/v1/spaces/{book.space}"
    account = f"{space}/accounts/{book.card}"
    posting = f"{space}/postings/{posting_id}"
    entry = {"account_id": book.card, "direction": "debit", "amount": "1.00"}
    posting_body = {"entries": [entry, {**entry, "account_id": book.salary, "direction": "credit"}]}
    return [
        ("POST", f"{space}/accounts", {"name": "N", "type": "asset", "currency": "USD"}),
        ("PATCH", account, {"name": "Renamed"}),
        ("POST", f"{account}/freeze", {}),
        ("POST", f"{account}/unfreeze", {}),
        ("POST", f"{account}/close", {}),
        ("POST", f"{space}/postings", posting_body),
        ("POST", f"{space}/postings/batch", {"postings": [posting_body]}),
        ("POST", f"{posting}/post", {}),
        ("POST", f"{posting}/void", {}),
        ("POST", f"{posting}/reverse", {}),
        ("GET", space, None),
        ("GET", f"{space}/accounts", None),
        ("GET", account, None),
        ("GET", f"{account}/balance", None),
        ("GET", f"{account}/entries", None),
        ("GET", f"{space}/postings", None),
        ("GET", posting, None),
        ("GET", f"{space}/reports/trial-balance", None),
    ]


def send(api: Api, method: str, path: str, body: Any) -> Any:
    if body is None:
        return api.get(path)  # waits for the caller's last write: nothing races the projections
    return api.send(method, path, body)


def test_every_space_route_checks_token_grant_and_role(api: Api, book: Book) -> None:
    hold = api.record(book.space, book.card, book.salary, "1.00", pending=True)
    other_space = api.open_space("Other")
    outsider_write = api.as_token(api.issue_token("write", [other_space]))
    outsider_read = api.as_token(api.issue_token("read", [other_space]))
    # An admin token issued with spaces is held to them like any other (API.md: "whatever
    # the role").
    outsider_admin = api.as_token(api.issue_token("admin", [other_space]))
    reader = api.as_token(api.issue_token("read", [book.space]))
    space_admin = api.as_token(api.issue_token("admin", [book.space]))
    nobody = api.as_token(None)
    stranger = api.as_token("not-a-token-anyone-issued")
    for method, path, body in space_routes(book, hold["id"]):
        for caller in (nobody, stranger):
            problem_of(send(caller, method, path, body), 401, "unauthenticated")
        for caller in (outsider_write, outsider_read, outsider_admin):
            problem_of(send(caller, method, path, body), 404, "space-not-found")
        missing_space = path.replace(book.space, MISSING)
        problem_of(send(api, method, missing_space, body), 404, "space-not-found")
        answer = send(reader, method, path, body)
        if body is None:
            assert answer.status_code == 200, (path, answer.text)
            assert send(space_admin, method, path, body).status_code == 200, path
        else:
            problem_of(answer, 403, "forbidden")
    # Inside its space, an admin token limited to it writes as an admin does.
    created = send(space_admin, "POST", f"/v1/spaces/{book.space}/accounts", {
        "name": "Opened by the space's admin", "type": "asset", "currency": "USD"
    })  # fmt: skip
    assert created.status_code == 201, created.text


def test_global_routes_are_for_admins(api: Api, book: Book) -> None:
    writer = api.as_token(api.issue_token("write", [book.space]))
    reader = api.as_token(api.issue_token("read", [book.space]))
    space_admin = api.as_token(api.issue_token("admin", [book.space]))
    token_id = api.ok(api.post("/v1/tokens", {"role": "read", "spaces": []}), 201)["id"]
    admin_only = [
        ("POST", "/v1/spaces", {"name": "S", "base_currency": "USD"}),
        ("POST", "/v1/assets", {"code": "PTS", "exponent": 0}),
        ("POST", "/v1/tokens", {"role": "admin", "spaces": []}),
        ("DELETE", f"/v1/tokens/{token_id}", {}),
        ("GET", "/v1/events", None),
    ]
    for method, path, body in admin_only:
        problem_of(send(api.as_token(None), method, path, body), 401, "unauthenticated")
        for caller in (writer, reader):
            problem_of(send(caller, method, path, body), 403, "forbidden")
        # Only an admin token granted every space (issued with none) is an admin out here.
        refused = problem_of(send(space_admin, method, path, body), 403, "forbidden")
        assert "limited to some spaces" in refused["detail"]
    assert reader.get("/v1/assets").status_code == 200
    problem_of(api.as_token(None).get("/v1/assets"), 401, "unauthenticated")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_authorization_header_forms(api: Api) -> None:
    token = api.issue_token("admin", [])
    for header in (f"Basic {token}", token, "Bearer", "Bearer " + "x" * 300):
        response = api.client.get("/v1/assets", headers={"Authorization": header})
        problem_of(response, 401, "unauthenticated")
    assert api.client.get("/v1/assets", headers={"Authorization": f"bearer {token}"}).is_success


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_cli_token_bootstraps_an_admin_without_the_environment_token(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    monkeypatch.delenv("LEDGER_ADMIN_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["token", "create", "--role", "admin"])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()  # alone on standard output; its id on standard error
    assert token.startswith("ldg_") and len(token) >= 40
    assert "token id " in result.stderr
    settings = settings_for(database_url, admin_token=None)
    with TestClient(create_app(settings)) as client:
        api = Api(client, token)
        space = api.open_space()
        issued = api.ok(api.post("/v1/tokens", {"role": "read", "spaces": [space]}), 201)
        reader = api.as_token(issued["token"])
        assert reader.get(f"/v1/spaces/{space}").status_code == 200
        problem_of(Api(client).get("/v1/assets"), 401, "unauthenticated")


def test_tokens_issued_and_revoked_by_another_process_are_honoured(
    api: Api, book: Book, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ledger token create|list|revoke` beside a running server (another Ledger on the same
    database, as another process): a token it issues works on its first request (the gate
    catches up on an unknown token before answering 401), and one it revokes is refused within
    GLOBAL_CATCH_UP_SECONDS even while commands keep the writer busy (no idle second)."""
    from ledger_core.writer import GLOBAL_CATCH_UP_SECONDS

    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    runner = CliRunner()
    created = runner.invoke(main, ["token", "create", "--role", "read", "--space", book.space])
    assert created.exit_code == 0, created.output
    reader = api.as_token(created.stdout.strip())
    # At once: never 401. The read waits for the book's writes (Ledger-Min-Position), as the
    # space may not be projected yet; without the wait this raced the projections (404).
    assert reader.get(f"/v1/spaces/{book.space}").status_code == 200
    listed = runner.invoke(main, ["token", "list"])
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.output.splitlines() if book.space in line]
    token_id = line.split()[0]
    assert f"token id {token_id}" in created.stderr  # what `token create` said
    assert line.split()[1:3] == ["read", "active"]
    assert created.stdout.strip() not in listed.output  # never the token itself
    revoked = runner.invoke(main, ["token", "revoke", token_id])
    assert revoked.exit_code == 0 and f"revoked {token_id}" in revoked.output
    started = time.monotonic()
    while reader.get(f"/v1/spaces/{book.space}", wait=False).status_code == 200:
        api.record(book.space, book.checking, book.salary, "1.00")  # the writer stays busy
        assert time.monotonic() - started < GLOBAL_CATCH_UP_SECONDS + 5, "still not refused"
    problem_of(reader.get(f"/v1/spaces/{book.space}", wait=False), 401, "unauthenticated")
    after = runner.invoke(main, ["token", "list"]).output
    assert f"{token_id}  read   revoked" in after
    unknown = runner.invoke(main, ["token", "revoke", "00000000-0000-0000-0000-000000000001"])
    assert unknown.exit_code == 1 and "no token" in unknown.output
    assert "Traceback" not in unknown.output


def test_remembered_token_hashes_are_bounded_and_exact() -> None:
    """The memo of token hashes holds TOKEN_HASH_MEMORY tokens at most, and gives what
    hash_token gives: at the edge, past it, and for a token dropped and seen again."""
    from api import auth

    auth._remembered_hash.cache_clear()
    tokens = [f"ldg_bound_{number}" for number in range(auth.TOKEN_HASH_MEMORY + 1)]
    for token in tokens[: auth.TOKEN_HASH_MEMORY]:
        assert auth._remembered_hash(token) == auth.hash_token(token)
    assert auth._remembered_hash.cache_info().currsize == auth.TOKEN_HASH_MEMORY
    assert auth._remembered_hash(tokens[-1]) == auth.hash_token(tokens[-1])
    assert auth._remembered_hash.cache_info().currsize == auth.TOKEN_HASH_MEMORY
    # the least recently used (the first) was dropped; asked again, it is recomputed, exactly
    misses = auth._remembered_hash.cache_info().misses
    assert auth._remembered_hash(tokens[0]) == auth.hash_token(tokens[0])
    assert auth._remembered_hash.cache_info().misses == misses + 1
