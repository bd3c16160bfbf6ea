"""The load benchmark of issue 2: "loading a space of 1,000,000 postings takes under 1 s".

    python -m benchmarks.load_benchmark [--backend postgresql|sqlite|both] [--postings N]
                                        [--repeats 5]

For each backend it builds, on a scratch database, a space with 1,000 asset accounts and
`--postings` two-entry postings recorded through the ledger in `RecordBatch` commands of 1,000
(printing progress; this takes minutes for a million), and closes that ledger. Then, in a fresh
`Ledger` of this process, it times `ledger.load_space(space_id)` (the latest snapshot plus the
events after it) `--repeats` times and reports the median; and it starts a fresh Python process
that opens the ledger and records one posting on the space (the first command loads the space),
timing the open, that first command and a second one. The same run measures the reference of
DESIGN.md (pgbench TPC-B 16 clients, or SQLite's raw single-row commit rate) so the build rate can
be compared across runs; the target itself is absolute (under 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from ledger_core import Ledger
from ledger_core import commands as cmd
from ledger_core.limits import SNAPSHOT_INTERVAL_EVENTS

BACKENDS: Final = ("postgresql", "sqlite")
ACCOUNTS: Final = 1_000
POSTINGS: Final = 1_000_000
REPEATS: Final = 5
#: Issue 2's target for loading a space of a million postings.
TARGET_LOAD_SECONDS: Final = 1.0
#: How often (in postings) the build prints its progress.
PROGRESS_EVERY_POSTINGS: Final = 50_000
PGBENCH_SECONDS: Final = 10
SQLITE_REFERENCE_SECONDS: Final = 3.0
REFERENCE_NAMES: Final = {
    "postgresql": "pgbench_tpcb_16c_tps",
    "sqlite": "sqlite_single_row_commits_per_second",
}
#: The fresh process records this many postings (the first loads the space).
FRESH_PROCESS_POSTINGS: Final = 2
#: The fresh process must answer within this (it loads the space and records one posting).
FIRST_COMMAND_TIMEOUT_SECONDS: Final = 600


async def build_space(
    url: str, accounts: int, postings: int, run_id: str
) -> tuple[common.Book, dict[str, Any]]:
    """Open a space with `accounts` accounts and `postings` postings; close the ledger."""
    ledger = Ledger.open(url)
    try:
        book = await common.open_book(ledger, accounts, run_id)
        next_report = PROGRESS_EVERY_POSTINGS

        def progress(recorded: int, elapsed: float) -> None:
            nonlocal next_report
            if recorded >= next_report or recorded == postings:
                next_report += PROGRESS_EVERY_POSTINGS
                _say(f"  {recorded:>10,} postings  {elapsed:7.1f} s  {recorded / elapsed:8,.0f}/s")

        seconds = await common.preload_postings(
            ledger, book, postings, run_id=run_id, progress=progress
        )
    finally:
        ledger.close()
    return book, {
        "space_id": str(book.space_id),
        "debit_account_id": str(book.account_ids[0]),
        "credit_account_id": str(book.account_ids[1]),
        "build_seconds": seconds,
        "build_postings_per_second": postings / seconds if seconds else float("nan"),
    }


async def top_up_to_longest_tail(url: str, book: common.Book, run_id: str) -> int:
    """Record postings until the stream holds `SNAPSHOT_INTERVAL_EVENTS - 1` events after the
    space's latest snapshot: the longest replay a load can need. Returns how many it added."""
    ledger = Ledger.open(url)
    try:
        snapshot = ledger.store.latest_snapshot(book.space_id)
        state = ledger.load_space(book.space_id)
        assert state is not None
        tail = state.version - (snapshot.originator_version if snapshot is not None else 0)
        missing = max(0, SNAPSHOT_INTERVAL_EVENTS - 1 - tail)
        if missing:
            await common.preload_postings(ledger, book, missing, run_id=f"{run_id}-tail")
    finally:
        ledger.close()
    return missing


def time_loads(url: str, space_id: uuid.UUID, repeats: int) -> dict[str, Any]:
    """In a fresh ledger: open it, then `load_space` `repeats` times."""
    started = time.perf_counter()
    ledger = Ledger.open(url)
    open_seconds = time.perf_counter() - started
    try:
        seconds: list[float] = []
        state = None
        for _ in range(repeats):
            started = time.perf_counter()
            state = ledger.load_space(space_id)
            seconds.append(time.perf_counter() - started)
        if state is None:
            raise RuntimeError(f"space {space_id} did not load")
        snapshot = ledger.store.latest_snapshot(space_id)
        snapshot_version = snapshot.originator_version if snapshot is not None else 0
        return {
            "open_seconds": open_seconds,
            "load_seconds": seconds,
            "load_seconds_median": statistics.median(seconds),
            "space_version": state.version,
            "accounts_loaded": len(state.accounts),
            "snapshot_version": snapshot_version,
            "snapshot_bytes": len(snapshot.state) if snapshot is not None else 0,
            "events_after_snapshot": state.version - snapshot_version,
        }
    finally:
        ledger.close()


def first_command_in_fresh_process(url: str, built: dict[str, Any]) -> dict[str, Any]:
    """Start a new Python process that opens the ledger and records two postings on the space;
    the first one loads the space. Returns its timings and the process's wall time."""
    started = time.perf_counter()
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.load_benchmark",
            "--first-command",
            url,
            built["space_id"],
            built["debit_account_id"],
            built["credit_account_id"],
        ],
        capture_output=True,
        text=True,
        timeout=FIRST_COMMAND_TIMEOUT_SECONDS,
        check=True,
        cwd=common.REPOSITORY_ROOT,
    )
    timings: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    timings["process_wall_seconds"] = time.perf_counter() - started
    return timings


