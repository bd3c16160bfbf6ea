"""The replay benchmark of issue 3: events/s rebuilding every projection from position 0, and
the peak memory of the rebuild, as the log grows.

    python -m benchmarks.replay_benchmark [--backend postgresql|sqlite|both]
                                          [--sizes 100000,1000000] [--quick]

For each backend (a scratch PostgreSQL database, or an SQLite file in a temporary directory) it
opens a space with 1,000 asset accounts, then grows the log to each size in turn (two-entry
postings in `RecordBatch` commands of 1,000, through `Ledger`, not timed) and after each size
runs `projections.rebuild.replay` (all projections, one pass, swapped in at the end) in a fresh
child process, which reports the events replayed, the seconds and its peak resident memory
(VmHWM). Flat memory means the peak at 1,000,000 postings is about the peak at 100,000.

The same run measures the reference of DESIGN.md (pgbench TPC-B 16 clients on PostgreSQL;
SQLite's raw single-row commit rate) and reports events/s over it. Results go to
`benchmarks/results/replay.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from ledger_core import Ledger
from migrations import apply_migrations

BACKENDS: Final = ("postgresql", "sqlite")
DEFAULT_SIZES: Final = (100_000, 1_000_000)
QUICK_SIZES: Final = (20_000, 60_000)
ACCOUNTS: Final = 1_000
PGBENCH_SECONDS: Final = 15
SQLITE_REFERENCE_SECONDS: Final = 5.0
#: Issue 3's target.
TARGET_EVENTS_PER_SECOND: Final = 50_000
#: The child process gets this long per million events before it is considered stuck.
CHILD_SECONDS_PER_MILLION_EVENTS: Final = 3_600


def child(url: str) -> None:
    """Run in a fresh process: replay everything, print one JSON line. On a long log each
    projection is built by its own builder process: their peaks are reported too, and
    `peak_rss_mib` is the sum of this process's peak and the builders' peaks (an upper bound
    of the memory the replay held at once)."""
    from projections.rebuild import replay

    started = time.perf_counter()
    result = replay(url)
    seconds = time.perf_counter() - started
    own_kib = peak_rss_kib()
    builders_kib = list(result.builder_peak_rss_kib)
    print(
        json.dumps(
            {
                "events": result.events,
                "seconds": seconds,
                "peak_rss_mib": (own_kib + sum(builders_kib)) / 1024,
                "replay_process_peak_rss_mib": own_kib / 1024,
                "builder_peak_rss_mib": [kib / 1024 for kib in builders_kib],
            }
        )
    )


def peak_rss_kib() -> int:
    """This process's peak resident memory. VmHWM, not `ru_maxrss`: Linux carries a parent's
    `ru_maxrss` into a child across exec, and the parent here has just written a big log."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure_replay(url: str, events: int) -> dict[str, Any]:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.replay_benchmark", "--child", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=60 + CHILD_SECONDS_PER_MILLION_EVENTS * max(events, 1) / 1_000_000,
    )
    figures: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    figures["events_per_second"] = figures["events"] / figures["seconds"]
    return figures


async def grow(ledger: Ledger, book: common.Book, postings: int, run_id: str) -> float:
    def progress(recorded: int, elapsed: float) -> None:
        if recorded % 100_000 == 0:
            print(f"  recorded {recorded:,} postings ({recorded / elapsed:,.0f}/s)", flush=True)

    return await common.preload_postings(ledger, book, postings, run_id=run_id, progress=progress)


def run_backend(backend: str, sizes: tuple[int, ...]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with common.scratch_database(backend) as url:
        apply_migrations(url)
        book: common.Book | None = None
        recorded = 0
        for size in sizes:
            print(f"{backend}: growing the log to {size:,} postings", flush=True)
            # The writer is closed while the replay runs: the replay has the machine to itself.
            with Ledger.open(url) as ledger:
                if book is None:
                    book = asyncio.run(common.open_book(ledger, ACCOUNTS, "replay"))
                asyncio.run(grow(ledger, book, size - recorded, f"replay-{size}"))
                events = ledger.store.max_position()
            recorded = size
            print(f"{backend}: replaying {events:,} events", flush=True)
            figures = measure_replay(url, events)
            figures.update(backend=backend, postings=size, log_events=events)
            rows.append(figures)
            print(
                f"  {figures['events_per_second']:,.0f} events/s, "
                f"peak {figures['peak_rss_mib']:.0f} MiB",
                flush=True,
            )
    return rows


def reference(backend: str) -> dict[str, Any]:
    if backend == "postgresql":
        return common.run_pgbench_reference(PGBENCH_SECONDS)
    return common.sqlite_commit_rate(SQLITE_REFERENCE_SECONDS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--sizes", help="comma-separated log sizes in postings")
    parser.add_argument("--quick", action="store_true", help="small logs, for a smoke run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return
    sizes: tuple[int, ...] = QUICK_SIZES if args.quick else DEFAULT_SIZES
    if args.sizes:
        sizes = tuple(int(size) for size in args.sizes.split(","))
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    results: list[dict[str, Any]] = []
    references: dict[str, Any] = {}
    for backend in backends:
        references[backend] = reference(backend)
        name = (
            "pgbench_tpcb_16c_tps"
            if backend == "postgresql"
            else ("sqlite_single_row_commits_per_second")
        )
        for row in run_backend(backend, sizes):
            row["reference_name"] = name
            row["reference"] = references[backend][name]
            row["ratio"] = row["events_per_second"] / row["reference"]
            results.append(row)
    headers = (
        "backend",
        "postings",
        "events",
        "seconds",
        "events/s",
        "peak MiB",
        "reference",
        "ratio",
        "target events/s",
    )
    table = [
        (
            r["backend"],
            r["postings"],
            r["events"],
            r["seconds"],
            r["events_per_second"],
            r["peak_rss_mib"],
            r["reference"],
            r["ratio"],
            TARGET_EVENTS_PER_SECOND,
        )
        for r in results
    ]
    print(common.format_table(headers, table))
    path = common.write_results(
        "replay",
        {
            "benchmark": "replay",
            "measured_at": common.utc_timestamp(),
            "machine": common.machine_info(with_postgres="postgresql" in backends),
            "references": references,
            "target_events_per_second": TARGET_EVENTS_PER_SECOND,
            "results": results,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
