"""The Ledger's contract on every backend (`database_url`: SQLite and PostgreSQL).

Each command's success and refusal codes through `Ledger.open(url)`; declined postings recorded
and replayed; the idempotency rules of DESIGN.md (same key and content: the same answer forever,
refusals included; same key with other content: `idempotency-key-reused`; not-found refusals not
stored); holds and their expiry with an injected clock; reversals; batches; assets; and a space
reloaded from the store (also from a snapshot, and with postings and keys no longer in memory)
equal to the live one.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from ledger_core import Ledger, errors, rules
from ledger_core import commands as cmd
from ledger_core import events as ev
from ledger_core.codec import decode_event
from ledger_core.limits import MAX_POSTINGS_PER_BATCH
from ledger_core.records import AccountRecord, Balances, CommandResult, PostingRecord
from ledger_core.state import state_fingerprint

START = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


class ManualClock:
    """A clock the test moves by hand (holds expire when it says so)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Book:
    """One space of a ledger, with short ways to send commands and read balances."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        opened = ledger.execute(
            cmd.OpenSpace(idempotency_key=f"space-{uuid4()}", name="Book", base_currency="USD")
        )
        self.space_id = opened.outcome.id  # type: ignore[union-attr]

    def run(self, command_type: type[cmd.Command], **fields: Any) -> CommandResult:
        return self.ledger.execute(self.command(command_type, **fields))

    def command(self, command_type: type[cmd.Command], **fields: Any) -> cmd.Command:
        fields.setdefault("idempotency_key", uuid4().hex)
        if command_type.scope == "space":
            fields.setdefault("space_id", self.space_id)
        return command_type(**fields)

    def refused(self, code: str, command: cmd.Command) -> errors.LedgerError:
        with pytest.raises(errors.LedgerError) as raised:
            self.ledger.execute(command)
        assert raised.value.code == code, raised.value
        return raised.value

    def open(self, type: str = "asset", currency: str = "USD", **fields: Any) -> UUID:
        fields.setdefault("name", f"{type} {currency}")
        result = self.run(cmd.OpenAccount, type=type, currency=currency, **fields)
        assert isinstance(result.outcome, AccountRecord)
        return result.outcome.id

    def posting(
        self, debit: UUID, credit: UUID, amount: str, key: str | None = None, **spec: Any
    ) -> cmd.RecordPosting:
        entries = (
            cmd.EntrySpec(account_id=debit, direction="debit", amount=amount),
            cmd.EntrySpec(account_id=credit, direction="credit", amount=amount),
        )
        command = self.command(
            cmd.RecordPosting,
            posting=cmd.PostingSpec(entries=entries, **spec),
            idempotency_key=key or uuid4().hex,
        )
        assert isinstance(command, cmd.RecordPosting)
        return command

    def post(self, debit: UUID, credit: UUID, amount: str, **spec: Any) -> PostingRecord:
        result = self.ledger.execute(self.posting(debit, credit, amount, **spec))
        assert isinstance(result.outcome, PostingRecord)
        return result.outcome

    def balances(self, account_id: UUID) -> Balances:
        return self.ledger.account(self.space_id, account_id).balances

    def posted(self, account_id: UUID) -> int:
        return self.balances(account_id).posted

    def fingerprint(self) -> Any:
        return self.ledger.inspect(self.space_id, state_fingerprint)

    def reloaded(self) -> Any:
        state = self.ledger.load_space(self.space_id)
        assert state is not None
        return state_fingerprint(state)

    def events(self, event_type: type[ev.Event]) -> list[Any]:
        found = []
        for notification in self.ledger.store.notifications(after=0, limit=100_000):
            if UUID(str(notification.originator_id)) != self.space_id:
                continue
            event = decode_event(notification.topic, notification.state)
            if isinstance(event, event_type):
                found.append(event)
        return found


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def ledger(database_url: str, clock: ManualClock) -> Iterator[Ledger]:
    with Ledger.open(database_url, clock=clock) as opened:
        yield opened


@pytest.fixture
def book(ledger: Ledger) -> Book:
    return Book(ledger)


# Spaces and accounts -----------------------------------------------------------------------------


def test_open_space_and_its_refusals(ledger: Ledger) -> None:
    command = cmd.OpenSpace(idempotency_key="home", name="Home", base_currency="JPY")
    first = ledger.execute(command)
    again = ledger.execute(command)
    assert first.position is not None and not first.replayed
    assert (again.outcome, again.position, again.replayed) == (first.outcome, first.position, True)
    with pytest.raises(errors.IdempotencyKeyReused):
        ledger.execute(msgspec.structs.replace(command, name="Other"))
    with pytest.raises(errors.InvalidRequest):
        ledger.execute(cmd.OpenSpace(idempotency_key="blank", name=" ", base_currency="USD"))
    with pytest.raises(errors.UnknownCurrency):
        ledger.execute(cmd.OpenSpace(idempotency_key="zzz", name="Z", base_currency="ZZZ"))
    with pytest.raises(errors.SpaceNotFound):
        ledger.execute(
            cmd.OpenAccount(
                idempotency_key="a", space_id=uuid4(), name="A", type="asset", currency="USD"
            )
        )


def test_open_account_answers_the_account(book: Book) -> None:
    result = book.run(
        cmd.OpenAccount,
        name="Visa",
        type="liability",
        subtype="credit",
        currency="USD",
        code="2100",
        overdraft_limit="0",
        metadata={"issuer": "bank"},
    )
    account = result.outcome
    assert isinstance(account, AccountRecord)
    assert (account.normal_balance, account.status, account.code) == ("credit", "active", "2100")
    assert account.overdraft_limit_minor == 0
    assert account.balances == Balances()
    assert book.ledger.account(book.space_id, account.id) == account
    duplicate = book.command(
        cmd.OpenAccount, name="Other", type="asset", currency="USD", code="2100"
    )
    book.refused("account-code-taken", duplicate)
    book.refused(
        "unknown-currency", book.command(cmd.OpenAccount, name="X", type="asset", currency="ZZZ")
    )
    book.refused(
        "invalid-request", book.command(cmd.OpenAccount, name="X", type="bank", currency="USD")
    )
    book.refused(
        "invalid-amount",
        book.command(
            cmd.OpenAccount, name="X", type="asset", currency="JPY", overdraft_limit="1.5"
        ),
    )


def test_update_account(book: Book) -> None:
    checking, equity = book.open(overdraft_limit="100.00"), book.open("equity")
    renamed = book.run(cmd.UpdateAccount, account_id=checking, name="Main").outcome
    assert isinstance(renamed, AccountRecord)
    assert (renamed.name, renamed.overdraft_limit_minor) == ("Main", 10_000)
    book.post(equity, checking, "60.00")
    book.refused(
        "limit-below-available",
        book.command(cmd.UpdateAccount, account_id=checking, overdraft_limit="59.99"),
    )
    changed = book.run(
        cmd.UpdateAccount, account_id=checking, overdraft_limit="60.00", metadata={"k": "v"}
    ).outcome
    assert isinstance(changed, AccountRecord)
    assert (changed.overdraft_limit_minor, changed.metadata, changed.name) == (
        6000,
        {"k": "v"},
        "Main",
    )
    removed = book.run(cmd.UpdateAccount, account_id=checking, overdraft_limit=None).outcome
    assert isinstance(removed, AccountRecord) and removed.overdraft_limit_minor is None
    book.refused("account-not-found", book.command(cmd.UpdateAccount, account_id=uuid4(), name="X"))


def test_update_that_changes_nothing_records_no_event(book: Book) -> None:
    checking = book.open()
    before = book.fingerprint()
    result = book.run(cmd.UpdateAccount, account_id=checking)
    assert result.position is None
    assert book.fingerprint() == before


def test_freeze_unfreeze_and_close(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    book.run(cmd.FreezeAccount, account_id=checking, reason="fraud check")
    assert book.ledger.account(book.space_id, checking).status == "frozen"
    declined = book.refused("account-frozen", book.posting(equity, checking, "1.00"))
    assert declined.posting_id is not None
    book.run(cmd.UnfreezeAccount, account_id=checking)
    book.post(equity, checking, "1.00")
    book.refused("account-not-empty", book.command(cmd.CloseAccount, account_id=checking))
    book.post(checking, equity, "1.00")
    closed = book.run(cmd.CloseAccount, account_id=checking).outcome
    assert isinstance(closed, AccountRecord) and closed.status == "closed"
    book.refused("account-closed", book.posting(equity, checking, "1.00"))
    book.refused("account-closed", book.command(cmd.UnfreezeAccount, account_id=checking))
    book.refused("account-closed", book.command(cmd.FreezeAccount, account_id=checking))
    book.refused("account-closed", book.command(cmd.CloseAccount, account_id=checking))
    book.refused("account-not-found", book.command(cmd.FreezeAccount, account_id=uuid4()))


# Postings and idempotency ------------------------------------------------------------------------


def test_posting_moves_balances_in_their_normal_direction(book: Book) -> None:
    checking, salary = book.open("asset"), book.open("income")
    posting = book.post(checking, salary, "2500.00", description="Salary", merchant="Employer")
    assert (posting.status, posting.description, posting.merchant) == (
        "posted",
        "Salary",
        "Employer",
    )
    assert posting.effective_date == START.date()
    assert book.posted(checking) == 250_000
    assert book.posted(salary) == 250_000  # income grows on its credit side
    book.post(salary, checking, "2500.00")
    assert (book.posted(checking), book.posted(salary)) == (0, 0)


@pytest.mark.parametrize(
    ("code", "make"),
    [
        ("insufficient-funds", lambda b, a, e: None),
        ("account-frozen", lambda b, a, e: b.run(cmd.FreezeAccount, account_id=a)),
        ("account-closed", lambda b, a, e: b.run(cmd.CloseAccount, account_id=a)),
    ],
)
def test_declined_posting_is_recorded_and_replayed(book: Book, code: str, make: Any) -> None:
    checking, equity = book.open(overdraft_limit="0"), book.open("equity")
    make(book, checking, equity)
    command = book.posting(equity, checking, "5.00", key="pay-rent")
    before = book.fingerprint()
    first = book.refused(code, command)
    assert first.posting_id == rules.command_id(book.space_id, "pay-rent")
    assert first.position is not None and not first.replayed
    assert first.extra == {"posting_id": str(first.posting_id)}
    again = book.refused(code, command)
    assert (again.replayed, again.position, again.posting_id) == (
        True,
        first.position,
        first.posting_id,
    )
    # Declined: every balance unchanged, but the attempt is in the log with its reason.
    after = book.fingerprint()
    assert after[0] == before[0] + 1 and after[1:] == before[1:]
    declined = book.events(ev.PostingDeclined)
    assert [(d.posting_id, d.reason) for d in declined] == [(first.posting_id, code)]
    assert [e.amount_minor for e in declined[0].entries] == [500, 500]
    book.refused("idempotency-key-reused", book.posting(equity, checking, "5.01", key="pay-rent"))


def test_same_key_same_body_answers_the_same_posting(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    command = book.posting(checking, equity, "5.00", key="k1")
    first = book.ledger.execute(command)
    retry = book.ledger.execute(msgspec.structs.replace(command, context=None))
    assert (retry.outcome, retry.position, retry.replayed) == (first.outcome, first.position, True)
    assert book.posted(checking) == 500
    assert len(book.events(ev.PostingRecorded)) == 1


def test_same_key_other_body_is_reused(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    book.ledger.execute(book.posting(equity, checking, "5.00", key="k1"))
    before = book.fingerprint()
    book.refused("idempotency-key-reused", book.posting(equity, checking, "6.00", key="k1"))
    book.refused("idempotency-key-reused", book.posting(checking, equity, "5.00", key="k1"))
    book.refused(
        "idempotency-key-reused",
        book.command(cmd.FreezeAccount, account_id=checking, idempotency_key="k1"),
    )
    assert book.fingerprint() == before


def test_refusals_are_stored_with_their_key(book: Book) -> None:
    """A 422/409 refusal is the answer forever, even once the state would allow the command."""
    checking, equity = book.open(), book.open("equity")
    book.post(equity, checking, "1.00")
    close = book.command(cmd.CloseAccount, account_id=checking, idempotency_key="close-1")
    book.refused("account-not-empty", close)
    book.post(checking, equity, "1.00")  # now empty
    again = book.refused("account-not-empty", close)
    assert again.replayed
    book.run(cmd.CloseAccount, account_id=checking, idempotency_key="close-2")
    unbalanced = cmd.RecordPosting(
        idempotency_key="bad",
        space_id=book.space_id,
        posting=cmd.PostingSpec(
            entries=(
                cmd.EntrySpec(account_id=equity, direction="debit", amount="1.00"),
                cmd.EntrySpec(account_id=equity, direction="credit", amount="2.00"),
            )
        ),
    )
    book.refused("unbalanced-posting", unbalanced)
    assert book.refused("unbalanced-posting", unbalanced).replayed


def test_not_found_refusals_are_not_stored(book: Book) -> None:
    """The client may fix a 404 and retry with the same key: here, by opening the account."""
    equity = book.open("equity")
    future_account = rules.command_id(book.space_id, "open-savings")
    command = book.posting(future_account, equity, "5.00", key="fund-savings")
    book.refused("account-not-found", command)
    book.run(
        cmd.OpenAccount,
        name="Savings",
        type="asset",
        currency="USD",
        idempotency_key="open-savings",
    )
    result = book.ledger.execute(command)
    assert not result.replayed
    assert book.posted(future_account) == 500


async def test_submit_from_asyncio(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    result = await book.ledger.submit(book.posting(equity, checking, "3.00", key="async"))
    again = await book.ledger.submit(book.posting(equity, checking, "3.00", key="async"))
    assert again.replayed and again.outcome == result.outcome
    with pytest.raises(errors.IdempotencyKeyReused):
        await book.ledger.submit(book.posting(equity, checking, "3.01", key="async"))


def test_posting_refusal_codes(book: Book) -> None:
    usd, jpy, equity = book.open(), book.open(currency="JPY"), book.open("equity")

    def spec(*legs: tuple[UUID, str, str, str | None]) -> cmd.Command:
        entries = tuple(
            cmd.EntrySpec(account_id=a, direction=d, amount=m, currency=c)  # type: ignore[arg-type]
            for a, d, m, c in legs
        )
        return book.command(cmd.RecordPosting, posting=cmd.PostingSpec(entries=entries))

    book.refused("too-few-entries", spec((usd, "debit", "1.00", None)))
    book.refused(
        "unbalanced-posting", spec((usd, "debit", "1.00", None), (jpy, "credit", "100", None))
    )
    book.refused(
        "currency-mismatch", spec((usd, "debit", "1.00", "JPY"), (equity, "credit", "1.00", None))
    )
    book.refused(
        "invalid-amount", spec((usd, "debit", "1.001", None), (equity, "credit", "1.001", None))
    )
    book.refused("invalid-amount", spec((usd, "debit", "0", None), (equity, "credit", "0", None)))
    book.refused(
        "account-not-found", spec((usd, "debit", "1.00", None), (uuid4(), "credit", "1.00", None))
    )


# Holds -------------------------------------------------------------------------------------------


def test_hold_counts_against_available_and_posts_fully(book: Book) -> None:
    checking, shop = book.open(overdraft_limit="0"), book.open("income")
    book.post(checking, shop, "100.00")
    hold = book.post(shop, checking, "30.00", pending=True)
    assert hold.status == "pending"
    assert book.balances(checking) == Balances(
        posted=10_000, pending_debits=0, pending_credits=3000, available=7000
    )
    book.refused("insufficient-funds", book.posting(shop, checking, "70.01"))
    posted = book.run(cmd.PostPending, posting_id=hold.id).outcome
    assert isinstance(posted, PostingRecord) and posted.status == "posted"
    assert book.balances(checking) == Balances(posted=7000, available=7000)
    book.refused("posting-not-pending", book.command(cmd.PostPending, posting_id=hold.id))
    book.refused("posting-not-pending", book.command(cmd.VoidPending, posting_id=hold.id))


def test_partial_capture_releases_the_rest(book: Book) -> None:
    card, merchant = book.open("liability"), book.open("liability")
    hold = book.post(merchant, card, "50.00", pending=True)
    assert book.balances(card).pending_credits == 5000
    book.refused(
        "exceeds-pending-amount", book.command(cmd.PostPending, posting_id=hold.id, amount="50.01")
    )
    captured = book.run(cmd.PostPending, posting_id=hold.id, amount="30.00").outcome
    assert isinstance(captured, PostingRecord)
    assert [e.amount_minor for e in captured.entries] == [3000, 3000]
    assert book.balances(card) == Balances(posted=3000, available=3000)
    assert book.posted(merchant) == -3000


def test_partial_capture_of_a_three_entry_hold_is_refused(book: Book) -> None:
    card, merchant, fees = book.open("liability"), book.open("liability"), book.open("income")
    entries = (
        cmd.EntrySpec(account_id=card, direction="credit", amount="50.00"),
        cmd.EntrySpec(account_id=merchant, direction="debit", amount="49.00"),
        cmd.EntrySpec(account_id=fees, direction="debit", amount="1.00"),
    )
    hold = book.run(
        cmd.RecordPosting, posting=cmd.PostingSpec(entries=entries, pending=True)
    ).outcome
    assert isinstance(hold, PostingRecord)
    book.refused(
        "invalid-request", book.command(cmd.PostPending, posting_id=hold.id, amount="10.00")
    )
    book.run(cmd.PostPending, posting_id=hold.id)
    assert book.posted(card) == 5000


def test_void_releases_the_hold(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    hold = book.post(equity, checking, "20.00", pending=True)
    voided = book.run(cmd.VoidPending, posting_id=hold.id, reason="cancelled").outcome
    assert isinstance(voided, PostingRecord) and voided.status == "voided"
    assert book.balances(checking) == Balances()
    book.refused("posting-not-pending", book.command(cmd.VoidPending, posting_id=hold.id))
    book.refused("posting-not-pending", book.command(cmd.PostPending, posting_id=hold.id))
    book.refused("posting-not-found", book.command(cmd.VoidPending, posting_id=uuid4()))
    book.refused("posting-not-found", book.command(cmd.PostPending, posting_id=uuid4()))


def test_hold_expires_by_the_clock(book: Book, clock: ManualClock) -> None:
    checking, equity = book.open(), book.open("equity")
    expires_at = START + timedelta(hours=1)
    hold = book.post(equity, checking, "20.00", pending=True, expires_at=expires_at)
    late = book.post(
        equity, checking, "5.00", pending=True, expires_at=expires_at + timedelta(hours=1)
    )
    clock.advance(minutes=59)
    assert book.ledger.expire_due_holds() == 0
    assert book.balances(checking).pending_credits == 2500
    clock.advance(minutes=1)
    assert book.ledger.expire_due_holds() == 1
    assert book.balances(checking).pending_credits == 500
    expired = book.events(ev.PendingPostingExpired)
    assert [(e.posting_id, e.expires_at) for e in expired] == [(hold.id, expires_at)]
    book.refused("pending-expired", book.command(cmd.PostPending, posting_id=hold.id))
    book.refused("posting-not-pending", book.command(cmd.VoidPending, posting_id=hold.id))
    # Without an explicit sweep: the writer expires due holds before deciding a command.
    clock.advance(hours=1)
    book.refused("pending-expired", book.command(cmd.PostPending, posting_id=late.id))
    assert book.balances(checking) == Balances()
    assert book.reloaded() == book.fingerprint()


# Reversals ---------------------------------------------------------------------------------------


def test_reversal_mirrors_and_links_both_ways(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    original = book.post(equity, checking, "12.00")
    result = book.run(cmd.ReversePosting, posting_id=original.id, description="refund")
    reversal = result.outcome
    assert isinstance(reversal, PostingRecord)
    assert reversal.reverses == original.id and reversal.description == "refund"
    assert [(e.account_id, e.direction) for e in reversal.entries] == [
        (equity, "credit"),
        (checking, "debit"),
    ]
    assert (book.posted(checking), book.posted(equity)) == (0, 0)
    linked = book.ledger.inspect(
        book.space_id, lambda s: s.recent_postings[original.id].reversed_by
    )
    assert linked == reversal.id
    rows = book.ledger.store.command_rows(book.space_id, [original.id, reversal.id])
    assert rows[original.id].reversed_by == reversal.id
    assert rows[reversal.id].posting_status == "posted"
    book.refused(
        "posting-already-reversed", book.command(cmd.ReversePosting, posting_id=original.id)
    )
    book.refused("posting-not-found", book.command(cmd.ReversePosting, posting_id=uuid4()))


def test_only_posted_postings_are_reversed(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    hold = book.post(equity, checking, "12.00", pending=True)
    book.refused("posting-not-posted", book.command(cmd.ReversePosting, posting_id=hold.id))
    book.run(cmd.VoidPending, posting_id=hold.id)
    book.refused("posting-not-posted", book.command(cmd.ReversePosting, posting_id=hold.id))
    captured = book.post(equity, checking, "12.00", pending=True)
    book.run(cmd.PostPending, posting_id=captured.id, amount="4.00")
    reversal = book.run(cmd.ReversePosting, posting_id=captured.id).outcome
    assert isinstance(reversal, PostingRecord)
    assert [e.amount_minor for e in reversal.entries] == [400, 400]
    assert book.posted(checking) == 0


def test_reversal_that_would_overdraw_is_declined(book: Book) -> None:
    checking, equity = book.open(overdraft_limit="0"), book.open("equity")
    deposit = book.post(checking, equity, "10.00")
    book.post(equity, checking, "8.00")
    declined = book.refused(
        "insufficient-funds", book.command(cmd.ReversePosting, posting_id=deposit.id)
    )
    assert declined.posting_id is not None
    assert [d.reverses for d in book.events(ev.PostingDeclined)] == [deposit.id]


# Batches -----------------------------------------------------------------------------------------


def batch_of(book: Book, specs: list[cmd.PostingSpec], key: str | None = None) -> cmd.Command:
    return book.command(cmd.RecordBatch, postings=tuple(specs), idempotency_key=key or uuid4().hex)


def spec(debit: UUID, credit: UUID, amount: str) -> cmd.PostingSpec:
    return cmd.PostingSpec(
        entries=(
            cmd.EntrySpec(account_id=debit, direction="debit", amount=amount),
            cmd.EntrySpec(account_id=credit, direction="credit", amount=amount),
        )
    )


def test_batch_all_or_nothing(book: Book) -> None:
    checking, equity = book.open(overdraft_limit="0"), book.open("equity")
    before = book.fingerprint()
    failing = batch_of(
        book,
        [
            spec(checking, equity, "10.00"),
            spec(equity, checking, "10.01"),
            spec(checking, equity, "1.00"),
        ],
    )
    error = book.refused("batch-item-failed", failing)
    assert error.extra == {"index": 1, "item_code": "insufficient-funds"}
    assert book.fingerprint() == before
    assert book.events(ev.PostingDeclined) == []
    invalid = batch_of(book, [spec(checking, equity, "1.00"), spec(checking, equity, "1.001")])
    assert book.refused("batch-item-failed", invalid).extra == {
        "index": 1,
        "item_code": "invalid-amount",
    }
    result = book.ledger.execute(
        batch_of(book, [spec(checking, equity, "10.00"), spec(equity, checking, "10.00")])
    )
    postings = result.outcome.postings  # type: ignore[union-attr]
    assert [p.status for p in postings] == ["posted", "posted"]
    assert len({p.id for p in postings}) == 2
    assert book.balances(checking) == Balances()
    assert book.fingerprint()[0] == before[0] + 2


def test_batch_size_at_and_past_the_limit(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    one = spec(checking, equity, "0.01")
    result = book.ledger.execute(batch_of(book, [one] * MAX_POSTINGS_PER_BATCH))
    assert len(result.outcome.postings) == MAX_POSTINGS_PER_BATCH  # type: ignore[union-attr]
    assert book.posted(checking) == MAX_POSTINGS_PER_BATCH
    book.refused("batch-too-large", batch_of(book, [one] * (MAX_POSTINGS_PER_BATCH + 1)))
    book.refused("invalid-request", batch_of(book, []))
    assert book.posted(checking) == MAX_POSTINGS_PER_BATCH


def test_batch_retry_and_not_found_item(book: Book) -> None:
    checking, equity = book.open(), book.open("equity")
    command = batch_of(book, [spec(checking, equity, "1.00")], key="batch-1")
    first = book.ledger.execute(command)
    again = book.ledger.execute(command)
    assert again.replayed and again.outcome == first.outcome and again.position == first.position
    items = [spec(checking, equity, "1.00"), spec(checking, uuid4(), "1.00")]
    missing = book.refused("account-not-found", batch_of(book, items))
    assert missing.extra["index"] == 1  # which item names it


@pytest.mark.parametrize("sealed", [False, True], ids=["clear", "sealed"])
def test_a_posting_or_batch_answer_is_stored_as_its_events_and_replayed_exactly(
    database_url: str, clock: ManualClock, sealed: bool
) -> None:
    """A recorded posting's or batch's key stores where its postings are in the log
    (`PostingStored`, `BatchStored`), not a second copy of them; a retry after the key left
    memory, or after a restart, rebuilds the answer from the events: equal to the first answer,
    field for field (texts sealed at rest opened again, a hold still pending with its expiry).
    A batch stored whole by an earlier version is still answered from what it stored."""
    from ledger_core.codec import decode_outcome, encode_outcome
    from ledger_core.crypto import generate_key
    from ledger_core.records import BatchRecord, BatchStored, PostingStored
    from ledger_core.settings import LedgerSettings

    settings = LedgerSettings(encryption_key=generate_key() if sealed else None)
    with Ledger.open(database_url, settings=settings, clock=clock) as ledger:
        book = Book(ledger)
        checking, equity = book.open(), book.open("equity")
        held = cmd.PostingSpec(
            entries=spec(checking, equity, "2.50").entries,
            pending=True,
            expires_at=START + timedelta(days=3),
            description="card hold",
            merchant="Café Ünïcode",
            metadata={"card": "4242"},
        )
        plain = spec(equity, checking, "1.00")
        command = batch_of(book, [plain, held, plain], key="stored-batch")
        first = ledger.execute(command)
        assert [p.status for p in first.outcome.postings] == ["posted", "pending", "posted"]  # type: ignore[union-attr]
        row_id = rules.command_id(book.space_id, "stored-batch")
        [row] = ledger.store.command_rows(book.space_id, [row_id]).values()
        stored = decode_outcome(row.outcome, ledger.cipher)  # type: ignore[arg-type]
        versions = [e.originator_version for e in ledger.store.stream(book.space_id)]
        assert stored == BatchStored(first_version=versions[-3], count=3)
        assert len(row.outcome or b"") < 200  # not the postings again
        single = book.posting(
            checking,
            equity,
            "4.00",
            key="stored-posting",
            pending=True,
            expires_at=START + timedelta(days=1),
            description="hotel",
            metadata={"room": "12"},
        )
        first_single = ledger.execute(single)
        single_id = rules.command_id(book.space_id, "stored-posting")
        [single_row] = ledger.store.command_rows(book.space_id, [single_id]).values()
        assert decode_outcome(single_row.outcome, ledger.cipher) == PostingStored(  # type: ignore[arg-type]
            version=versions[-1] + 1
        )

        ledger.writer.call(lambda: ledger.writer.spaces.pop(book.space_id))  # keys forgotten
        again = ledger.execute(command)
        assert (again.outcome, again.position, again.replayed) == (
            first.outcome,
            first.position,
            True,
        )
        book.refused("idempotency-key-reused", batch_of(book, [plain], key="stored-batch"))
        single_again = ledger.execute(single)
        assert (single_again.outcome, single_again.position, single_again.replayed) == (
            first_single.outcome,
            first_single.position,
            True,
        )

        # An answer stored whole (before BatchStored) is answered as stored.
        older = ledger.execute(batch_of(book, [plain], key="stored-whole"))
        whole_id = rules.command_id(book.space_id, "stored-whole")
        whole = encode_outcome(older.outcome, ledger.cipher)
        assert isinstance(older.outcome, BatchRecord)
        with ledger.store.datastore.transaction(commit=True) as cursor:
            mark = ledger.store._mark
            cursor.execute(
                f"UPDATE ledger_commands SET outcome = {mark} WHERE id = {mark}",
                (whole, whole_id if database_url.startswith("postgres") else whole_id.hex),
            )
    with Ledger.open(database_url, settings=settings, clock=clock) as reopened:
        retried = reopened.execute(command)
        assert (retried.outcome, retried.position, retried.replayed) == (
            first.outcome,
            first.position,
            True,
        )
        whole_again = cmd.RecordBatch(
            space_id=book.space_id, postings=(plain,), idempotency_key="stored-whole"
        )
        kept = reopened.execute(whole_again)
        assert (kept.outcome, kept.replayed) == (older.outcome, True)
        assert reopened.execute(single).outcome == first_single.outcome


# Assets ------------------------------------------------------------------------------------------


def test_register_asset(book: Book) -> None:
    ledger = book.ledger
    register = cmd.RegisterAsset(idempotency_key="btc", code="BTC", exponent=8, name="Bitcoin")
    first = ledger.execute(register)
    assert (first.outcome.code, first.outcome.exponent) == ("BTC", 8)  # type: ignore[union-attr]
    assert ledger.execute(register).replayed
    assert ledger.currencies.exponent("BTC") == 8
    same = ledger.execute(cmd.RegisterAsset(idempotency_key="btc-again", code="BTC", exponent=8))
    assert same.position is None and same.outcome.name == "Bitcoin"  # type: ignore[union-attr]
    with pytest.raises(errors.AssetExists):
        ledger.execute(cmd.RegisterAsset(idempotency_key="btc-2", code="BTC", exponent=2))
    with pytest.raises(errors.AssetExists):
        ledger.execute(cmd.RegisterAsset(idempotency_key="usd-3", code="USD", exponent=3))
    usd = ledger.execute(cmd.RegisterAsset(idempotency_key="usd-2", code="USD", exponent=2))
    assert usd.position is None
    with pytest.raises(errors.InvalidRequest):
        ledger.execute(cmd.RegisterAsset(idempotency_key="bad", code="btc", exponent=8))
    with pytest.raises(errors.InvalidRequest):
        ledger.execute(cmd.RegisterAsset(idempotency_key="wide", code="WIDE", exponent=19))
    assert [(a.code, a.exponent) for a in ledger.assets()] == [("BTC", 8)]
    wallet, source = book.open(currency="BTC"), book.open("equity", currency="BTC")
    book.post(wallet, source, "0.00000001")
    assert book.posted(wallet) == 1


def test_an_unrecordable_command_fails_alone_not_its_batch(book: Book) -> None:
    """An integer no event can hold (past 64 bits) is that command's invalid-request; the
    commands decided in the same batch are recorded as if it were not there."""
    checking, equity = book.open(), book.open("equity")
    writer = book.ledger.writer
    entered, hold_writer = threading.Event(), threading.Event()

    def hold() -> None:
        entered.set()
        hold_writer.wait(10)

    blocker = threading.Thread(target=writer.call, args=(hold,))
    blocker.start()
    assert entered.wait(10)  # the writer thread waits in hold() until all below is queued
    futures = [writer.submit(book.posting(equity, checking, "1.00", key=f"p{n}")) for n in range(5)]
    huge = cmd.RegisterAsset(idempotency_key="huge", code="HUGE", exponent=10**30)
    bad = writer.submit(huge)
    futures += [
        writer.submit(book.posting(equity, checking, "1.00", key=f"q{n}")) for n in range(5)
    ]
    hold_writer.set()
    blocker.join()
    with pytest.raises(errors.InvalidRequest, match="cannot be recorded"):
        bad.result(timeout=10)
    assert all(not future.result(timeout=10).replayed for future in futures)
    assert book.posted(checking) == -1000  # ten credits of 1.00 to an asset
    retried = cmd.RegisterAsset(idempotency_key="huge", code="HUGE", exponent=2)
    assert book.ledger.execute(retried).position is not None  # the key was not used up


# Reloading ---------------------------------------------------------------------------------------


def busy_history(book: Book, clock: ManualClock) -> dict[str, UUID]:
    checking = book.open(overdraft_limit="50.00", code="1000", metadata={"a": "b"})
    card, equity = book.open("liability"), book.open("equity")
    book.post(checking, equity, "100.00")
    hold = book.post(
        card, checking, "30.00", pending=True, expires_at=clock.now + timedelta(days=2)
    )
    book.post(card, checking, "5.00", pending=True)
    book.run(cmd.PostPending, posting_id=hold.id, amount="10.00")
    expiring = book.post(
        card, checking, "1.00", pending=True, expires_at=clock.now + timedelta(hours=1)
    )
    reversed_posting = book.post(checking, equity, "7.00")
    book.run(cmd.ReversePosting, posting_id=reversed_posting.id)
    book.run(cmd.FreezeAccount, account_id=card)
    book.refused("account-frozen", book.posting(card, checking, "1.00"))
    book.run(cmd.UnfreezeAccount, account_id=card)
    book.run(cmd.UpdateAccount, account_id=checking, name="Main", metadata={"c": "d"})
    clock.advance(hours=2)
    book.ledger.expire_due_holds()
    return {"checking": checking, "card": card, "equity": equity, "expiring": expiring.id}


def test_reloaded_space_equals_the_live_one(
    book: Book, clock: ManualClock, database_url: str
) -> None:
    busy_history(book, clock)
    live = book.fingerprint()
    assert book.reloaded() == live
    book.ledger.close()
    with Ledger.open(database_url, clock=clock) as reopened:
        assert reopened.inspect(book.space_id, state_fingerprint) == live


def _version(book: Book) -> int:
    version: int = book.ledger.inspect(book.space_id, lambda s: s.version)
    return version


@pytest.mark.parametrize("below", [True, False])
def test_a_load_that_replays_many_events_leaves_a_snapshot_behind(
    book: Book, monkeypatch: pytest.MonkeyPatch, below: bool
) -> None:
    import ledger_core.writer

    checking, equity = book.open(), book.open("equity")
    for _ in range(3):
        book.post(checking, equity, "1.00")
    replayed = _version(book)  # no snapshot yet: a load replays every event of the space
    limit = replayed + 1 if below else replayed
    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_AFTER_LOAD_EVENTS", limit)
    writer = book.ledger.writer
    writer.call(lambda: writer.spaces.pop(book.space_id))  # its next batch loads it
    book.post(checking, equity, "1.00")
    snapshot = book.ledger.store.latest_snapshot(book.space_id)
    if below:
        assert snapshot is None
    else:
        assert snapshot is not None and snapshot.originator_version == _version(book)
    assert book.reloaded() == book.fingerprint()


def test_after_a_key_conflict_the_next_batches_look_their_keys_up_first(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key older than the in-memory window makes its batch conflict once; the space's next
    batches look up their unknown keys before they are decided (no conflict, no reload of the
    space), until `KEY_CHECK_BATCHES_AFTER_CONFLICT` batches in a row bring no old key."""
    import ledger_core.state
    import ledger_core.writer
    from ledger_core.store import AppendConflict

    monkeypatch.setattr(ledger_core.state, "RECENT_KEYS_PER_SPACE", 2)
    monkeypatch.setattr(ledger_core.writer, "KEY_CHECK_BATCHES_AFTER_CONFLICT", 3)
    store = book.ledger.store
    counts = {"conflicts": 0, "lookups": 0, "loads": 0}
    append, command_rows, latest_snapshot = (
        store.append,
        store.command_rows,
        store.latest_snapshot,
    )

    def counted_append(batch: Any) -> Any:
        try:
            return append(batch)
        except AppendConflict:
            counts["conflicts"] += 1
            raise

    def counted_rows(scope_id: UUID, ids: Any) -> Any:
        counts["lookups"] += 1
        return command_rows(scope_id, ids)

    def counted_loads(stream_id: UUID) -> Any:
        counts["loads"] += 1
        return latest_snapshot(stream_id)

    monkeypatch.setattr(store, "append", counted_append)
    monkeypatch.setattr(store, "command_rows", counted_rows)
    monkeypatch.setattr(store, "latest_snapshot", counted_loads)
    checking, equity = book.open(), book.open("equity")
    first = {
        key: book.ledger.execute(book.posting(checking, equity, "2.00", key=key))
        for key in ("old-1", "old-2", "old-3")
    }
    for _ in range(3):
        book.post(checking, equity, "1.00")
    assert counts == {"conflicts": 0, "lookups": 0, "loads": 0}

    retry = book.ledger.execute(book.posting(checking, equity, "2.00", key="old-1"))
    assert (retry.outcome, retry.position, retry.replayed) == (
        first["old-1"].outcome,
        first["old-1"].position,
        True,
    )
    assert counts["conflicts"] == 1 and counts["loads"] == 1  # dropped and reloaded once

    # Armed: the next old keys are found before deciding, as a replay and as a reuse.
    retry = book.ledger.execute(book.posting(checking, equity, "2.00", key="old-2"))
    assert (retry.position, retry.replayed) == (first["old-2"].position, True)
    book.refused("idempotency-key-reused", book.posting(checking, equity, "2.50", key="old-3"))
    assert counts["conflicts"] == 1 and counts["loads"] == 1

    # Three batches without an old key (the limit) are still looked up; the next ones are not.
    lookups = counts["lookups"]
    for _ in range(3):
        book.post(checking, equity, "1.00")
    assert counts["lookups"] == lookups + 3
    for _ in range(2):
        book.post(checking, equity, "1.00")
    assert counts["lookups"] == lookups + 3
    assert counts["conflicts"] == 1 and counts["loads"] == 1
    assert book.posted(checking) == 3 * 200 + 8 * 100
    recorded = [e for e in book.events(ev.PostingRecorded) if e.idempotency_key.startswith("old")]
    assert len(recorded) == 3
    assert book.reloaded() == book.fingerprint()