def first_command(url: str, space_id: str, debit: str, credit: str) -> dict[str, float]:
    """What the fresh process does: open, record a posting (loads the space), record another."""
    started = time.perf_counter()
    ledger = Ledger.open(url)
    opened = time.perf_counter()
    marks = [opened]
    try:
        for index in range(FRESH_PROCESS_POSTINGS):
            ledger.execute(
                cmd.RecordPosting(
                    idempotency_key=f"load-benchmark-{uuid.uuid4().hex}-{index}",
                    space_id=uuid.UUID(space_id),
                    posting=common.two_entry_posting(uuid.UUID(debit), uuid.UUID(credit), "1.00"),
                )
            )
            marks.append(time.perf_counter())
    finally:
        ledger.close()
    return {
        "open_seconds": opened - started,
        "first_command_seconds": marks[1] - marks[0],
        "second_command_seconds": marks[2] - marks[1],
    }


def measure_reference(backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        return common.run_pgbench_reference(PGBENCH_SECONDS)
    return common.sqlite_commit_rate(SQLITE_REFERENCE_SECONDS)


def run_backend(backend: str, arguments: argparse.Namespace) -> dict[str, Any]:
    """Build the space, then measure loading it as built and with the longest tail of events
    after its snapshot."""
    run_id = f"load-{uuid.uuid4().hex[:8]}"
    reference = None if arguments.no_reference else measure_reference(backend)
    with common.scratch_database(backend, keep=arguments.keep) as url:
        size = f"{arguments.postings:,} postings over {arguments.accounts:,} accounts"
        _say(f"{backend}: building {size}")
        book, built = asyncio.run(build_space(url, arguments.accounts, arguments.postings, run_id))
        cases = [measure_case("as built", url, built, arguments, arguments.postings)]
        added = asyncio.run(top_up_to_longest_tail(url, book, run_id))
        if added:
            total = arguments.postings + FRESH_PROCESS_POSTINGS + added
            cases.append(measure_case("longest tail", url, built, arguments, total))
        if arguments.keep:
            _say(f"kept {url}")
    reference_rate = reference[REFERENCE_NAMES[backend]] if reference else float("nan")
    return {
        "backend": backend,
        "postings": arguments.postings,
        "accounts": arguments.accounts,
        "reference": reference,
        "build_ratio_to_reference": built["build_postings_per_second"] / reference_rate,
        **built,
        "cases": cases,
        "target_load_seconds": TARGET_LOAD_SECONDS,
        "target_met": all(c["load_seconds_median"] < TARGET_LOAD_SECONDS for c in cases),
    }


def measure_case(
    name: str, url: str, built: dict[str, Any], arguments: argparse.Namespace, postings: int
) -> dict[str, Any]:
    """Time `load_space` in a fresh ledger and the first command in a fresh process."""
    loads = time_loads(url, uuid.UUID(built["space_id"]), arguments.repeats)
    case = {
        "case": name,
        "postings": postings,
        **loads,
        "space_version_expected": 1 + arguments.accounts + postings,
        "fresh_process": first_command_in_fresh_process(url, built),
    }
    _say(f"  {name}: load_space median {loads['load_seconds_median']:.3f} s")
    return case


TABLE_HEADERS: Final = (
    "backend",
    "case",
    "postings",
    "build/s",
    "load_space median s",
    "max s",
    "events after snapshot",
    "snapshot KB",
    "fresh: open s",
    "fresh: 1st cmd s",
    "fresh: 2nd cmd s",
    "target < 1 s",
)


def table(results: Sequence[dict[str, Any]]) -> str:
    rows = [
        (
            result["backend"],
            case["case"],
            case["postings"],
            result["build_postings_per_second"],
            case["load_seconds_median"],
            max(case["load_seconds"]),
            case["events_after_snapshot"],
            case["snapshot_bytes"] / 1024,
            case["fresh_process"]["open_seconds"],
            case["fresh_process"]["first_command_seconds"],
            case["fresh_process"]["second_command_seconds"],
            "met" if case["load_seconds_median"] < TARGET_LOAD_SECONDS else "MISSED",
        )
        for result in results
        for case in result["cases"]
    ]
    return common.format_table(TABLE_HEADERS, rows)


def parse_arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load_benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--postings", type=int, default=POSTINGS)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--repeats", type=int, default=REPEATS, help="load_space timings")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIRECTORY)
    parser.add_argument("--name", help="results file name (default: load or load-<backend>)")
    parser.add_argument("--first-command", nargs=4, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    arguments = parse_arguments(argv)
    if arguments.first_command:
        print(json.dumps(first_command(*arguments.first_command)))
        return {}
    if arguments.accounts < 2 or arguments.postings < 1 or arguments.repeats < 1:
        raise SystemExit("--accounts >= 2, --postings >= 1 and --repeats >= 1")
    backends = BACKENDS if arguments.backend == "both" else (arguments.backend,)
    results = [run_backend(backend, arguments) for backend in backends]
    name = arguments.name or ("load" if len(backends) > 1 else f"load-{backends[0]}")
    payload = {
        "benchmark": "load",
        "finished_at": common.utc_timestamp(),
        "command": ["python", "-m", "benchmarks.load_benchmark", *argv],
        "code": common.code_version(),
        "machine": common.machine_info(with_postgres="postgresql" in backends),
        "results": results,
    }
    path = common.write_results(name, payload, arguments.results_dir)
    print(table(results))
    print(f"\nresults: {path}")
    return payload


if __name__ == "__main__":
    main()
