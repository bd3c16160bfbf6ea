"""A card authorisation, seen from a prepaid-card issuer's books, in euros.

Ana loads 300.00 onto her prepaid card. The issuer owes her that money, so her card balance is a
liability of the issuer, with no overdraft allowed. A hotel authorises 120.00 at check-in: a hold
that reduces what Ana can spend at once, but not yet her balance. At check-out the hotel captures
only 85.00; the rest of the hold is released. Later the hotel refunds the stay: the capture is
reversed, and everything is back where it started. A posting is reversed at most once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from worked_example_book import Book

from ledger_core import Ledger, errors
from ledger_core import commands as cmd
from ledger_core.records import PostingRecord


@pytest.fixture
def book(database_url: str) -> Iterator[Book]:
    with Ledger.open(database_url) as ledger:
        book = Book(ledger, "Prepaid card programme", currency="EUR")
        book.open("Ana's card", "liability", limit="0")  # she cannot spend more than she loaded
        book.open("Settlement bank", "asset")  # the issuer's cash at its bank
        book.open("Hotel Miramar", "liability")  # owed to the merchant until settled
        yield book


def test_a_card_authorisation_captured_partly_then_reversed(book: Book) -> None:
    # Ana loads 300.00: the issuer's bank balance rises, and so does what it owes her.
    book.post("Settlement bank", "Ana's card", "300.00", description="Top-up")
    assert book.balance("Ana's card") == "300.00"
    assert book.available("Ana's card") == "300.00"

    # Check-in: the hotel authorises 120.00. Balance unchanged, available down to 180.00.
    hold = book.post(
        "Ana's card", "Hotel Miramar", "120.00", pending=True, merchant="Hotel Miramar"
    )
    assert hold.status == "pending"
    assert (book.balance("Ana's card"), book.available("Ana's card")) == ("300.00", "180.00")

    # While the hold is open, Ana cannot spend the held money elsewhere.
    with pytest.raises(errors.InsufficientFunds):
        book.run(book.posting("Ana's card", "Settlement bank", "180.01"))

    # Check-out: the hotel captures only 85.00; the other 35.00 is released.
    capture = book.run(
        cmd.PostPending(
            idempotency_key="capture-stay",
            space_id=book.space_id,
            posting_id=hold.id,
            amount="85.00",
        )
    ).outcome
    assert isinstance(capture, PostingRecord)
    assert capture.status == "posted"
    assert (book.balance("Ana's card"), book.available("Ana's card")) == ("215.00", "215.00")
    assert book.balance("Hotel Miramar") == "85.00"

    # The stay is refunded: the capture is reversed with the mirrored entries.
    refund = book.run(
        cmd.ReversePosting(
            idempotency_key="refund-stay",
            space_id=book.space_id,
            posting_id=hold.id,
            description="Refund",
        )
    ).outcome
    assert isinstance(refund, PostingRecord)
    assert refund.reverses == hold.id
    assert [(entry.direction, entry.amount_minor) for entry in refund.entries] == [
        ("credit", 8500),
        ("debit", 8500),
    ]
    assert book.balances("Ana's card", "Hotel Miramar", "Settlement bank") == {
        "Ana's card": "300.00",
        "Hotel Miramar": "0.00",
        "Settlement bank": "300.00",
    }

    # A second refund of the same capture is refused: a posting is reversed at most once.
    with pytest.raises(errors.PostingAlreadyReversed):
        book.run(
            cmd.ReversePosting(
                idempotency_key="refund-again", space_id=book.space_id, posting_id=hold.id
            )
        )
    assert book.balance("Ana's card") == "300.00"
    assert book.trial_balance() == ("300.00", "300.00")
