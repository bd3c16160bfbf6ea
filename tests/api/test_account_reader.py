"""GET account's coalesced reads (api.account_reader): the coalescer on a fake fetch (batch
limits at and past their edge, failures, callers that go away), then the account reader on the
real read models of each backend (the same views as one read per request)."""

from __future__ import annotations

import asyncio
import uuid
from uuid import UUID

import pytest

from api.account_reader import (
    ACCOUNT_QUERY_CONNECTIONS,
    MAX_ACCOUNTS_PER_QUERY,
    AccountReader,
    Coalescer,
)
from projections.queries import ReadModels
from tests.api.conftest import Api, Book


class FakeFetch:
    """Answers key -> key * 10 for even keys (odd keys are not found); records each batch and
    the most fetches in flight at once."""

    def __init__(self, fail_first: int = 0) -> None:
        self.batches: list[list[int]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.fail_first = fail_first

    async def __call__(self, keys: list[int]) -> dict[int, int]:
        self.batches.append(keys)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.001)
            if len(self.batches) <= self.fail_first:
                raise ConnectionError("the database went away")
            return {key: key * 10 for key in keys if key % 2 == 0}
        finally:
            self.in_flight -= 1


def run_gets(fetch: FakeFetch, keys: list[int], **options: int) -> list[int | None]:
    async def main() -> list[int | None]:
        coalescer: Coalescer[int, int] = Coalescer(fetch, **options)
        return list(await asyncio.gather(*(coalescer.get(key) for key in keys)))

    return asyncio.run(main())


def test_concurrent_gets_share_a_fetch_up_to_the_limit() -> None:
    fetch = FakeFetch()
    keys = list(range(MAX_ACCOUNTS_PER_QUERY))
    answers = run_gets(fetch, keys, max_keys=MAX_ACCOUNTS_PER_QUERY, concurrency=2)
    assert answers == [key * 10 if key % 2 == 0 else None for key in keys]
    assert [len(batch) for batch in fetch.batches] == [MAX_ACCOUNTS_PER_QUERY]


def test_one_key_past_the_limit_takes_a_second_fetch() -> None:
    fetch = FakeFetch()
    keys = list(range(MAX_ACCOUNTS_PER_QUERY + 1))
    answers = run_gets(fetch, keys, max_keys=MAX_ACCOUNTS_PER_QUERY, concurrency=2)
    assert answers == [key * 10 if key % 2 == 0 else None for key in keys]
    assert sorted(len(batch) for batch in fetch.batches) == [1, MAX_ACCOUNTS_PER_QUERY]
    assert sorted(key for batch in fetch.batches for key in batch) == keys


def test_fetches_in_flight_never_exceed_the_concurrency() -> None:
    fetch = FakeFetch()
    keys = list(range(50))
    answers = run_gets(fetch, keys, max_keys=3, concurrency=ACCOUNT_QUERY_CONNECTIONS)
    assert answers == [key * 10 if key % 2 == 0 else None for key in keys]
    assert fetch.most_in_flight == ACCOUNT_QUERY_CONNECTIONS
    assert all(len(batch) <= 3 for batch in fetch.batches)


def test_a_lone_get_is_fetched_at_once() -> None:
    fetch = FakeFetch()
    assert run_gets(fetch, [4], max_keys=MAX_ACCOUNTS_PER_QUERY, concurrency=2) == [40]
    assert fetch.batches == [[4]]


def test_a_failed_fetch_fails_its_callers_only() -> None:
    fetch = FakeFetch(fail_first=1)

    async def main() -> tuple[list[object], int | None]:
        coalescer: Coalescer[int, int] = Coalescer(fetch, max_keys=2, concurrency=1)
        first = await asyncio.gather(
            *(coalescer.get(key) for key in (2, 4)), return_exceptions=True
        )
        return list(first), await coalescer.get(6)

    failed, later = asyncio.run(main())
    assert all(isinstance(answer, ConnectionError) for answer in failed)
    assert later == 60


def test_a_caller_that_goes_away_leaves_the_others_answered() -> None:
    fetch = FakeFetch()

    async def main() -> list[int | None]:
        coalescer: Coalescer[int, int] = Coalescer(fetch, max_keys=10, concurrency=1)
        tasks = [asyncio.create_task(coalescer.get(key)) for key in (2, 4, 6)]
        await asyncio.sleep(0)  # queued, the fetch in flight
        tasks[1].cancel()
        return [await tasks[0], await tasks[2]]

    assert asyncio.run(main()) == [20, 60]


def test_the_account_reader_answers_what_the_read_models_answer(
    api: Api, book: Book, database_url: str
) -> None:
    api.record(book.space, book.checking, book.salary, "25.00")
    other_space = api.open_space("Other")
    foreign = api.open_account(other_space, "Foreign", "asset")
    api.get(f"/v1/spaces/{book.space}")  # waits until the projections applied everything
    space = UUID(book.space)
    wanted = [
        (space, UUID(account))
        for account in (book.checking, book.salary, book.groceries, book.card)
    ]
    wanted += [(space, uuid.uuid4()), (space, UUID(foreign)), (UUID(other_space), UUID(foreign))]
    read_models = ReadModels(database_url)

    async def main() -> tuple[bool, list[object]]:
        async def in_thread(function: object, *args: object) -> object:
            return await asyncio.to_thread(function, *args)  # type: ignore[arg-type]

        reader = AccountReader(read_models, in_thread, database_url)
        await reader.open()
        try:
            views = await asyncio.gather(*(reader.account(*key) for key in wanted * 3))
            return reader.coalesces, list(views)
        finally:
            await reader.close()

    try:
        coalesces, views = asyncio.run(main())
        expected = [read_models.account(*key) for key in wanted * 3]
    finally:
        read_models.close()
    assert coalesces == database_url.startswith("postgresql")
    assert views == expected
    assert views[0] is not None and views[0].balances.posted == 2500  # type: ignore[attr-defined]
    assert views[4] is None and views[5] is None and views[6] is not None


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_get_account_reads_its_writes_through_the_coalesced_path(api: Api, book: Book) -> None:
    """Ledger-Min-Position first, then the coalesced read: a balance is never older than the
    position the client sent."""
    for number in range(1, 6):
        api.record(book.space, book.checking, book.salary, "1.00")
        account = api.ok(api.get(f"/v1/spaces/{book.space}/accounts/{book.checking}"), 200)
        assert account["balances"]["posted"] == f"{number}.00"
