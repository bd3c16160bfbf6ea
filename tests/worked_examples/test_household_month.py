"""A household's month, in US dollars.

The Millers start November with 500.00 in their checking account. The salary arrives, the rent
goes out, three purchases go on the Visa card (a liability: the balance is what they owe), and at
the end of the month they pay the card off from checking. After every step the balances are what
the household would read in their banking app, and the books balance.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from worked_example_book import Book

from ledger_core import Ledger, errors


@pytest.fixture
def book(database_url: str) -> Iterator[Book]:
    with Ledger.open(database_url) as ledger:
        book = Book(ledger, "The Millers")
        book.open("Checking", "asset", "checking", limit="0")  # no overdraft
        book.open("Visa", "liability", "credit")
        book.open("Opening balances", "equity")
        book.open("Salary", "income")
        book.open("Rent", "expense")
        book.open("Groceries", "expense")
        book.open("Eating out", "expense")
        yield book


def test_a_household_month(book: Book) -> None:
    # 1 November: the month starts with 500.00 in checking.
    book.post("Checking", "Opening balances", "500.00", description="Balance brought forward")
    assert book.balances("Checking", "Opening balances") == {
        "Checking": "500.00",
        "Opening balances": "500.00",
    }

    # 1 November: the salary is paid into checking.
    book.post("Checking", "Salary", "3200.00", description="November salary", merchant="Acme Corp")
    assert book.balances("Checking", "Salary") == {"Checking": "3700.00", "Salary": "3200.00"}

    # 2 November: the rent leaves checking.
    book.post("Rent", "Checking", "1450.00", description="Rent, flat 4B")
    assert book.balances("Checking", "Rent") == {"Checking": "2250.00", "Rent": "1450.00"}

    # During the month: three purchases on the card. Checking does not move; the card's balance
    # is what the Millers owe.
    book.post("Groceries", "Visa", "82.45", merchant="Corner shop")
    book.post("Eating out", "Visa", "38.00", merchant="Luigi's")
    book.post("Groceries", "Visa", "64.10", merchant="Farmers' market")
    assert book.balances("Visa", "Groceries", "Eating out", "Checking") == {
        "Visa": "184.55",
        "Groceries": "146.55",
        "Eating out": "38.00",
        "Checking": "2250.00",
    }

    # 30 November: the card is paid off in full from checking.
    book.post("Visa", "Checking", "184.55", description="Visa statement payment")
    assert book.balances("Visa", "Checking") == {"Visa": "0.00", "Checking": "2065.45"}

    # The books balance: what they have plus what they spent equals what they brought in.
    # 2065.45 + 1450.00 + 146.55 + 38.00 = 3700.00 = 500.00 + 3200.00
    assert book.trial_balance() == ("3700.00", "3700.00")

    # The checking account has no overdraft: a 2,500.00 transfer is declined, nothing moves.
    with pytest.raises(errors.InsufficientFunds):
        book.run(book.posting("Rent", "Checking", "2500.00"))
    assert book.balance("Checking") == "2065.45"

    # And cents are exact: a third of a cent is refused, never rounded.
    with pytest.raises(errors.InvalidAmount):
        book.run(book.posting("Groceries", "Visa", "10.005"))
