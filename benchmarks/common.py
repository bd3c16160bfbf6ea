"""What every benchmark shares: the same-run references, scratch databases, the book a benchmark
writes to, the machine's description, and the results (a printed table and a JSON file).

Absolute rates on a shared 2-core machine are noise, so DESIGN.md asks each benchmark to measure
a reference in the same run and report the ratio:

- PostgreSQL: `pgbench-reference` (pgbench's TPC-B-like workload, 16 clients, on the same server),
  found at `../shared/tools/pgbench-reference` beside the repository, else at its absolute path.
- SQLite: the raw single-row commit rate, a loop of one INSERT and one COMMIT on a scratch file
  with the ledger store's own durability (journal_mode=WAL, synchronous=FULL; see
  `ledger_core.store._DurableSQLitePool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ledger_core import Ledger
from ledger_core import commands as cmd
from ledger_core.limits import MAX_POSTINGS_PER_BATCH
from ledger_core.records import AccountRecord, SpaceRecord

REPOSITORY_ROOT: Final = Path(__file__).resolve().parent.parent
RESULTS_DIRECTORY: Final = REPOSITORY_ROOT / "benchmarks" / "results"
#: Where the pgbench reference script lives: beside the repository in a fresh clone, else the
#: shared tools directory of this machine.
PGBENCH_REFERENCE_PATHS: Final = (
    REPOSITORY_ROOT.parent / "shared" / "tools" / "pgbench-reference",
    Path("/work/shared/tools/pgbench-reference"),
)
#: pgbench-reference initialises a scale-10 database before it runs: allow that on top of the run.
PGBENCH_SETUP_ALLOWANCE_SECONDS: Final = 300
DEFAULT_POSTGRES_ADMIN_URL: Final = "postgresql://postgres@127.0.0.1:5432/test"
#: The durability of the ledger's SQLite store, used by the SQLite reference too.
SQLITE_JOURNAL_MODE: Final = "WAL"
SQLITE_SYNCHRONOUS: Final = "FULL"
#: SQLite reports `synchronous` as a number: 2 is FULL.
SQLITE_SYNCHRONOUS_FULL: Final = 2
#: The benchmarks' currency: two decimal places, like most.
CURRENCY: Final = "USD"
#: Postings of a preload batch are for amounts of 0.01 up to this many minor units.
MAX_PRELOAD_AMOUNT_MINOR: Final = 100_000


class ReferenceUnavailable(Exception):
    """The same-run reference could not be measured (no script, or it reported an error)."""


# References -------------------------------------------------------------------------------------


def find_pgbench_reference() -> Path:
    """The pgbench reference script: relative to the repository first, then the absolute path."""
    for path in PGBENCH_REFERENCE_PATHS:
        if path.is_file() and os.access(path, os.X_OK):
            return path
    raise ReferenceUnavailable(
        "pgbench-reference not found at " + " or ".join(str(p) for p in PGBENCH_REFERENCE_PATHS)
    )


def parse_pgbench_reference(output: str) -> dict[str, Any]:
    """The figures of pgbench-reference's one JSON line (the last line that is a JSON object)."""
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        figures: dict[str, Any] = json.loads(line)
        if "error" in figures:
            raise ReferenceUnavailable(f"pgbench-reference failed: {figures['error']}")
        if not isinstance(figures.get("pgbench_tpcb_16c_tps"), (int, float)):
            raise ReferenceUnavailable(f"pgbench-reference gave no tps: {line}")
        return figures
    raise ReferenceUnavailable(f"pgbench-reference printed no JSON line: {output!r}")


