"""The read models, on every backend: what `projections.queries.ReadModels` answers after the
projections have applied a small ledger's story."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from uuid import UUID, uuid4

import pytest

from ledger_core import errors
from ledger_core.commands import (
    EntrySpec,
    FreezeAccount,
    OpenAccount,
    OpenSpace,
    PostingSpec,
    PostPending,
    RecordPosting,
    ReversePosting,
    VoidPending,
)
from ledger_core.ledger import Ledger
from migrations import apply_migrations
from projections.queries import (
    DEFAULT_PAGE_LIMIT,
    MAX_CURSOR_KEY,
    MAX_PAGE_LIMIT,
    ReadModels,
    encode_cursor,
)
from projections.runner import ProjectionRunner


@dataclass
class Story:
    """A space with a checking account, a credit card, income and expenses."""

    ledger: Ledger
    runner: ProjectionRunner
    reads: ReadModels
    space_id: UUID
    checking: UUID
    card: UUID
    salary: UUID
    groceries: UUID
    position: int = 0

    def post(
        self,
        debit: UUID,
        credit: UUID,
        amount: str,
        *,
        effective_date: date | None = None,
        pending: bool = False,
        expires_at: datetime | None = None,
        description: str = "",
    ) -> UUID:
        result = self.ledger.execute(
            RecordPosting(
                idempotency_key=f"post-{uuid4()}",
                space_id=self.space_id,
                posting=PostingSpec(
                    entries=(
                        EntrySpec(account_id=debit, direction="debit", amount=amount),
                        EntrySpec(account_id=credit, direction="credit", amount=amount),
                    ),
                    effective_date=effective_date,
                    pending=pending,
                    expires_at=expires_at,
                    description=description,
                ),
            )
        )
        self.position = result.position or self.position
        return result.outcome.id  # type: ignore[union-attr]

    def run(self, command: object) -> object:
        result = self.ledger.execute(command)  # type: ignore[arg-type]
        self.position = result.position or self.position
        return result.outcome

    def project(self) -> None:
        self.runner.run_until(self.position, timeout_s=30)


def open_story(url: str) -> Story:
    apply_migrations(url)
    ledger = Ledger.open(url)
    space = ledger.execute(OpenSpace(idempotency_key="space", name="Home", base_currency="USD"))

    def account(key: str, name: str, kind: str, **options: object) -> UUID:
        opened = ledger.execute(
            OpenAccount(
                idempotency_key=key,
                space_id=space.outcome.id,  # type: ignore[union-attr]
                name=name,
                type=kind,  # type: ignore[arg-type]
                currency="USD",
                **options,  # type: ignore[arg-type]
            )
        )
        return opened.outcome.id  # type: ignore[union-attr]

    story = Story(
        ledger=ledger,
        runner=ProjectionRunner(url),
        reads=ReadModels(url),
        space_id=space.outcome.id,  # type: ignore[union-attr]
        checking=account("a1", "Checking", "asset", code="1000", overdraft_limit="0"),
        card=account("a2", "Card", "liability", code="2000"),
        salary=account("a3", "Salary", "income", code="4000"),
        groceries=account("a4", "Groceries", "expense", code="5000"),
    )
    story.position = ledger.store.max_position()
    return story


def close_story(story: Story) -> None:
    story.runner.stop()
    story.reads.close()
    story.ledger.close()


@pytest.fixture
def story(database_url: str) -> Iterator[Story]:
    opened = open_story(database_url)
    try:
        yield opened
    finally:
        close_story(opened)


def test_balances_in_the_normal_direction_with_holds(story: Story) -> None:
    story.post(story.checking, story.salary, "100.00")
    story.post(story.groceries, story.card, "40.00")
    story.post(story.groceries, story.checking, "15.00", pending=True)
    story.post(story.checking, story.salary, "7.00", pending=True)
    story.project()

    checking = story.reads.account(story.space_id, story.checking)
    assert checking is not None
    assert (checking.balances.posted, checking.balances.pending_debits) == (10000, 700)
    assert (checking.balances.pending_credits, checking.balances.available) == (1500, 8500)
    assert checking.normal_balance == "debit" and checking.overdraft_limit_minor == 0
    card = story.reads.account(story.space_id, story.card)
    assert card is not None and card.normal_balance == "credit"
    assert card.balances.posted == 4000 and card.balances.available == 4000
    salary = story.reads.account(story.space_id, story.salary)
    assert salary is not None
    # A hold in the normal direction counts only once posted.
    assert (salary.balances.posted, salary.balances.pending_credits) == (10000, 700)
    assert salary.balances.available == 10000
    assert story.reads.account(story.space_id, uuid4()) is None
    assert story.reads.account(uuid4(), story.checking) is None


def test_space_and_account_list_with_filters_and_cursor(story: Story) -> None:
    story.run(FreezeAccount(idempotency_key="f", space_id=story.space_id, account_id=story.card))
    story.project()

    space = story.reads.space(story.space_id)
    assert space is not None and (space.name, space.base_currency) == ("Home", "USD")
    assert story.reads.space(uuid4()) is None
    first = story.reads.accounts(story.space_id, limit=3)
    assert [a.code for a in first.items] == ["1000", "2000", "4000"]
    assert first.next_cursor is not None
    rest = story.reads.accounts(story.space_id, cursor=first.next_cursor, limit=3)
    assert [a.code for a in rest.items] == ["5000"] and rest.next_cursor is None
    frozen = story.reads.accounts(story.space_id, status="frozen")
    assert [a.id for a in frozen.items] == [story.card]
    assert [a.id for a in story.reads.accounts(story.space_id, type="income").items] == [
        story.salary
    ]
    with pytest.raises(errors.InvalidRequest):
        story.reads.accounts(story.space_id, type="banana")
    with pytest.raises(errors.InvalidRequest):
        story.reads.accounts(story.space_id, status="asleep")


def test_entries_carry_the_running_balance_in_log_order(story: Story) -> None:
    story.post(story.checking, story.salary, "100.00", effective_date=date(2026, 3, 10))
    story.post(story.groceries, story.checking, "30.00", effective_date=date(2026, 3, 12))
    # Backdated, recorded later: log order decides the running balance.
    story.post(story.checking, story.salary, "5.00", effective_date=date(2026, 3, 1))
    story.project()

    page = story.reads.entries(story.space_id, story.checking)
    assert [(e.direction, e.amount_minor, e.balance_after) for e in page.items] == [
        ("debit", 10000, 10000),
        ("credit", 3000, 7000),
        ("debit", 500, 7500),
    ]
    assert all(e.currency == "USD" for e in page.items)
    positions = [e.position for e in page.items]
    assert positions == sorted(positions)
    march_10_to_12 = story.reads.entries(
        story.space_id, story.checking, from_date=date(2026, 3, 10), to_date=date(2026, 3, 12)
    )
    assert [e.amount_minor for e in march_10_to_12.items] == [10000, 3000]
    card = story.reads.entries(story.space_id, story.card)
    assert card.items == [] and card.next_cursor is None


def test_entry_pages_are_stable_while_new_entries_arrive(story: Story) -> None:
    for amount in ("1.00", "2.00", "3.00"):
        story.post(story.checking, story.salary, amount)
    story.project()
    first = story.reads.entries(story.space_id, story.checking, limit=2)
    assert [e.amount_minor for e in first.items] == [100, 200]
    story.post(story.checking, story.salary, "4.00")
    story.project()
    second = story.reads.entries(story.space_id, story.checking, cursor=first.next_cursor, limit=2)
    assert [e.amount_minor for e in second.items] == [300, 400]
    assert second.next_cursor is None


def test_balance_as_of_includes_backdated_postings(story: Story) -> None:
    story.post(story.checking, story.salary, "100.00", effective_date=date(2026, 2, 10))
    story.post(story.checking, story.salary, "50.00", effective_date=date(2026, 2, 20))
    story.project()
    assert story.reads.balance_as_of(story.space_id, story.checking, date(2026, 2, 15)) is not None
    story.post(story.checking, story.salary, "7.00", effective_date=date(2026, 2, 1))
    story.post(story.groceries, story.checking, "20.00", effective_date=date(2026, 2, 15))
    story.project()

    def posted(day: date) -> int:
        view = story.reads.balance_as_of(story.space_id, story.checking, day)
        assert view is not None and view.currency == "USD" and view.as_of == day
        return view.posted

    assert posted(date(2026, 1, 31)) == 0
    assert posted(date(2026, 2, 1)) == 700
    assert posted(date(2026, 2, 14)) == 10700
    assert posted(date(2026, 2, 15)) == 8700
    assert posted(date(2026, 2, 20)) == 13700
    assert posted(date(2030, 1, 1)) == 13700
    assert story.reads.balance_as_of(story.space_id, uuid4(), date(2026, 2, 1)) is None


def test_postings_statuses_links_and_filters(story: Story) -> None:
    story.post(story.checking, story.card, "500.00", effective_date=date(2026, 3, 1))
    paid = story.post(story.checking, story.salary, "100.00", effective_date=date(2026, 4, 1))
    hold = story.post(story.groceries, story.checking, "20.00", pending=True)
    voided = story.post(story.groceries, story.checking, "9.00", pending=True)
    expiring = story.post(
        story.groceries,
        story.checking,
        "1.00",
        pending=True,
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    story.run(
        PostPending(idempotency_key="cap", space_id=story.space_id, posting_id=hold, amount="12.50")
    )
    story.run(VoidPending(idempotency_key="void", space_id=story.space_id, posting_id=voided))
    reversal = story.run(
        ReversePosting(idempotency_key="rev", space_id=story.space_id, posting_id=paid)
    ).id  # type: ignore[attr-defined]
    with pytest.raises(errors.InsufficientFunds) as declined:
        story.post(story.groceries, story.checking, "10000.00", description="too much")
    story.position = declined.value.position or story.position
    story.project()

    reads = story.reads
    original = reads.posting(story.space_id, paid)
    assert original is not None and original.reversed_by == reversal
    assert original.effective_date == date(2026, 4, 1)
    reversing = reads.posting(story.space_id, reversal)
    assert reversing is not None and reversing.reverses == paid
    captured = reads.posting(story.space_id, hold)
    assert captured is not None and captured.status == "posted" and captured.pending
    assert [leg.amount_minor for leg in captured.entries] == [1250, 1250]
    refused = reads.posting(story.space_id, declined.value.posting_id)  # type: ignore[arg-type]
    assert refused is not None and refused.status == "declined"
    assert refused.declined_reason == "insufficient-funds" and refused.description == "too much"
    assert reads.posting(story.space_id, uuid4()) is None

    def statuses(**filters: object) -> list[str]:
        page = reads.postings(story.space_id, **filters)  # type: ignore[arg-type]
        return [p.status for p in page.items]

    assert statuses() == ["posted", "posted", "posted", "voided", "pending", "posted", "declined"]
    assert statuses(status="voided") == ["voided"]
    assert statuses(account_id=story.salary) == ["posted", "posted"]
    assert statuses(from_date=date(2026, 4, 1), to_date=date(2026, 4, 1)) == ["posted"]
    later = ReadModels(
        story.runner.database.url, clock=lambda: datetime.now(UTC) + timedelta(days=1)
    )
    try:
        assert later.posting(story.space_id, expiring).status == "expired"  # type: ignore[union-attr]
        assert [p.id for p in later.postings(story.space_id, status="expired").items] == [expiring]
        assert later.postings(story.space_id, status="pending").items == []
    finally:
        later.close()
    assert [p.id for p in reads.postings(story.space_id, status="pending").items] == [expiring]
    with pytest.raises(errors.InvalidRequest):
        reads.postings(story.space_id, status="lost")


def test_posting_pages_by_account_follow_log_order(story: Story) -> None:
    ids = [story.post(story.checking, story.salary, f"{n}.00") for n in range(1, 6)]
    story.post(story.groceries, story.card, "3.00")
    story.project()
    seen: list[UUID] = []
    cursor = None
    while True:
        page = story.reads.postings(
            story.space_id, account_id=story.checking, cursor=cursor, limit=2
        )
        seen.extend(p.id for p in page.items)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids


def test_trial_balance_debits_equal_credits(story: Story) -> None:
    story.post(story.checking, story.salary, "100.00", effective_date=date(2026, 5, 1))
    story.post(story.groceries, story.card, "30.00", effective_date=date(2026, 5, 2))
    story.post(story.card, story.checking, "10.00", effective_date=date(2026, 5, 3))
    story.post(story.groceries, story.card, "99.00", effective_date=date(2026, 6, 1))
    story.project()

    report = story.reads.trial_balance(story.space_id, date(2026, 5, 31))
    rows = {row.code: (row.debit_minor, row.credit_minor) for row in report.rows}
    assert rows == {
        "1000": (9000, 0),
        "2000": (0, 2000),
        "4000": (0, 10000),
        "5000": (3000, 0),
    }
    assert [(t.currency, t.debit_minor, t.credit_minor) for t in report.totals] == [
        ("USD", 12000, 12000)
    ]
    later = story.reads.trial_balance(story.space_id, date(2026, 6, 30))
    assert later.totals[0].debit_minor == later.totals[0].credit_minor == 21900


def test_events_feed_reads_the_log(story: Story) -> None:
    story.post(story.checking, story.salary, "1.00")
    page = story.reads.events(after=0, limit=2)
    assert [e.type for e in page.items] == ["SpaceOpened", "AccountOpened"]
    assert page.items[0].space_id == story.space_id
    assert page.items[0].data["name"] == "Home"
    assert page.next_cursor == str(page.items[-1].position)
    rest = story.reads.events(after=int(page.next_cursor), limit=MAX_PAGE_LIMIT)
    assert [e.type for e in rest.items][-1] == "PostingRecorded"
    assert rest.next_cursor is None


def test_page_limits_and_cursors_are_checked(story: Story) -> None:
    reads = story.reads
    assert DEFAULT_PAGE_LIMIT == 50
    assert reads.accounts(story.space_id, limit=MAX_PAGE_LIMIT).next_cursor is None
    for bad_limit in (0, MAX_PAGE_LIMIT + 1):
        with pytest.raises(errors.InvalidRequest):
            reads.accounts(story.space_id, limit=bad_limit)
        with pytest.raises(errors.InvalidRequest):
            reads.events(after=0, limit=bad_limit)
    for bad_cursor in ("not a cursor", "W10", "x" * 500, encode_cursor("entries", 1, 0)):
        with pytest.raises(errors.InvalidRequest):
            reads.accounts(story.space_id, cursor=bad_cursor)
    with pytest.raises(errors.InvalidRequest):
        reads.entries(story.space_id, story.checking, cursor=encode_cursor("entries", 1))
    # Sort keys are 64-bit: the largest is a valid (empty) page, one more is refused.
    last = encode_cursor("accounts", MAX_CURSOR_KEY)
    assert reads.accounts(story.space_id, cursor=last).items == []
    past = MAX_CURSOR_KEY + 1
    for list_name, method, args, keys in (
        ("accounts", reads.accounts, (story.space_id,), (past,)),
        ("postings", reads.postings, (story.space_id,), (past,)),
        ("entries", reads.entries, (story.space_id, story.checking), (past, 0)),
        ("entries", reads.entries, (story.space_id, story.checking), (1, past)),
        ("accounts", reads.accounts, (story.space_id,), (10**30,)),
    ):
        with pytest.raises(errors.InvalidRequest, match="cursor"):
            method(*args, cursor=encode_cursor(list_name, *keys))
    with pytest.raises(errors.InvalidRequest):
        reads.events(after=-1, limit=1)


async def test_waiting_for_a_position(story: Story) -> None:
    story.post(story.checking, story.salary, "1.00")
    assert story.reads.applied_position() < story.position
    assert not story.reads.wait_for_position(story.position, timeout_s=0.05)
    assert not await story.reads.awaitable_wait_for_position(story.position, timeout_s=0.05)
    story.runner.start()
    assert story.reads.wait_for_position(story.position, timeout_s=10)
    assert await story.reads.awaitable_wait_for_position(story.position, timeout_s=1)
    assert story.reads.applied_position() >= story.position
