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