def run_pgbench_reference(seconds: int) -> dict[str, Any]:
    """Run pgbench's TPC-B-like workload (16 clients) for `seconds` on the local PostgreSQL."""
    script = find_pgbench_reference()
    completed = subprocess.run(
        [str(script), str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + PGBENCH_SETUP_ALLOWANCE_SECONDS,
        check=False,
    )
    figures = parse_pgbench_reference(completed.stdout)
    figures["script"] = str(script)
    return figures


def sqlite_commit_rate(seconds: float, directory: Path | None = None) -> dict[str, Any]:
    """SQLite's raw single-row commit rate: INSERT one row and COMMIT, in a loop, on a scratch
    file with the ledger store's durability (WAL, synchronous=FULL)."""
    scratch = Path(tempfile.mkdtemp(prefix="sqlite-reference-", dir=directory))
    try:
        connection = sqlite3.connect(scratch / "reference.db", isolation_level=None)
        try:
            journal_mode = connection.execute(
                f"PRAGMA journal_mode={SQLITE_JOURNAL_MODE}"
            ).fetchone()[0]
            connection.execute(f"PRAGMA synchronous={SQLITE_SYNCHRONOUS}")
            synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
            if str(journal_mode).upper() != SQLITE_JOURNAL_MODE:
                raise ReferenceUnavailable(f"SQLite refused journal_mode=WAL: {journal_mode}")
            if synchronous != SQLITE_SYNCHRONOUS_FULL:
                raise ReferenceUnavailable(f"SQLite refused synchronous=FULL: {synchronous}")
            connection.execute("CREATE TABLE reference (id INTEGER PRIMARY KEY, payload BLOB)")
            commits = _commit_loop(connection, seconds)
        finally:
            connection.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "sqlite_single_row_commits_per_second": commits["count"] / commits["seconds"],
        "commits": commits["count"],
        "seconds": commits["seconds"],
        "journal_mode": SQLITE_JOURNAL_MODE,
        "synchronous": SQLITE_SYNCHRONOUS,
    }


def _commit_loop(connection: sqlite3.Connection, seconds: float) -> dict[str, float]:
    payload = os.urandom(64)
    count = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        connection.execute("BEGIN")
        connection.execute("INSERT INTO reference (payload) VALUES (?)", (payload,))
        connection.execute("COMMIT")
        count += 1
        now = time.perf_counter()
        if now >= deadline:
            return {"count": count, "seconds": now - started}


# Scratch databases ------------------------------------------------------------------------------


def postgres_admin_url() -> str:
    """The admin connection benchmarks create their scratch databases with."""
    return os.environ.get(
        "LEDGER_BENCH_POSTGRES_URL",
        os.environ.get("LEDGER_TEST_POSTGRES_URL", DEFAULT_POSTGRES_ADMIN_URL),
    )


