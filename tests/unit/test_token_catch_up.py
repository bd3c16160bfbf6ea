"""`api.token_catch_up.TokenCatchUp`: requests with unknown tokens that arrive together share one
catch-up; one arriving while a catch-up runs waits for the next (the running one may have read
the store before its token was issued); catch-ups start at most every interval; a failed
catch-up's error reaches every waiter."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from api.token_catch_up import TokenCatchUp
from ledger_core import errors

INTERVAL_S = 0.05


class Store:
    """A catch-up that records when each run started and can be held while it runs."""

    def __init__(self) -> None:
        self.started: list[float] = []
        self.release = asyncio.Event()
        self.release.set()
        self.failure: Exception | None = None

    async def catch_up(self) -> None:
        self.started.append(asyncio.get_running_loop().time())
        await self.release.wait()
        if self.failure is not None:
            raise self.failure


async def test_waiters_arriving_together_share_one_catch_up() -> None:
    store = Store()
    catch_up = TokenCatchUp(store.catch_up, INTERVAL_S)
    await asyncio.gather(*(catch_up.wait() for _ in range(50)))
    assert catch_up.runs == 1 and len(store.started) == 1


async def test_a_waiter_arriving_during_a_catch_up_waits_for_the_next() -> None:
    store = Store()
    catch_up = TokenCatchUp(store.catch_up, INTERVAL_S)
    store.release.clear()
    first = asyncio.create_task(catch_up.wait())
    while not store.started:  # the first catch-up is running (and held)
        await asyncio.sleep(0)
    late = [asyncio.create_task(catch_up.wait()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert not first.done() and not any(task.done() for task in late)
    store.release.set()
    await first
    await asyncio.gather(*late)
    assert catch_up.runs == 2  # the late ones shared one catch-up, started after the first
    assert store.started[1] - store.started[0] >= INTERVAL_S * 0.99  # and paced


async def test_catch_ups_start_at_most_every_interval() -> None:
    store = Store()
    catch_up = TokenCatchUp(store.catch_up, INTERVAL_S)
    for _ in range(4):
        await catch_up.wait()
    gaps = [later - earlier for earlier, later in itertools.pairwise(store.started)]
    assert len(store.started) == 4 and min(gaps) >= INTERVAL_S * 0.99


async def test_a_failed_catch_up_reaches_every_waiter_and_the_next_one_runs() -> None:
    store = Store()
    catch_up = TokenCatchUp(store.catch_up, INTERVAL_S)
    store.failure = errors.Unavailable("the database is unavailable for now")
    results = await asyncio.gather(*(catch_up.wait() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, errors.Unavailable) for result in results)
    store.failure = None
    await catch_up.wait()
    assert catch_up.runs == 2


async def test_a_waiter_that_gives_up_does_not_stop_the_others() -> None:
    store = Store()
    catch_up = TokenCatchUp(store.catch_up, INTERVAL_S)
    store.release.clear()
    impatient = asyncio.create_task(catch_up.wait())
    patient = asyncio.create_task(catch_up.wait())
    await asyncio.sleep(0.01)
    impatient.cancel()  # a client that disconnected
    with pytest.raises(asyncio.CancelledError):
        await impatient
    store.release.set()
    await patient
    assert catch_up.runs == 1
