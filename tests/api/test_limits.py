"""Every request limit at and past its edge: the request past it is a 4xx problem, never a
500. Body size (api.limits), entries per posting, postings per batch, metadata (ledger_core
.limits); page size is in test_reads."""

from __future__ import annotations

import json

import pytest

from api.limits import MAX_REQUEST_BODY_BYTES
from ledger_core.limits import (
    MAX_ENTRIES_PER_POSTING,
    MAX_METADATA_BYTES,
    MAX_METADATA_KEYS,
    MAX_POSTINGS_PER_BATCH,
)
from tests.api.conftest import Api, Book
from tests.api.test_commands import problem_of

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def body_of_size(size: int) -> bytes:
    """A JSON space request of exactly `size` bytes (its name is too long for the ledger)."""
    skeleton = json.dumps({"name": "", "base_currency": "USD"}).encode()
    body = json.dumps({"name": "n" * (size - len(skeleton)), "base_currency": "USD"}).encode()
    assert len(body) == size
    return body


def test_body_size(api: Api) -> None:
    at_limit = api.post("/v1/spaces", content=body_of_size(MAX_REQUEST_BODY_BYTES))
    problem_of(at_limit, 422, "invalid-request")  # read and refused by the ledger, not 413
    past = api.post("/v1/spaces", content=body_of_size(MAX_REQUEST_BODY_BYTES + 1))
    problem_of(past, 413, "request-too-large")


def test_entries_per_posting(api: Api, book: Book) -> None:
    def posting(entry_count: int) -> dict[str, object]:
        debits = [
            {"account_id": book.groceries, "direction": "debit", "amount": "1.00"}
            for _ in range(entry_count - 1)
        ]
        credit = {"account_id": book.card, "direction": "credit", "amount": f"{entry_count - 1}.00"}
        return {"entries": [*debits, credit]}

    assert api.post(book.postings, posting(MAX_ENTRIES_PER_POSTING)).status_code == 201
    problem_of(api.post(book.postings, posting(MAX_ENTRIES_PER_POSTING + 1)), 422,
               "too-many-entries")  # fmt: skip


def test_postings_per_batch_fit_in_the_body_limit(api: Api, book: Book) -> None:
    item = api.posting_body(book.groceries, book.card, "1.00", description="A grocery run")
    full = {"postings": [item] * MAX_POSTINGS_PER_BATCH}
    assert len(json.dumps(full)) < MAX_REQUEST_BODY_BYTES
    response = api.post(f"{book.postings}/batch", full)
    assert response.status_code == 201, response.text
    assert len(response.json()["postings"]) == MAX_POSTINGS_PER_BATCH
    over = {"postings": [item] * (MAX_POSTINGS_PER_BATCH + 1)}
    problem_of(api.post(f"{book.postings}/batch", over), 422, "batch-too-large")


def test_metadata_size(api: Api, book: Book) -> None:
    def posting(metadata: dict[str, str]) -> dict[str, object]:
        return api.posting_body(book.groceries, book.card, "1.00", metadata=metadata)

    most_keys = {f"k{n}": "v" for n in range(MAX_METADATA_KEYS)}
    assert api.post(book.postings, posting(most_keys)).status_code == 201
    too_many = {**most_keys, "one-more": "v"}
    problem_of(api.post(book.postings, posting(too_many)), 422, "invalid-request")
    keys = [f"k{n}" for n in range(9)]  # 18 bytes of keys
    values = ["v" * 908] * 8 + ["v" * 910]  # 8174 bytes of values
    largest = dict(zip(keys, values, strict=True))
    assert sum(len(k) + len(v) for k, v in largest.items()) == MAX_METADATA_BYTES
    assert api.post(book.postings, posting(largest)).status_code == 201
    past = dict(largest, k8="v" * 911)
    problem_of(api.post(book.postings, posting(past)), 422, "invalid-request")
