"""A bank transfer declined for insufficient funds, retried with the same idempotency key.

Ben has 100.00 in checking (no overdraft) and asks to move 250.00 to savings. The ledger declines
the transfer and records the attempt, with its reason, as a declined posting. His app retries the
request with the same key (the network dropped the first answer): it gets exactly the same
declined answer, with the same posting id and log position, and nothing else is recorded. Once his
salary arrives the old key still answers the decline (the answer to a key never changes); a new
request with a new key goes through.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from worked_example_book import Book

from ledger_core import Ledger, errors
from ledger_core import events as ev
from ledger_core.codec import decode_event


@pytest.fixture
def book(database_url: str) -> Iterator[Book]:
    with Ledger.open(database_url) as ledger:
        book = Book(ledger, "Ben")
        book.open("Checking", "asset", "checking", limit="0")
        book.open("Savings", "asset", "savings", limit="0")
        book.open("Salary", "income")
        yield book


def declined_postings(book: Book) -> list[ev.PostingDeclined]:
    found = []
    for notification in book.ledger.store.notifications(after=0, limit=1000):
        event = decode_event(notification.topic, notification.state)
        if isinstance(event, ev.PostingDeclined):
            found.append(event)
    return found


def test_a_declined_transfer_retried_with_the_same_key(book: Book) -> None:
    book.post("Checking", "Salary", "100.00", description="Pocket money")
    assert book.balances("Checking", "Savings") == {"Checking": "100.00", "Savings": "0.00"}

    # Ben asks to move 250.00 to savings: declined, and the attempt is recorded.
    transfer = book.posting("Savings", "Checking", "250.00", key="transfer-2026-11-20-1")
    with pytest.raises(errors.InsufficientFunds) as first:
        book.run(transfer)
    assert first.value.posting_id is not None
    assert not first.value.replayed
    [declined] = declined_postings(book)
    assert (declined.posting_id, declined.reason) == (first.value.posting_id, "insufficient-funds")
    log_length = book.ledger.store.max_position()
    assert first.value.position == log_length

    # The app retries with the same key: the same declined answer, nothing new recorded.
    with pytest.raises(errors.InsufficientFunds) as retry:
        book.run(transfer)
    assert retry.value.replayed
    assert (retry.value.posting_id, retry.value.position) == (
        first.value.posting_id,
        first.value.position,
    )
    assert book.ledger.store.max_position() == log_length
    assert book.balances("Checking", "Savings") == {"Checking": "100.00", "Savings": "0.00"}

    # The salary arrives.
    book.post("Checking", "Salary", "200.00", description="Salary")
    assert book.balance("Checking") == "300.00"

    # The old key still answers the decline: an answer never changes.
    with pytest.raises(errors.InsufficientFunds) as later:
        book.run(transfer)
    assert (later.value.replayed, later.value.posting_id) == (True, first.value.posting_id)

    # A new request, with a new key, goes through.
    book.run(book.posting("Savings", "Checking", "250.00", key="transfer-2026-11-20-2"))
    assert book.balances("Checking", "Savings") == {"Checking": "50.00", "Savings": "250.00"}
    assert len(declined_postings(book)) == 1
