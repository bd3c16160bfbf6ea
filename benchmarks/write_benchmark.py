"""The write benchmark of issue 2: two-entry postings through `await ledger.submit(RecordPosting)`.

    python -m benchmarks.write_benchmark [--backend postgresql|sqlite|both] [--seconds N] [--quick]
                                         [--rounds N] [--profile]

For each backend (a scratch PostgreSQL database created for the run and dropped after, or an
SQLite file in a temporary directory), it opens a space with 1,000 asset accounts without
overdraft limits (so nothing declines), preloads 100,000 postings in `RecordBatch` commands (not
timed), then measures one cell per shape and number of submitters:

- shapes: `uniform` (debit and credit two different accounts drawn uniformly from the 1,000) and
  `hot` (every posting debits or credits the same account; the other side is drawn uniformly);
- 1, 16 and 64 asyncio submitters in one event loop, each waiting for its answer before it sends
  its next posting, each posting with its own idempotency key.

A cell warms up (default 1 s), then counts the postings answered inside a fixed window (default
8 s): postings/s, latency p50/p99 (submit to answer), the writer's batches and commands per batch
in the window, and the CPU time per posting of the process and of each of its threads. The same
run measures the reference of DESIGN.md (pgbench TPC-B 16 clients; SQLite's raw single-row commit
rate) after the preload and after each round of cells, and reports each cell's ratio to the mean
of the samples just before and after its round. The machine is shared and noisy: `--rounds N`
runs every cell N times and reports the medians and the ratio's range. `--profile` adds one
uniform cell at the largest submitter count (PostgreSQL if it runs) under cProfile, in every
thread of a freshly opened ledger and in the event loop thread, and writes
`benchmarks/results/write_profile.txt`.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import random
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from benchmarks import common
from ledger_core import Ledger
from ledger_core import commands as cmd
from ledger_core.errors import LedgerError

BACKENDS: Final = ("postgresql", "sqlite")
SHAPES: Final = ("uniform", "hot")
SUBMITTER_COUNTS: Final = (1, 16, 64)
ACCOUNTS: Final = 1_000
PRELOAD_POSTINGS: Final = 100_000
MEASURE_SECONDS: Final = 8.0
WARMUP_SECONDS: Final = 1.0
PGBENCH_SECONDS: Final = 15
SQLITE_REFERENCE_SECONDS: Final = 5.0
#: --quick: shorter cells and references, one reference sample instead of two.
QUICK_MEASURE_SECONDS: Final = 3.0
QUICK_WARMUP_SECONDS: Final = 0.5
QUICK_PGBENCH_SECONDS: Final = 5
QUICK_SQLITE_REFERENCE_SECONDS: Final = 2.0
#: Issue 2's targets.
TARGET_POSTGRESQL_UNIFORM_RATIO: Final = 5.0
TARGET_HOT_OVER_UNIFORM: Final = 0.8
TARGET_SUBMITTERS: Final = 64
#: Each posting moves between 0.01 and this many minor units.
MAX_AMOUNT_MINOR: Final = 10_000
#: Lines of each sorted listing in the profile file.
PROFILE_LINES: Final = 40
REFERENCE_NAMES: Final = {
    "postgresql": "pgbench_tpcb_16c_tps",
    "sqlite": "sqlite_single_row_commits_per_second",
}


@dataclass(frozen=True)
class Config:
    backends: tuple[str, ...]
    shapes: tuple[str, ...]
    submitter_counts: tuple[int, ...]
    accounts: int
    preload_postings: int
    measure_seconds: float
    warmup_seconds: float
    pgbench_seconds: int
    sqlite_reference_seconds: float
    reference_after_each_round: bool
    rounds: int
    profile: bool
    results_directory: Path
    name: str
    profile_name: str


@dataclass
class CellResult:
    backend: str
    shape: str
    submitters: int
    seconds: float
    postings: int
    postings_per_second: float
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    refused: int
    writer_batches: int
    writer_commands: int
    commands_per_batch: float
    cpu_us_per_posting: float
    cpu_us_per_posting_by_thread: dict[str, float]
    profiled: bool = False
    round: int = 1
    reference_name: str = ""
    reference_per_second: float = float("nan")
    ratio: float = float("nan")


@dataclass
class CellSummary:
    """A cell over its rounds: the median rate, latencies and ratio, and the ratio's spread."""

    backend: str
    shape: str
    submitters: int
    profiled: bool
    rounds: int
    postings_per_second: float
    latency_ms_p50: float
    latency_ms_p99: float
    refused: int
    writer_batches: int
    commands_per_batch: float
    cpu_us_per_posting: float
    cpu_us_per_posting_by_thread: dict[str, float]
    reference_per_second: float
    ratio: float
    ratio_min: float
    ratio_max: float


