"""Problems for what is not a ledger refusal (unknown routes and methods, a bug, the ledger
down), request ids and the who-and-where recorded in events, and the operations routes."""

from __future__ import annotations

import logging
import sqlite3
import time
from typing import Any
from uuid import UUID

import psycopg
import pytest
from litestar.testing import TestClient

from api.app import create_app
from api.metrics import METRICS_CONTENT_TYPE
from ledger_core.codec import decode_outcome
from ledger_core.ledger import Ledger
from ledger_core.records import RefusalRecord
from ledger_core.rules import command_id
from ledger_core.types import CommandContext
from projections.db import Database
from tests.api.conftest import Api, Book, api_log_records, settings_for
from tests.api.test_commands import problem_of


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_unknown_routes_and_methods_answer_problems(api: Api) -> None:
    problem_of(api.client.get("/v2/nothing"), 404, "not-found")
    problem_of(api.client.delete("/v1/spaces"), 405, "method-not-allowed")
    problem_of(api.client.put("/health"), 405, "method-not-allowed")


class BrokenReadModels:
    """A read model whose database fails with internals in the message."""

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("password=hunter2 at db.internal:5432")

        return fail


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_an_unexpected_error_is_a_generic_500(database_url: str) -> None:
    app = create_app(
        settings_for(database_url), read_models=BrokenReadModels(), run_projections=False
    )  # type: ignore[arg-type]
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client)
        space = api.open_space()
        response = api.get(f"/v1/spaces/{space}", wait=False)
        not_ready = client.get("/ready")
    body = problem_of(response, 500, "internal-error")
    assert not_ready.status_code == 503
    assert not_ready.json()["status"] == "unavailable" and not_ready.json()["database"] is False
    assert "hunter2" not in response.text and "Traceback" not in response.text
    assert set(body) == {"type", "title", "status", "detail", "code"}
    assert response.headers["x-request-id"]


