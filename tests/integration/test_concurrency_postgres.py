"""Invariants 3 and 4 under real concurrency: several processes, one PostgreSQL database.

Four OS processes (spawned, each with its own Ledger and writer, and several asyncio submitters)
hammer the same three accounts, which sit near their overdraft limits, with random transfers,
withdrawals and deposits for a few seconds. They re-send some of their own keys and share a set
of keys whose bodies every process builds the same way, so the same command races itself across
processes. Each writer records what it was told. Afterwards, from a fresh Ledger and from the
events in the store:

- no account was ever below minus its limit, at any position of the log;
- no idempotency key was recorded twice (commands table, posting events);
- every key got one answer everywhere (same posting id, same position, same outcome);
- each account's total equals the sum of the postings the writers were told succeeded.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue
import random
import time
from collections import Counter, defaultdict
from typing import Any
from uuid import UUID

import pytest

from ledger_core import Ledger, errors
from ledger_core import commands as cmd
from ledger_core import events as ev
from ledger_core.codec import decode_event
from ledger_core.records import AccountRecord, PostingRecord
from ledger_core.store import COMMANDS_TABLE

PROCESSES = 4
SUBMITTERS_PER_PROCESS = 4
HAMMER_SECONDS = 4.0
HOT_ACCOUNTS = 3
LIMIT_MINOR = 1000  # each hot account may go 10.00 below zero, no further
SHARED_KEYS = 40

#: One told answer: (key, kind, posting id, position, replayed, code, entries).
Answer = tuple[str, str, str | None, int | None, bool, str | None, tuple[tuple[str, str, int], ...]]


def amount_text(amount_minor: int) -> str:
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def transfer(
    space_id: UUID, key: str, debit: UUID, credit: UUID, amount_minor: int
) -> cmd.RecordPosting:
    entries = (
        cmd.EntrySpec(account_id=debit, direction="debit", amount=amount_text(amount_minor)),
        cmd.EntrySpec(account_id=credit, direction="credit", amount=amount_text(amount_minor)),
    )
    return cmd.RecordPosting(
        idempotency_key=key, space_id=space_id, posting=cmd.PostingSpec(entries=entries)
    )


def shared_command(space_id: UUID, hot: list[UUID], index: int) -> cmd.RecordPosting:
    """The body of shared key `index`, built identically in every process."""
    debit, credit = hot[index % len(hot)], hot[(index + 1) % len(hot)]
    return transfer(space_id, f"shared-{index}", debit, credit, 150 + 10 * index)


def random_command(
    rng: random.Random, space_id: UUID, hot: list[UUID], funding: UUID, key: str
) -> cmd.RecordPosting:
    roll = rng.random()
    if roll < 0.5:  # between two hot accounts
        debit, credit = rng.sample(hot, 2)
        return transfer(space_id, key, debit, credit, rng.randint(1, 400))
    if roll < 0.8:  # a withdrawal: the hot account goes down
        return transfer(space_id, key, funding, rng.choice(hot), rng.randint(1, 400))
    return transfer(space_id, key, rng.choice(hot), funding, rng.randint(1, 300))  # a deposit


def told(command: cmd.RecordPosting, result: Any) -> Answer:
    entries = tuple(
        (str(e.account_id), e.direction, int(e.amount.replace(".", "")))
        for e in command.posting.entries
    )
    key = command.idempotency_key
    if isinstance(result, errors.LedgerError):
        if result.posting_id is not None:
            posting_id = str(result.posting_id)
            return (
                key,
                "declined",
                posting_id,
                result.position,
                result.replayed,
                result.code,
                entries,
            )
        return (key, "refused", None, result.position, result.replayed, result.code, entries)
    posting = result.outcome
    assert isinstance(posting, PostingRecord)
    return (key, "ok", str(posting.id), result.position, result.replayed, None, entries)


async def submitter(
    ledger: Ledger, seed: int, space_id: UUID, hot: list[UUID], funding: UUID, deadline: float
) -> list[Answer]:
    rng = random.Random(seed)
    answers: list[Answer] = []
    sent: list[cmd.RecordPosting] = []
    count = 0
    while time.monotonic() < deadline:
        roll = rng.random()
        if roll < 0.15 and sent:
            command = rng.choice(sent)  # our own key again, same body
        elif roll < 0.3:
            command = shared_command(space_id, hot, rng.randrange(SHARED_KEYS))
        else:
            count += 1
            command = random_command(rng, space_id, hot, funding, f"w{seed}-{count}")
            sent.append(command)
        try:
            result: Any = await ledger.submit(command)
        except errors.LedgerError as error:
            result = error
        answers.append(told(command, result))
    return answers


def writer_process(
    url: str, index: int, space: str, hot: list[str], funding: str, barrier: Any, results: Any
) -> None:
    """One OS process: its own Ledger, several asyncio submitters, until the deadline."""
    space_id, hot_ids, funding_id = UUID(space), [UUID(h) for h in hot], UUID(funding)

    async def run() -> list[Answer]:
        with Ledger.open(url) as ledger:
            barrier.wait(timeout=60)
            deadline = time.monotonic() + HAMMER_SECONDS
            batches = await asyncio.gather(
                *(
                    submitter(ledger, index * 100 + s, space_id, hot_ids, funding_id, deadline)
                    for s in range(SUBMITTERS_PER_PROCESS)
                )
            )
        return [answer for batch in batches for answer in batch]

    try:
        results.put((index, asyncio.run(run()), None))
    except BaseException as error:  # the parent reports it
        results.put((index, [], repr(error)))


def setup_book(url: str) -> tuple[UUID, list[UUID], UUID]:
    with Ledger.open(url) as ledger:
        space = ledger.execute(
            cmd.OpenSpace(idempotency_key="space", name="Race", base_currency="USD")
        )
        space_id = space.outcome.id  # type: ignore[union-attr]

        def open_account(key: str, type: str, limit: str | None) -> UUID:
            command = cmd.OpenAccount(
                idempotency_key=key,
                space_id=space_id,
                name=key,
                type=type,
                currency="USD",
                overdraft_limit=limit,  # type: ignore[arg-type]
            )
            outcome = ledger.execute(command).outcome
            assert isinstance(outcome, AccountRecord)
            return outcome.id

        hot = [
            open_account(f"hot-{i}", "asset", amount_text(LIMIT_MINOR)) for i in range(HOT_ACCOUNTS)
        ]
        funding = open_account("funding", "equity", None)
    return space_id, hot, funding


def hammer(url: str, space_id: UUID, hot: list[UUID], funding: UUID) -> list[Answer]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    processes = [
        context.Process(
            target=writer_process,
            args=(url, index, str(space_id), [str(h) for h in hot], str(funding), barrier, results),
        )
        for index in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    answers: list[Answer] = []
    failures: list[str] = []
    try:
        for _ in processes:
            _index, told_answers, failure = results.get(timeout=120)
            answers.extend(told_answers)
            if failure:
                failures.append(failure)
    except queue.Empty:
        failures.append("a writer process gave no answer in 120 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    assert not failures, failures
    return answers


def stored_postings(ledger: Ledger, space_id: UUID) -> list[tuple[int, ev.Event]]:
    found: list[tuple[int, ev.Event]] = []
    after = 0
    while True:
        page = ledger.store.notifications(after=after, limit=5000)
        if not page:
            return found
        for notification in page:
            if UUID(str(notification.originator_id)) == space_id:
                found.append(
                    (notification.id, decode_event(notification.topic, notification.state))
                )
        after = page[-1].id


@pytest.mark.slow
def test_processes_racing_near_their_limits(postgres_url: str) -> None:
    space_id, hot, funding = setup_book(postgres_url)
    answers = hammer(postgres_url, space_id, hot, funding)
    kinds = Counter(answer[1] for answer in answers)
    assert kinds["ok"] > 50 and kinds["declined"] > 0, kinds
    assert sum(1 for answer in answers if answer[4]) > 0, "no retry was ever replayed"

    with Ledger.open(postgres_url) as ledger:
        events = stored_postings(ledger, space_id)
        check_limits_never_crossed(ledger, space_id, hot, events)
        check_no_key_recorded_twice(ledger, space_id, events)
        successes = check_one_answer_per_key(answers, events)
        check_totals_match_what_writers_were_told(ledger, space_id, hot, funding, successes)


def check_limits_never_crossed(
    ledger: Ledger, space_id: UUID, hot: list[UUID], events: list[tuple[int, ev.Event]]
) -> None:
    balances: dict[UUID, int] = defaultdict(int)
    lowest = 0
    for _position, event in events:
        if isinstance(event, ev.PostingRecorded):
            for entry in event.entries:
                balances[entry.account_id] += (
                    entry.amount_minor if entry.direction == "debit" else -entry.amount_minor
                )
            lowest = min([lowest, *(balances[account] for account in hot)])
    assert lowest >= -LIMIT_MINOR, f"an account reached {lowest} with a limit of {LIMIT_MINOR}"
    assert lowest < -LIMIT_MINOR // 2, f"the accounts never came near their limits ({lowest})"
    for account in hot:
        record = ledger.account(space_id, account)
        assert record.balances.available >= -LIMIT_MINOR
        assert record.balances.posted == balances[account]


def check_no_key_recorded_twice(
    ledger: Ledger, space_id: UUID, events: list[tuple[int, ev.Event]]
) -> None:
    with ledger.store.datastore.get_connection() as connection:  # type: ignore[attr-defined]
        cursor = connection.cursor()
        cursor.execute(
            f"SELECT idempotency_key, count(*) AS n FROM {COMMANDS_TABLE} "
            "WHERE scope_id = %s GROUP BY idempotency_key HAVING count(*) > 1",
            (space_id,),
        )
        assert cursor.fetchall() == []
    per_key = Counter(
        event.idempotency_key
        for _, event in events
        if isinstance(event, (ev.PostingRecorded, ev.PostingDeclined))
    )
    twice = {key: n for key, n in per_key.items() if n > 1}
    assert not twice, twice


def check_one_answer_per_key(
    answers: list[Answer], events: list[tuple[int, ev.Event]]
) -> dict[str, Answer]:
    """Every key answered the same everywhere, and that answer is what the store holds."""
    by_key: dict[str, set[tuple[Any, ...]]] = defaultdict(set)
    for key, kind, posting_id, position, _replayed, code, entries in answers:
        if kind == "refused":
            assert code == "unavailable", (key, code)  # the only refusal these commands may get
            continue
        by_key[key].add((kind, posting_id, position, code, entries))
    stored = {
        event.idempotency_key: (position, event)
        for position, event in events
        if isinstance(event, (ev.PostingRecorded, ev.PostingDeclined))
    }
    successes: dict[str, Answer] = {}
    for key, distinct in by_key.items():
        assert len(distinct) == 1, (key, distinct)
        kind, posting_id, position, code, entries = next(iter(distinct))
        stored_position, event = stored[key]
        assert (str(event.posting_id), stored_position) == (posting_id, position), key
        if kind == "declined":
            assert isinstance(event, ev.PostingDeclined) and event.reason == code
        else:
            assert isinstance(event, ev.PostingRecorded)
            successes[key] = (key, kind, posting_id, position, False, code, entries)
    # Nothing is in the store that no writer was told about, except commands that answered
    # `unavailable` to every sender (then nothing may be stored for them).
    assert set(stored) <= set(by_key), set(stored) - set(by_key)
    return successes


def check_totals_match_what_writers_were_told(
    ledger: Ledger, space_id: UUID, hot: list[UUID], funding: UUID, successes: dict[str, Answer]
) -> None:
    told_totals: dict[str, int] = defaultdict(int)
    for _key, _kind, _posting_id, _position, _replayed, _code, entries in successes.values():
        for account, direction, amount in entries:
            told_totals[account] += amount if direction == "debit" else -amount
    for account in [*hot, funding]:
        record = ledger.account(space_id, account)
        signed = (
            record.balances.posted if record.normal_balance == "debit" else -record.balances.posted
        )
        assert signed == told_totals[str(account)], account


def test_many_stores_creating_the_tables_at_once(postgres_url: str) -> None:
    """Regression: concurrent first opens failed with duplicate types or "tuple concurrently
    updated" (CREATE OR REPLACE FUNCTION); table creation is now serialised."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from ledger_core.store import open_store

    openers = 8
    stores = [open_store(postgres_url, create_tables=False) for _ in range(openers)]
    barrier = Barrier(openers)

    def create(store: Any) -> None:
        barrier.wait(timeout=30)
        store.create_tables()

    try:
        with ThreadPoolExecutor(openers) as pool:
            list(pool.map(create, stores))
        assert stores[0].max_position() == 0
    finally:
        for store in stores:
            store.close()