@dataclass
class BackendRun:
    backend: str
    accounts: int
    preload_postings: int
    preload_seconds: float
    cells: list[CellResult] = field(default_factory=list)
    summaries: list[CellSummary] = field(default_factory=list)
    reference_samples: list[dict[str, Any]] = field(default_factory=list)
    #: The machine's 1-minute load average before and after (it is shared: say how busy it was).
    load_average_1m: list[float] = field(default_factory=list)


# Postings -----------------------------------------------------------------------------------------


def posting_maker(
    shape: str, account_ids: Sequence[uuid.UUID], rng: random.Random
) -> Callable[[], cmd.PostingSpec]:
    """A function giving the next posting of a shape: `uniform` over all accounts, or `hot`
    (the first account is on one side of every posting, debit or credit at random)."""
    hot, others = account_ids[0], list(account_ids[1:])

    def uniform() -> cmd.PostingSpec:
        debit, credit = common.random_pair(rng, account_ids)
        return common.two_entry_posting(debit, credit, _amount(rng))

    def hot_account() -> cmd.PostingSpec:
        other = rng.choice(others)
        debit, credit = (hot, other) if rng.random() < 0.5 else (other, hot)
        return common.two_entry_posting(debit, credit, _amount(rng))

    if shape == "uniform":
        return uniform
    if shape == "hot":
        return hot_account
    raise ValueError(f"unknown shape {shape!r}")


def _amount(rng: random.Random) -> str:
    return common.amount_text(rng.randint(1, MAX_AMOUNT_MINOR))


# One cell -------------------------------------------------------------------------------------


@dataclass
class _Window:
    """The measurement window and what the writer and the process did inside it."""

    start: float
    end: float
    counters: dict[str, float] = field(default_factory=dict)
    thread_cpu: dict[str, dict[str, float]] = field(default_factory=dict)


async def run_cell(
    ledger: Ledger,
    book: common.Book,
    *,
    backend: str,
    shape: str,
    submitters: int,
    warmup_seconds: float,
    measure_seconds: float,
    run_id: str,
) -> CellResult:
    """Run `submitters` closed-loop submitters for warm-up plus window; measure the window."""
    started = time.perf_counter()
    window = _Window(started + warmup_seconds, started + warmup_seconds + measure_seconds)
    finished: list[tuple[float, float]] = []  # (answered at, latency) of every answer
    refused: list[float] = []  # answered at, for refusals
    prefix = f"{run_id}-{backend}-{shape}-{submitters}"

    async def submitter(index: int) -> None:
        rng = random.Random(f"{prefix}-{index}")
        make = posting_maker(shape, book.account_ids, rng)
        sequence = 0
        while True:
            sent = time.perf_counter()
            if sent >= window.end:
                return
            command = cmd.RecordPosting(
                idempotency_key=f"{prefix}-{index}-{sequence}",
                space_id=book.space_id,
                posting=make(),
            )
            sequence += 1
            try:
                await ledger.submit(command)
            except LedgerError:
                refused.append(time.perf_counter())
                continue
            answered = time.perf_counter()
            finished.append((answered, answered - sent))

    await asyncio.gather(_sample_counters(ledger, window), *map(submitter, range(submitters)))
    return _cell_result(backend, shape, submitters, window, finished, refused)


