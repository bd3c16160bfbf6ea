"""The writer: one thread that applies queued commands to the cached state of their spaces and
appends each batch of results in one database transaction (group commit).

Why one thread: a space is one consistency unit, and deciding a posting needs its accounts'
current balances. Callers (asyncio tasks or threads) queue commands; the writer takes everything
queued (up to `MAX_COMMANDS_PER_APPEND`), decides each command in order against the in-memory
state (so later commands see earlier ones), appends all events, command rows and posting updates
at once, then wakes each caller (one wake-up per event loop per batch).

Across processes (PostgreSQL), each space's stream version is the lock: if another process
appended to a space first, the append fails on the stream's primary key, the writer rolls its
in-memory changes back (the state journal), catches the space up from the store, re-reads the
batch's idempotency keys from the commands table and decides the batch again. So invariant 3 holds
however many processes write, and nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any, Final, TypeVar
from uuid import UUID

import msgspec
from eventsourcing.persistence import StoredEvent

from ledger_core import commands as cmd
from ledger_core import errors, rules
from ledger_core import events as ev
from ledger_core.codec import decode_event, decode_outcome, encode_event, encode_outcome
from ledger_core.crypto import CLEAR, Cipher
from ledger_core.limits import (
    KEY_CHECK_BATCHES_AFTER_CONFLICT,
    MAX_APPEND_ATTEMPTS,
    MAX_ASSET_NAME_LENGTH,
    MAX_COMMANDS_PER_APPEND,
    MAX_DESCRIPTION_LENGTH,
    MAX_POSTINGS_PER_BATCH,
    MAX_QUEUED_POSTINGS,
    MAX_SPACE_NAME_LENGTH,
    MAX_SPACES_PER_TOKEN,
    SNAPSHOT_AFTER_LOAD_EVENTS,
    SNAPSHOT_INTERVAL_EVENTS,
)
from ledger_core.money import ISO_4217_EXPONENTS, CurrencyTable, check_asset_code, check_exponent
from ledger_core.records import (
    AssetRecord,
    BatchRecord,
    BatchStored,
    CommandResult,
    Outcome,
    PostingRecord,
    PostingStored,
    RefusalRecord,
    SpaceRecord,
    StoredOutcome,
    TokenRecord,
)
from ledger_core.state import (
    SNAPSHOT_TOPIC,
    PostingInfo,
    SpaceState,
    decode_snapshot,
    encode_snapshot,
    posting_record,
)
from ledger_core.store import (
    GLOBAL_SCOPE,
    AppendBatch,
    AppendConflict,
    CommandRow,
    LedgerStore,
    NewEvent,
    PostingUpdate,
    StoreUnavailable,
    is_unavailable,
)
from ledger_core.types import PostingStatus

logger = logging.getLogger(__name__)

#: How many spaces the writer keeps loaded; the least recently used is dropped past it (and
#: reloaded from its snapshot when next used).
MAX_CACHED_SPACES: Final = 10_000
#: When no command arrives for this long, the writer expires due holds in the loaded spaces.
IDLE_SWEEP_SECONDS: Final = 1.0
#: The writer reads what other processes recorded in the global stream (tokens issued or
#: revoked, assets registered: `ledger token create|revoke`, another `ledger serve` on the same
#: PostgreSQL) at least this often, busy or idle; a token is honoured, and a revoked one refused,
#: within this long everywhere. (It used to catch up only after a second without commands, so
#: under steady load a token revoked elsewhere kept working.) An unknown token also triggers a
#: catch-up at once (`api.gate`).
GLOBAL_CATCH_UP_SECONDS: Final = 1.0

T = TypeVar("T")
Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


class KeyAnswer(msgspec.Struct, gc=False):
    """What a space remembers of an idempotency key: the request's fingerprint, the answer,
    and its command row (whose position is known once the batch commits)."""

    fingerprint: bytes
    outcome: Outcome
    row: CommandRow


class GlobalState(SpaceState):
    """The global scope: registered assets and API tokens (the global stream), and the global
    idempotency keys."""

    def __init__(self) -> None:
        super().__init__(ev.GLOBAL_STREAM_ID)
        self.assets: dict[str, int] = {}
        self.asset_names: dict[str, str] = {}
        self.tokens: dict[UUID, TokenRecord] = {}
        self.token_ids_by_hash: dict[str, UUID] = {}

    def apply(self, event: ev.Event) -> None:
        self.version += 1
        if isinstance(event, ev.AssetRegistered):
            self.assets[event.code] = event.exponent
            self.asset_names[event.code] = event.name
        elif isinstance(event, ev.TokenIssued):
            self.tokens[event.token_id] = TokenRecord(
                id=event.token_id,
                role=event.role,
                spaces=event.spaces,
                token_hash=event.token_hash,
            )
            self.token_ids_by_hash[event.token_hash] = event.token_id
        elif isinstance(event, ev.TokenRevoked):
            token = self.tokens[event.token_id]
            self.tokens[event.token_id] = msgspec.structs.replace(token, revoked=True)
            self.token_ids_by_hash.pop(token.token_hash, None)
        else:  # pragma: no cover - the global stream holds only these
            raise TypeError(f"not a global event: {type(event).__name__}")


class _Request:
    """A queued command and how to answer its caller."""

    __slots__ = (
        "answer",
        "command",
        "delivered",
        "error",
        "future",
        "loop",
        "replayed",
        "weight",
    )

    def __init__(self, command: cmd.Command) -> None:
        self.command = command
        #: What it counts against `MAX_QUEUED_POSTINGS` while queued.
        self.weight = len(command.postings) if isinstance(command, cmd.RecordBatch) else 1
        self.loop: asyncio.AbstractEventLoop | None = None
        self.future: Any = None
        self.answer: KeyAnswer | None = None
        self.error: errors.LedgerError | None = None
        self.replayed = False
        #: Its answer was handed to the caller (`Writer._deliver`).
        self.delivered = False

    def reset(self) -> None:
        self.answer = None
        self.error = None
        self.replayed = False


class _Call:
    """A function to run on the writer thread between batches (consistent reads)."""

    __slots__ = ("function", "future")

    def __init__(self, function: Callable[[], Any]) -> None:
        self.function = function
        self.future: concurrent.futures.Future[Any] = concurrent.futures.Future()


_STOP: Final = object()


class _Flight:
    """A decided batch on its way to the database."""

    __slots__ = ("abandoned", "future", "plan", "requests", "snapshot_due", "stale", "states")

    def __init__(
        self,
        requests: list[_Request],
        states: dict[UUID, SpaceState],
        plan: _Plan,
        snapshot_due: bool,
    ) -> None:
        self.requests = requests
        self.states = states
        self.plan = plan
        self.snapshot_due = snapshot_due
        self.future: concurrent.futures.Future[list[int]] | None = None
        self.abandoned = False
        #: A refusal was decided on a space another process has changed since (see `_decide`).
        self.stale = False


class _Plan:
    """What one attempt at a batch will append."""

    def __init__(self, now: datetime, cipher: Cipher) -> None:
        self.now = now
        self.cipher = cipher
        self.today: date = now.date()
        self.batch = AppendBatch()
        self.new_spaces: dict[UUID, SpaceState] = {}

    def add_event(self, state: SpaceState, event: ev.Event) -> int:
        """Apply `event` to `state` as its next version and queue it; return its index."""
        state.apply(event)
        topic, payload = encode_event(event, self.cipher)
        self.batch.events.append(NewEvent(state.space_id, state.version, topic, payload))
        return len(self.batch.events) - 1


#: What a caller is told when its batch failed: the cause (a driver's message can name hosts,
#: ports and users) goes to the log, not to the caller.
_FAILED_DETAIL: Final = "the ledger failed to decide this command (logged); retry with the same key"
_DATABASE_DETAIL: Final = "the database is unavailable for now; retry with the same key"


def _failed(cause: Exception, detail: str = _FAILED_DETAIL) -> errors.Unavailable:
    """`unavailable` for a caller whose batch failed: the detail says what to do; the cause is
    chained (`__cause__`) for code that calls the ledger, and never shown over HTTP."""
    error = errors.Unavailable(detail)
    error.__cause__ = cause
    return error


class Writer:
    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Clock = utc_now,
        max_commands_per_append: int = MAX_COMMANDS_PER_APPEND,
        max_queued_postings: int = MAX_QUEUED_POSTINGS,
        cipher: Cipher = CLEAR,
    ) -> None:
        self.store = store
        self.clock = clock
        self.max_queued_postings = max_queued_postings
        #: The weights of the requests in `_queue` (see `MAX_QUEUED_POSTINGS`), under its lock.
        self._queued_postings = 0
        self._queued_lock = threading.Lock()
        #: Seals sensitive text on its way to the store and opens it on its way back.
        self.cipher = cipher
        self.max_commands_per_append = max_commands_per_append
        self.global_state = GlobalState()
        self.currencies = CurrencyTable(self.global_state.assets)
        #: Whether `global_state` holds the global stream as stored (see `_ensure_global`).
        self._global_loaded = False
        #: When the writer next reads the global stream for other processes' events.
        self._global_due = 0.0
        self.spaces: OrderedDict[UUID, SpaceState] = OrderedDict()
        self.snapshot_versions: dict[UUID, int] = {}
        #: Spaces whose next batches have their unknown keys looked up before they are decided
        #: (see `_check_keys`): space id -> how many more batches without an old key.
        self._key_checks: dict[UUID, int] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._committer = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ledger-committer"
        )
        self._closed = False
        #: What `_take` handed out and is not answered yet (see `_recover`).
        self._outstanding: list[Any] = []
        self._stop_taken = False
        self.batches = 0
        self.commands = 0

    # Lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._load_global()
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None or self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join()
        self._committer.shutdown(wait=True)

    # Submission --------------------------------------------------------------------------------

    def submit_async(self, command: cmd.Command) -> asyncio.Future[CommandResult]:
        if self._closed:
            raise errors.Unavailable("the ledger is closed")
        request = _Request(command)
        request.loop = asyncio.get_running_loop()
        request.future = request.loop.create_future()
        self._enqueue(request)
        future: asyncio.Future[CommandResult] = request.future
        return future

    def submit(self, command: cmd.Command) -> concurrent.futures.Future[CommandResult]:
        if self._closed:
            raise errors.Unavailable("the ledger is closed")
        request = _Request(command)
        request.future = concurrent.futures.Future()
        self._enqueue(request)
        future: concurrent.futures.Future[CommandResult] = request.future
        return future

    @property
    def queued_postings(self) -> int:
        """Postings waiting in the queue now (see `MAX_QUEUED_POSTINGS`)."""
        return self._queued_postings

    def _enqueue(self, request: _Request) -> None:
        """Queue `request`, or refuse it with `unavailable` if the queue is full."""
        with self._queued_lock:
            queued = self._queued_postings + request.weight
            if queued > self.max_queued_postings:
                raise errors.Unavailable(
                    f"the ledger has {self._queued_postings:,} postings waiting to be recorded "
                    f"(at most {self.max_queued_postings:,}); nothing was recorded: retry "
                    "shortly with the same Idempotency-Key"
                )
            self._queued_postings = queued
            self._queue.put(request)

    def _dequeued(self, items: list[Any]) -> None:
        weight = sum(item.weight for item in items if isinstance(item, _Request))
        if weight:
            with self._queued_lock:
                self._queued_postings -= weight

    def call(self, function: Callable[[], T]) -> T:
        """Run `function` on the writer thread, between batches, and return its result."""
        return self._call(function).result()

    async def call_async(self, function: Callable[[], T]) -> T:
        """`call` for asyncio callers: the event loop goes on while the writer runs it."""
        return await asyncio.wrap_future(self._call(function))

    def _call(self, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        if self._closed:
            raise errors.Unavailable("the ledger is closed")
        item = _Call(function)
        self._queue.put(item)
        return item.future

    def catch_up_global(self) -> None:
        """On the writer thread (`call`): read the global stream's events recorded since (by
        other processes); raises `unavailable` if the database cannot answer."""
        try:
            self._load_global()
        except Exception as error:
            raise _failed(error, _DATABASE_DETAIL) from error

    # The loop ----------------------------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread. It never dies while the ledger is open: a failure that no path
        below handles is logged, every command taken and not answered is answered `unavailable`
        (its caller retries with the same key), the cached state is dropped and the writer goes
        on. (A writer thread that died left every later command waiting forever.)"""
        while True:
            try:
                self._pipeline()
                break
            except Exception:
                logger.exception("ledger writer failed; its unanswered commands get unavailable")
                self._recover()
                if self._stop_taken:
                    break
        self._fail_queued()

    def _recover(self) -> None:
        requests = []
        for item in self._outstanding:
            if isinstance(item, _Request) and not item.delivered:
                item.reset()
                item.error = errors.Unavailable(_FAILED_DETAIL)
                requests.append(item)
            elif isinstance(item, _Call) and not item.future.done():
                item.future.set_exception(errors.Unavailable(_FAILED_DETAIL))
        self._outstanding = []
        self._deliver(requests)
        self._drop_touched()

    def _pipeline(self) -> None:
        """Two-stage pipeline: while batch N is being committed (on the committer thread, the GIL
        released while it waits on the database), the writer decides batch N+1 on top of N's
        effects. Answers are delivered strictly in order, after their own commit. If N fails,
        N+1 was decided on state that never happened: both are decided again from the store."""
        flight: _Flight | None = None
        while True:
            items, stop = self._take(block=flight is None)
            if not items and flight is None and not stop:
                self._guarded(self._sweep_idle)
                continue
            requests = [i for i in items if isinstance(i, _Request)]
            calls = [i for i in items if isinstance(i, _Call)]
            if requests and time.monotonic() >= self._global_due:
                calls.append(_Call(self._catch_up_due))  # after the batches in flight land
            if flight is not None and flight.snapshot_due:
                self._land(flight, None)  # commit before the next batch, so it snapshots
                flight = None
            upcoming = self._prepare(requests) if requests else None
            if flight is not None:
                self._land(flight, upcoming)
                if upcoming is not None and upcoming.abandoned:
                    upcoming = None
            if upcoming is not None and upcoming.stale:
                self._forget(upcoming.states)
                self._guarded(
                    functools.partial(self._process, upcoming.requests), upcoming.requests
                )
                upcoming = None
            flight = self._launch(upcoming) if upcoming is not None else None
            if calls or stop:
                if flight is not None:
                    self._land(flight, None)  # reads and stopping see only committed state
                    flight = None
                for call in calls:
                    try:
                        self._ensure_global()  # a read of assets or tokens needs them loaded
                    except Exception as error:
                        call.future.set_exception(_failed(error, _DATABASE_DETAIL))
                        continue
                    try:
                        call.future.set_result(call.function())
                    except BaseException as error:  # the caller gets whatever was raised
                        call.future.set_exception(error)
            if stop:
                break

    def _take(self, *, block: bool) -> tuple[list[Any], bool]:
        """Everything queued, up to the batch limit; waits for the first item only if `block`."""
        items: list[Any] = []
        try:
            first = (
                self._queue.get(timeout=IDLE_SWEEP_SECONDS) if block else self._queue.get_nowait()
            )
        except queue.Empty:
            return items, False
        stop = first is _STOP
        if not stop:
            items.append(first)
        while not stop and len(items) < self.max_commands_per_append:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            stop = item is _STOP
            if not stop:
                items.append(item)
        self._stop_taken = self._stop_taken or stop
        self._dequeued(items)
        self._outstanding = [i for i in self._outstanding if not _answered(i)]
        self._outstanding.extend(items)
        return items, stop

    def _prepare(self, requests: list[_Request]) -> _Flight | None:
        """Decide a batch (first attempt) against the cached state; append nothing yet."""
        try:
            self.batches += 1
            self.commands += len(requests)
            live = [r for r in requests if self._admit(r)]
            states = self._states_for(live)
            live = [r for r in live if r.error is None]
            self._check_keys(live, states)
            plan = _Plan(self.clock(), self.cipher)
            self._prefetch_postings(live, states)
            for state in states.values():
                self._expire_due(state, plan)
            for request in live:
                self._decide(request, states, plan)
        except AppendConflict:
            flight = _Flight(requests, states, plan, False)
            flight.stale = True  # decided again from the store once the batch in flight lands
            return flight
        except Exception as error:
            self._broken(requests, error)
            return None
        snapshot_due = any(
            state.version - self.snapshot_versions.get(space_id, 0) >= SNAPSHOT_INTERVAL_EVENTS
            for space_id, state in states.items()
        )
        return _Flight(requests, states, plan, snapshot_due)

    def _launch(self, flight: _Flight) -> _Flight:
        if _has_work(flight.plan.batch):
            flight.future = self._committer.submit(self.store.append, flight.plan.batch)
        return flight

    def _land(self, flight: _Flight, upcoming: _Flight | None) -> None:
        """Wait for a batch's commit and answer its callers; on failure decide it again from
        the store (and the upcoming batch, decided on top of it, too)."""
        try:
            if flight.future is not None:
                flight.future.result()
        except (AppendConflict, StoreUnavailable) as error:
            # StoreUnavailable too: _process retries once more, then answers `unavailable`.
            if isinstance(error, AppendConflict):
                self._arm_key_checks(flight.states)
            self._forget(flight.states)
            if upcoming is not None:
                self._forget(upcoming.states)
                upcoming.abandoned = True
            self._guarded(functools.partial(self._process, flight.requests), flight.requests)
            if upcoming is not None:
                self._guarded(
                    functools.partial(self._process, upcoming.requests), upcoming.requests
                )
            return
        except Exception as error:
            self._broken(flight.requests, error)
            if upcoming is not None:
                upcoming.abandoned = True
                self._broken(upcoming.requests, error)
            return
        for space_id, state in flight.plan.new_spaces.items():
            self._cache(space_id, state)
            self.snapshot_versions[space_id] = 0
        if upcoming is None:
            self._snapshot(list(flight.states.values()))
        self._deliver(flight.requests)

    def _broken(self, requests: list[_Request], error: Exception) -> None:
        """A bug or an unexpected failure: no caller waits forever, and every loaded space is
        dropped (they reload from the store)."""
        failed = _failure(error)
        for request in requests:
            request.reset()
            request.error = failed
        self._drop_touched()
        self._deliver(requests)

    def _guarded(self, work: Callable[[], None], requests: list[_Request] | None = None) -> None:
        try:
            work()
        except Exception as error:  # a bug or a database failure: no caller waits forever
            failed = _failure(error)
            for request in requests or []:
                if not request.delivered:
                    request.error = failed
                    request.answer = None
            self._drop_touched()
            if requests:
                self._deliver(requests)

    def _fail_queued(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            self._dequeued([item])
            if isinstance(item, _Request):
                item.error = errors.Unavailable("the ledger is closed")
                self._deliver([item])
            elif isinstance(item, _Call):
                item.future.set_exception(errors.Unavailable("the ledger is closed"))

    # A batch -----------------------------------------------------------------------------------

    def _process(self, requests: list[_Request]) -> None:
        self.batches += 1
        self.commands += len(requests)
        now = self.clock()
        live = [r for r in requests if self._admit(r)]
        for _attempt in range(MAX_APPEND_ATTEMPTS):
            for request in live:
                request.reset()
            states = self._states_for(live)
            live = [r for r in live if r.error is None]
            self._check_keys(live, states)
            plan = _Plan(now, self.cipher)
            self._prefetch_postings(live, states)
            for state in states.values():
                self._expire_due(state, plan)
            try:
                for request in live:
                    self._decide(request, states, plan)
                if _has_work(plan.batch):
                    self.store.append(plan.batch)
            except AppendConflict:
                # Another process appended first (or a key was used before): reload what this
                # batch touched from the store and decide the batch again.
                self._arm_key_checks(states)
                self._forget(states)
                self._load_keys(live, self._states_for(live))
                continue
            except StoreUnavailable as error:
                self._forget(states)
                logger.warning("the ledger's database failed a batch: %s", error)
                self._fail(live, _failed(error, _DATABASE_DETAIL))
                self._deliver(requests)
                return
            for space_id, state in plan.new_spaces.items():
                self._cache(space_id, state)
                self.snapshot_versions[space_id] = 0
            self._snapshot(list(states.values()))
            self._deliver(requests)
            return
        self._fail(
            live,
            errors.Unavailable(
                "other writers kept appending to this space; retry with the same key"
            ),
        )
        self._deliver(requests)

    def _forget(self, states: dict[UUID, SpaceState]) -> None:
        """Drop the in-memory state a failed batch changed: it reloads from the store."""
        for space_id in states:
            self.spaces.pop(space_id, None)
        self._reset_global()

    def _reset_global(self) -> None:
        """Forget the global state; it is read again before it is next used (`_ensure_global`).
        Not here: this runs while a failure is handled, when the database may well be away."""
        self.global_state = GlobalState()
        self.currencies = CurrencyTable(self.global_state.assets)
        self._global_loaded = False

    def _ensure_global(self) -> None:
        """Load the global stream if it was forgotten; raises if the database cannot answer
        (the batch or read that needed it answers `unavailable`)."""
        if not self._global_loaded:
            self._load_global()

    @staticmethod
    def _fail(requests: list[_Request], error: errors.Unavailable) -> None:
        for request in requests:
            request.reset()
            request.error = error

    def _admit(self, request: _Request) -> bool:
        try:
            rules.check_idempotency_key(request.command.idempotency_key)
            if not isinstance(request.command, _HANDLED):
                raise errors.InvalidRequest(f"unknown command {type(request.command).__name__}")
        except errors.LedgerError as error:
            request.error = error
            return False
        return True

    def _states_for(self, requests: list[_Request]) -> dict[UUID, SpaceState]:
        """The loaded state of every space the requests name; a request for a space that does
        not exist fails with `space-not-found`. The global state is loaded first if it was
        forgotten: no command is decided without the registered assets and tokens."""
        self._ensure_global()
        states: dict[UUID, SpaceState] = {}
        for request in requests:
            space_id = _space_of(request.command)
            if space_id is None or space_id in states:
                continue
            state = self._space(space_id)
            if state is None:
                request.error = errors.SpaceNotFound(f"no space {space_id}")
            else:
                states[space_id] = state
        return states

    def _drop_touched(self) -> None:
        """After an unexpected failure, forget every loaded space: they reload from the store."""
        self.spaces.clear()
        self._reset_global()

    # Deciding one command ----------------------------------------------------------------------

    def _decide(self, request: _Request, states: dict[UUID, SpaceState], plan: _Plan) -> None:
        command = request.command
        space_id = _space_of(command)
        if space_id is not None and space_id not in states:
            request.error = errors.SpaceNotFound(f"no space {space_id}")
            return
        scope_state: SpaceState = states[space_id] if space_id is not None else self.global_state
        scope_id = space_id if space_id is not None else GLOBAL_SCOPE
        key = command.idempotency_key
        row_id = rules.command_id(scope_id, key)
        try:
            digest = cmd.command_fingerprint(command)
        except (msgspec.EncodeError, OverflowError, TypeError, ValueError) as error:
            # A value no event could hold (an integer past 64 bits, say): this command is
            # refused before it changed anything, and the batch around it goes on.
            request.error = errors.InvalidRequest(f"the command cannot be recorded: {error}")
            return
        known: KeyAnswer | None = scope_state.recent_keys.get(row_id)
        if known is not None:
            _answer_known(request, known, digest, self.cipher)
            return
        fingerprint = self.cipher.fingerprint(digest)  # keyed: see ledger_core.crypto
        row = CommandRow(scope_id=scope_id, id=row_id, idempotency_key=key, fingerprint=fingerprint)
        handler = _HANDLERS[type(command)]
        try:
            outcome = handler(self, command, scope_state, plan, row)
        except errors.LedgerError as error:
            self._check_fresh(space_id, scope_state, error)
            if not error.stored:
                # A key older than the in-memory window keeps its first answer (or is reused)
                # even when this body would be a not-found: look it up before answering that.
                found = self.store.command_rows(scope_id, [row_id]).get(row_id)
                if found is not None and found.fingerprint is not None and found.outcome:
                    outcome = self._resolved(scope_id, decode_outcome(found.outcome, self.cipher))
                    stored = KeyAnswer(found.fingerprint, outcome, found)
                    _answer_known(request, stored, digest, self.cipher)
                    return
                request.error = error
                return
            outcome = RefusalRecord(
                code=error.code, detail=error.detail, extra=error.extra, context=command.context
            )
            request.error = error
        else:
            if row.event_index is None:  # a success that records nothing (freeze a frozen one)
                self._check_fresh(space_id, scope_state)
            request.error = _refusal_error_of(outcome)
        row.outcome = encode_outcome(_stored_form(command, outcome, row, plan), self.cipher)
        plan.batch.command_rows.append(row)
        request.answer = KeyAnswer(fingerprint, outcome, row)
        scope_state.remember_key(row_id, request.answer)

    def _check_fresh(
        self, space_id: UUID | None, state: SpaceState, error: Exception | None = None
    ) -> None:
        """An answer that appends no event to the space (a refusal, or a success that changes
        nothing) meets no stream-version conflict, so nothing would reveal that another process
        changed the space since it was loaded (a new account, a hold, a deposit, a status). If
        the store has newer events, the batch is decided again from the store rather than
        answered (and stored with its key) from a stale state. The global stream (assets,
        tokens) is checked for global commands and for an unknown currency."""
        stale = space_id is not None and bool(
            self.store.stream(space_id, after_version=state.version)
        )
        if not stale and (space_id is None or isinstance(error, errors.UnknownCurrency)):
            global_version = self.global_state.version
            stale = bool(self.store.stream(ev.GLOBAL_STREAM_ID, after_version=global_version))
        if stale:
            raise AppendConflict(f"space {space_id} changed in another process")

    # Handlers: each returns the command's answer, or raises a refusal ------------------------

    def _open_space(
        self, command: cmd.OpenSpace, scope: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        rules.check_text(command.name, "name", MAX_SPACE_NAME_LENGTH, required=True)
        self.currencies.exponent(command.base_currency)
        space_id = row.id
        state = SpaceState(space_id)
        event = ev.SpaceOpened(
            space_id=space_id,
            name=command.name,
            base_currency=command.base_currency,
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(state, event)
        plan.new_spaces[space_id] = state
        return SpaceRecord(
            id=space_id,
            name=command.name,
            base_currency=command.base_currency,
            recorded_at=plan.now,
        )

    def _register_asset(
        self, command: cmd.RegisterAsset, scope: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        code = check_asset_code(command.code)
        exponent = check_exponent(command.exponent)
        rules.check_text(command.name, "name", MAX_ASSET_NAME_LENGTH)
        existing = ISO_4217_EXPONENTS.get(code, self.global_state.assets.get(code))
        if existing is not None:
            if existing != exponent:
                raise errors.AssetExists(f"{code} exists with exponent {existing}")
            name = self.global_state.asset_names.get(code, command.name)
            return AssetRecord(code=code, exponent=exponent, name=name)
        event = ev.AssetRegistered(
            code=code,
            exponent=exponent,
            name=command.name,
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(self.global_state, event)
        return AssetRecord(code=code, exponent=exponent, name=command.name)

    def _open_account(
        self, command: cmd.OpenAccount, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        fields = rules.decide_open_account(
            state,
            self.currencies,
            account_id=row.id,
            name=command.name,
            type=command.type,
            subtype=command.subtype,
            currency=command.currency,
            code=command.code,
            overdraft_limit=command.overdraft_limit,
            metadata=command.metadata,
        )
        event = ev.AccountOpened(
            **fields,  # type: ignore[arg-type]
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(state, event)
        return state.accounts[row.id].record(state.space_id)

    def _update_account(
        self, command: cmd.UpdateAccount, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        account = rules.account_or_404(state, command.account_id)
        changes = rules.decide_update_account(
            account, self.currencies, command.name, command.overdraft_limit, command.metadata
        )
        if changes:
            event = ev.AccountUpdated(
                account_id=account.id,
                **changes,  # type: ignore[arg-type]
                recorded_at=plan.now,
                idempotency_key=command.idempotency_key,
                context=command.context,
            )
            row.event_index = plan.add_event(state, event)
        return state.accounts[account.id].record(state.space_id)

    def _set_status(
        self,
        command: cmd.FreezeAccount | cmd.UnfreezeAccount | cmd.CloseAccount,
        state: SpaceState,
        plan: _Plan,
        row: CommandRow,
    ) -> Outcome:
        account = rules.account_or_404(state, command.account_id)
        rules.check_reason(command.reason)
        event_type: type[ev.AccountFrozen | ev.AccountUnfrozen | ev.AccountClosed]
        if isinstance(command, cmd.CloseAccount):
            rules.decide_close(account)
            event_type, target = ev.AccountClosed, "closed"
        else:
            rules.check_not_closed(account)
            frozen = isinstance(command, cmd.FreezeAccount)
            event_type, target = (
                (ev.AccountFrozen, "frozen") if frozen else (ev.AccountUnfrozen, "active")
            )
        if account.status != target:
            event = event_type(
                account_id=account.id,
                reason=command.reason,
                recorded_at=plan.now,
                idempotency_key=command.idempotency_key,
                context=command.context,
            )
            row.event_index = plan.add_event(state, event)
        return state.accounts[account.id].record(state.space_id)

    def _record_posting(
        self, command: cmd.RecordPosting, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        spec = command.posting
        try:
            entries, _ = rules.decide_posting(state, self.currencies, spec, plan.now, {})
        except rules.Decline as decline:
            return self._decline(command, spec, decline, state, plan, row, reverses=None)
        event = _posting_event(command, spec, row.id, entries, plan, reverses=None, index=None)
        row.event_index = plan.add_event(state, event)
        row.posting_status = "pending" if spec.pending else "posted"
        row.posting_version = state.version
        return state.posting_record(event, row.posting_status)  # type: ignore[arg-type]

    def _decline(
        self,
        command: cmd.Command,
        spec: cmd.PostingSpec | None,
        decline: rules.Decline,
        state: SpaceState,
        plan: _Plan,
        row: CommandRow,
        reverses: UUID | None,
        effective_date: date | None = None,
        description: str = "",
    ) -> Outcome:
        event = ev.PostingDeclined(
            posting_id=row.id,
            entries=decline.entries,
            effective_date=(spec.effective_date if spec else effective_date) or plan.today,
            reason=decline.error.code,
            detail=decline.error.detail,
            description=spec.description if spec else description,
            merchant=spec.merchant if spec else None,
            category_id=spec.category_id if spec else None,
            metadata=dict(spec.metadata or {}) if spec else {},
            pending=spec.pending if spec else False,
            expires_at=_utc(spec.expires_at) if spec else None,
            reverses=reverses,
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(state, event)
        row.posting_status = "declined"
        row.posting_version = state.version
        return RefusalRecord(
            code=decline.error.code,
            detail=decline.error.detail,
            extra={"posting_id": str(row.id)},
            posting=state.posting_record(event, "declined"),
            context=command.context,
        )

    def _record_batch(
        self, command: cmd.RecordBatch, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        postings = command.postings
        if not isinstance(postings, (tuple, list)) or not postings:
            raise errors.InvalidRequest("a batch has at least one posting")
        if len(postings) > MAX_POSTINGS_PER_BATCH:
            raise errors.BatchTooLarge(f"a batch has at most {MAX_POSTINGS_PER_BATCH} postings")
        decided: list[tuple[cmd.PostingSpec, tuple[ev.EntryRecorded, ...]]] = []
        earlier: rules.Deltas = {}
        for index, spec in enumerate(postings):
            try:
                entries, deltas = rules.decide_posting(
                    state, self.currencies, spec, plan.now, earlier
                )
            except rules.Decline as decline:
                raise _item_failed(index, decline.error) from None
            except errors.LedgerError as error:
                if not error.stored:  # a not-found keeps its own code; `index` says which
                    error.extra.setdefault("index", index)
                    raise
                raise _item_failed(index, error) from None
            rules.merge_deltas(earlier, deltas)
            decided.append((spec, entries))
        records: list[PostingRecord] = []
        for index, (spec, entries) in enumerate(decided):
            posting_id = rules.batch_item_id(state.space_id, command.idempotency_key, index)
            event = _posting_event(command, spec, posting_id, entries, plan, None, index)
            event_index = plan.add_event(state, event)
            status = "pending" if spec.pending else "posted"
            plan.batch.command_rows.append(
                CommandRow(
                    scope_id=state.space_id,
                    id=posting_id,
                    idempotency_key=command.idempotency_key,
                    event_index=event_index,
                    posting_status=status,
                    posting_version=state.version,
                )
            )
            records.append(state.posting_record(event, status))  # type: ignore[arg-type]
            row.event_index = event_index
        return BatchRecord(postings=tuple(records))

    def _post_or_void(
        self,
        command: cmd.PostPending | cmd.VoidPending,
        state: SpaceState,
        plan: _Plan,
        row: CommandRow,
    ) -> Outcome:
        hold = self._open_hold(
            state, command.posting_id, posting=isinstance(command, cmd.PostPending)
        )
        event: ev.Event
        if isinstance(command, cmd.PostPending):
            entries = rules.decide_capture(self.currencies, hold, command.amount)
            event = ev.PendingPostingPosted(
                posting_id=hold.posting_id,
                entries=entries,
                recorded_at=plan.now,
                idempotency_key=command.idempotency_key,
                context=command.context,
            )
            status = "posted"
        else:
            rules.check_reason(command.reason)
            entries = hold.entries
            event = ev.PendingPostingVoided(
                posting_id=hold.posting_id,
                reason=command.reason,
                recorded_at=plan.now,
                idempotency_key=command.idempotency_key,
                context=command.context,
            )
            status = "voided"
        row.event_index = plan.add_event(state, event)
        plan.batch.posting_updates.append(
            PostingUpdate(
                space_id=state.space_id,
                posting_id=hold.posting_id,
                posting_status=status,
                posting_version=state.version if status == "posted" else None,
            )
        )
        return state.posting_record(hold, status, entries)  # type: ignore[arg-type]

    def _open_hold(
        self, state: SpaceState, posting_id: UUID, *, posting: bool
    ) -> ev.PostingRecorded:
        hold = state.holds.get(posting_id)
        if hold is not None:
            return hold[0]
        info = state.recent_postings.get(posting_id)
        if info is None:
            raise errors.PostingNotFound(f"no posting {posting_id} in this space")
        if info.status == "expired" and posting:
            raise errors.PendingExpired(f"posting {posting_id} expired")
        raise errors.PostingNotPending(f"posting {posting_id} is {info.status}, not pending")

    def _reverse(
        self, command: cmd.ReversePosting, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        original_id = command.posting_id
        rules.check_optional_text(command.description, "description", MAX_DESCRIPTION_LENGTH)
        if original_id in state.holds:
            raise errors.PostingNotPosted(f"posting {original_id} is pending, not posted")
        info = state.recent_postings.get(original_id)
        if info is None:
            raise errors.PostingNotFound(f"no posting {original_id} in this space")
        if info.status != "posted":
            raise errors.PostingNotPosted(f"posting {original_id} is {info.status}, not posted")
        if info.reversed_by is not None:
            raise errors.PostingAlreadyReversed(
                f"posting {original_id} was reversed by {info.reversed_by}"
            )
        description = command.description or f"Reversal of {original_id}"
        effective_date = command.effective_date or plan.today
        try:
            entries, _ = rules.decide_reversal(state, info.entries)
        except rules.Decline as decline:
            return self._decline(
                command,
                None,
                decline,
                state,
                plan,
                row,
                reverses=original_id,
                effective_date=effective_date,
                description=description,
            )
        event = ev.PostingRecorded(
            posting_id=row.id,
            entries=entries,
            effective_date=effective_date,
            description=description,
            reverses=original_id,
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(state, event)
        row.posting_status = "posted"
        row.posting_version = state.version
        plan.batch.posting_updates.append(
            PostingUpdate(space_id=state.space_id, posting_id=original_id, reversed_by=row.id)
        )
        return state.posting_record(event, "posted")

    def _issue_token(
        self, command: cmd.IssueToken, scope: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        if command.role not in ("admin", "write", "read"):
            raise errors.InvalidRequest("role is admin, write or read")
        if not rules.TOKEN_HASH_PATTERN.fullmatch(command.token_hash):
            raise errors.InvalidRequest("token_hash is the hex SHA-256 of the token")
        if command.token_hash in self.global_state.token_ids_by_hash:
            raise errors.InvalidRequest("a token with this hash exists")
        if len(command.spaces) > MAX_SPACES_PER_TOKEN:
            raise errors.InvalidRequest(f"a token names at most {MAX_SPACES_PER_TOKEN} spaces")
        event = ev.TokenIssued(
            token_id=row.id,
            token_hash=command.token_hash,
            role=command.role,
            spaces=tuple(command.spaces),
            recorded_at=plan.now,
            idempotency_key=command.idempotency_key,
            context=command.context,
        )
        row.event_index = plan.add_event(self.global_state, event)
        return self.global_state.tokens[row.id]

    def _revoke_token(
        self, command: cmd.RevokeToken, scope: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        token = self.global_state.tokens.get(command.token_id)
        if token is None:
            raise errors.TokenNotFound(f"no token {command.token_id}")
        if not token.revoked:
            event = ev.TokenRevoked(
                token_id=token.id,
                recorded_at=plan.now,
                idempotency_key=command.idempotency_key,
                context=command.context,
            )
            row.event_index = plan.add_event(self.global_state, event)
        return self.global_state.tokens[token.id]

    def _record_refusal(
        self, command: cmd.RecordRefusal, state: SpaceState, plan: _Plan, row: CommandRow
    ) -> Outcome:
        error = errors.error_from_code(command.code, command.detail)
        if not error.stored:
            raise errors.InvalidRequest(f"{command.code} is not a refusal stored with a key")
        raise error

    # Holds that expire -------------------------------------------------------------------------

    def _expire_due(self, state: SpaceState, plan: _Plan) -> None:
        for hold, _version in state.due_holds(plan.now):
            assert hold.expires_at is not None
            event = ev.PendingPostingExpired(
                posting_id=hold.posting_id, expires_at=hold.expires_at, recorded_at=plan.now
            )
            plan.add_event(state, event)
            plan.batch.posting_updates.append(
                PostingUpdate(
                    space_id=state.space_id, posting_id=hold.posting_id, posting_status="expired"
                )
            )

    def _sweep_idle(self) -> None:
        self._load_global()  # tokens and assets another process recorded
        now = self.clock()
        due = [s for s in self.spaces.values() if s.expiries and s.expiries[0][0] <= now]
        if due:
            self.expire_due_holds(due)

    def expire_due_holds(self, states: list[SpaceState] | None = None) -> int:
        """Record the expiry of every due hold in the loaded spaces (writer thread only)."""
        targets = {s.space_id: s for s in (self.spaces.values() if states is None else states)}
        for _attempt in range(MAX_APPEND_ATTEMPTS):
            plan = _Plan(self.clock(), self.cipher)
            for state in targets.values():
                self._expire_due(state, plan)
            try:
                if plan.batch.events:
                    self.store.append(plan.batch)
            except AppendConflict:
                self._forget(targets)
                reloaded = (self._space(space_id) for space_id in list(targets))
                targets = {s.space_id: s for s in reloaded if s is not None}
                continue
            except StoreUnavailable:
                self._forget(targets)
                return 0
            self._snapshot(list(targets.values()))
            return len(plan.batch.events)
        return 0

    # Loading, catching up, caching -------------------------------------------------------------

    def _catch_up_due(self) -> None:
        """The periodic catch-up. Its next time is set first, so that a database failing it
        is not asked again at once (the error reaches no caller)."""
        self._global_due = time.monotonic() + GLOBAL_CATCH_UP_SECONDS
        self._load_global()

    def _load_global(self) -> None:
        self._global_due = time.monotonic() + GLOBAL_CATCH_UP_SECONDS
        for stored in self.store.stream(
            ev.GLOBAL_STREAM_ID, after_version=self.global_state.version
        ):
            self.global_state.apply(decode_event(stored.topic, stored.state, self.cipher))
        self._global_loaded = True

    def _space(self, space_id: UUID) -> SpaceState | None:
        state = self.spaces.get(space_id)
        if state is not None:
            self.spaces.move_to_end(space_id)
            return state
        state, replayed = self._load_space(space_id)
        if state is not None:
            if replayed >= SNAPSHOT_AFTER_LOAD_EVENTS:
                # Snapshot it once its next batch lands, as if its last snapshot were a full
                # interval old: the next load (after a conflict, say) starts from there.
                self.snapshot_versions[space_id] = state.version - SNAPSHOT_INTERVAL_EVENTS
            self._cache(space_id, state)
        return state

    def load_space(self, space_id: UUID) -> SpaceState | None:
        """A space's state from its latest snapshot and the events after it (None: no space)."""
        return self._load_space(space_id)[0]

    def _load_space(self, space_id: UUID) -> tuple[SpaceState | None, int]:
        """`load_space`, and how many events it replayed after the snapshot."""
        snapshot = self.store.latest_snapshot(space_id)
        state = (
            decode_snapshot(self.cipher.open_blob(snapshot.state))
            if snapshot is not None
            else SpaceState(space_id)
        )
        self.snapshot_versions[space_id] = state.version
        replayed = 0
        for stored in self.store.stream(space_id, after_version=state.version):
            event = decode_event(stored.topic, stored.state, self.cipher)
            if state.version == 0 and not isinstance(event, ev.SpaceOpened):
                return None, replayed
            state.apply(event)
            replayed += 1
        if state.opened_at is None:
            return None, replayed
        return state, replayed

    def _cache(self, space_id: UUID, state: SpaceState) -> None:
        self.spaces[space_id] = state
        self.spaces.move_to_end(space_id)
        while len(self.spaces) > MAX_CACHED_SPACES:
            evicted, _ = self.spaces.popitem(last=False)
            self.snapshot_versions.pop(evicted, None)
            self._key_checks.pop(evicted, None)

    def _load_keys(self, requests: list[_Request], states: dict[UUID, SpaceState]) -> set[UUID]:
        """After a conflict, read the commands table for every key of the batch that is not in
        memory: one of them may have been used by another process, or long ago. Returns the
        scopes where one was found."""
        found: set[UUID] = set()
        wanted: dict[UUID, list[UUID]] = {}
        for request in requests:
            space_id = _space_of(request.command)
            scope_id = space_id if space_id is not None else GLOBAL_SCOPE
            scope_state = states.get(space_id) if space_id is not None else self.global_state
            if scope_state is None:
                continue
            row_id = rules.command_id(scope_id, request.command.idempotency_key)
            if row_id not in scope_state.recent_keys:
                wanted.setdefault(scope_id, []).append(row_id)
        for scope_id, ids in wanted.items():
            scope_state = states.get(scope_id) if scope_id != GLOBAL_SCOPE else self.global_state
            assert scope_state is not None
            for row_id, row in self.store.command_rows(scope_id, ids).items():
                if row.fingerprint is not None and row.outcome is not None:
                    outcome = self._resolved(scope_id, decode_outcome(row.outcome, self.cipher))
                    answer = KeyAnswer(row.fingerprint, outcome, row)
                    scope_state.remember_key(row_id, answer)
                    found.add(scope_id)
        return found

    def _arm_key_checks(self, states: dict[UUID, SpaceState]) -> None:
        """A batch of these spaces conflicted: look up the unknown keys of their next batches
        before deciding them (`_check_keys`)."""
        for space_id in states:
            self._key_checks[space_id] = KEY_CHECK_BATCHES_AFTER_CONFLICT

    def _check_keys(self, requests: list[_Request], states: dict[UUID, SpaceState]) -> None:
        """For the spaces whose batches conflicted lately, read the commands table for the keys
        of this batch that are not in memory before it is decided (`_load_keys`), so a key used
        before the in-memory window answers from the store at once, not after a conflict that
        drops the space's state and reloads it. One lookup per batch, and only after a conflict:
        a space stays checked while its batches keep bringing such keys, and for
        `KEY_CHECK_BATCHES_AFTER_CONFLICT` batches after the last one."""
        checked = {
            space_id: state for space_id, state in states.items() if space_id in self._key_checks
        }
        if not checked:
            return
        found = self._load_keys([r for r in requests if _space_of(r.command) in checked], checked)
        for space_id in checked:
            if space_id in found:
                self._key_checks[space_id] = KEY_CHECK_BATCHES_AFTER_CONFLICT
            elif self._key_checks[space_id] > 1:
                self._key_checks[space_id] -= 1
            else:
                del self._key_checks[space_id]

    def _resolved(self, scope_id: UUID, outcome: StoredOutcome) -> Outcome:
        """A stored answer as it was given: a posting's (`PostingStored`) or a batch's
        (`BatchStored`) rebuilt from its events."""
        if isinstance(outcome, PostingStored):
            [posting] = self._recorded_postings(scope_id, outcome.version, 1)
            return posting
        if isinstance(outcome, BatchStored):
            postings = self._recorded_postings(scope_id, outcome.first_version, outcome.count)
            return BatchRecord(postings=postings)
        return outcome

    def _recorded_postings(
        self, space_id: UUID, first_version: int, count: int
    ) -> tuple[PostingRecord, ...]:
        """The answers of the postings recorded at versions `first_version` onwards (`count`
        of them): each as it was recorded, posted or pending."""
        postings = []
        for item in self.store.stream_range(space_id, first_version, count):
            event = decode_event(item.topic, item.state, self.cipher)
            if not isinstance(event, ev.PostingRecorded):
                break
            status: PostingStatus = "pending" if event.pending else "posted"
            postings.append(posting_record(space_id, event, status))
        if len(postings) != count:
            raise RuntimeError(
                f"a stored answer in space {space_id} names {count} postings recorded from "
                f"version {first_version}; the log holds {len(postings)} there"
            )
        return tuple(postings)

    def _prefetch_postings(self, requests: list[_Request], states: dict[UUID, SpaceState]) -> None:
        """Find the postings that captures, voids and reversals name and that are not in memory
        (older than the recent-postings cache) in the commands table and the log."""
        wanted: dict[UUID, list[UUID]] = {}
        for request in requests:
            command = request.command
            if not isinstance(command, (cmd.PostPending, cmd.VoidPending, cmd.ReversePosting)):
                continue
            state = states.get(command.space_id)
            if state is None:
                continue
            posting_id = command.posting_id
            if posting_id not in state.holds and posting_id not in state.recent_postings:
                wanted.setdefault(command.space_id, []).append(posting_id)
        for space_id, ids in wanted.items():
            state = states[space_id]
            for posting_id, row in self.store.command_rows(space_id, ids).items():
                if row.posting_status is None or row.posting_version is None:
                    continue
                stored = self.store.stream_event(space_id, row.posting_version)
                if stored is None:
                    continue
                event = decode_event(stored.topic, stored.state, self.cipher)
                entries = getattr(event, "entries", ())
                state.recent_postings[posting_id] = PostingInfo(
                    row.posting_status, row.posting_version, entries, row.reversed_by
                )

    def _snapshot(self, states: list[SpaceState]) -> None:
        for state in states:
            last = self.snapshot_versions.get(state.space_id, 0)
            if state.version - last >= SNAPSHOT_INTERVAL_EVENTS:
                self.store.save_snapshot(
                    StoredEvent(
                        originator_id=state.space_id,
                        originator_version=state.version,
                        topic=SNAPSHOT_TOPIC,
                        state=self.cipher.seal_blob(encode_snapshot(state)),
                    )
                )
                self.snapshot_versions[state.space_id] = state.version

    # Answering ---------------------------------------------------------------------------------

    def _deliver(self, requests: list[_Request]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, bool]]] = {}
        for request in requests:
            request.delivered = True
            value, failed = _answer_of(request)
            if request.loop is None:
                if failed:
                    request.future.set_exception(value)
                else:
                    request.future.set_result(value)
            else:
                by_loop.setdefault(request.loop, []).append((request.future, value, failed))
        for loop, answers in by_loop.items():
            # A closed loop raises RuntimeError: its caller is gone and nobody is waiting.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_resolve_all, answers)


def _resolve_all(answers: list[tuple[asyncio.Future[Any], Any, bool]]) -> None:
    for future, value, failed in answers:
        if future.done():
            continue
        if failed:
            future.set_exception(value)
        else:
            future.set_result(value)


def _answer_of(request: _Request) -> tuple[Any, bool]:
    answer = request.answer
    position = answer.row.position if answer is not None else None
    if request.error is not None:
        error = request.error
        error.position = position
        if answer is not None and isinstance(answer.outcome, RefusalRecord):
            posting = answer.outcome.posting
            error.posting_id = posting.id if posting is not None else None
        return error, True
    assert answer is not None
    outcome = answer.outcome
    assert not isinstance(outcome, RefusalRecord)
    return CommandResult(outcome=outcome, position=position, replayed=request.replayed), False


def _stored_form(
    command: cmd.Command, outcome: Outcome, row: CommandRow, plan: _Plan
) -> StoredOutcome:
    """What is stored with the key: the answer, or for a recorded posting or batch where its
    postings are in the log (`PostingStored`, `BatchStored`: a batch's events are consecutive
    versions, the last one the row's). Their answers are exactly what `posting_record` makes of
    those events with the status they were recorded with (`_record_posting`, `_record_batch`)."""
    if row.event_index is None:
        return outcome
    last = plan.batch.events[row.event_index]
    if isinstance(outcome, PostingRecord) and isinstance(command, cmd.RecordPosting):
        return PostingStored(version=last.originator_version)
    if isinstance(outcome, BatchRecord):
        count = len(outcome.postings)
        first = plan.batch.events[row.event_index - count + 1]
        assert first.originator_version == last.originator_version - count + 1, "one run"
        return BatchStored(first_version=first.originator_version, count=count)
    return outcome


def _utc(moment: datetime | None) -> datetime | None:
    """A time as recorded: in UTC (API.md: times are RFC 3339 UTC), whatever offset the client
    sent it with (the same instant: a command's fingerprint does not change)."""
    return None if moment is None else moment.astimezone(UTC)


def _failure(error: Exception) -> errors.Unavailable:
    """Log a failed batch and build its callers' `unavailable`: a warning when the database is
    away (nothing to fix here; the detail says so), an error with the traceback otherwise."""
    if is_unavailable(error):
        logger.warning("the ledger's database is unavailable: %s", error)
        return _failed(error, _DATABASE_DETAIL)
    logger.error("ledger writer failed a batch", exc_info=error)
    return _failed(error)


def _answered(item: _Request | _Call) -> bool:
    return item.delivered if isinstance(item, _Request) else item.future.done()


def _answer_known(request: _Request, known: KeyAnswer, digest: bytes, cipher: Cipher) -> None:
    """Answer a key used before: its first answer again, or `idempotency-key-reused`.
    `digest` is the request's (`commands.command_fingerprint`); the stored fingerprint may be
    keyed with any of the cipher's keys, or plain (`Cipher.fingerprint_matches`)."""
    if not cipher.fingerprint_matches(known.fingerprint, digest):
        request.error = errors.IdempotencyKeyReused(
            "this idempotency key was used for another request"
        )
        return
    request.answer = known
    request.replayed = True
    request.error = _refusal_error_of(known.outcome)
    if request.error is not None:
        request.error.replayed = True


def _refusal_error_of(outcome: Outcome) -> errors.LedgerError | None:
    if not isinstance(outcome, RefusalRecord):
        return None
    return errors.error_from_code(outcome.code, outcome.detail, outcome.extra)


def _item_failed(index: int, error: errors.LedgerError) -> errors.BatchItemFailed:
    return errors.BatchItemFailed(
        f"posting {index} of the batch was refused ({error.code}): {error.detail}",
        index=index,
        item_code=error.code,
    )


def _posting_event(
    command: cmd.Command,
    spec: cmd.PostingSpec,
    posting_id: UUID,
    entries: tuple[ev.EntryRecorded, ...],
    plan: _Plan,
    reverses: UUID | None,
    index: int | None,
) -> ev.PostingRecorded:
    return ev.PostingRecorded(
        posting_id=posting_id,
        entries=entries,
        effective_date=spec.effective_date or plan.today,
        description=spec.description,
        merchant=spec.merchant,
        category_id=spec.category_id,
        metadata=dict(spec.metadata) if spec.metadata else {},
        pending=spec.pending,
        expires_at=_utc(spec.expires_at),
        reverses=reverses,
        batch_index=index,
        recorded_at=plan.now,
        idempotency_key=command.idempotency_key,
        context=command.context,
    )


def _space_of(command: cmd.Command) -> UUID | None:
    space_id = getattr(command, "space_id", None)
    return space_id if isinstance(space_id, UUID) else None


def _has_work(batch: AppendBatch) -> bool:
    return bool(batch.events or batch.command_rows or batch.posting_updates)


_HANDLERS: Final[dict[type[cmd.Command], Callable[..., Outcome]]] = {
    cmd.OpenSpace: Writer._open_space,
    cmd.RegisterAsset: Writer._register_asset,
    cmd.OpenAccount: Writer._open_account,
    cmd.UpdateAccount: Writer._update_account,
    cmd.FreezeAccount: Writer._set_status,
    cmd.UnfreezeAccount: Writer._set_status,
    cmd.CloseAccount: Writer._set_status,
    cmd.RecordPosting: Writer._record_posting,
    cmd.RecordBatch: Writer._record_batch,
    cmd.PostPending: Writer._post_or_void,
    cmd.VoidPending: Writer._post_or_void,
    cmd.ReversePosting: Writer._reverse,
    cmd.RecordRefusal: Writer._record_refusal,
    cmd.IssueToken: Writer._issue_token,
    cmd.RevokeToken: Writer._revoke_token,
}
_HANDLED: Final = tuple(_HANDLERS)
