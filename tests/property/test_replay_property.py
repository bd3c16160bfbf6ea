"""Property: whatever commands a space receives, the projections agree with the ledger's own
state, the read models keep their accounting identities, and a replay from position 0 rebuilds
byte-identical tables (invariant 5). Run on both backends; each example is a fresh space in the
test's database, so the log keeps growing across examples, as a real one does."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from uuid import UUID

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
    UnfreezeAccount,
    VoidPending,
)
from ledger_core.ledger import Ledger
from migrations import apply_migrations
from projections.queries import MAX_PAGE_LIMIT, ReadModels
from projections.rebuild import replay
from projections.runner import ProjectionRunner
from projections.verify import dump_tables, verify

ACCOUNT_TYPES = ("asset", "asset", "liability", "income", "expense")
BASE_DAY = date(2026, 6, 15)

post = st.tuples(
    st.just("post"),
    st.integers(0, 4),
    st.integers(0, 4),
    st.integers(1, 50_000),
    st.integers(-20, 5),
    st.booleans(),
)
capture = st.tuples(st.just("capture"), st.integers(0, 50), st.sampled_from([None, 1, 2]))
void = st.tuples(st.just("void"), st.integers(0, 50))
reverse = st.tuples(st.just("reverse"), st.integers(0, 50))
freeze = st.tuples(st.just("freeze"), st.integers(0, 4), st.booleans())
operations = st.lists(
    st.one_of(post, post, post, capture, void, reverse, freeze), min_size=1, max_size=14
)


@dataclass
class World:
    ledger: Ledger
    runner: ProjectionRunner
    reads: ReadModels
    url: str
    spaces: list[UUID] = field(default_factory=list)
    examples: int = 0


@pytest.fixture
def world(database_url: str) -> Iterator[World]:
    apply_migrations(database_url)
    ledger = Ledger.open(database_url)
    runner = ProjectionRunner(database_url)
    reads = ReadModels(database_url)
    try:
        yield World(ledger, runner, reads, database_url)
    finally:
        runner.stop()
        reads.close()
        ledger.close()


def _amount(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def _run(world: World, ops: list[tuple[object, ...]]) -> tuple[UUID, list[UUID]]:
    """Apply the operations to a fresh space; refusals are part of the story."""
    ledger, number = world.ledger, world.examples
    world.examples += 1
    space = ledger.execute(
        OpenSpace(idempotency_key=f"space-{number}", name="P", base_currency="USD")
    ).outcome.id  # type: ignore[union-attr]
    accounts = [
        ledger.execute(
            OpenAccount(
                idempotency_key=f"{number}-account-{index}",
                space_id=space,
                name=f"A{index}",
                type=kind,  # type: ignore[arg-type]
                currency="USD",
                overdraft_limit="0" if index == 0 else None,
            )
        ).outcome.id  # type: ignore[union-attr]
        for index, kind in enumerate(ACCOUNT_TYPES)
    ]
    postings: list[UUID] = []
    for step, op in enumerate(ops):
        # Declined or refused: the projections must still agree.
        with contextlib.suppress(errors.LedgerError):
            _apply(ledger, space, accounts, postings, f"{number}-{step}", op)
        if step % 3 == 2:  # project now and then, so later postings land in later batches
            world.runner.run_until(ledger.store.max_position(), timeout_s=30)
    return space, accounts


def _apply(
    ledger: Ledger,
    space: UUID,
    accounts: list[UUID],
    postings: list[UUID],
    key: str,
    op: tuple[object, ...],
) -> None:
    kind = op[0]
    if kind == "post":
        _, debit, credit, minor, day, pending = op
        if debit == credit:
            credit = (int(credit) + 1) % len(accounts)  # type: ignore[call-overload]
        spec = PostingSpec(
            entries=(
                EntrySpec(account_id=accounts[debit], direction="debit", amount=_amount(minor)),  # type: ignore[index,arg-type]
                EntrySpec(account_id=accounts[credit], direction="credit", amount=_amount(minor)),  # type: ignore[index,arg-type]
            ),
            effective_date=BASE_DAY + timedelta(days=int(day)),  # type: ignore[call-overload]
            pending=bool(pending),
        )
        result = ledger.execute(RecordPosting(idempotency_key=key, space_id=space, posting=spec))
        postings.append(result.outcome.id)  # type: ignore[union-attr]
    elif kind in ("capture", "void", "reverse") and postings:
        target = postings[int(op[1]) % len(postings)]  # type: ignore[call-overload]
        if kind == "capture":
            partial = op[2]
            amount = _amount(int(partial)) if partial is not None else None  # type: ignore[call-overload]
            ledger.execute(
                PostPending(idempotency_key=key, space_id=space, posting_id=target, amount=amount)
            )
        elif kind == "void":
            ledger.execute(VoidPending(idempotency_key=key, space_id=space, posting_id=target))
        else:
            result = ledger.execute(
                ReversePosting(idempotency_key=key, space_id=space, posting_id=target)
            )
            postings.append(result.outcome.id)  # type: ignore[union-attr]
    elif kind == "freeze":
        account = accounts[int(op[1])]  # type: ignore[call-overload]
        command = FreezeAccount if op[2] else UnfreezeAccount
        ledger.execute(command(idempotency_key=key, space_id=space, account_id=account))


def _check_space(world: World, space: UUID, accounts: list[UUID]) -> None:
    reads = world.reads
    for account_id in accounts:
        live = world.ledger.account(space, account_id)
        view = reads.account(space, account_id)
        assert view is not None
        assert (view.status, view.balances.posted) == (live.status, live.balances.posted)
        assert view.balances.pending_debits == live.balances.pending_debits
        assert view.balances.pending_credits == live.balances.pending_credits
        assert view.balances.available == live.balances.available
        entries = reads.entries(space, account_id, limit=MAX_PAGE_LIMIT).items
        signed = sum(
            e.amount_minor if e.direction == view.normal_balance else -e.amount_minor
            for e in entries
        )
        assert signed == view.balances.posted
        assert (entries[-1].balance_after if entries else 0) == view.balances.posted
        as_of = reads.balance_as_of(space, account_id, BASE_DAY + timedelta(days=400))
        assert as_of is not None and as_of.posted == view.balances.posted
        for offset in range(-22, 7):  # every day the postings can be dated, and either side
            day = BASE_DAY + timedelta(days=offset)
            expected = sum(
                e.amount_minor if e.direction == view.normal_balance else -e.amount_minor
                for e in entries
                if e.effective_date <= day
            )
            found = reads.balance_as_of(space, account_id, day)
            assert found is not None and found.posted == expected, (account_id, day)
    for day in (BASE_DAY - timedelta(days=10), BASE_DAY, BASE_DAY + timedelta(days=400)):
        report = reads.trial_balance(space, day)
        for total in report.totals:
            assert total.debit_minor == total.credit_minor


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
def test_projections_agree_with_the_ledger_and_replay_is_exact(
    world: World, ops: list[tuple[object, ...]]
) -> None:
    space, accounts = _run(world, ops)
    world.runner.run_until(world.ledger.store.max_position(), timeout_s=30)
    _check_space(world, space, accounts)
    if world.examples % 4 == 0:
        incremental = dict(dump_tables(world.url))
        replay(world.url)
        assert dict(dump_tables(world.url)) == incremental
        assert verify(world.url).ok