async def _sample_counters(ledger: Ledger, window: _Window) -> None:
    """Read the writer's counters and the CPU time of the process and of each of its threads
    at both ends of the window."""
    for edge, moment in (("start", window.start), ("end", window.end)):
        await asyncio.sleep(max(0.0, moment - time.perf_counter()))
        window.counters[f"batches_{edge}"] = ledger.writer.batches
        window.counters[f"commands_{edge}"] = ledger.writer.commands
        window.counters[f"cpu_{edge}"] = time.process_time()
        window.thread_cpu[edge] = common.thread_cpu_seconds()


def _cell_result(
    backend: str,
    shape: str,
    submitters: int,
    window: _Window,
    finished: list[tuple[float, float]],
    refused: list[float],
) -> CellResult:
    latencies = sorted(latency for at, latency in finished if window.start <= at < window.end)
    seconds = window.end - window.start
    counters = window.counters
    batches = int(counters["batches_end"] - counters["batches_start"])
    commands = int(counters["commands_end"] - counters["commands_start"])
    postings = len(latencies)

    def per_posting_us(spent_seconds: float) -> float:
        return spent_seconds / postings * 1e6 if postings else float("nan")

    start, end = window.thread_cpu["start"], window.thread_cpu["end"]
    by_thread = {
        name: per_posting_us(end[name] - start[name]) for name in sorted(end) if name in start
    }

    return CellResult(
        backend=backend,
        shape=shape,
        submitters=submitters,
        seconds=seconds,
        postings=len(latencies),
        postings_per_second=len(latencies) / seconds,
        latency_ms_p50=common.percentile(latencies, 0.50) * 1000,
        latency_ms_p99=common.percentile(latencies, 0.99) * 1000,
        latency_ms_max=(latencies[-1] * 1000) if latencies else float("nan"),
        refused=sum(1 for at in refused if window.start <= at < window.end),
        writer_batches=batches,
        writer_commands=commands,
        commands_per_batch=commands / batches if batches else float("nan"),
        cpu_us_per_posting=per_posting_us(counters["cpu_end"] - counters["cpu_start"]),
        cpu_us_per_posting_by_thread=by_thread,
    )


# Profile --------------------------------------------------------------------------------------


async def run_profiled_cell(
    url: str, book: common.Book, config: Config, backend: str, run_id: str
) -> tuple[CellResult, str]:
    """The uniform cell at the largest submitter count under cProfile, in every thread: a
    fresh `Ledger` is opened on the same database with a thread hook that starts one cProfile
    per thread created during the cell (writer, committer, pool threads: whatever the core
    runs), and this
    event loop's thread gets its own. The fresh ledger loads the space before the cell."""
    thread_profiles: dict[str, cProfile.Profile] = {}

    def profile_new_thread(*_: object) -> None:
        profile = cProfile.Profile()
        thread_profiles[threading.current_thread().name] = profile
        profile.enable()  # replaces this hook on the thread

    # Installed for the whole cell: some threads start lazily (a thread pool's first task).
    threading.setprofile(profile_new_thread)
    loop_profile = cProfile.Profile()
    submitters = max(config.submitter_counts)
    ledger = None
    try:
        ledger = Ledger.open(url)
        # Load the space into the writer's cache first and forget that part of the profiles
        # (the threads are idle, blocked in a C call, when they are cleared): the steady state.
        ledger.account(book.space_id, book.account_ids[0])
        for profile in thread_profiles.values():
            profile.clear()
        loop_profile.enable()
        cell = await run_cell(
            ledger,
            book,
            backend=backend,
            shape="uniform",
            submitters=submitters,
            warmup_seconds=config.warmup_seconds,
            measure_seconds=config.measure_seconds,
            run_id=f"{run_id}-profiled",
        )
    finally:
        loop_profile.disable()
        if ledger is not None:
            ledger.close()  # the profiled threads end: their profiles are complete
        threading.setprofile(None)
    cell.profiled = True
    title = f"{backend}, uniform, {submitters} submitters, {cell.postings_per_second:,.0f}/s"
    busy = [
        n for n, us in cell.cpu_us_per_posting_by_thread.items() if us > 0 and n != "MainThread"
    ]
    busy.sort(key=lambda name: -cell.cpu_us_per_posting_by_thread[name])
    idle = sorted(set(thread_profiles) - set(busy))
    listings = [
        _profile_listing(f"thread {n}", thread_profiles[n]) for n in busy if n in thread_profiles
    ]
    report = "\n".join(
        [
            f"# Profile of the write benchmark cell: {title}",
            "# (slowed by cProfile; the warm-up is included; times are wall times, a blocked"
            " call's wait included)",
            f"# CPU us/posting by thread: {_by_thread(cell.cpu_us_per_posting_by_thread)}",
            f"# Threads without CPU time in the window, not listed: {', '.join(idle) or 'none'}",
            *listings,
            _profile_listing("thread MainThread (event loop, submitters)", loop_profile),
        ]
    )
    return cell, report


