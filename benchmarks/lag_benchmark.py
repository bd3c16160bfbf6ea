"""The projection lag benchmark of issue 3: how long after a posting is recorded every projection
has applied it, while writers run at full speed.

    python -m benchmarks.lag_benchmark [--backend postgresql|sqlite|both] [--seconds N]
                                       [--submitters N] [--quick]

For each backend (a scratch PostgreSQL database, or an SQLite file in a temporary directory) it
opens a space with 1,000 asset accounts, preloads 20,000 postings (not timed) and starts the
projections in their own process, as `ledger project` runs them (PostgreSQL: woken by NOTIFY;
SQLite: polling). Then the write benchmark's top cell runs: 64 asyncio submitters, each sending
`RecordPosting` (two different accounts drawn uniformly) and waiting for its answer, for a fixed
window. Each answer's position and wall-clock time are noted; the projector process notes the
wall-clock time of every batch it commits and the position reached. A posting's lag is the time
from its answer until the last projection's commit that covered its position (clock of the same
machine; an answer that arrives after the projection already applied it counts 0).

Reported: postings/s of the load, lag p50/p99/max in milliseconds, the same-run reference of
DESIGN.md (pgbench TPC-B 16 clients; SQLite's raw single-row commit rate) and the write rate's
ratio to it. Results go to `benchmarks/results/lag.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from ledger_core import Ledger
from ledger_core import commands as cmd
from migrations import apply_migrations

BACKENDS: Final = ("postgresql", "sqlite")
ACCOUNTS: Final = 1_000
PRELOAD_POSTINGS: Final = 20_000
SUBMITTERS: Final = 64
MEASURE_SECONDS: Final = 20.0
QUICK_MEASURE_SECONDS: Final = 5.0
#: How long the projector may take to catch up after the load before the run is abandoned.
CATCH_UP_SECONDS: Final = 120.0
PGBENCH_SECONDS: Final = 15
SQLITE_REFERENCE_SECONDS: Final = 5.0
#: Issue 3's target.
TARGET_LAG_MS_P99: Final = 250.0
MAX_AMOUNT_MINOR: Final = 10_000


def projector(url: str, log_path: str) -> None:
    """Run in a child process: the projections, noting (projection, position, time) per commit."""
    from projections.runner import ProjectionRunner

    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed at exit below

    def on_commit(name: str, position: int) -> None:
        log.write(f"{name} {position} {time.time():.6f}\n")

    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    runner = ProjectionRunner(url, on_commit=on_commit)
    runner.start()
    while not stopping:
        time.sleep(0.05)
    runner.stop()
    log.close()


async def load(
    ledger: Ledger, book: common.Book, seconds: float, submitters: int
) -> list[tuple[int, float]]:
    """Submitters recording postings for `seconds`; (position, answer time) of each."""
    answers: list[tuple[int, float]] = []
    deadline = time.monotonic() + seconds

    async def submitter(number: int) -> None:
        rng = random.Random(number)
        count = 0
        while time.monotonic() < deadline:
            debit, credit = common.random_pair(rng, book.account_ids)
            amount = common.amount_text(rng.randint(1, MAX_AMOUNT_MINOR))
            result = await ledger.submit(
                cmd.RecordPosting(
                    idempotency_key=f"lag-{number}-{count}",
                    space_id=book.space_id,
                    posting=common.two_entry_posting(debit, credit, amount),
                )
            )
            answers.append((result.position or 0, time.time()))
            count += 1

    await asyncio.gather(*(submitter(number) for number in range(submitters)))
    return answers


def read_commits(log_path: Path) -> dict[str, tuple[list[int], list[float]]]:
    """Per projection: the positions reached, in order, and when."""
    commits: dict[str, tuple[list[int], list[float]]] = {}
    for line in log_path.read_text().splitlines():
        name, position, at = line.split()
        positions, times = commits.setdefault(name, ([], []))
        positions.append(int(position))
        times.append(float(at))
    return commits


def lags_ms(
    answers: list[tuple[int, float]], commits: dict[str, tuple[list[int], list[float]]]
) -> list[float]:
    lags: list[float] = []
    for position, answered_at in answers:
        applied_at = 0.0
        for positions, times in commits.values():
            index = bisect.bisect_left(positions, position)
            if index == len(positions):
                raise RuntimeError(f"position {position} was never projected")
            applied_at = max(applied_at, times[index])
        lags.append(max(applied_at - answered_at, 0.0) * 1000)
    return sorted(lags)


def wait_until_projected(url: str, position: int, timeout_s: float) -> None:
    from projections.queries import ReadModels

    with ReadModels(url) as reads:
        if not reads.wait_for_position(position, timeout_s):
            raise RuntimeError(f"the projector did not reach {position} in {timeout_s}s")


def run_backend(backend: str, seconds: float, submitters: int, preload: int) -> dict[str, Any]:
    with common.scratch_database(backend) as url:
        apply_migrations(url)
        log_path = Path(tempfile.mkdtemp(prefix="ledger-lag-")) / "commits.log"
        with Ledger.open(url) as ledger:
            book = asyncio.run(common.open_book(ledger, ACCOUNTS, "lag"))
            asyncio.run(common.preload_postings(ledger, book, preload, run_id="lag"))
            child = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.lag_benchmark",
                    "--projector",
                    url,
                    "--log",
                    str(log_path),
                ],
                env=os.environ.copy(),
            )
            try:
                wait_until_projected(url, ledger.store.max_position(), CATCH_UP_SECONDS)
                print(f"{backend}: projector caught up; loading for {seconds:.0f}s", flush=True)
                started = time.perf_counter()
                answers = asyncio.run(load(ledger, book, seconds, submitters))
                elapsed = time.perf_counter() - started
                wait_until_projected(url, max(p for p, _ in answers), CATCH_UP_SECONDS)
            finally:
                child.send_signal(signal.SIGTERM)
                child.wait(30)
        lags = lags_ms(answers, read_commits(log_path))
    return {
        "backend": backend,
        "submitters": submitters,
        "postings": len(answers),
        "seconds": elapsed,
        "postings_per_second": len(answers) / elapsed,
        "lag_ms_p50": common.percentile(lags, 0.50),
        "lag_ms_p99": common.percentile(lags, 0.99),
        "lag_ms_max": lags[-1],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--submitters", type=int, default=SUBMITTERS)
    parser.add_argument("--preload", type=int, default=PRELOAD_POSTINGS)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--projector", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.projector:
        projector(args.projector, args.log)
        return
    seconds = args.seconds or (QUICK_MEASURE_SECONDS if args.quick else MEASURE_SECONDS)
    backends = BACKENDS if args.backend == "both" else (args.backend,)
    results, references = [], {}
    for backend in backends:
        if backend == "postgresql":
            references[backend] = common.run_pgbench_reference(PGBENCH_SECONDS)
            name = "pgbench_tpcb_16c_tps"
        else:
            references[backend] = common.sqlite_commit_rate(SQLITE_REFERENCE_SECONDS)
            name = "sqlite_single_row_commits_per_second"
        row = run_backend(backend, seconds, args.submitters, args.preload)
        row.update(reference_name=name, reference=references[backend][name])
        row["ratio"] = row["postings_per_second"] / row["reference"]
        results.append(row)
    headers = (
        "backend",
        "submitters",
        "postings/s",
        "reference",
        "ratio",
        "lag p50 ms",
        "lag p99 ms",
        "lag max ms",
        "target p99 ms",
    )
    print(
        common.format_table(
            headers,
            [
                (
                    r["backend"],
                    r["submitters"],
                    r["postings_per_second"],
                    r["reference"],
                    r["ratio"],
                    r["lag_ms_p50"],
                    r["lag_ms_p99"],
                    r["lag_ms_max"],
                    TARGET_LAG_MS_P99,
                )
                for r in results
            ],
        )
    )
    path = common.write_results(
        "lag",
        {
            "benchmark": "lag",
            "measured_at": common.utc_timestamp(),
            "machine": common.machine_info(with_postgres="postgresql" in backends),
            "references": references,
            "target_lag_ms_p99": TARGET_LAG_MS_P99,
            "results": results,
        },
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