class UnreachableReadModels:
    """A read model whose database went away (a lost connection, a restarting server, a locked
    SQLite file): the errors the drivers raise for it."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        def fail(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return fail


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        psycopg.InterfaceError("the connection is closed"),
        sqlite3.OperationalError("database is locked"),
    ],
)
def test_a_read_while_the_database_is_unreachable_is_503_not_a_bug(
    database_url: str, error: Exception
) -> None:
    read_models: Any = UnreachableReadModels(error)
    app = create_app(settings_for(database_url), read_models=read_models, run_projections=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client)
        space = api.open_space()
        with api_log_records() as records:
            response = api.get(f"/v1/spaces/{space}", wait=False)
    problem_of(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert "closed" not in response.text and "locked" not in response.text
    assert [record.levelno for record in records] == [logging.WARNING]
    assert "database unavailable" in records[0].getMessage()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_closed_ledger_answers_503_unavailable(database_url: str) -> None:
    ledger = Ledger.open(database_url)
    app = create_app(settings_for(database_url), ledger=ledger)
    with TestClient(app) as client:
        api = Api(client)
        api.open_space()
        ledger.close()
        response = api.post("/v1/spaces", {"name": "Late", "base_currency": "USD"})
    problem_of(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"


def test_request_ids_and_context_are_recorded(api: Api, book: Book) -> None:
    body = api.posting_body(book.checking, book.salary, "1.00")
    headers = {"X-Request-ID": "client-req-42", "User-Agent": "budget-app/1.0"}
    response = api.post(book.postings, body, headers=headers)
    assert response.headers["x-request-id"] == "client-req-42"
    declined = api.post(
        book.postings, api.posting_body(book.groceries, book.checking, "99.00"),
        headers={"X-Request-ID": "bad id with spaces"},
    )  # fmt: skip
    generated = declined.headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    events = api.ok(api.get("/v1/events", limit="500"), 200)["items"]
    by_type = {event["type"]: event for event in events}
    context = by_type["PostingRecorded"]["data"]["context"]
    assert context["request_id"] == "client-req-42"
    assert context["user_agent"] == "budget-app/1.0"
    assert context["token_id"] == "bootstrap-admin"
    assert context["client_address"]
    assert by_type["PostingDeclined"]["data"]["context"]["request_id"] == generated
    writer_token = api.ok(api.post("/v1/tokens", {"role": "write", "spaces": [book.space]}), 201)
    writer = api.as_token(writer_token["token"])
    writer.record(book.space, book.checking, book.salary, "2.00")
    events = api.ok(api.get("/v1/events", limit="500"), 200)["items"]
    assert UUID(events[-1]["data"]["context"]["token_id"]) == UUID(writer_token["id"])
    # A refusal stored with its key (no event) keeps who and where too, beside its answer.
    entries = api.posting_body(book.checking, book.salary, "1.00")["entries"]
    unbalanced = {"entries": [entries[0], {**entries[1], "amount": "2.00"}]}
    headers = {"X-Request-ID": "client-req-43", "User-Agent": "budget-app/1.0"}
    refused = writer.post(book.postings, unbalanced, key="refused-1", headers=headers)
    problem_of(refused, 422, "unbalanced-posting")
    ledger = api.client.app.services.ledger  # type: ignore[attr-defined]
    space, row_id = UUID(book.space), command_id(UUID(book.space), "refused-1")
    row = ledger.store.command_rows(space, [row_id])[row_id]
    stored = decode_outcome(row.outcome, ledger.cipher)
    assert isinstance(stored, RefusalRecord) and stored.code == "unbalanced-posting"
    assert stored.context == CommandContext(
        token_id=writer_token["id"],
        request_id="client-req-43",
        client_address=context["client_address"],
        user_agent="budget-app/1.0",
    )
    replayed = writer.post(book.postings, unbalanced, key="refused-1")  # another request id
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == refused.json()  # the context is never part of the answer


def test_health_ready_metrics_and_schema_need_no_token(api: Api, book: Book) -> None:
    hold = api.record(book.space, book.checking, book.salary, "3.00", pending=True)
    api.ok(api.post(f"{book.postings}/{hold['id']}/post"), 200)  # a capture: no new posting
    api.post(book.postings, api.posting_body(book.groceries, book.checking, "99.00"))
    anonymous = api.client
    assert anonymous.get("/health").json() == {"status": "ok"}
    api.get(f"/v1/spaces/{book.space}")  # wait until the projections caught up
    ready = anonymous.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["database"] is True and ready.json()["projection_lag"] >= 0
    metrics = anonymous.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"] == METRICS_CONTENT_TYPE  # one charset, as given
    assert METRICS_CONTENT_TYPE.count("charset=") == 1
    text = metrics.text
    assert 'ledger_http_requests_total{method="POST",route="/v1/spaces",status="201"} 1.0' in text
    assert "ledger_http_request_duration_seconds_bucket" in text
    assert "ledger_postings_recorded_total 1.0" in text
    assert 'ledger_postings_declined_total{reason="insufficient-funds"} 1.0' in text
    assert "ledger_projection_lag_events" in text
    batches = float(text.split("\nledger_writer_batches ")[1].split()[0])
    commands = float(text.split("\nledger_writer_commands ")[1].split()[0])
    assert 1 <= batches <= commands
    assert "\nledger_writer_queued_postings 0.0\n" in text  # nothing waits once answered
    ui = anonymous.get("/schema")
    assert ui.status_code == 200 and "<html" in ui.text.lower()
    schema = anonymous.get("/schema/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    paths = set(schema["paths"])
    for path in (
        "/v1/spaces",
        "/v1/spaces/{space_id}/postings/batch",
        "/v1/spaces/{space_id}/accounts/{account_id}/entries",
        "/v1/spaces/{space_id}/reports/trial-balance",
        "/v1/tokens/{token_id}",
        "/v1/events",
    ):
        assert path in paths, path
    # What the document says matches what the server does: the ops routes need no token, and
    # Ledger-Min-Position is an optional header holding a log position.
    for path in ("/health", "/ready", "/metrics"):
        assert schema["paths"][path]["get"]["security"] == [{}], path
    assert "security" not in schema["paths"]["/v1/events"]["get"]  # the bearer token, global
    for path, item in schema["paths"].items():
        for name in item.get("get", {}).get("parameters", ()):
            if name["name"] == "Ledger-Min-Position":
                assert name["required"] is False, path
                assert name["schema"]["type"] == "integer", path
                assert (name["schema"]["minimum"], name["schema"]["maximum"]) == (0, 2**63 - 1)
    # A page under /schema that no UI serves is a problem like any unknown route, not HTML.
    for missing in ("/schema/redoc", "/schema/nope", "/schema/nope.json"):
        problem_of(anonymous.get(missing), 404, "not-found")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_hostile_bodies_are_4xx_problems(api: Api) -> None:
    bodies = {
        b'{"code": "\xff\xfe", "exponent": 1}': (400, "malformed-request"),
        b'{"code": "BTC", "exponent": ' + b"9" * 5000 + b"}": (422, "invalid-request"),
        b'{"code": "BTC", "exponent": 1e400}': (422, "invalid-request"),
        b'{"code": "BTC", "exponent": NaN}': (400, "malformed-request"),
        b"[" * 50_000 + b"]" * 50_000: (422, "invalid-request"),
        b'{"code": "BTC", "exponent": 2, "name": ' + b"[" * 50_000 + b"]" * 50_000 + b"}": (
            422,
            "invalid-request",
        ),
    }
    for body, (status, code) in bodies.items():
        problem_of(api.post("/v1/assets", content=body), status, code)


def test_serve_tunes_the_garbage_collector() -> None:
    """`ledger serve` moves what startup built out of the collected generations and collects
    the youngest generation less often (api.serve.tune_garbage_collector)."""
    import gc

    from api.serve import GC_YOUNG_THRESHOLD, tune_garbage_collector

    threshold = gc.get_threshold()
    try:
        tune_garbage_collector(None)
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *threshold[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
    assert gc.get_freeze_count() == 0


def test_serve_runs_on_uvloop_by_default_and_on_asyncio_when_asked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import sys

    import uvloop

    from api.serve import DEFAULT_LOOP, loop_factory

    assert DEFAULT_LOOP == "uvloop"
    factory = loop_factory("uvloop")
    assert factory is not None
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
    assert loop_factory("asyncio") is None
    with asyncio.Runner(loop_factory=loop_factory("asyncio")) as runner:
        assert not isinstance(runner.get_loop(), uvloop.Loop)
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as on a platform without it
    assert loop_factory("uvloop") is None
    assert "uvloop is not installed" in capsys.readouterr().err


def test_routes_answering_json_answers_document_their_success_shape() -> None:
    """GET account and POST postings (and batches) send api.answers.JsonAnswer; the OpenAPI
    document still names what they answer, with the status they answer it with."""
    from tests.api.test_fuzz import openapi_document

    paths = openapi_document()["paths"]
    for path, method, status, schema in (
        ("/v1/spaces/{space_id}/accounts/{account_id}", "get", "200", "Account"),
        ("/v1/spaces/{space_id}/postings", "post", "201", "Posting"),
        ("/v1/spaces/{space_id}/postings/batch", "post", "201", "Batch"),
    ):
        content = paths[path][method]["responses"][status]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{schema}"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_json_answer_carries_the_headers_of_a_response(api: Api, book: Book) -> None:
    body = api.posting_body(book.checking, book.salary, "3.00")
    first = api.post(book.postings, body, key="json-answer")
    again = api.post(book.postings, body, key="json-answer")
    for response in (first, again):
        assert response.status_code == 201
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["content-length"]) == len(response.content)
        assert response.headers["ledger-position"] == first.headers["ledger-position"]
        assert response.headers["x-request-id"]
    assert "idempotent-replayed" not in first.headers
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_ready_and_metrics_name_a_stopped_projection(
    api: Api, book: Book, database_url: str
) -> None:
    api.record(book.space, book.checking, book.salary, "1.00")
    api.get(f"/v1/spaces/{book.space}")  # the projections caught up
    anonymous = api.client
    assert anonymous.get("/ready").json()["failed_projections"] == []
    assert "\nledger_projections_failed 0.0" in anonymous.get("/metrics").text
    # Sabotage: a row already where the next posting's row must go, so `postings` stops on it.
    database = Database(database_url)
    failing = api.last_position + 1
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            database.execute(
                cursor,
                "INSERT INTO rm_posting_accounts (space_id, account_id, position) VALUES (?, ?, ?)",
                (
                    database.dialect.uuid(UUID(book.space)),
                    database.dialect.uuid(UUID(book.checking)),
                    failing,
                ),
            )
    finally:
        connection.close()
    api.record(book.space, book.checking, book.salary, "2.00")
    deadline = time.monotonic() + 10
    ready = anonymous.get("/ready").json()
    while not ready["failed_projections"] and time.monotonic() < deadline:
        time.sleep(0.02)
        ready = anonymous.get("/ready").json()
    assert anonymous.get("/ready").status_code == 200  # still ready: writes go on
    [failed] = ready["failed_projections"]
    assert (failed["name"], failed["position"]) == ("postings", failing)
    assert failed["topic"].startswith("PostingRecorded/")
    # Why, only to an admin token: the error's message may quote stored rows.
    assert failed["reason"] is None
    reader = api.issue_token("read", [book.space])
    space_admin = api.issue_token("admin", [book.space])  # not granted every space
    for token in (reader, space_admin, "not-a-token"):
        seen = anonymous.get("/ready", headers={"Authorization": f"Bearer {token}"}).json()
        assert [item["reason"] for item in seen["failed_projections"]] == [None]
    as_admin = anonymous.get("/ready", headers=api.headers()).json()
    [told] = as_admin["failed_projections"]
    assert "rm_posting_accounts" in told["reason"]
    assert {**told, "reason": None} == failed
    assert ready["projection_lag"] >= 1
    assert "\nledger_projections_failed 1.0" in anonymous.get("/metrics").text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_head_is_get_without_the_body(api: Api, book: Book) -> None:
    client = api.client
    settled = {**api.headers(), "Ledger-Min-Position": str(api.last_position)}
    for path, headers in (
        ("/health", {}),
        (book.account_path(book.checking), settled),
        (f"/v1/spaces/{book.space}/accounts", settled),
    ):
        got, head = client.get(path, headers=headers), client.head(path, headers=headers)
        assert (head.status_code, got.status_code) == (200, 200), path
        assert head.content == b"" and got.content
        assert head.headers["content-length"] == got.headers["content-length"]
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["x-request-id"]
    refused = client.head(book.account_path(book.checking))  # no token
    assert refused.status_code == 401 and refused.content == b""
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.head("/v1/spaces", headers=api.headers()).status_code == 405  # POST only
    text = client.get("/metrics").text
    assert 'ledger_http_requests_total{method="HEAD",route="/health",status="200"} 1.0' in text


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_connections_killed_under_the_api_give_503s_then_it_recovers(
    api: Api, book: Book, database_url: str
) -> None:
    """Every connection the app holds to PostgreSQL is terminated (a failover, a restart): the
    next requests answer their result or 503 `unavailable`, never a 500, and within seconds
    reads and writes work again, with nothing lost or doubled."""
    account = book.account_path(book.checking)
    api.record(book.space, book.checking, book.salary, "10.00")
    assert api.ok(api.get(account), 200)["balances"]["posted"] == "10.00"
    with psycopg.connect(database_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert killed is not None and killed[0] >= 3  # writer, projections, reads at least
    statuses: list[int] = []
    deadline = time.monotonic() + 30
    recorded = False
    while time.monotonic() < deadline:
        read = api.get(account, wait=False)
        listed = api.get(book.postings, wait=False)  # the read threads' own connections
        body = api.posting_body(book.checking, book.salary, "1.00")
        write = api.post(book.postings, body, key="after-the-kill")  # one key: never doubled
        statuses += [read.status_code, listed.status_code, write.status_code]
        for response in (read, listed, write):
            if response.status_code == 503:
                problem_of(response, 503, "unavailable")
        if write.status_code == 201:
            recorded = True
        if recorded and read.status_code == 200 and listed.status_code == 200:
            break
        time.sleep(0.2)
    assert recorded and set(statuses) <= {200, 201, 503}, statuses
    settled = api.ok(api.get(account), 200)
    assert settled["balances"]["posted"] == "11.00"
