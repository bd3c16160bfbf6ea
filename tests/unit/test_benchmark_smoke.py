"""The benchmarks' code paths with minuscule parameters on SQLite, so they cannot rot unseen.

They check the figures are consistent (counts, ratios, percentiles, the writer's counters), not
how fast anything is: speed on a shared CI machine is noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from benchmarks import common, load_benchmark, write_benchmark
from ledger_core.limits import SNAPSHOT_INTERVAL_EVENTS


def test_write_benchmark_runs_every_cell_and_the_profile(tmp_path: Path) -> None:
    payload = write_benchmark.main(
        [
            "--backend=sqlite",
            "--seconds=0.6",
            "--warmup=0.2",
            "--preload=1000",
            "--accounts=12",
            "--submitters",
            "1",
            "4",
            "--sqlite-reference-seconds=0.1",
            "--rounds=2",
            "--profile",
            f"--results-dir={tmp_path}",
            "--name=smoke",
        ]
    )

    written = json.loads((tmp_path / "smoke.json").read_text())
    assert written["cells"] == json.loads(json.dumps(payload["cells"]))
    cells = payload["cells"]
    measured = [(c["round"], c["shape"], c["submitters"], c["profiled"]) for c in cells]
    grid = [("uniform", 1), ("uniform", 4), ("hot", 1), ("hot", 4)]
    assert measured == [
        *((1, shape, submitters, False) for shape, submitters in grid),
        *((2, shape, submitters, False) for shape, submitters in grid),
        (2, "uniform", 4, True),
    ]
    samples = [
        sample["sqlite_single_row_commits_per_second"]
        for sample in payload["references"]["sqlite"]["samples"]
    ]
    assert len(samples) == 3  # after the preload and after each round
    for cell in cells:
        assert cell["postings"] > 0
        assert cell["refused"] == 0
        assert cell["postings_per_second"] == pytest.approx(cell["postings"] / cell["seconds"])
        assert 0 < cell["latency_ms_p50"] <= cell["latency_ms_p99"] <= cell["latency_ms_max"]
        assert cell["writer_commands"] >= cell["writer_batches"] > 0
        assert {"MainThread", "ledger-writer"} <= set(cell["cpu_us_per_posting_by_thread"])
        around = samples[cell["round"] - 1 : cell["round"] + 1]
        assert cell["reference_per_second"] == pytest.approx(sum(around) / 2)
        assert cell["ratio"] == pytest.approx(cell["postings_per_second"] / sum(around) * 2)
    summaries = {(s["shape"], s["submitters"], s["profiled"]): s for s in payload["summaries"]}
    assert len(summaries) == 5
    hot_4 = summaries[("hot", 4, False)]
    rounds = [c for c in cells if (c["shape"], c["submitters"]) == ("hot", 4) and not c["profiled"]]
    assert hot_4["rounds"] == 2
    assert hot_4["ratio_min"] == min(c["ratio"] for c in rounds)
    assert hot_4["ratio_max"] == max(c["ratio"] for c in rounds)
    assert hot_4["postings_per_second"] == pytest.approx(
        sum(c["postings_per_second"] for c in rounds) / 2
    )
    assert payload["preload"]["sqlite"]["postings"] == 1000
    assert len(payload["load_average_1m_before_after"]["sqlite"]) == 2
    assert len(payload["code"]["commit"]) == 40
    profile = (tmp_path / "smoke_profile.txt").read_text()
    assert "## thread MainThread (event loop, submitters): top 40 by tottime" in profile
    assert "ledger_core/ledger.py" in profile  # the submissions, profiled


def test_the_targets_are_judged_on_the_64_submitter_cells() -> None:
    def cell(shape: str, rate: float, ratio: float) -> write_benchmark.CellResult:
        return write_benchmark.CellResult(
            backend="postgresql",
            shape=shape,
            submitters=64,
            seconds=1.0,
            postings=int(rate),
            postings_per_second=rate,
            latency_ms_p50=1.0,
            latency_ms_p99=2.0,
            latency_ms_max=3.0,
            refused=0,
            writer_batches=1,
            writer_commands=64,
            commands_per_batch=64.0,
            cpu_us_per_posting=1.0,
            cpu_us_per_posting_by_thread={"MainThread": 0.25, "ledger-writer": 0.5},
            ratio=ratio,
        )

    run = write_benchmark.BackendRun("postgresql", 1000, 0, 0.0)
    run.cells = [cell("uniform", 10_000.0, 5.0), cell("hot", 7_900.0, 3.95)]
    run.summaries = write_benchmark.summarise(run.cells)
    found = write_benchmark.targets([run])

    assert [(t["measured"], t["met"]) for t in found] == [(5.0, True), (0.79, False)]
    assert "MISSED by 1%" in write_benchmark.targets_text(found)


def test_load_benchmark_builds_loads_and_times_a_fresh_process(tmp_path: Path) -> None:
    payload = load_benchmark.main(
        [
            "--backend=sqlite",
            "--postings=1200",
            "--accounts=10",
            "--repeats=2",
            "--no-reference",
            f"--results-dir={tmp_path}",
        ]
    )

    (result,) = payload["results"]
    assert json.loads((tmp_path / "load-sqlite.json").read_text())["results"][0]["postings"] == 1200
    as_built, longest_tail = result["cases"]
    assert as_built["space_version"] == as_built["space_version_expected"] == 1 + 10 + 1200
    # No snapshot yet at 1,211 events: the top-up makes the stream one short of the interval.
    assert longest_tail["events_after_snapshot"] == SNAPSHOT_INTERVAL_EVENTS - 1
    assert longest_tail["space_version"] == longest_tail["space_version_expected"]
    for case in (as_built, longest_tail):
        assert case["accounts_loaded"] == 10
        assert len(case["load_seconds"]) == 2
        assert case["load_seconds_median"] > 0
        assert case["fresh_process"]["first_command_seconds"] > 0
    assert math.isnan(result["build_ratio_to_reference"])


def test_pgbench_reference_output_is_parsed_and_errors_are_refused() -> None:
    line = '{"pgbench_tpcb_16c_tps": 2147.3, "seconds": 20, "synchronous_commit": "on"}'
    assert common.parse_pgbench_reference(f"noise\n{line}\n")["pgbench_tpcb_16c_tps"] == 2147.3
    with pytest.raises(common.ReferenceUnavailable, match="cannot create"):
        common.parse_pgbench_reference('{"error": "cannot create a scratch database"}')
    with pytest.raises(common.ReferenceUnavailable, match="no JSON"):
        common.parse_pgbench_reference("pgbench: command not found\n")


def test_sqlite_reference_uses_the_stores_durability(tmp_path: Path) -> None:
    figures = common.sqlite_commit_rate(0.1, directory=tmp_path)

    assert figures["commits"] > 0
    assert (figures["journal_mode"], figures["synchronous"]) == ("WAL", "FULL")
    expected = figures["commits"] / figures["seconds"]
    assert figures["sqlite_single_row_commits_per_second"] == expected
    assert list(tmp_path.iterdir()) == []  # the scratch file is gone


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert common.percentile(values, 0.50) == 50.0
    assert common.percentile(values, 0.99) == 99.0
    assert common.percentile(values, 1.0) == 100.0
    assert math.isnan(common.percentile([], 0.5))


def test_http_rounds_are_summarised_by_medians_and_judged_on_them() -> None:
    from benchmarks.http_benchmark import Cell, judge, summarise

    def cell(scenario: str, rate: float, p99: float, round_number: int, non_2xx: int = 0) -> Cell:
        return Cell(server="granian", loop="uvloop", projections="separate", scenario=scenario,
                    connections=64, seconds=10.0, requests=int(rate * 10),
                    requests_per_second=rate, postings_per_second=rate if scenario != "account"
                    else 0.0, latency_ms_p50=p99 / 2, latency_ms_p99=p99, latency_ms_max=p99,
                    non_2xx=non_2xx, socket_errors=0, round=round_number)  # fmt: skip

    rounds = []
    for number, (reference, posting, p99) in enumerate([(1000, 1400, 25), (1000, 1600, 18),
                                                         (2000, 3100, 19)]):  # fmt: skip
        measured = [cell("posting", posting, 40, number), cell("account", 4000, p99, number)]
        judge(measured, reference)
        rounds.extend(measured)
    by_scenario = {summary.scenario: summary for summary in summarise(rounds)}
    posting = by_scenario["posting"]
    # ratios 1.4, 1.6, 1.55 (each to its own round's reference): the median meets 1.5x
    assert posting.rounds == 3 and posting.postings_per_second == 1600
    assert (posting.ratio_min, posting.ratio, posting.ratio_max) == (1.4, 1.55, 1.6)
    assert posting.met
    account = by_scenario["account"]
    assert account.latency_ms_p99 == 19 and account.met and account.ratio is None
    # A non-2xx answer in any round fails the cell, whatever the medians say.
    rounds.append(cell("account", 4000, 10, 3, non_2xx=1))
    judge(rounds[-1:], 1000)
    assert not {s.scenario: s for s in summarise(rounds)}["account"].met