def _profile_listing(title: str, profile: cProfile.Profile) -> str:
    parts = []
    for order in ("cumulative", "tottime"):
        stream = io.StringIO()
        stats = pstats.Stats(profile, stream=stream)
        stats.sort_stats(order).print_stats(PROFILE_LINES)
        parts.append(f"\n## {title}: top {PROFILE_LINES} by {order} time\n{stream.getvalue()}")
    return "".join(parts)


# A backend ------------------------------------------------------------------------------------


def measure_reference(backend: str, config: Config) -> dict[str, Any]:
    if backend == "postgresql":
        return common.run_pgbench_reference(config.pgbench_seconds)
    return common.sqlite_commit_rate(config.sqlite_reference_seconds)


async def run_backend(
    backend: str, url: str, config: Config, run_id: str
) -> tuple[BackendRun, str | None]:
    """Open the book and preload it; then a reference sample, and for each round every cell
    followed by a reference sample (the last only, with --quick); then the profiled cell."""
    ledger = Ledger.open(url)
    try:
        book = await common.open_book(ledger, config.accounts, run_id)
        preload_seconds = await common.preload_postings(
            ledger, book, config.preload_postings, run_id=run_id
        )
        run = BackendRun(backend, config.accounts, config.preload_postings, preload_seconds)
        _say(
            f"{backend}: preloaded {config.preload_postings:,} postings in {preload_seconds:.1f} s"
        )
        run.reference_samples.append(_reference_sample(backend, config))
        for round_number in range(1, config.rounds + 1):
            await _run_round(ledger, book, config, backend, f"{run_id}-r{round_number}", run)
            if config.reference_after_each_round or round_number == config.rounds:
                run.reference_samples.append(_reference_sample(backend, config))
        if not (config.profile and backend == _profiled_backend(config)):
            return run, None
    finally:
        ledger.close()
    cell, profile_report = await run_profiled_cell(url, book, config, backend, run_id)
    cell.round = config.rounds
    run.cells.append(cell)
    return run, profile_report


async def _run_round(
    ledger: Ledger,
    book: common.Book,
    config: Config,
    backend: str,
    run_id: str,
    run: BackendRun,
) -> None:
    round_number = 1 + max((cell.round for cell in run.cells), default=0)
    for shape in config.shapes:
        for submitters in config.submitter_counts:
            cell = await run_cell(
                ledger,
                book,
                backend=backend,
                shape=shape,
                submitters=submitters,
                warmup_seconds=config.warmup_seconds,
                measure_seconds=config.measure_seconds,
                run_id=run_id,
            )
            cell.round = round_number
            _say(
                f"{backend} round {round_number} {shape:<7} {submitters:>3} submitters: "
                f"{cell.postings_per_second:>9,.0f} postings/s, "
                f"p50 {cell.latency_ms_p50:.1f} ms, p99 {cell.latency_ms_p99:.1f} ms"
            )
            run.cells.append(cell)


