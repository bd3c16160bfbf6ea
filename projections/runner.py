"""Runs the projections: a background thread that applies new events as they are recorded,
to every projection at once: the events of a batch are read and decoded once, and applied to
each projection in ONE transaction with all their positions (`apply_next_batch_together`).

PostgreSQL: a listener thread sleeps on LISTEN `ledger_events` (the writer NOTIFYs in every
append's transaction, so a wake-up comes at commit) and wakes the projection thread, which also
looks every `POSTGRES_POLL_INTERVAL_S` anyway in case a notification is lost; a dropped
connection is reopened with a growing back-off. SQLite has no notifications: the thread polls
every `SQLITE_POLL_INTERVAL_S`.

One thread for all, on both databases. On PostgreSQL the projections used to run one thread and
one connection each, so one's round trips overlapped the other's work; that applied a batch
sooner, but read and decoded every event once per projection and committed once per projection.
Measured on this machine (interleaved runs, PostgreSQL, the projections in their own process as
`ledger project`): one thread for all spends about a fifth less CPU in `ledger project` per
posting (HTTP batches 1,003-1,029 us a request of 100 postings against 1,259-1,325), the command
side beside it goes as fast or faster (HTTP batches +2% to +9%, single postings unchanged; lag
benchmark 18,045 and 18,852 postings/s against 15,906 and 18,225), and the lag it adds is small
(lag p99 98-100 ms against 73-88 ms; the target is 250 ms).

Each projection is applied batch by batch with exactly-once effect (`projections.tracking`); under
load, batches that apply events start at least `MIN_BATCH_INTERVAL_S` apart, so what is recorded
meanwhile is applied together (an idle runner applies new events at once). A
projection that fails on an event stops (the others go on), logs the event's position and topic
and the reason, exposes it as `failure`, and starts again at that same event when the runner is
restarted: it never skips an event.

The runner runs in-process beside the command side (`ledger serve` on the embedded default) or
as its own process (`ledger project`).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ledger_core.store import EVENTS_CHANNEL
from projections.base import TRACKING_TABLE, Projection, head_position
from projections.db import Database, is_transient
from projections.registry import projection_classes
from projections.tracking import (
    DEFAULT_BATCH_EVENTS,
    ProjectionFailed,
    ProjectionFailure,
    apply_next_batch_together,
    ensure_tracking_row,
    tracked_positions,
)

#: SQLite has no notifications: how often an idle runner looks for new events.
SQLITE_POLL_INTERVAL_S: Final = 0.02
#: PostgreSQL: the longest an idle runner waits for a notification before looking anyway.
POSTGRES_POLL_INTERVAL_S: Final = 0.5
#: Back-off after a lost or refused connection: first wait and the longest wait.
RECONNECT_FIRST_DELAY_S: Final = 0.05
RECONNECT_MAX_DELAY_S: Final = 2.0
#: Under load, the least time from the start of one batch that applied events to the start of
#: the next: what is recorded meanwhile is applied together. A batch costs a
#: dozen statements and a commit whatever its size, and under single postings the writer
#: appends (and notifies) every few milliseconds with a few dozen postings each, so without it
#: the projections spent ~200 us of CPU (theirs and the database's) per posting, as much as the
#: API. An idle runner is not held back: the first events after a quiet spell are applied
#: at once; under load a posting waits at most this much longer to be projected.
MIN_BATCH_INTERVAL_S: Final = 0.025

logger = logging.getLogger(__name__)

CommitListener = Callable[[str, int], None]

_LISTENER_THREAD: Final = "projection-listener"
_RUNNER_THREAD: Final = "projections"


class ProjectionRunner:
    """Applies the log to the named projections (all by default)."""

    def __init__(
        self,
        database_url: str,
        *,
        names: list[str] | None = None,
        batch_size: int = DEFAULT_BATCH_EVENTS,
        on_commit: CommitListener | None = None,
    ) -> None:
        self.database = Database(database_url)
        self.projections: list[Projection] = [
            cls(self.database) for cls in projection_classes(names)
        ]
        self.batch_size = batch_size
        self.on_commit = on_commit
        self.failures: dict[str, ProjectionFailure] = {}
        #: An error that stopped the whole runner (not one event: for example no tables).
        self.fatal_error: BaseException | None = None
        self._positions: dict[str, int] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Notifications seen by the listener (PostgreSQL), and the condition it signals.
        self._notifications = 0
        self._wake = threading.Condition()
        self._connection: Any = None
        self._listener: Any = None
        self._status_lock = threading.Lock()
        self._status_connection: Any = None

    # Control -----------------------------------------------------------------------------------

    @property
    def failure(self) -> ProjectionFailure | None:
        """The first failure of a projection of this runner, if any."""
        return next(iter(self.failures.values()), None)

    @property
    def running(self) -> bool:
        """True while the projection thread runs (not counting the listener)."""
        return any(thread.is_alive() for thread in self._threads if thread.name != _LISTENER_THREAD)

    def start(self) -> None:
        """Start (or restart, after a failure was fixed) the background threads: the one that
        applies every projection (see the module's docstring), and on PostgreSQL the one that
        listens for notifications and wakes it."""
        if self.running:
            return
        self.failures.clear()
        self.fatal_error = None
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._run_together, name=_RUNNER_THREAD, daemon=True)
        ]
        if self.database.is_postgres:
            self._threads.append(
                threading.Thread(target=self._listen, name=_LISTENER_THREAD, daemon=True)
            )
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        threads, self._threads = self._threads, []
        for thread in threads:
            thread.join(timeout_s)
        self._close_connections()
        with self._status_lock:
            if self._status_connection is not None:
                with contextlib.suppress(Exception):
                    self._status_connection.close()
                self._status_connection = None

    def __enter__(self) -> ProjectionRunner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # Positions ---------------------------------------------------------------------------------

    def positions(self) -> dict[str, int]:
        """The position each projection of this runner has applied (from the database)."""
        names = [p.name for p in self.projections]
        marks = ", ".join("?" * len(names))

        def read(cursor: Any) -> dict[str, int]:
            self.database.execute(
                cursor,
                f"SELECT name, position FROM {TRACKING_TABLE} WHERE name IN ({marks})",
                names,
            )
            return {row[0]: int(row[1]) for row in cursor.fetchall()}

        positions: dict[str, int] = self._with_status_cursor(read)
        return positions

    def applied_position(self) -> int:
        """The position every projection of this runner has applied."""
        positions = self.positions()
        return min(positions.values()) if positions else 0

    def head_position(self) -> int:
        head: int = self._with_status_cursor(lambda cursor: head_position(self.database, cursor))
        return head

    def lag(self) -> int:
        """Head position minus applied position: events recorded but not yet projected."""
        return max(self.head_position() - self.applied_position(), 0)

    def _with_status_cursor(self, read: Callable[[Any], Any]) -> Any:
        with self._status_lock:
            for attempt in range(2):
                if self._status_connection is None:
                    self._status_connection = self.database.connect()
                try:
                    return read(self._status_connection.cursor())
                except Exception as error:
                    with contextlib.suppress(Exception):
                        self._status_connection.close()
                    self._status_connection = None
                    if attempt or not is_transient(error):
                        raise
        raise AssertionError("unreachable")

    # Running -----------------------------------------------------------------------------------

    def run_until(self, position: int, timeout_s: float) -> None:
        """Until every projection has applied `position` (for tests and tools): in this thread
        if the runner is not started, else by waiting for it. Raises `ProjectionFailed` if a
        projection fails first, `TimeoutError` after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            failure = self.failure
            if failure is not None:
                raise ProjectionFailed(failure)
            if self.fatal_error is not None:
                raise RuntimeError("the projection runner stopped") from self.fatal_error
            if self.applied_position() >= position:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"projections did not reach position {position}")
            if self.running or self.step() == 0:
                time.sleep(SQLITE_POLL_INTERVAL_S / 4)

    def step(self) -> int:
        """Apply the next batch to every projection that has not failed, in one transaction;
        return the events read. Raises transient database errors (the caller reconnects)."""
        if self._connection is None:
            self._connection = self.database.connect()
            for projection in self.projections:
                ensure_tracking_row(self.database, self._connection, projection.tracking_name)
        active = [p for p in self.projections if p.name not in self.failures]
        if not active:
            return 0
        try:
            applied = apply_next_batch_together(
                self.database, self._connection, active, limit=self.batch_size
            )
        except ProjectionFailed as error:
            self.failures[error.failure.projection] = error.failure
            logger.error("%s; it stops here until fixed and restarted", error.failure)
            return 1  # the others go on at the next step
        if applied and self.on_commit is not None:
            names = [projection.tracking_name for projection in active]
            reached = tracked_positions(self.database, self._connection.cursor(), names, lock=False)
            for projection in active:
                self.on_commit(projection.name, reached.get(projection.tracking_name, 0))
        return applied

    def _keep_going(
        self, what: str, iteration: Callable[[], bool], reset: Callable[[], None]
    ) -> None:
        """Run `iteration` until it returns False or the runner stops. A transient database
        error calls `reset` (drop the connections) and retries after a growing back-off; any
        other error stops this thread and is kept as `fatal_error`."""
        delay = RECONNECT_FIRST_DELAY_S
        while not self._stop.is_set():
            try:
                if not iteration():
                    return
                delay = RECONNECT_FIRST_DELAY_S
            except Exception as error:
                if not is_transient(error):
                    logger.exception("%s stopped by an unexpected error", what)
                    self.fatal_error = error
                    return
                logger.warning("database unavailable (%s); reconnecting in %.2fs", error, delay)
                reset()
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)

    def _run_together(self) -> None:
        """The runner's thread: `step` (every projection, one transaction per batch) until
        stopped; when there is nothing new, wait for a notification (PostgreSQL) or the poll
        interval (SQLite). A transient database error reconnects with back-off."""

        pacer = _Pacer(self._stop)

        def iteration() -> bool:
            seen = self._notifications
            pacer.wait()
            if pacer.applied(self.step()) == 0:
                self._wait_for_news(seen)
            return True

        def reset() -> None:
            self._connection = _closed(self._connection)

        try:
            self._keep_going("the projection runner", iteration, reset)
        finally:
            reset()

    def _wait_for_news(self, seen: int) -> None:
        """Until a notification newer than `seen` (PostgreSQL) or the poll interval."""
        if not self.database.is_postgres:
            self._stop.wait(SQLITE_POLL_INTERVAL_S)
            return
        with self._wake:
            self._wake.wait_for(
                lambda: self._notifications != seen or self._stop.is_set(),
                timeout=POSTGRES_POLL_INTERVAL_S,
            )

    def _listen(self) -> None:
        """PostgreSQL: LISTEN on the event store's channel and wake the projection thread at
        each notification (all the notifications already queued count as one wake-up); ends
        when the projection thread no longer runs."""

        def iteration() -> bool:
            if self._listener is None:
                self._listener = self.database.connect()
                self._listener.execute(f"LISTEN {EVENTS_CHANNEL}")
                self._notify_projections()  # whatever was missed while not listening
            for _ in self._listener.notifies(timeout=POSTGRES_POLL_INTERVAL_S, stop_after=1):
                self._notify_projections()
            return self.running

        def reset() -> None:
            self._listener = _closed(self._listener)

        self._keep_going("the projections' listener", iteration, reset)

    def _notify_projections(self) -> None:
        with self._wake:
            self._notifications += 1
            self._wake.notify_all()

    def _close_connections(self) -> None:
        """Close the listener's and `step`'s connections."""
        self._listener = _closed(self._listener)
        self._connection = _closed(self._connection)


class _Pacer:
    """Keeps the starts of a projection's batches that applied events at least
    `MIN_BATCH_INTERVAL_S` apart (see there)."""

    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._last_applying_start = float("-inf")
        self._started = 0.0

    def wait(self) -> None:
        """Before a batch: wait out the rest of the interval since the last one that applied."""
        since = time.monotonic() - self._last_applying_start
        if since < MIN_BATCH_INTERVAL_S:
            self._stop.wait(MIN_BATCH_INTERVAL_S - since)
        self._started = time.monotonic()

    def applied(self, events: int) -> int:
        """After a batch: note its start if it applied events; return `events`."""
        if events:
            self._last_applying_start = self._started
        return events


def _closed(connection: Any) -> Any:
    """Close `connection` if there is one, ignoring errors (it may already be dead); None."""
    if connection is not None:
        with contextlib.suppress(Exception):
            connection.close()
    return None
