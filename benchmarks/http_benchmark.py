"""The HTTP benchmark of issue 4: `ledger serve` on PostgreSQL under wrk, a real load generator
in its own process.

    python -m benchmarks.http_benchmark [--seconds N] [--server granian|uvicorn|both]
                                        [--loop uvloop|asyncio|both]
                                        [--projections separate|in-process|both]
                                        [--pgbench-seconds N] [--rounds N]

For each server it creates a scratch PostgreSQL database, starts `ledger serve` as a subprocess
(migrations applied) with the projections either as their own `ledger project` process (how
DESIGN.md runs them on PostgreSQL: `ledger serve --no-projections`) or in the API's process (the
embedded default), opens a space with `ACCOUNTS` asset
accounts without overdraft limits (nothing declines), then runs wrk with
benchmarks/http_benchmark.lua (each request its own Idempotency-Key) for three cells:

- `posting`: single two-entry postings, POST .../postings, at 64 connections;
- `batch`: batches of 100 postings, POST .../postings/batch, at 8 connections;
- `account`: GET .../accounts/{id} at 64 connections (after the projections caught up).

The server runs with a fresh `LEDGER_ENCRYPTION_KEY`, as production should: account names and
every command's stored answer are sealed (AES-256-GCM) and opened on reads.

It prints requests/s, postings/s, p50/p99 latency and non-2xx answers, the CPU time per request
of `ledger serve` and of `ledger project` (all threads, from /proc) and how busy the whole
machine was during the cell (another load on a shared machine shows there), and the pgbench
reference measured in the same run (`../shared/tools/pgbench-reference`) with each cell's ratio,
against the targets: single postings >= 1.5x pgbench, batches >= 5x, GET account p99 < 20 ms.
The machine is shared and noisy: the pgbench reference is sampled before the first round and
after every round, and each round's cells are divided by the mean of the samples just before and
after it; `--rounds N` measures every cell N times and judges the targets on the medians over
the rounds, with the spread of the ratios. Figures go to
benchmarks/results/http.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import httpx

from benchmarks import common
from ledger_core.crypto import generate_key

LUA_SCRIPT: Final = Path(__file__).resolve().parent / "http_benchmark.lua"
SERVERS: Final = ("granian", "uvicorn")
LOOPS: Final = ("uvloop", "asyncio")
PROJECTION_MODES: Final = ("separate", "in-process")
ACCOUNTS: Final = 200
BATCH_SIZE: Final = 100
SINGLE_CONNECTIONS: Final = 64
BATCH_CONNECTIONS: Final = 8
READ_CONNECTIONS: Final = 64
WRK_THREADS: Final = 1
MEASURE_SECONDS: Final = 10
PGBENCH_SECONDS: Final = 10
STARTUP_TIMEOUT_SECONDS: Final = 60.0
CATCH_UP_TIMEOUT_SECONDS: Final = 120.0
#: Targets of issue 4.
SINGLE_POSTING_TARGET_RATIO: Final = 1.5
BATCH_TARGET_RATIO: Final = 5.0
READ_P99_TARGET_MS: Final = 20.0


@dataclass
class Cell:
    server: str
    loop: str
    projections: str
    scenario: str
    connections: int
    seconds: float
    requests: int
    requests_per_second: float
    postings_per_second: float
    latency_ms_p50: float
    latency_ms_p99: float
    latency_ms_max: float
    non_2xx: int
    socket_errors: int
    #: Which round of `--rounds` measured it (0 for the first).
    round: int = 0
    commands_per_batch: float | None = None
    #: CPU time (all threads) per request of `ledger serve` and of `ledger project`, and the
    #: share of the machine's CPU that was busy (any process) while the cell ran.
    serve_cpu_us_per_request: float | None = None
    project_cpu_us_per_request: float | None = None
    machine_cpu_busy: float | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


LEDGER: Final = [sys.executable, "-c", "from api.cli import main; main()"]


@dataclass
class Served:
    base_url: str
    serve_pid: int
    project_pid: int | None = None


@contextmanager
def running_server(
    server: str, projections: str, database_url: str, token: str, loop: str = "uvloop"
) -> Iterator[Served]:
    """`ledger serve` (and `ledger project` when the projections run separately) as
    subprocesses; yields the API's base URL and their process ids."""
    port = free_port()
    environment = dict(
        os.environ,
        LEDGER_DATABASE_URL=database_url,
        LEDGER_ADMIN_TOKEN=token,
        # As in production: names and stored answers sealed (README, "Encryption at rest").
        LEDGER_ENCRYPTION_KEY=generate_key(),
    )
    serve = [*LEDGER, "serve", "--port", str(port), "--server", server, "--loop", loop]
    if projections == "separate":
        serve.append("--no-projections")
    processes = [subprocess.Popen(serve, env=environment, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)]  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base_url, processes[0])
        served = Served(base_url, processes[0].pid)
        if projections == "separate":
            processes.append(subprocess.Popen([*LEDGER, "project"], env=environment,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            served.project_pid = processes[1].pid
        yield served
    finally:
        for process in processes:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def wait_until_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ledger serve exited with {process.returncode}")
        try:
            if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("ledger serve did not answer /health in time")


def seed(base_url: str, token: str) -> tuple[str, list[str]]:
    """A space with ACCOUNTS asset accounts (no overdraft limit)."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        space = http.post(
            "/v1/spaces",
            json={"name": "HTTP benchmark", "base_currency": "USD"},
            headers={"Idempotency-Key": "bench-space"},
        ).json()["id"]
        accounts = []
        for number in range(ACCOUNTS):
            response = http.post(
                f"/v1/spaces/{space}/accounts",
                json={"name": f"Account {number}", "type": "asset", "currency": "USD"},
                headers={"Idempotency-Key": f"bench-account-{number}"},
            )
            accounts.append(response.json()["id"])
    return space, accounts


def wait_for_projections(base_url: str) -> None:
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        ready = httpx.get(base_url + "/ready", timeout=5).json()
        if ready.get("projection_lag") == 0:
            return
        time.sleep(0.5)
    raise RuntimeError("the projections did not catch up in time")


def run_wrk(base_url: str, mode: str, connections: int, seconds: int, env: dict[str, str]) -> Any:
    environment = dict(os.environ, LEDGER_BENCH_MODE=mode, **env)
    command = ["wrk", f"-t{WRK_THREADS}", f"-c{connections}", f"-d{seconds}s", "--timeout", "30s",
               "-s", str(LUA_SCRIPT), base_url]  # fmt: skip
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=seconds + 120
    )
    for line in reversed(completed.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"wrk printed no summary: {completed.stdout} {completed.stderr}")


def process_cpu_seconds(pid: int | None) -> float:
    """User and system CPU time of a process, all its threads (0 if it is gone or None)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(value) for value in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    total = sum(values[:8])
    return total - idle, total


@dataclass
class CpuWindow:
    serve_seconds: float
    project_seconds: float
    machine_busy: float


@contextmanager
def cpu_window(served: Served) -> Iterator[CpuWindow]:
    """The CPU the two processes and the machine used while the block ran."""
    window = CpuWindow(0.0, 0.0, 0.0)
    serve_before = process_cpu_seconds(served.serve_pid)
    project_before = process_cpu_seconds(served.project_pid)
    busy_before, total_before = machine_cpu_ticks()
    yield window
    window.serve_seconds = process_cpu_seconds(served.serve_pid) - serve_before
    window.project_seconds = process_cpu_seconds(served.project_pid) - project_before
    busy_after, total_after = machine_cpu_ticks()
    window.machine_busy = (busy_after - busy_before) / max(1, total_after - total_before)


def with_cpu(cell: Cell, window: CpuWindow) -> Cell:
    if cell.requests:
        cell.serve_cpu_us_per_request = window.serve_seconds / cell.requests * 1e6
        cell.project_cpu_us_per_request = window.project_seconds / cell.requests * 1e6
    cell.machine_cpu_busy = window.machine_busy
    return cell


def writer_counts(base_url: str) -> tuple[float, float]:
    """The writer's (batches, commands) so far, from /metrics."""
    text = httpx.get(base_url + "/metrics", timeout=10).text
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("ledger_writer_batches", "ledger_writer_commands"):
            values[name] = float(value)
    return values["ledger_writer_batches"], values["ledger_writer_commands"]


def cell_of(
    server: str,
    projections: str,
    scenario: str,
    connections: int,
    figures: dict[str, Any],
    loop: str = "uvloop",
) -> Cell:
    seconds = figures["duration_us"] / 1e6
    requests_per_second = figures["requests"] / seconds
    per_request = {"posting": 1, "batch": BATCH_SIZE, "account": 0}[scenario]
    return Cell(
        server=server,
        loop=loop,
        projections=projections,
        scenario=scenario,
        connections=connections,
        seconds=seconds,
        requests=figures["requests"],
        requests_per_second=requests_per_second,
        postings_per_second=requests_per_second * per_request,
        latency_ms_p50=figures["latency_us_p50"] / 1000,
        latency_ms_p99=figures["latency_us_p99"] / 1000,
        latency_ms_max=figures["latency_us_max"] / 1000,
        non_2xx=figures["non_2xx"],
        socket_errors=figures["socket_errors"],
    )


def measure_server(server: str, projections: str, seconds: int, loop: str) -> list[Cell]:
    token = secrets.token_urlsafe(32)
    with (
        common.scratch_postgres_database(prefix="ledger_http_bench") as url,
        running_server(server, projections, url, token, loop) as served,
    ):
        base_url = served.base_url
        space, accounts = seed(base_url, token)
        env = {
            "LEDGER_BENCH_SPACE": space,
            "LEDGER_BENCH_ACCOUNTS": ",".join(accounts),
            "LEDGER_BENCH_TOKEN": token,
            "LEDGER_BENCH_RUN": uuid.uuid4().hex[:8],
            "LEDGER_BENCH_BATCH": str(BATCH_SIZE),
        }
        cells = []
        for scenario, connections in (("posting", SINGLE_CONNECTIONS),
                                      ("batch", BATCH_CONNECTIONS)):  # fmt: skip
            batches_before, commands_before = writer_counts(base_url)
            with cpu_window(served) as window:
                figures = run_wrk(base_url, scenario, connections, seconds, env)
            batches_after, commands_after = writer_counts(base_url)
            cell = with_cpu(
                cell_of(server, projections, scenario, connections, figures, loop), window
            )
            batches = batches_after - batches_before
            cell.commands_per_batch = (
                (commands_after - commands_before) / batches if batches else None
            )
            cells.append(cell)
        wait_for_projections(base_url)
        with cpu_window(served) as window:
            figures = run_wrk(base_url, "account", READ_CONNECTIONS, seconds, env)
        cells.append(
            with_cpu(
                cell_of(server, projections, "account", READ_CONNECTIONS, figures, loop), window
            )
        )
    return cells


#: Each scenario's target: the ratio to pgbench it must reach, or the p99 it must stay under.
TARGETS: Final = {
    "posting": f">= {SINGLE_POSTING_TARGET_RATIO}x pgbench",
    "batch": f">= {BATCH_TARGET_RATIO}x pgbench",
    "account": f"p99 < {READ_P99_TARGET_MS:g} ms",
}


def meets(scenario: str, ratio: float | None, p99_ms: float, failures: int) -> bool:
    """Whether a cell (or a cell's medians) meets its scenario's target, with no non-2xx answer
    or socket error."""
    if failures:
        return False
    if scenario == "posting":
        return ratio is not None and ratio >= SINGLE_POSTING_TARGET_RATIO
    if scenario == "batch":
        return ratio is not None and ratio >= BATCH_TARGET_RATIO
    return p99_ms < READ_P99_TARGET_MS


def judge(cells: list[Cell], reference_tps: float) -> None:
    for cell in cells:
        if cell.scenario != "account":
            cell.ratio = cell.postings_per_second / reference_tps
        cell.target = TARGETS[cell.scenario]
        cell.met = meets(
            cell.scenario, cell.ratio, cell.latency_ms_p99, cell.non_2xx + cell.socket_errors
        )


@dataclass
class Summary:
    """One cell over its rounds: medians, the spread of the ratio, targets judged on medians."""

    server: str
    loop: str
    projections: str
    scenario: str
    connections: int
    rounds: int
    requests_per_second: float
    postings_per_second: float
    latency_ms_p50: float
    latency_ms_p99: float
    non_2xx: int
    ratio: float | None
    ratio_min: float | None
    ratio_max: float | None
    target: str
    met: bool


def summarise(cells: list[Cell]) -> list[Summary]:
    """Group the cells of every round by what they measured; medians over the rounds. A target
    is met when the median meets it and no round had a non-2xx answer or a socket error."""
    groups: dict[tuple[str, str, str, str], list[Cell]] = {}
    for cell in cells:
        key = (cell.server, cell.loop, cell.projections, cell.scenario)
        groups.setdefault(key, []).append(cell)
    summaries = []
    for (server, loop, projections, scenario), rounds in groups.items():
        ratios = [cell.ratio for cell in rounds if cell.ratio is not None]
        summary = Summary(
            server=server,
            loop=loop,
            projections=projections,
            scenario=scenario,
            connections=rounds[0].connections,
            rounds=len(rounds),
            requests_per_second=statistics.median(c.requests_per_second for c in rounds),
            postings_per_second=statistics.median(c.postings_per_second for c in rounds),
            latency_ms_p50=statistics.median(c.latency_ms_p50 for c in rounds),
            latency_ms_p99=statistics.median(c.latency_ms_p99 for c in rounds),
            non_2xx=sum(c.non_2xx + c.socket_errors for c in rounds),
            ratio=statistics.median(ratios) if ratios else None,
            ratio_min=min(ratios) if ratios else None,
            ratio_max=max(ratios) if ratios else None,
            target=TARGETS[scenario],
            met=False,
        )
        summary.met = meets(scenario, summary.ratio, summary.latency_ms_p99, summary.non_2xx)
        summaries.append(summary)
    return summaries


def summary_table(summaries: list[Summary]) -> str:
    headers = ["server", "loop", "projections", "cell", "conns", "rounds", "req/s",
               "postings/s", "p50 ms", "p99 ms", "x pgbench", "x min", "x max", "target",
               "met"]  # fmt: skip
    rows = [
        [s.server, s.loop, s.projections, s.scenario, s.connections, s.rounds,
         s.requests_per_second, s.postings_per_second, s.latency_ms_p50, s.latency_ms_p99,
         _or_nan(s.ratio), _or_nan(s.ratio_min), _or_nan(s.ratio_max), s.target,
         "yes" if s.met else "NO"]
        for s in summaries
    ]  # fmt: skip
    return common.format_table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=MEASURE_SECONDS)
    parser.add_argument("--server", choices=[*SERVERS, "both"], default="granian")
    parser.add_argument("--projections", choices=[*PROJECTION_MODES, "both"], default="both")
    parser.add_argument("--loop", choices=[*LOOPS, "both"], default="uvloop")
    parser.add_argument("--pgbench-seconds", type=int, default=PGBENCH_SECONDS)
    parser.add_argument("--rounds", type=int, default=1, help="measure every cell N times")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds is at least 1")
    if shutil.which("wrk") is None:
        print("wrk is not installed (Debian: apt-get install wrk)", file=sys.stderr)
        return 2
    servers = SERVERS if args.server == "both" else (args.server,)
    modes = PROJECTION_MODES if args.projections == "both" else (args.projections,)
    loops = LOOPS if args.loop == "both" else (args.loop,)
    cells: list[Cell] = []
    # The reference brackets each round: sampled before the first and after every round, each
    # round divided by the mean of the samples just before and after it (as the write benchmark
    # does): the machine's speed drifts within minutes.
    before = common.run_pgbench_reference(args.pgbench_seconds)
    references: list[dict[str, Any]] = [before]
    for round_number in range(args.rounds):
        measured = [
            cell
            for server in servers
            for loop in loops
            for mode in modes
            for cell in measure_server(server, mode, args.seconds, loop)
        ]
        after = common.run_pgbench_reference(args.pgbench_seconds)
        before_tps, after_tps = (float(r["pgbench_tpcb_16c_tps"]) for r in (before, after))
        reference_tps = (before_tps + after_tps) / 2
        for cell in measured:
            cell.round = round_number
        judge(measured, reference_tps)
        if args.rounds > 1:
            print(f"round {round_number + 1} of {args.rounds}")
        print(table(measured))
        print(
            f"pgbench TPC-B 16 clients, same run: {before_tps:,.0f} tps before the round, "
            f"{after_tps:,.0f} after, mean {reference_tps:,.0f}",
            flush=True,
        )
        cells.extend(measured)
        references.append(after)
        before = after
    summaries = summarise(cells)
    if args.rounds > 1:
        print(f"medians over {args.rounds} rounds (each ratio to its own round's pgbench mean)")
        print(summary_table(summaries))
    path = common.write_results(
        "http",
        {
            "benchmark": "http",
            "measured_at": common.utc_timestamp(),
            "cells": [asdict(cell) for cell in cells],
            "summary": [asdict(summary) for summary in summaries],
            "reference": references[-1],
            "references": references,
            "machine": common.machine_info(with_postgres=True),
            "load_generator": f"wrk -t{WRK_THREADS}, {LUA_SCRIPT.name}",
        },
    )
    print(f"written to {path}")
    return 0


def table(cells: list[Cell]) -> str:
    headers = ["server", "loop", "projections", "cell", "conns", "req/s", "postings/s", "p50 ms",
               "p99 ms", "non-2xx", "cmds/batch", "serve us/req", "project us/req",
               "machine busy", "x pgbench", "target", "met"]  # fmt: skip
    rows = [
        [c.server, c.loop, c.projections, c.scenario, c.connections, c.requests_per_second,
         c.postings_per_second, c.latency_ms_p50, c.latency_ms_p99, c.non_2xx,
         _or_nan(c.commands_per_batch), _or_nan(c.serve_cpu_us_per_request),
         _or_nan(c.project_cpu_us_per_request), _or_nan(c.machine_cpu_busy),
         _or_nan(c.ratio), c.target, "yes" if c.met else "NO"]
        for c in cells
    ]  # fmt: skip
    return common.format_table(headers, rows)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


if __name__ == "__main__":
    sys.exit(main())