def _profiled_backend(config: Config) -> str:
    return "postgresql" if "postgresql" in config.backends else config.backends[0]


def run_with_references(backend: str, config: Config, run_id: str) -> tuple[BackendRun, str | None]:
    """Every round of cells on a scratch database between reference samples; each cell's
    ratio is to the mean of the samples just before and just after its round."""
    load_before = os.getloadavg()[0]
    with common.scratch_database(backend) as url:
        run, profile_report = asyncio.run(run_backend(backend, url, config, run_id))
    run.load_average_1m = [load_before, os.getloadavg()[0]]
    rates = [sample[REFERENCE_NAMES[backend]] for sample in run.reference_samples]
    for cell in run.cells:
        around = rates[cell.round - 1 : cell.round + 1] or rates[-1:]
        cell.reference_name = REFERENCE_NAMES[backend]
        cell.reference_per_second = statistics.fmean(around)
        cell.ratio = cell.postings_per_second / cell.reference_per_second
    run.summaries = summarise(run.cells)
    return run, profile_report


def summarise(cells: Sequence[CellResult]) -> list[CellSummary]:
    """One summary per cell over its rounds: medians, the spread of the ratio, sums of the
    writer's counters."""
    groups: dict[tuple[str, str, int, bool], list[CellResult]] = {}
    for cell in cells:
        groups.setdefault((cell.backend, cell.shape, cell.submitters, cell.profiled), []).append(
            cell
        )
    summaries = []
    for (backend, shape, submitters, profiled), rounds in groups.items():
        by_rate = sorted(rounds, key=lambda c: c.postings_per_second)
        middle = by_rate[(len(by_rate) - 1) // 2]  # the median round (the lower one if even)
        batches = sum(c.writer_batches for c in rounds)
        commands = sum(c.writer_commands for c in rounds)
        ratios = [c.ratio for c in rounds]
        summaries.append(
            CellSummary(
                backend=backend,
                shape=shape,
                submitters=submitters,
                profiled=profiled,
                rounds=len(rounds),
                postings_per_second=statistics.median(c.postings_per_second for c in rounds),
                latency_ms_p50=statistics.median(c.latency_ms_p50 for c in rounds),
                latency_ms_p99=statistics.median(c.latency_ms_p99 for c in rounds),
                refused=sum(c.refused for c in rounds),
                writer_batches=batches,
                commands_per_batch=commands / batches if batches else float("nan"),
                cpu_us_per_posting=middle.cpu_us_per_posting,
                cpu_us_per_posting_by_thread=middle.cpu_us_per_posting_by_thread,
                reference_per_second=statistics.fmean(c.reference_per_second for c in rounds),
                ratio=statistics.median(ratios),
                ratio_min=min(ratios),
                ratio_max=max(ratios),
            )
        )
    return summaries


def _reference_sample(backend: str, config: Config) -> dict[str, Any]:
    sample = measure_reference(backend, config)
    _say(
        f"{backend} reference: {REFERENCE_NAMES[backend]} = {sample[REFERENCE_NAMES[backend]]:,.0f}"
    )
    return sample


# Report ---------------------------------------------------------------------------------------


TABLE_HEADERS: Final = (
    "backend",
    "shape",
    "submitters",
    "postings/s",
    "p50 ms",
    "p99 ms",
    "refused",
    "batches",
    "cmds/batch",
    "CPU us/posting",
    "by thread",
    "reference/s",
    "ratio",
)


def table(runs: Sequence[BackendRun]) -> str:
    """One row per cell: the median over the rounds (and the ratio's range if more than one)."""
    several = any(summary.rounds > 1 for run in runs for summary in run.summaries)
    rows = []
    for run in runs:
        for cell in run.summaries:
            row: list[Any] = [
                cell.backend,
                cell.shape + (" (cProfile)" if cell.profiled else ""),
                cell.submitters,
                cell.postings_per_second,
                cell.latency_ms_p50,
                cell.latency_ms_p99,
                cell.refused,
                cell.writer_batches,
                cell.commands_per_batch,
                cell.cpu_us_per_posting,
                _by_thread(cell.cpu_us_per_posting_by_thread),
                cell.reference_per_second,
                cell.ratio,
            ]
            if several:
                row.append(f"{cell.ratio_min:.2f}-{cell.ratio_max:.2f} ({cell.rounds})")
            rows.append(row)
    headers = [*TABLE_HEADERS, "ratio range (rounds)"] if several else list(TABLE_HEADERS)
    return common.format_table(headers, rows)


def _by_thread(cpu_us: dict[str, float]) -> str:
    """`name us` of each thread that used any CPU in the window, busiest first."""
    busy = sorted(((us, name) for name, us in cpu_us.items() if us > 0), reverse=True)
    return ", ".join(f"{name} {us:.0f}" for us, name in busy)


def targets(runs: Sequence[BackendRun]) -> list[dict[str, Any]]:
    """Issue 2's targets, each with the measured figure and whether it is met."""
    found: list[dict[str, Any]] = []
    for run in runs:
        cells = {(c.shape, c.submitters): c for c in run.summaries if not c.profiled}
        uniform = cells.get(("uniform", TARGET_SUBMITTERS))
        hot = cells.get(("hot", TARGET_SUBMITTERS))
        if run.backend == "postgresql" and uniform is not None:
            found.append(
                _target(
                    f"PostgreSQL {TARGET_SUBMITTERS} uniform / pgbench",
                    uniform.ratio,
                    TARGET_POSTGRESQL_UNIFORM_RATIO,
                )
            )
        if uniform is not None and hot is not None:
            found.append(
                _target(
                    f"{run.backend} {TARGET_SUBMITTERS} hot / uniform",
                    hot.postings_per_second / uniform.postings_per_second,
                    TARGET_HOT_OVER_UNIFORM,
                )
            )
    return found


def _target(name: str, measured: float, target: float) -> dict[str, Any]:
    return {"target": name, "measured": measured, "at_least": target, "met": measured >= target}


def targets_text(found: Sequence[dict[str, Any]]) -> str:
    lines = []
    for target in found:
        verdict = (
            "met"
            if target["met"]
            else f"MISSED by {1 - target['measured'] / target['at_least']:.0%}"
        )
        lines.append(
            f"{target['target']}: {target['measured']:.2f} (target >= {target['at_least']:.2f}) "
            f"{verdict}"
        )
    return "\n".join(lines)


def results_payload(
    config: Config, runs: Sequence[BackendRun], argv: Sequence[str]
) -> dict[str, Any]:
    return {
        "benchmark": "write",
        "finished_at": common.utc_timestamp(),
        "command": ["python", "-m", "benchmarks.write_benchmark", *argv],
        "code": common.code_version(),
        "machine": common.machine_info(with_postgres="postgresql" in config.backends),
        "config": {k: v for k, v in asdict(config).items() if k != "results_directory"},
        "references": {
            run.backend: {
                "name": REFERENCE_NAMES[run.backend],
                "samples": run.reference_samples,
                "mean": statistics.fmean(
                    s[REFERENCE_NAMES[run.backend]] for s in run.reference_samples
                ),
            }
            for run in runs
        },
        "preload": {
            run.backend: {"postings": run.preload_postings, "seconds": run.preload_seconds}
            for run in runs
        },
        "load_average_1m_before_after": {run.backend: run.load_average_1m for run in runs},
        "cells": [asdict(cell) for run in runs for cell in run.cells],
        "summaries": [asdict(summary) for run in runs for summary in run.summaries],
        "targets": targets(runs),
    }


# Command line ---------------------------------------------------------------------------------


def parse_arguments(argv: Sequence[str]) -> Config:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.write_benchmark", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--backend", choices=(*BACKENDS, "both"), default="both")
    parser.add_argument(
        "--seconds", type=float, help=f"measured seconds per cell ({MEASURE_SECONDS})"
    )
    parser.add_argument("--warmup", type=float, help=f"warm-up seconds per cell ({WARMUP_SECONDS})")
    parser.add_argument(
        "--quick", action="store_true", help="short cells, no reference between rounds"
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run every cell this many times (medians)"
    )
    parser.add_argument("--profile", action="store_true", help="add a profiled uniform cell")
    parser.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES))
    parser.add_argument("--submitters", nargs="+", type=int, default=list(SUBMITTER_COUNTS))
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--preload", type=int, default=PRELOAD_POSTINGS, help="postings preloaded")
    parser.add_argument("--pgbench-seconds", type=int)
    parser.add_argument("--sqlite-reference-seconds", type=float)
    parser.add_argument("--results-dir", type=Path, default=common.RESULTS_DIRECTORY)
    parser.add_argument("--name", help="results file name (default: write or write-<backend>)")
    arguments = parser.parse_args(argv)
    quick = arguments.quick
    backends = BACKENDS if arguments.backend == "both" else (arguments.backend,)
    return Config(
        backends=backends,
        shapes=tuple(arguments.shapes),
        submitter_counts=tuple(sorted(set(arguments.submitters))),
        accounts=arguments.accounts,
        preload_postings=arguments.preload,
        measure_seconds=_pick(
            arguments.seconds, QUICK_MEASURE_SECONDS if quick else MEASURE_SECONDS
        ),
        warmup_seconds=_pick(arguments.warmup, QUICK_WARMUP_SECONDS if quick else WARMUP_SECONDS),
        pgbench_seconds=_pick(
            arguments.pgbench_seconds, QUICK_PGBENCH_SECONDS if quick else PGBENCH_SECONDS
        ),
        sqlite_reference_seconds=_pick(
            arguments.sqlite_reference_seconds,
            QUICK_SQLITE_REFERENCE_SECONDS if quick else SQLITE_REFERENCE_SECONDS,
        ),
        reference_after_each_round=not quick,
        rounds=arguments.rounds,
        profile=arguments.profile,
        results_directory=arguments.results_dir,
        name=arguments.name or ("write" if len(backends) > 1 else f"write-{backends[0]}"),
        profile_name=f"{arguments.name or 'write'}_profile",
    )


def _pick(given: Any, default: Any) -> Any:
    return default if given is None else given


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    config = parse_arguments(argv)
    if config.accounts < 2 or config.rounds < 1:
        raise SystemExit("--accounts >= 2 (a posting needs two accounts) and --rounds >= 1")
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    runs, profile_report = [], None
    for backend in config.backends:
        run, report = run_with_references(backend, config, run_id)
        runs.append(run)
        profile_report = profile_report or report
    payload = results_payload(config, runs, argv)
    if profile_report is not None:
        profile_path = config.results_directory / f"{config.profile_name}.txt"
        profile_path.parent.mkdir(parents=True, exist_ok=True)
        profile_path.write_text(profile_report)
        payload["profile"] = str(profile_path)
    path = common.write_results(config.name, payload, config.results_directory)
    print(table(runs))
    print()
    print(targets_text(payload["targets"]))
    for run in runs:
        before, after = run.load_average_1m
        print(f"{run.backend}: load average (1 min) {before:.1f} before, {after:.1f} after")
    print(f"\nresults: {path}" + (f"\nprofile: {payload['profile']}" if profile_report else ""))
    return payload


if __name__ == "__main__":
    main()