def test_reload_from_a_snapshot(
    book: Book, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger_core.writer

    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_INTERVAL_EVENTS", 5)
    busy_history(book, clock)
    snapshot = book.ledger.store.latest_snapshot(book.space_id)
    assert snapshot is not None
    live = book.fingerprint()
    assert 5 <= snapshot.originator_version <= live[0]
    assert book.reloaded() == live
    # And a command on top of a snapshot-loaded state agrees with the live one.
    accounts = book.ledger.inspect(book.space_id, lambda s: sorted(s.accounts))
    book.post(accounts[0], accounts[1], "1.00")
    assert book.reloaded() == book.fingerprint()


def test_postings_out_of_memory_are_found_in_the_store(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger_core.state

    monkeypatch.setattr(ledger_core.state, "RECENT_POSTINGS_PER_SPACE", 2)
    checking, equity = book.open(), book.open("equity")
    old = book.post(checking, equity, "3.00")
    hold = book.post(equity, checking, "2.00", pending=True)
    book.run(cmd.VoidPending, posting_id=hold.id)
    for _ in range(4):
        book.post(checking, equity, "1.00")
    in_memory = book.ledger.inspect(book.space_id, lambda s: set(s.recent_postings))
    assert old.id not in in_memory and hold.id not in in_memory
    reversal = book.run(cmd.ReversePosting, posting_id=old.id).outcome
    assert isinstance(reversal, PostingRecord) and reversal.reverses == old.id
    assert [e.amount_minor for e in reversal.entries] == [300, 300]
    for _ in range(3):
        book.post(checking, equity, "1.00")
    book.refused("posting-already-reversed", book.command(cmd.ReversePosting, posting_id=old.id))
    book.refused("posting-not-pending", book.command(cmd.VoidPending, posting_id=hold.id))
    book.refused("posting-not-posted", book.command(cmd.ReversePosting, posting_id=hold.id))
    assert book.posted(checking) == 700
    assert book.reloaded() == book.fingerprint()


def test_keys_out_of_memory_still_answer_the_stored_result(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ledger_core.state

    monkeypatch.setattr(ledger_core.state, "RECENT_KEYS_PER_SPACE", 2)
    checking, equity = book.open(overdraft_limit="0"), book.open("equity")
    first = book.ledger.execute(book.posting(checking, equity, "3.00", key="old"))
    declined = book.refused(
        "insufficient-funds", book.posting(equity, checking, "9.00", key="declined")
    )
    for _ in range(4):
        book.post(checking, equity, "1.00")
    in_memory = book.ledger.inspect(book.space_id, lambda s: len(s.recent_keys))
    assert in_memory <= 2
    retry = book.ledger.execute(book.posting(checking, equity, "3.00", key="old"))
    assert (retry.outcome, retry.position, retry.replayed) == (first.outcome, first.position, True)
    again = book.refused(
        "insufficient-funds", book.posting(equity, checking, "9.00", key="declined")
    )
    assert (again.replayed, again.posting_id, again.position) == (
        True,
        declined.posting_id,
        declined.position,
    )
    book.refused("idempotency-key-reused", book.posting(checking, equity, "3.50", key="old"))
    # Regression: another body that would be a not-found once answered `account-not-found`.
    book.refused("idempotency-key-reused", book.posting(checking, uuid4(), "3.00", key="old"))
    book.refused(
        "idempotency-key-reused",
        book.command(cmd.FreezeAccount, account_id=uuid4(), idempotency_key="declined"),
    )
    assert book.posted(checking) == 700
    rows = book.ledger.store.command_rows(
        book.space_id,
        [rules.command_id(book.space_id, "old"), rules.command_id(book.space_id, "declined")],
    )
    assert {row.idempotency_key for row in rows.values()} == {"old", "declined"}
    recorded = [e for e in book.events(ev.PostingRecorded) if e.idempotency_key == "old"]
    assert len(recorded) == 1
    assert book.reloaded() == book.fingerprint()


def test_refused_command_changes_nothing(book: Book) -> None:
    checking, equity = book.open(overdraft_limit="10.00"), book.open("equity")
    book.post(equity, checking, "5.00")
    hold = book.post(equity, checking, "1.00", pending=True)
    before = book.fingerprint()
    for code, command in [
        ("account-not-empty", book.command(cmd.CloseAccount, account_id=checking)),
        (
            "limit-below-available",
            book.command(cmd.UpdateAccount, account_id=checking, overdraft_limit="5.99"),
        ),
        ("posting-not-found", book.command(cmd.ReversePosting, posting_id=uuid4())),
        ("posting-not-posted", book.command(cmd.ReversePosting, posting_id=hold.id)),
        ("exceeds-pending-amount", book.command(cmd.PostPending, posting_id=hold.id, amount="2")),
        ("batch-item-failed", batch_of(book, [spec(equity, checking, "4.01")])),
        ("idempotency-key-reused", book.posting(equity, checking, "1.00", key=hold_key(book))),
    ]:
        book.refused(code, command)
        assert book.fingerprint() == before, code
    assert book.reloaded() == before


def hold_key(book: Book) -> str:
    """The key of the first PostingRecorded pending event (a used key, for a reuse)."""
    holds = [e for e in book.events(ev.PostingRecorded) if e.pending]
    key = holds[0].idempotency_key
    assert key is not None
    return key


# Tokens, stored refusals, keys ------------------------------------------------------------------


def token_hash(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def test_issue_and_revoke_tokens(ledger: Ledger) -> None:
    from ledger_core.limits import MAX_SPACES_PER_TOKEN
    from ledger_core.records import TokenRecord
    from ledger_core.store import GLOBAL_SCOPE

    space = uuid4()
    issue = cmd.IssueToken(
        idempotency_key="t1", token_hash=token_hash("a"), role="write", spaces=(space,)
    )
    token = ledger.execute(issue).outcome
    assert isinstance(token, TokenRecord)
    assert (token.role, token.spaces, token.revoked) == ("write", (space,), False)
    assert ledger.token_by_hash(token_hash("a")) == token
    assert ledger.execute(issue).replayed
    for bad in (
        cmd.IssueToken(idempotency_key="t2", token_hash=token_hash("a"), role="read"),  # same hash
        cmd.IssueToken(idempotency_key="t3", token_hash="not-hex", role="read"),
        cmd.IssueToken(idempotency_key="t4", token_hash=token_hash("b"), role="owner"),  # type: ignore[arg-type]
        cmd.IssueToken(
            idempotency_key="t5",
            token_hash=token_hash("c"),
            role="read",
            spaces=tuple(uuid4() for _ in range(MAX_SPACES_PER_TOKEN + 1)),
        ),
    ):
        with pytest.raises(errors.InvalidRequest):
            ledger.execute(bad)
    at_edge = cmd.IssueToken(
        idempotency_key="t6",
        token_hash=token_hash("d"),
        role="read",
        spaces=tuple(uuid4() for _ in range(MAX_SPACES_PER_TOKEN)),
    )
    assert len(ledger.execute(at_edge).outcome.spaces) == MAX_SPACES_PER_TOKEN  # type: ignore[union-attr]
    revoked = ledger.execute(cmd.RevokeToken(idempotency_key="r1", token_id=token.id)).outcome
    assert isinstance(revoked, TokenRecord) and revoked.revoked
    assert ledger.token_by_hash(token_hash("a")) is None
    # Not found is not stored: revoke a token that exists only once issued with key "later".
    later_id = rules.command_id(GLOBAL_SCOPE, "later")
    revoke_later = cmd.RevokeToken(idempotency_key="r2", token_id=later_id)
    with pytest.raises(errors.TokenNotFound):
        ledger.execute(revoke_later)
    ledger.execute(cmd.IssueToken(idempotency_key="later", token_hash=token_hash("e"), role="read"))
    assert ledger.execute(revoke_later).outcome.revoked  # type: ignore[union-attr]


def test_record_refusal_is_answered_again(book: Book) -> None:
    refusal = cmd.RecordRefusal(
        idempotency_key="bad-body",
        space_id=book.space_id,
        fingerprint=b"digest-of-the-body",
        code="invalid-request",
        detail="unknown field 'colour'",
    )
    first = book.refused("invalid-request", refusal)
    assert (first.detail, first.replayed) == ("unknown field 'colour'", False)
    again = book.refused("invalid-request", refusal)
    assert (again.detail, again.replayed) == ("unknown field 'colour'", True)
    other = msgspec.structs.replace(refusal, fingerprint=b"another body")
    book.refused("idempotency-key-reused", other)
    checking = book.open()
    book.refused(
        "idempotency-key-reused",
        book.command(cmd.FreezeAccount, account_id=checking, idempotency_key="bad-body"),
    )
    not_stored = msgspec.structs.replace(refusal, idempotency_key="nf", code="account-not-found")
    book.refused("invalid-request", not_stored)
    global_refusal = msgspec.structs.replace(refusal, space_id=None, idempotency_key="global")
    book.refused("invalid-request", global_refusal)
    assert book.refused("invalid-request", global_refusal).replayed


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("", "idempotency-key-missing"),
        ("k" * 256, "malformed-request"),
        ("clé", "malformed-request"),
    ],
)
def test_malformed_keys_are_refused_and_not_stored(book: Book, key: str, code: str) -> None:
    checking = book.open()
    before = book.fingerprint()
    error = book.refused(
        code, book.command(cmd.FreezeAccount, account_id=checking, idempotency_key=key)
    )
    assert not error.stored
    assert book.fingerprint() == before
    assert (
        book.run(cmd.FreezeAccount, account_id=checking, idempotency_key="k" * 255).position
        is not None
    )


def test_keys_are_scoped_to_their_space(ledger: Ledger) -> None:
    first, second = Book(ledger), Book(ledger)
    one = first.ledger.execute(
        first.command(
            cmd.OpenAccount, name="A", type="asset", currency="USD", idempotency_key="same"
        )
    )
    two = second.ledger.execute(
        second.command(
            cmd.OpenAccount, name="B", type="equity", currency="USD", idempotency_key="same"
        )
    )
    assert not one.replayed and not two.replayed
    assert one.outcome.id != two.outcome.id  # type: ignore[union-attr]
    # A global key is separate from every space's keys.
    assert not ledger.execute(
        cmd.OpenSpace(idempotency_key="same", name="C", base_currency="USD")
    ).replayed


def test_writer_text_limits_at_and_past_the_edge(ledger: Ledger) -> None:
    from ledger_core.limits import MAX_ASSET_NAME_LENGTH, MAX_SPACE_NAME_LENGTH

    ledger.execute(
        cmd.OpenSpace(idempotency_key="s1", name="n" * MAX_SPACE_NAME_LENGTH, base_currency="USD")
    )
    with pytest.raises(errors.InvalidRequest):
        ledger.execute(
            cmd.OpenSpace(
                idempotency_key="s2", name="n" * (MAX_SPACE_NAME_LENGTH + 1), base_currency="USD"
            )
        )
    ledger.execute(
        cmd.RegisterAsset(
            idempotency_key="a1", code="HRS", exponent=2, name="n" * MAX_ASSET_NAME_LENGTH
        )
    )
    with pytest.raises(errors.InvalidRequest):
        ledger.execute(
            cmd.RegisterAsset(
                idempotency_key="a2", code="PTS", exponent=0, name="n" * (MAX_ASSET_NAME_LENGTH + 1)
            )
        )


async def test_duplicates_in_one_group_commit_get_one_answer(book: Book) -> None:
    """The same command sent many times at once, in one batch of the writer: recorded once,
    answered identically, exactly one answer not a replay."""
    import asyncio

    checking, equity = book.open(), book.open("equity")
    same = book.posting(checking, equity, "1.00", key="burst")
    others = [book.posting(checking, equity, "0.01") for _ in range(20)]
    reused = book.posting(checking, equity, "9.99", key="burst")
    results = await asyncio.gather(
        *(book.ledger.submit(c) for c in [same] * 10 + others + [reused]), return_exceptions=True
    )
    answers, other_answers, last = results[:10], results[10:30], results[30]
    assert all(isinstance(a, CommandResult) for a in answers + other_answers), results
    first = answers[0]
    assert all((a.outcome, a.position) == (first.outcome, first.position) for a in answers)  # type: ignore[union-attr]
    assert answers[0].position is not None  # type: ignore[union-attr]
    assert sum(not a.replayed for a in answers) == 1  # type: ignore[union-attr]
    assert isinstance(last, errors.IdempotencyKeyReused)
    assert book.posted(checking) == 100 + 20
    assert len([e for e in book.events(ev.PostingRecorded) if e.idempotency_key == "burst"]) == 1


def test_reversal_after_loading_from_a_snapshot(
    book: Book, clock: ManualClock, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh Ledger loads the space from its snapshot, with no recent postings in memory:
    reversals, captures and voids of older postings are found in the store."""
    import ledger_core.writer

    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_INTERVAL_EVENTS", 3)
    checking, equity = book.open(), book.open("equity")
    plain = book.post(checking, equity, "10.00")
    reversed_early = book.post(checking, equity, "2.00")
    book.run(cmd.ReversePosting, posting_id=reversed_early.id)
    captured = book.post(equity, checking, "5.00", pending=True)
    book.run(cmd.PostPending, posting_id=captured.id, amount="3.00")
    voided = book.post(equity, checking, "1.00", pending=True)
    book.run(cmd.VoidPending, posting_id=voided.id)
    batch = book.ledger.execute(batch_of(book, [spec(checking, equity, "4.00")]))
    batch_item = batch.outcome.postings[0]  # type: ignore[union-attr]
    live = book.fingerprint()
    book.ledger.close()
    with Ledger.open(database_url, clock=clock) as reopened:
        assert reopened.store.latest_snapshot(book.space_id) is not None
        assert reopened.inspect(book.space_id, state_fingerprint) == live
        book.ledger = reopened
        assert reopened.inspect(book.space_id, lambda s: len(s.recent_postings)) < 6
        book.refused(
            "posting-already-reversed",
            book.command(cmd.ReversePosting, posting_id=reversed_early.id),
        )
        book.refused("posting-not-pending", book.command(cmd.VoidPending, posting_id=voided.id))
        book.refused("posting-not-posted", book.command(cmd.ReversePosting, posting_id=voided.id))
        for original, amount in [(plain, 1000), (captured, 300), (batch_item, 400)]:
            reversal = book.run(cmd.ReversePosting, posting_id=original.id).outcome
            assert isinstance(reversal, PostingRecord)
            assert [e.amount_minor for e in reversal.entries] == [amount, amount]
        assert book.posted(checking) == 0
        assert book.reloaded() == book.fingerprint()


def test_refusals_are_not_decided_on_a_stale_space(database_url: str, clock: ManualClock) -> None:
    """Regression: two Ledgers (as two processes) on one database. The second had loaded the
    space before the first changed it; a refusal appends no event, so no version conflict
    revealed the change, and it answered (and stored) refusals the current state would not give:
    account-not-found for a new account, posting-not-pending for a new hold, account-not-empty
    and limit-below-available after a deposit elsewhere; and no-op successes on a stale status."""
    with (
        Ledger.open(database_url, clock=clock) as first,
        Ledger.open(database_url, clock=clock) as second,
    ):
        here, there = Book(first), Book(second)
        there.space_id = here.space_id
        checking, equity = here.open(overdraft_limit="0"), here.open("equity")
        here.post(checking, equity, "5.00")
        assert there.posted(checking) == 500  # the second ledger has the space loaded now
        savings = here.open()
        hold = here.post(checking, equity, "1.00", pending=True)
        here.post(equity, checking, "5.00")  # back to zero, elsewhere
        there.ledger.execute(there.posting(savings, equity, "2.00"))
        assert there.run(cmd.PostPending, posting_id=hold.id).outcome.status == "posted"  # type: ignore[union-attr]
        here.post(equity, checking, "1.00")  # zero again, elsewhere
        closed = there.run(cmd.CloseAccount, account_id=checking).outcome
        assert isinstance(closed, AccountRecord) and closed.status == "closed"
        there.ledger.execute(there.posting(equity, savings, "12.00"))  # savings -10.00, seen there
        here.post(savings, equity, "50.00")  # +40.00, not seen there
        limited = there.run(cmd.UpdateAccount, account_id=savings, overdraft_limit="0").outcome
        assert isinstance(limited, AccountRecord) and limited.overdraft_limit_minor == 0
        # A success that records nothing (unfreezing an active account) was also answered from
        # the stale state: the account stayed frozen while the answer said active.
        here.run(cmd.FreezeAccount, account_id=savings)
        unfrozen = there.run(cmd.UnfreezeAccount, account_id=savings)
        assert unfrozen.position is not None
        stored = there.ledger.load_space(there.space_id)
        assert stored is not None and stored.accounts[savings].status == "active"
        assert here.reloaded() == there.reloaded()


def test_global_state_is_not_stale_for_a_refusal(database_url: str) -> None:
    """Regression: an asset registered (or a token issued) in another process was unknown to a
    running one, which answered and stored `unknown-currency` (or `token-not-found`)."""
    with Ledger.open(database_url) as first, Ledger.open(database_url) as second:
        book = Book(second)
        book.open()  # the second ledger is busy with its space
        first.execute(cmd.RegisterAsset(idempotency_key="btc", code="BTC", exponent=8))
        wallet = book.run(cmd.OpenAccount, name="Wallet", type="asset", currency="BTC").outcome
        assert isinstance(wallet, AccountRecord) and wallet.currency == "BTC"
        issued = first.execute(
            cmd.IssueToken(idempotency_key="t", token_hash=token_hash("x"), role="read")
        )
        revoked = second.execute(cmd.RevokeToken(idempotency_key="r", token_id=issued.outcome.id))  # type: ignore[union-attr]
        assert revoked.outcome.revoked  # type: ignore[union-attr]


def test_holds_expire_after_a_restart_from_a_snapshot(
    book: Book, clock: ManualClock, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The expiry schedule is part of what a snapshot restores (it is not in the fingerprint)."""
    import ledger_core.writer

    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_INTERVAL_EVENTS", 3)
    checking, equity = book.open(), book.open("equity")
    hold = book.post(equity, checking, "4.00", pending=True, expires_at=START + timedelta(hours=1))
    for _ in range(3):
        book.post(checking, equity, "1.00")
    book.ledger.close()
    with Ledger.open(database_url, clock=clock) as reopened:
        assert reopened.store.latest_snapshot(book.space_id) is not None
        book.ledger = reopened
        assert book.balances(checking).pending_credits == 400
        clock.advance(hours=2)
        reopened.expire_due_holds()
        assert book.balances(checking).pending_credits == 0
        book.refused("pending-expired", book.command(cmd.PostPending, posting_id=hold.id))


def test_multi_currency_posting_balanced_per_currency(book: Book) -> None:
    usd, usd_fx = book.open(currency="USD"), book.open("equity", currency="USD")
    jpy, jpy_fx = book.open(currency="JPY"), book.open("equity", currency="JPY")
    entries = (
        cmd.EntrySpec(account_id=jpy, direction="debit", amount="1500", currency="JPY"),
        cmd.EntrySpec(account_id=usd, direction="credit", amount="10.00"),
        cmd.EntrySpec(account_id=usd_fx, direction="debit", amount="10.00"),
        cmd.EntrySpec(account_id=jpy_fx, direction="credit", amount="1500"),
    )
    posting = book.run(cmd.RecordPosting, posting=cmd.PostingSpec(entries=entries)).outcome
    assert isinstance(posting, PostingRecord)
    assert [(e.currency, e.amount_minor) for e in posting.entries] == [
        ("JPY", 1500),
        ("USD", 1000),
        ("USD", 1000),
        ("JPY", 1500),
    ]
    assert (book.posted(jpy), book.posted(usd)) == (1500, -1000)


def test_spaces_past_the_cache_limit_are_dropped_and_reload_exactly(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer keeps MAX_CACHED_SPACES spaces loaded: at the limit all stay, one past it the
    least recently used is dropped; a dropped space reloads from the store with the same
    balances, limits and keys (a retried command answers the same posting)."""
    import ledger_core.writer

    monkeypatch.setattr(ledger_core.writer, "MAX_CACHED_SPACES", 2)
    books = [Book(ledger), Book(ledger)]
    first_accounts = (books[0].open(overdraft_limit="0.00"), books[0].open("equity"))
    funded = books[0].posting(first_accounts[0], first_accounts[1], "5.00", key="first-funding")
    first = ledger.execute(funded).outcome
    books[1].open()  # the first space is now the least recently used
    loaded = ledger.writer.call(lambda: set(ledger.writer.spaces))
    assert loaded == {book.space_id for book in books}  # at the limit: both loaded
    books.append(Book(ledger))  # one past it
    books[2].open()
    loaded = ledger.writer.call(lambda: set(ledger.writer.spaces))
    assert books[0].space_id not in loaded and len(loaded) == 2
    # Reloaded on use, exactly: the key answers the same posting, the limit still holds.
    replayed = ledger.execute(funded)
    assert replayed.replayed and replayed.outcome == first
    books[0].refused(
        "insufficient-funds", books[0].posting(first_accounts[1], first_accounts[0], "5.01")
    )
    books[0].post(first_accounts[1], first_accounts[0], "5.00")
    assert books[0].posted(first_accounts[0]) == 0
    assert ledger.writer.call(lambda: len(ledger.writer.spaces)) == 2


def test_the_writer_takes_at_most_max_commands_per_append_at_once(
    database_url: str, clock: ManualClock
) -> None:
    """Settings accept 1..MAX_COMMANDS_PER_APPEND commands per append; a writer set to 2 with
    five commands queued takes them two at a time (the limit reached, never passed), and every
    one is answered."""
    from pydantic import ValidationError

    from ledger_core.limits import MAX_COMMANDS_PER_APPEND
    from ledger_core.settings import LedgerSettings

    assert LedgerSettings(max_commands_per_append=MAX_COMMANDS_PER_APPEND)
    for refused in (0, MAX_COMMANDS_PER_APPEND + 1):
        with pytest.raises(ValidationError):
            LedgerSettings(max_commands_per_append=refused)
    settings = LedgerSettings(database_url=database_url, max_commands_per_append=2)
    with Ledger.open(settings=settings, clock=clock) as ledger:
        book = Book(ledger)
        cash, equity = book.open(), book.open("equity")
        taken: list[int] = []
        take = ledger.writer._take

        def counted(*, block: bool) -> tuple[list[Any], bool]:
            items, stop = take(block=block)
            taken.append(len(items))
            return items, stop

        ledger.writer._take = counted  # type: ignore[method-assign]
        started, hold = threading.Event(), threading.Event()

        def held() -> None:
            started.set()
            hold.wait(timeout=30)

        holder = threading.Thread(target=ledger.writer.call, args=(held,))
        holder.start()  # the writer waits in this call while five commands queue up
        assert started.wait(timeout=30)
        futures = [ledger.writer.submit(book.posting(cash, equity, "1.00")) for _ in range(5)]
        hold.set()
        holder.join()
        results = [future.result(timeout=30) for future in futures]
        assert all(isinstance(result.outcome, PostingRecord) for result in results)
        assert [size for size in taken if size] == [2, 2, 1]
        assert book.posted(cash) == 500


def test_the_writer_queue_holds_at_most_max_queued_postings(
    database_url: str, clock: ManualClock
) -> None:
    """While the writer is busy, commands queue up to MAX_QUEUED_POSTINGS postings, a batch
    counting as its postings. At the limit every command is accepted and then recorded; one
    posting past it is refused at once with `unavailable` and records nothing; the same key is
    recorded once the queue has drained."""
    from ledger_core.limits import MAX_QUEUED_POSTINGS

    with Ledger.open(database_url, clock=clock) as ledger:
        book = Book(ledger)
        cash, equity = book.open(), book.open("equity")
        one = spec(cash, equity, "1.00")
        full_batches, rest = divmod(MAX_QUEUED_POSTINGS - 1, MAX_POSTINGS_PER_BATCH)
        sizes = [MAX_POSTINGS_PER_BATCH] * full_batches + [rest]
        started, hold = threading.Event(), threading.Event()

        def held() -> None:
            started.set()
            hold.wait(timeout=60)

        holder = threading.Thread(target=ledger.writer.call, args=(held,))
        holder.start()  # the writer waits in this call while the queue fills
        try:
            assert started.wait(timeout=30)
            futures = [ledger.writer.submit(batch_of(book, [one] * size)) for size in sizes if size]
            futures.append(ledger.writer.submit(book.posting(cash, equity, "1.00")))
            assert ledger.writer.queued_postings == MAX_QUEUED_POSTINGS  # at the limit
            past = book.posting(cash, equity, "1.00", key="past-the-queue")
            with pytest.raises(errors.Unavailable) as refused:
                ledger.writer.submit(past)
            assert "retry" in refused.value.detail
            assert ledger.writer.queued_postings == MAX_QUEUED_POSTINGS
        finally:
            hold.set()
            holder.join()
        assert all(future.result(timeout=120).position for future in futures)
        assert ledger.writer.queued_postings == 0
        assert book.posted(cash) == MAX_QUEUED_POSTINGS * 100  # the refused one recorded nothing
        recorded = ledger.execute(past)
        assert not recorded.replayed
        assert book.posted(cash) == (MAX_QUEUED_POSTINGS + 1) * 100


@pytest.mark.parametrize("conflicts", [3, 4])
def test_append_conflicts_are_retried_up_to_max_append_attempts(
    book: Book, monkeypatch: pytest.MonkeyPatch, conflicts: int
) -> None:
    """Another writer appending first makes the append fail (AppendConflict); the writer reloads
    and decides again, MAX_APPEND_ATTEMPTS times in all after the first try. With the limit set
    to 3: three conflicts in a row still record the posting (at the edge), four answer
    `unavailable` (past it) and record nothing; the same key then records it once."""
    import ledger_core.writer
    from ledger_core.store import AppendConflict

    monkeypatch.setattr(ledger_core.writer, "MAX_APPEND_ATTEMPTS", 3)
    cash, equity = book.open(), book.open("equity")
    store = book.ledger.store
    append = store.append
    remaining = [conflicts]

    def conflicting(batch: Any) -> list[int]:
        if remaining[0] > 0:
            remaining[0] -= 1
            raise AppendConflict("another writer appended first (simulated)")
        return append(batch)

    monkeypatch.setattr(store, "append", conflicting)
    command = book.posting(cash, equity, "2.00", key="contested")
    if conflicts <= 3:
        assert isinstance(book.ledger.execute(command).outcome, PostingRecord)
        assert book.posted(cash) == 200
    else:
        error = book.refused("unavailable", command)
        assert "retry with the same key" in error.detail
        assert book.posted(cash) == 0
        recorded = book.ledger.execute(command)
        assert not recorded.replayed and book.posted(cash) == 200
    assert remaining == [0]


def test_a_database_failure_tells_the_caller_to_retry_and_logs_the_cause(
    book: Book, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The database failing an append is `unavailable` with a detail that names no host, port
    or user (a driver's message can), and the cause is logged; nothing is recorded, and the
    same key works once the database is back."""
    from ledger_core.store import StoreUnavailable

    cash, equity = book.open(), book.open("equity")
    store = book.ledger.store
    append = store.append
    failing = [True]

    def unavailable(batch: Any) -> list[int]:
        if failing[0]:
            raise StoreUnavailable('connection to server at "db.internal" failed: user=ledger')
        return append(batch)

    monkeypatch.setattr(store, "append", unavailable)
    command = book.posting(cash, equity, "3.00", key="while-down")
    with caplog.at_level(logging.WARNING, logger="ledger_core.writer"):
        error = book.refused("unavailable", command)
    assert "db.internal" not in error.detail and "retry with the same key" in error.detail
    assert any("db.internal" in record.getMessage() for record in caplog.records)
    assert book.posted(cash) == 0
    failing[0] = False
    assert not book.ledger.execute(command).replayed and book.posted(cash) == 300


def test_the_writer_outlives_a_database_that_fails_reads_and_writes(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database failing every append and every read (an outage): each command is answered
    `unavailable`, and once the database is back the writer answers again; the same key then
    records. (Forgetting the failed batch's state used to reload the global stream at once, in
    the middle of handling the failure; that read failed too and killed the writer thread, so
    every later command waited forever.)"""
    from eventsourcing.persistence import OperationalError

    from ledger_core.store import StoreUnavailable

    cash, equity = book.open(), book.open("equity")
    store = book.ledger.store
    append, stream = store.append, store.stream
    down = [True]

    def failing_append(batch: Any) -> list[int]:
        if down[0]:
            raise StoreUnavailable("connection refused")
        return append(batch)

    def failing_stream(stream_id: UUID, after_version: int = 0) -> Any:
        if down[0]:
            raise OperationalError("couldn't get a connection after 3.00 sec")
        return stream(stream_id, after_version)

    monkeypatch.setattr(store, "append", failing_append)
    monkeypatch.setattr(store, "stream", failing_stream)
    command = book.posting(cash, equity, "4.00", key="outage")
    for _ in range(3):  # again and again: the writer is still there to answer
        with pytest.raises(errors.Unavailable) as refused:
            _answer_within(book, command)
        error = refused.value
        assert "database" in error.detail and "retry with the same key" in error.detail
        with pytest.raises(errors.Unavailable):
            book.ledger.assets()  # a read of the global state it forgot
    down[0] = False
    assert not book.ledger.execute(command).replayed and book.posted(cash) == 400
    assert book.ledger.execute(command).replayed


def test_the_writer_outlives_a_failure_no_path_handles(
    book: Book, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug anywhere in the writer's pipeline: the commands it had taken are answered
    `unavailable`, the writer thread goes on, and a retry with the same key gets the command's
    one true outcome (recorded once, whether or not the failed round had committed it)."""
    from ledger_core.writer import Writer

    cash, equity = book.open(), book.open("equity")
    land = Writer._land
    failures = [1]

    def land_once_failing(self: Writer, flight: Any, upcoming: Any) -> None:
        if failures[0]:
            failures[0] -= 1
            raise RuntimeError("a bug")
        land(self, flight, upcoming)

    monkeypatch.setattr(Writer, "_land", land_once_failing)
    command = book.posting(cash, equity, "5.00", key="bug")
    with pytest.raises(errors.Unavailable):
        _answer_within(book, command)
    retried = _answer_within(book, command)
    assert book.posted(cash) == 500
    assert book.ledger.execute(command).outcome == retried.outcome
    assert book.run(cmd.OpenAccount, name="later", type="asset", currency="USD").position


def _answer_within(book: Book, command: cmd.Command, seconds: float = 30.0) -> CommandResult:
    """The command's answer, or TimeoutError (a writer that is gone never answers)."""
    result: CommandResult = book.ledger.writer.submit(command).result(timeout=seconds)
    return result
