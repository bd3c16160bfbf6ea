"""Runs the projections: a background thread that applies new events as they are recorded.

PostgreSQL: the thread sleeps on LISTEN `ledger_events` (the writer NOTIFYs in every append's
transaction, so a wake-up comes at commit) and polls every `POSTGRES_POLL_INTERVAL_S` anyway in
case a notification is lost; a dropped connection is reopened with a growing back-off. SQLite
has no notifications: the thread polls every `SQLITE_POLL_INTERVAL_S`.

Each projection is applied batch by batch with exactly-once effect (`projections.tracking`). A
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

from projections.base import TRACKING_TABLE, Projection, head_position
from projections.db import Database, is_transient
from projections.registry import projection_classes
from projections.tracking import (
    DEFAULT_BATCH_EVENTS,
    ProjectionFailed,
    ProjectionFailure,
    apply_next_batch_together,
    ensure_tracking_row,
)

#: SQLite has no notifications: how often an idle runner looks for new events.
SQLITE_POLL_INTERVAL_S: Final = 0.02
#: PostgreSQL: the longest an idle runner waits for a notification before looking anyway.
POSTGRES_POLL_INTERVAL_S: Final = 0.5
#: Back-off after a lost or refused connection: first wait and the longest wait.
RECONNECT_FIRST_DELAY_S: Final = 0.05
RECONNECT_MAX_DELAY_S: Final = 2.0
#: The PostgreSQL channel the event store notifies on every append.
NOTIFY_CHANNEL: Final = "ledger_events"

logger = logging.getLogger(__name__)

CommitListener = Callable[[str, int], None]


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
        self._thread: threading.Thread | None = None
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
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start (or restart, after a failure was fixed) the background thread."""
        if self.running:
            return
        self.failures.clear()
        self.fatal_error = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="projection-runner", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
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
                ensure_tracking_row(self.database, self._connection, projection.name)
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
            for projection in active:
                self.on_commit(projection.name, self._last_position(projection.name))
        return applied

    def _last_position(self, name: str) -> int:
        cursor = self._connection.cursor()
        self.database.execute(
            cursor, f"SELECT position FROM {TRACKING_TABLE} WHERE name = ?", (name,)
        )
        return int(cursor.fetchone()[0])

    def _run(self) -> None:
        delay = RECONNECT_FIRST_DELAY_S
        while not self._stop.is_set():
            try:
                if self.step() == 0:
                    self._wait()
                delay = RECONNECT_FIRST_DELAY_S
            except Exception as error:
                if not is_transient(error):
                    logger.exception("projection runner stopped by an unexpected error")
                    self.fatal_error = error
                    break
                logger.warning("database unavailable (%s); reconnecting in %.2fs", error, delay)
                self._close_connections()
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
        self._close_connections()

    def _wait(self) -> None:
        """Until new events may be there: a notification (PostgreSQL) or the poll interval."""
        if not self.database.is_postgres:
            self._stop.wait(SQLITE_POLL_INTERVAL_S)
            return
        if self._listener is None:
            self._listener = self.database.connect()
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        for _ in self._listener.notifies(timeout=POSTGRES_POLL_INTERVAL_S, stop_after=1):
            break

    def _close_connections(self) -> None:
        for name in ("_connection", "_listener"):
            connection = getattr(self, name)
            setattr(self, name, None)
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
