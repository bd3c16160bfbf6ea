"""The posting rules on a space state built only by applying events (no database, no writer).

`rules.decide_posting` checks, in order: shape (entry count, text, metadata), accounts and
currencies, balance per currency, account status (a `Decline`), then overdraft limits against the
available balance with the open holds counting (a `Decline`). Each limit is tested at and one past
its edge.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger_core import errors, rules
from ledger_core import events as ev
from ledger_core.commands import EntrySpec, PostingSpec
from ledger_core.limits import (
    MAX_BALANCE_MINOR,
    MAX_DESCRIPTION_LENGTH,
    MAX_ENTRIES_PER_POSTING,
    MAX_MERCHANT_LENGTH,
    MAX_METADATA_BYTES,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MIN_ENTRIES_PER_POSTING,
)
from ledger_core.money import CurrencyTable
from ledger_core.state import SpaceState

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CURRENCIES = CurrencyTable({"BTC": 8})


class Book:
    """A space state grown by applying events, as the writer and a reload do."""

    def __init__(self) -> None:
        self.state = SpaceState(uuid4())
        self.state.apply(
            ev.SpaceOpened(
                space_id=self.state.space_id, name="Book", base_currency="USD", recorded_at=NOW
            )
        )

    def open(
        self, type: str = "asset", currency: str = "USD", limit_minor: int | None = None
    ) -> UUID:
        account_id = uuid4()
        self.state.apply(
            ev.AccountOpened(
                account_id=account_id,
                name=f"{type} {currency}",
                type=type,  # type: ignore[arg-type]
                subtype="other",
                currency=currency,
                overdraft_limit_minor=limit_minor,
                recorded_at=NOW,
            )
        )
        return account_id

    def post(self, debit: UUID, credit: UUID, amount_minor: int, *, pending: bool = False) -> UUID:
        """Record a two-entry posting (or hold) directly as an event."""
        posting_id = uuid4()
        currency = self.state.accounts[debit].currency
        self.state.apply(
            ev.PostingRecorded(
                posting_id=posting_id,
                entries=(
                    ev.EntryRecorded(debit, "debit", amount_minor, currency),
                    ev.EntryRecorded(credit, "credit", amount_minor, currency),
                ),
                effective_date=NOW.date(),
                pending=pending,
                recorded_at=NOW,
            )
        )
        return posting_id

    def apply(self, event: ev.Event) -> None:
        self.state.apply(event)

    def decide(
        self, spec: PostingSpec, earlier: rules.Deltas | None = None
    ) -> tuple[tuple[ev.EntryRecorded, ...], rules.Deltas]:
        return rules.decide_posting(self.state, CURRENCIES, spec, NOW, earlier or {})


def entry(account_id: UUID, direction: str, amount: str, currency: str | None = None) -> EntrySpec:
    return EntrySpec(
        account_id=account_id,
        direction=direction,  # type: ignore[arg-type]
        amount=amount,
        currency=currency,
    )


def transfer(debit: UUID, credit: UUID, amount: str, **fields: object) -> PostingSpec:
    return PostingSpec(
        entries=(entry(debit, "debit", amount), entry(credit, "credit", amount)),
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def book() -> Book:
    return Book()


# Shape -------------------------------------------------------------------------------------------


def test_too_few_entries_below_the_minimum(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    assert MIN_ENTRIES_PER_POSTING == 2
    for entries in ((), (entry(cash, "debit", "1.00"),)):
        with pytest.raises(errors.TooFewEntries):
            book.decide(PostingSpec(entries=entries))
    entries, _ = book.decide(transfer(cash, equity, "1.00"))
    assert len(entries) == MIN_ENTRIES_PER_POSTING


def test_too_many_entries_at_and_past_the_maximum(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    half = MAX_ENTRIES_PER_POSTING // 2
    at_edge = (entry(cash, "debit", "1.00"),) * half + (entry(equity, "credit", "1.00"),) * half
    entries, deltas = book.decide(PostingSpec(entries=at_edge))
    assert len(entries) == MAX_ENTRIES_PER_POSTING
    assert deltas[cash][0] == 100 * half
    past_edge = (*at_edge, entry(cash, "debit", "1.00"))
    with pytest.raises(errors.TooManyEntries):
        book.decide(PostingSpec(entries=past_edge))


def test_unbalanced_posting_is_refused(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    spec = PostingSpec(entries=(entry(cash, "debit", "10.00"), entry(equity, "credit", "9.99")))
    with pytest.raises(errors.UnbalancedPosting):
        book.decide(spec)


def test_multi_currency_posting_balanced_in_each_currency_is_accepted(book: Book) -> None:
    usd_cash, usd_equity = book.open("asset", "USD"), book.open("equity", "USD")
    jpy_cash, jpy_equity = book.open("asset", "JPY"), book.open("equity", "JPY")
    spec = PostingSpec(
        entries=(
            entry(usd_cash, "debit", "10.00"),
            entry(jpy_equity, "credit", "1500"),
            entry(usd_equity, "credit", "10.00"),
            entry(jpy_cash, "debit", "1500"),
        )
    )
    entries, _ = book.decide(spec)
    assert [(e.currency, e.amount_minor) for e in entries] == [
        ("USD", 1000),
        ("JPY", 1500),
        ("USD", 1000),
        ("JPY", 1500),
    ]


def test_balanced_in_total_but_not_per_currency_is_unbalanced(book: Book) -> None:
    usd_cash, jpy_equity = book.open("asset", "USD"), book.open("equity", "JPY")
    # 1000 minor units each side, but cents against yen.
    spec = PostingSpec(
        entries=(entry(usd_cash, "debit", "10.00"), entry(jpy_equity, "credit", "1000"))
    )
    with pytest.raises(errors.UnbalancedPosting) as raised:
        book.decide(spec)
    assert "JPY" in raised.value.detail and "USD" in raised.value.detail


def test_entry_currency_must_be_the_accounts(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    named = PostingSpec(
        entries=(entry(cash, "debit", "1.00", "USD"), entry(equity, "credit", "1.00", "USD"))
    )
    assert book.decide(named)[0][0].currency == "USD"
    mismatched = PostingSpec(
        entries=(entry(cash, "debit", "1.00", "EUR"), entry(equity, "credit", "1.00"))
    )
    with pytest.raises(errors.CurrencyMismatch):
        book.decide(mismatched)
    unknown = PostingSpec(  # a code nobody knows: that is what is wrong, not the mismatch
        entries=(entry(cash, "debit", "1.00", "ZZZ"), entry(equity, "credit", "1.00", "ZZZ"))
    )
    with pytest.raises(errors.UnknownCurrency):
        book.decide(unknown)


def test_amount_is_parsed_with_the_accounts_exponent(book: Book) -> None:
    btc, btc_equity = book.open("asset", "BTC"), book.open("equity", "BTC")
    entries, _ = book.decide(transfer(btc, btc_equity, "0.00000001"))
    assert entries[0].amount_minor == 1
    jpy, jpy_equity = book.open("asset", "JPY"), book.open("equity", "JPY")
    with pytest.raises(errors.InvalidAmount):
        book.decide(transfer(jpy, jpy_equity, "1.5"))


def test_unknown_account_and_bad_direction(book: Book) -> None:
    cash = book.open("asset")
    with pytest.raises(errors.AccountNotFound) as raised:
        book.decide(transfer(cash, uuid4(), "1.00"))
    assert not raised.value.stored
    bad = PostingSpec(entries=(entry(cash, "sideways", "1.00"), entry(cash, "credit", "1.00")))
    with pytest.raises(errors.InvalidRequest):
        book.decide(bad)


@pytest.mark.parametrize(
    ("field", "limit"),
    [("description", MAX_DESCRIPTION_LENGTH), ("merchant", MAX_MERCHANT_LENGTH)],
)
def test_text_fields_at_and_past_their_limit(book: Book, field: str, limit: int) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    book.decide(transfer(cash, equity, "1.00", **{field: "x" * limit}))
    with pytest.raises(errors.InvalidRequest):
        book.decide(transfer(cash, equity, "1.00", **{field: "x" * (limit + 1)}))
    book.decide(transfer(cash, equity, "1.00", **{field: "tab\tand\nnewline"}))
    with pytest.raises(errors.InvalidRequest, match="U\\+0000"):
        book.decide(transfer(cash, equity, "1.00", **{field: "a\x00b"}))


def test_expires_at_rules(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    later = NOW + timedelta(days=1)
    book.decide(transfer(cash, equity, "1.00", pending=True, expires_at=later))
    refused = [
        {"pending": False, "expires_at": later},  # only holds expire
        {"pending": True, "expires_at": later.replace(tzinfo=None)},  # a zone is required
        {"pending": True, "expires_at": NOW},  # not in the past (or now)
        {"pending": True, "expires_at": NOW - timedelta(seconds=1)},
    ]
    for fields in refused:
        with pytest.raises(errors.InvalidRequest):
            book.decide(transfer(cash, equity, "1.00", **fields))


def test_effective_date_must_be_a_date(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    book.decide(transfer(cash, equity, "1.00", effective_date=date(2026, 1, 31)))
    with pytest.raises(errors.InvalidRequest):
        book.decide(transfer(cash, equity, "1.00", effective_date="2026-01-31"))


# Metadata ----------------------------------------------------------------------------------------


def metadata_of_bytes(total: int) -> dict[str, str]:
    """A metadata map whose keys and values add up to exactly `total` UTF-8 bytes."""
    metadata: dict[str, str] = {}
    index = 0
    while total > 0:
        key = f"k{index:02d}"
        value_length = min(MAX_METADATA_VALUE_LENGTH, total - len(key))
        metadata[key] = "v" * value_length
        total -= len(key) + value_length
        index += 1
    return metadata


def test_metadata_key_count_at_and_past_the_limit() -> None:
    at_edge = {f"k{i}": "v" for i in range(MAX_METADATA_KEYS)}
    assert rules.check_metadata(at_edge) == at_edge
    with pytest.raises(errors.InvalidRequest):
        rules.check_metadata({**at_edge, "one-more": "v"})


def test_metadata_key_and_value_lengths_at_and_past_the_limit() -> None:
    rules.check_metadata({"k" * MAX_METADATA_KEY_LENGTH: "v" * MAX_METADATA_VALUE_LENGTH})
    for bad in (
        {"k" * (MAX_METADATA_KEY_LENGTH + 1): "v"},
        {"k": "v" * (MAX_METADATA_VALUE_LENGTH + 1)},
        {"": "v"},
        {"k": 1},
        {1: "v"},
    ):
        with pytest.raises(errors.InvalidRequest):
            rules.check_metadata(bad)
    with pytest.raises(errors.InvalidRequest):
        rules.check_metadata(["not", "a", "map"])
    assert rules.check_metadata(None) == {}


def test_metadata_total_bytes_at_and_past_the_limit() -> None:
    at_edge = metadata_of_bytes(MAX_METADATA_BYTES)
    assert len(at_edge) <= MAX_METADATA_KEYS
    assert sum(len(k.encode()) + len(v.encode()) for k, v in at_edge.items()) == MAX_METADATA_BYTES
    rules.check_metadata(at_edge)
    with pytest.raises(errors.InvalidRequest):
        rules.check_metadata(metadata_of_bytes(MAX_METADATA_BYTES + 1))


def test_metadata_bytes_count_utf8_not_characters() -> None:
    # Nine values of 1000 two-byte characters: within every per-value character limit, but
    # 18,000+ bytes in all.
    wide = {f"k{i}": "é" * MAX_METADATA_VALUE_LENGTH for i in range(9)}
    with pytest.raises(errors.InvalidRequest):
        rules.check_metadata(wide)


def test_posting_metadata_is_checked(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    book.decide(transfer(cash, equity, "1.00", metadata=metadata_of_bytes(MAX_METADATA_BYTES)))
    with pytest.raises(errors.InvalidRequest):
        book.decide(
            transfer(cash, equity, "1.00", metadata=metadata_of_bytes(MAX_METADATA_BYTES + 1))
        )


# Account status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_type", "error_type"),
    [(ev.AccountFrozen, errors.AccountFrozen), (ev.AccountClosed, errors.AccountClosed)],
)
def test_frozen_or_closed_account_declines_with_its_entries(
    book: Book, event_type: type[ev.AccountFrozen | ev.AccountClosed], error_type: type
) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    book.apply(event_type(account_id=equity, recorded_at=NOW))
    with pytest.raises(rules.Decline) as raised:
        book.decide(transfer(cash, equity, "1.00"))
    assert isinstance(raised.value.error, error_type)
    assert [e.amount_minor for e in raised.value.entries] == [100, 100]


def test_unfrozen_account_takes_postings_again(book: Book) -> None:
    cash, equity = book.open("asset"), book.open("equity")
    book.apply(ev.AccountFrozen(account_id=cash, recorded_at=NOW))
    book.apply(ev.AccountUnfrozen(account_id=cash, recorded_at=NOW))
    book.decide(transfer(cash, equity, "1.00"))


# Overdraft limits (invariant 3) ----------------------------------------------------------------


def test_limit_at_and_one_past_the_edge(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=100), book.open("equity")
    book.decide(transfer(equity, checking, "1.00"))  # available 0 - 100 = -limit: allowed
    with pytest.raises(rules.Decline) as raised:
        book.decide(transfer(equity, checking, "1.01"))
    assert isinstance(raised.value.error, errors.InsufficientFunds)


def test_zero_limit_forbids_any_overdraft(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=0), book.open("equity")
    book.post(checking, equity, 500)
    book.decide(transfer(equity, checking, "5.00"))
    with pytest.raises(rules.Decline):
        book.decide(transfer(equity, checking, "5.01"))


def test_no_limit_means_no_limit(book: Book) -> None:
    checking, equity = book.open("asset"), book.open("equity")
    _, deltas = book.decide(transfer(equity, checking, "1000000.00"))
    assert deltas[checking][0] == -100_000_000


def test_open_holds_against_the_normal_direction_count(book: Book) -> None:
    """Asset account (normal debit): a pending credit reduces available."""
    checking, merchant = book.open("asset", limit_minor=0), book.open("liability")
    book.post(checking, merchant, 1000)
    book.post(merchant, checking, 600, pending=True)  # a hold crediting checking 6.00
    assert book.state.accounts[checking].available == 400
    book.decide(transfer(merchant, checking, "4.00"))
    with pytest.raises(rules.Decline):
        book.decide(transfer(merchant, checking, "4.01"))


def test_pending_debits_count_on_a_credit_normal_account(book: Book) -> None:
    """Liability account (normal credit), for example a prepaid balance owed to a customer."""
    wallet, bank = book.open("liability", limit_minor=0), book.open("asset")
    book.post(bank, wallet, 1000)  # the wallet holds 10.00
    book.post(wallet, bank, 700, pending=True)  # a hold debiting the wallet 7.00
    account = book.state.accounts[wallet]
    assert (account.posted, account.pending_debits, account.available) == (1000, 700, 300)
    book.decide(transfer(wallet, bank, "3.00"))
    with pytest.raises(rules.Decline):
        book.decide(transfer(wallet, bank, "3.01"))
    with pytest.raises(rules.Decline):  # a new hold counts the same way
        book.decide(transfer(wallet, bank, "3.01", pending=True))


def test_holds_in_the_normal_direction_count_only_once_posted(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=0), book.open("equity")
    book.post(checking, equity, 1000, pending=True)  # money on its way in, not yet there
    assert book.state.accounts[checking].available == 0
    with pytest.raises(rules.Decline):
        book.decide(transfer(equity, checking, "0.01"))


def test_posting_that_raises_available_is_never_refused(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=10_000), book.open("equity")
    book.post(equity, checking, 10_000)  # at the limit: available -100.00
    # The bank tightens the limit below where the account stands (an event, as after a review).
    book.apply(ev.AccountUpdated(account_id=checking, overdraft_limit_minor=0, recorded_at=NOW))
    assert book.state.accounts[checking].available == -10_000
    # A deposit that leaves it still below minus the limit is accepted...
    book.decide(transfer(checking, equity, "1.00"))
    # ...and so is a posting whose net effect on the account raises it.
    net_up = PostingSpec(
        entries=(
            entry(checking, "debit", "5.00"),
            entry(checking, "credit", "2.00"),
            entry(equity, "credit", "3.00"),
        )
    )
    book.decide(net_up)
    with pytest.raises(rules.Decline):
        book.decide(transfer(equity, checking, "0.01"))


def test_earlier_postings_of_a_batch_count(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=0), book.open("equity")
    book.post(checking, equity, 1000)
    _, first = book.decide(transfer(equity, checking, "6.00"))
    with pytest.raises(rules.Decline):
        book.decide(transfer(equity, checking, "6.00"), earlier=first)
    earlier: rules.Deltas = {}
    rules.merge_deltas(earlier, first)
    _, second = book.decide(transfer(equity, checking, "4.00"), earlier=earlier)
    rules.merge_deltas(earlier, second)
    assert earlier[checking] == [-1000, 0, 0]


def test_balance_maximum_at_and_past_the_edge(book: Book) -> None:
    tokens, source = book.open("asset", "JPY"), book.open("equity", "JPY")
    book.post(tokens, source, MAX_BALANCE_MINOR - 1)
    book.decide(transfer(tokens, source, "1"))
    with pytest.raises(errors.InvalidAmount):
        book.decide(transfer(tokens, source, "2"))


# Captures and reversals --------------------------------------------------------------------------


def hold_event(book: Book, legs: list[tuple[UUID, str, int]]) -> ev.PostingRecorded:
    posting_id = uuid4()
    event = ev.PostingRecorded(
        posting_id=posting_id,
        entries=tuple(ev.EntryRecorded(a, d, m, "USD") for a, d, m in legs),  # type: ignore[arg-type]
        effective_date=NOW.date(),
        pending=True,
        recorded_at=NOW,
    )
    book.apply(event)
    return event


def test_capture_full_partial_and_too_much(book: Book) -> None:
    card, merchant = book.open("liability"), book.open("liability")
    hold = hold_event(book, [(card, "credit", 5000), (merchant, "debit", 5000)])
    assert rules.decide_capture(CURRENCIES, hold, None) == hold.entries
    partial = rules.decide_capture(CURRENCIES, hold, "30.00")
    assert [(e.account_id, e.direction, e.amount_minor) for e in partial] == [
        (card, "credit", 3000),
        (merchant, "debit", 3000),
    ]
    assert rules.decide_capture(CURRENCIES, hold, "50.00") == hold.entries
    with pytest.raises(errors.ExceedsPendingAmount):
        rules.decide_capture(CURRENCIES, hold, "50.01")
    with pytest.raises(errors.InvalidAmount):
        rules.decide_capture(CURRENCIES, hold, "0.001")


def test_partial_capture_of_a_three_entry_hold_is_refused(book: Book) -> None:
    card, merchant, fees = book.open("liability"), book.open("liability"), book.open("income")
    hold = hold_event(
        book, [(card, "credit", 5000), (merchant, "debit", 4900), (fees, "debit", 100)]
    )
    assert rules.decide_capture(CURRENCIES, hold, None) == hold.entries
    with pytest.raises(errors.InvalidRequest):
        rules.decide_capture(CURRENCIES, hold, "10.00")


def test_reversal_mirrors_the_entries(book: Book) -> None:
    checking, equity = book.open("asset"), book.open("equity")
    entries, _ = book.decide(transfer(checking, equity, "7.00"))
    reversal, deltas = rules.decide_reversal(book.state, entries)
    assert [(e.account_id, e.direction, e.amount_minor) for e in reversal] == [
        (checking, "credit", 700),
        (equity, "debit", 700),
    ]
    assert rules.mirrored(reversal) == entries
    assert deltas[checking][0] == -700


def test_reversal_declines_when_it_would_overdraw(book: Book) -> None:
    checking, equity = book.open("asset", limit_minor=0), book.open("equity")
    book.post(checking, equity, 700)
    entries = (
        ev.EntryRecorded(checking, "debit", 700, "USD"),
        ev.EntryRecorded(equity, "credit", 700, "USD"),
    )
    book.post(equity, checking, 500)  # most of the money left again
    with pytest.raises(rules.Decline) as raised:
        rules.decide_reversal(book.state, entries)
    assert isinstance(raised.value.error, errors.InsufficientFunds)
    assert raised.value.entries == rules.mirrored(entries)
