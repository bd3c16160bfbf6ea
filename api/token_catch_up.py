"""Catching up on tokens issued by other processes before answering 401 (coalesced, paced).

A well-formed token this process does not know may have been issued a moment ago by another
process: `ledger token create` beside a running server (what `ledger serve` tells a new user to
do), or another `ledger serve` on the same PostgreSQL. The writer reads other processes' global
events every `GLOBAL_CATCH_UP_SECONDS`, but a client just given a token should not be told it is
unknown for up to a second. So the gate asks for a catch-up before it answers 401 to an unknown
token. Requests with unknown tokens that arrive together share one catch-up, and catch-ups start
at most every `UNKNOWN_TOKEN_CATCH_UP_INTERVAL_S`: garbage tokens cannot make the writer read
the store (and land its batches in flight) more often than that.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable

from ledger_core import errors


class TokenCatchUp:
    def __init__(self, catch_up: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self._catch_up = catch_up
        self._interval_s = interval_s
        #: The catch-up that requests arriving now wait for (not started yet), if any.
        self._next: asyncio.Future[None] | None = None
        self._last_started = -math.inf
        self._one_at_a_time = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Catch-ups run so far (for tests and curiosity).
        self.runs = 0

    async def wait(self) -> None:
        """Return once a catch-up that started after this call has completed; raise what it
        raised (`unavailable` when the database cannot answer)."""
        if self._next is None:
            loop = asyncio.get_running_loop()
            self._next = loop.create_future()
            self._next.add_done_callback(_retrieve)
            task = loop.create_task(self._run(self._next))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await asyncio.shield(self._next)

    async def _run(self, done: asyncio.Future[None]) -> None:
        try:
            async with self._one_at_a_time:
                loop = asyncio.get_running_loop()
                delay = self._last_started + self._interval_s - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._next = None  # requests arriving from now on wait for the following one
                self._last_started = loop.time()
                self.runs += 1
                await self._catch_up()
        except Exception as error:
            done.set_exception(error)
        except BaseException:  # cancelled: the app is stopping
            done.set_exception(errors.Unavailable("the ledger is stopping"))
            raise
        else:
            done.set_result(None)


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a failed catch-up's error as seen even if every waiter has gone (no warning)."""
    if not future.cancelled():
        future.exception()
