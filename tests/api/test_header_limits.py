"""The limits on what a request's headers and query carry, each at and past its edge: the bearer
token's length, the client's X-Request-ID, the User-Agent recorded in events, a cursor's length
and the highest `Ledger-Min-Position`."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.auth import MAX_TOKEN_LENGTH
from api.gate import MAX_USER_AGENT_LENGTH
from api.limits import MAX_CURSOR_LENGTH, MAX_POSITION, MAX_REQUEST_ID_LENGTH
from api.read_routes import _parse_position, cursor
from ledger_core import errors
from tests.api.conftest import Api, Book, settings_for
from tests.api.test_commands import problem_of


def test_a_token_of_the_longest_length_is_looked_up_and_a_longer_one_refused_unread(
    sqlite_url: str,
) -> None:
    longest = "t" * MAX_TOKEN_LENGTH
    settings = settings_for(sqlite_url, admin_token=longest)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        at_edge = client.get("/v1/assets", headers={"Authorization": f"Bearer {longest}"})
        assert at_edge.status_code == 200, at_edge.text
        past = client.get("/v1/assets", headers={"Authorization": f"Bearer {longest}t"})
        assert problem_of(past, 401, "unauthenticated")["detail"] == (
            "send Authorization: Bearer <token>"
        )


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_request_id_and_user_agent_lengths(api: Api, book: Book) -> None:
    longest_id = "r" * MAX_REQUEST_ID_LENGTH
    user_agent = "u" * (MAX_USER_AGENT_LENGTH + 10)
    kept = api.post(
        book.postings,
        api.posting_body(book.checking, book.salary, "1.00"),
        headers={"X-Request-ID": longest_id, "User-Agent": user_agent},
    )
    assert kept.status_code == 201 and kept.headers["x-request-id"] == longest_id
    replaced = api.post(
        book.postings,
        api.posting_body(book.checking, book.salary, "1.00"),
        headers={"X-Request-ID": longest_id + "r"},
    )
    assert replaced.status_code == 201
    assert replaced.headers["x-request-id"] != longest_id + "r"
    events = api.ok(api.get("/v1/events", limit="500"), 200)["items"]
    contexts = [event["data"]["context"] for event in events if event["type"] == "PostingRecorded"]
    recorded = next(context for context in contexts if context["request_id"] == longest_id)
    # The User-Agent is recorded up to its limit, the rest cut off.
    assert recorded["user_agent"] == user_agent[:MAX_USER_AGENT_LENGTH]


def test_cursor_length_at_and_past_the_limit() -> None:
    assert cursor("c" * MAX_CURSOR_LENGTH) == "c" * MAX_CURSOR_LENGTH
    with pytest.raises(errors.InvalidRequest):
        cursor("c" * (MAX_CURSOR_LENGTH + 1))


def test_min_position_at_and_past_the_highest_position(sqlite_url: str) -> None:
    assert _parse_position(str(MAX_POSITION)) == MAX_POSITION
    with pytest.raises(errors.MalformedRequest):
        _parse_position(str(MAX_POSITION + 1))
    settings = settings_for(sqlite_url, position_wait_seconds=0.2)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        api = Api(client)
        headers = api.headers()
        at_edge = client.get(
            "/v1/assets", headers={**headers, "Ledger-Min-Position": str(MAX_POSITION)}
        )
        problem_of(at_edge, 503, "position-not-reached")
        past = client.get(
            "/v1/assets", headers={**headers, "Ledger-Min-Position": str(MAX_POSITION + 1)}
        )
        problem_of(past, 400, "malformed-request")