@contextlib.contextmanager
def scratch_postgres_database(prefix: str = "ledger_bench", keep: bool = False) -> Iterator[str]:
    """A fresh database on the benchmark server for the run, dropped afterwards."""
    import psycopg

    admin_url = postgres_admin_url()
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin_url.rpartition('/')[0]}/{name}"
    try:
        yield url
    finally:
        if not keep:
            with psycopg.connect(admin_url, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def scratch_sqlite_url(keep: bool = False) -> Iterator[str]:
    """An SQLite file in a fresh temporary directory, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="ledger-bench-"))
    try:
        yield f"sqlite:///{directory / 'ledger.db'}"
    finally:
        if not keep:
            shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def scratch_database(backend: str, keep: bool = False) -> Iterator[str]:
    if backend == "postgresql":
        with scratch_postgres_database(keep=keep) as url:
            yield url
    elif backend == "sqlite":
        with scratch_sqlite_url(keep=keep) as url:
            yield url
    else:
        raise ValueError(f"unknown backend {backend!r}")


# The machine ------------------------------------------------------------------------------------


def postgres_settings(url: str | None = None) -> dict[str, Any]:
    """The server version and durability settings of the benchmark PostgreSQL."""
    import psycopg

    names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
    try:
        with psycopg.connect(url or postgres_admin_url(), connect_timeout=5) as connection:
            return {
                name: connection.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in names
            }
    except psycopg.Error as error:
        return {"error": f"{type(error).__name__}: {error}"}


def machine_info(with_postgres: bool) -> dict[str, Any]:
    info: dict[str, Any] = {
        "nproc": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "sqlite_durability": {
            "journal_mode": SQLITE_JOURNAL_MODE,
            "synchronous": SQLITE_SYNCHRONOUS,
        },
    }
    with contextlib.suppress(OSError):
        info["load_average_1m_5m_15m"] = os.getloadavg()
    if with_postgres:
        info["postgresql"] = postgres_settings()
    return info


def code_version() -> dict[str, Any]:
    """The commit measured, and whether ledger_core had uncommitted changes (the lead engineer
    measures work in progress with these benchmarks)."""

    def git(*arguments: str) -> str:
        completed = subprocess.run(
            ["git", *arguments],
            capture_output=True,
            text=True,
            cwd=REPOSITORY_ROOT,
            check=False,
        )
        return completed.stdout.strip() if completed.returncode == 0 else ""

    changed = git("status", "--porcelain", "--", "ledger_core")
    return {
        "commit": git("rev-parse", "HEAD") or None,
        "ledger_core_uncommitted_changes": changed.splitlines() if changed else [],
    }


# The book a benchmark writes to -----------------------------------------------------------------


@dataclass(frozen=True)
class Book:
    """A space with its accounts (asset accounts without an overdraft limit: nothing declines)."""

    space_id: uuid.UUID
    account_ids: tuple[uuid.UUID, ...]


async def open_book(ledger: Ledger, accounts: int, run_id: str) -> Book:
    """Open a USD space and `accounts` asset accounts without limits (submitted concurrently)."""
    space = await ledger.submit(
        cmd.OpenSpace(idempotency_key=f"{run_id}-space", name="Benchmark", base_currency=CURRENCY)
    )
    assert isinstance(space.outcome, SpaceRecord)
    space_id = space.outcome.id
    opened = await asyncio.gather(
        *(
            ledger.submit(
                cmd.OpenAccount(
                    idempotency_key=f"{run_id}-account-{index}",
                    space_id=space_id,
                    name=f"Account {index}",
                    type="asset",
                    currency=CURRENCY,
                )
            )
            for index in range(accounts)
        )
    )
    return Book(space_id=space_id, account_ids=tuple(_account_id(r.outcome) for r in opened))


def _account_id(outcome: object) -> uuid.UUID:
    assert isinstance(outcome, AccountRecord), outcome
    return outcome.id


def amount_text(amount_minor: int) -> str:
    """Minor units of a two-place currency as the decimal string a command carries."""
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def two_entry_posting(
    debit: uuid.UUID, credit: uuid.UUID, amount: str, description: str = ""
) -> cmd.PostingSpec:
    return cmd.PostingSpec(
        description=description,
        entries=(
            cmd.EntrySpec(account_id=debit, direction="debit", amount=amount),
            cmd.EntrySpec(account_id=credit, direction="credit", amount=amount),
        ),
    )


def random_pair(
    rng: random.Random, account_ids: Sequence[uuid.UUID]
) -> tuple[uuid.UUID, uuid.UUID]:
    """Two different accounts, uniformly at random."""
    debit, credit = rng.sample(account_ids, 2)
    return debit, credit


async def preload_postings(
    ledger: Ledger,
    book: Book,
    postings: int,
    *,
    run_id: str,
    in_flight: int = 4,
    progress: Callable[[int, float], None] | None = None,
) -> float:
    """Record `postings` uniform two-entry postings in `RecordBatch` commands of
    `MAX_POSTINGS_PER_BATCH`, `in_flight` commands at a time; return the seconds it took.
    `progress(recorded, elapsed_seconds)` is called after each command."""
    rng = random.Random(f"{run_id}-preload")
    batch_sizes = [MAX_POSTINGS_PER_BATCH] * (postings // MAX_POSTINGS_PER_BATCH)
    if postings % MAX_POSTINGS_PER_BATCH:
        batch_sizes.append(postings % MAX_POSTINGS_PER_BATCH)
    pending = iter(enumerate(batch_sizes))
    recorded = 0
    started = time.perf_counter()

    async def worker() -> None:
        nonlocal recorded
        for index, size in pending:
            specs = tuple(
                two_entry_posting(
                    *random_pair(rng, book.account_ids),
                    amount_text(rng.randint(1, MAX_PRELOAD_AMOUNT_MINOR)),
                )
                for _ in range(size)
            )
            await ledger.submit(
                cmd.RecordBatch(
                    idempotency_key=f"{run_id}-preload-{index}",
                    space_id=book.space_id,
                    postings=specs,
                )
            )
            recorded += size
            if progress is not None:
                progress(recorded, time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return time.perf_counter() - started


def thread_cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) used so far by each live thread of this process, by thread
    name, from /proc (Linux; empty elsewhere). Clock-tick resolution (usually 10 ms)."""
    ticks_per_second = os.sysconf("SC_CLK_TCK")
    seconds: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        user_ticks, system_ticks = int(fields[11]), int(fields[12])
        seconds[thread.name] = (user_ticks + system_ticks) / ticks_per_second
    return seconds


# Results ----------------------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of already sorted values (NaN if there are none)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(row[i]) for row in rows) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in cells)])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def write_results(name: str, payload: dict[str, Any], directory: Path = RESULTS_DIRECTORY) -> Path:
    """Write a benchmark's figures as JSON to `<directory>/<name>.json`; return the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return path


def utc_timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
