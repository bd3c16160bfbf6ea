"""`ledger replay` and `ledger verify`, on every backend: a rebuild gives byte-identical tables,
is swapped in atomically and resumes after an interruption; verify finds a corrupted read row
and a corrupted event row."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from test_projections_queries import Story, close_story, open_story

from api.cli import DATABASE_UNAVAILABLE_EXIT, main
from ledger_core.commands import (
    FreezeAccount,
    PostPending,
    UnfreezeAccount,
    VoidPending,
)
from projections.base import TRACKING_TABLE
from projections.db import Database
from projections.queries import ReadModels
from projections.rebuild import (
    REPLAY_SUFFIX,
    ScratchDatabase,
    _index_shapes,
    build,
    exclusive,
    prepare_copies,
    prepare_scratch,
    replay,
    scratch_path,
)
from projections.registry import PROJECTIONS
from projections.tracking import ProjectionFailed
from projections.verify import dump_tables, verify


def _history(story: Story) -> None:
    """A bit of everything the projections handle."""
    story.post(story.checking, story.salary, "1000.00", effective_date=date(2026, 1, 31))
    story.post(story.groceries, story.card, "42.10", effective_date=date(2026, 2, 3))
    hold = story.post(story.groceries, story.checking, "30.00", pending=True)
    voided = story.post(story.groceries, story.checking, "5.00", pending=True)
    story.post(
        story.groceries,
        story.checking,
        "1.00",
        pending=True,
        expires_at=datetime.now(UTC) + timedelta(hours=2),
    )
    story.run(PostPending(idempotency_key="cap", space_id=story.space_id, posting_id=hold))
    story.run(VoidPending(idempotency_key="void", space_id=story.space_id, posting_id=voided))
    story.post(story.card, story.checking, "42.10", effective_date=date(2026, 1, 15))
    story.run(FreezeAccount(idempotency_key="fr", space_id=story.space_id, account_id=story.card))
    story.run(
        UnfreezeAccount(idempotency_key="unfr", space_id=story.space_id, account_id=story.card)
    )
    for day in range(1, 6):
        story.post(story.groceries, story.checking, f"{day}.25", effective_date=date(2026, 3, day))


@contextlib.contextmanager
def _told(url: str) -> Iterator[Story]:
    opened = open_story(url)
    try:
        _history(opened)
        opened.project()
        yield opened
    finally:
        close_story(opened)


@pytest.fixture
def story(database_url: str) -> Iterator[Story]:
    with _told(database_url) as opened:
        yield opened


def _dumps(url: str) -> dict[str, bytes]:
    return dict(dump_tables(url))


def _sql(url: str, statement: str, params: tuple[object, ...] = ()) -> None:
    database = Database(url)
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            database.execute(cursor, statement, params)
    finally:
        connection.close()


def test_replaying_twice_gives_byte_identical_tables(story: Story) -> None:
    url = story.runner.database.url
    incremental = _dumps(url)
    assert len(incremental[f"{TRACKING_TABLE}:balances"]) > 0
    first = replay(url)
    assert first.projections == tuple(PROJECTIONS) and first.position == story.position
    after_first = _dumps(url)
    replay(url)
    after_second = _dumps(url)
    assert after_first == after_second
    # ... and equal to what the live runner built event by event (invariant 5).
    assert after_first == incremental
    assert b"\n" in after_first["rm_entries"]


def test_parallel_builders_give_the_same_tables_and_resume(story: Story) -> None:
    """Each projection built by its own process (as for a long log) gives the tables one pass
    gives; an interrupted parallel replay resumes from where each copy stopped."""
    url = story.runner.database.url
    together = _dumps(url)
    progress: list[tuple[int, int]] = []
    result = replay(url, parallel=True, batch_size=5, on_progress=lambda *p: progress.append(p))
    assert result.position == story.position and result.events == story.position
    assert len(result.builder_peak_rss_kib) == 2 and min(result.builder_peak_rss_kib) > 1024
    assert _dumps(url) == together
    assert sum(events for events, _ in progress) == story.position
    assert [position for _, position in progress] == sorted({p for _, p in progress})
    _build_in_database(url, "postings", story.position // 3, generation=9, batch_size=2)
    starts: list[tuple[int, int]] = []
    replay(url, parallel=True, on_start=lambda *args: starts.append(args))
    assert starts == [(0, story.position)]  # balances starts afresh, postings resumes
    assert _dumps(url) == together


@pytest.mark.parametrize(("threshold_offset", "parallel"), [(0, True), (1, False)])
def test_builders_start_at_the_threshold_of_events_to_apply(
    story: Story, monkeypatch: pytest.MonkeyPatch, threshold_offset: int, parallel: bool
) -> None:
    """PARALLEL_REBUILD_MIN_EVENTS: at the edge each projection gets its own builder (they
    report their memory), one event past it the single pass runs here."""
    from projections import rebuild

    url = story.runner.database.url
    monkeypatch.setattr(rebuild, "PARALLEL_REBUILD_MIN_EVENTS", story.position + threshold_offset)
    result = replay(url)
    assert bool(result.builder_peak_rss_kib) is parallel
    assert result.events == story.position


def test_a_parallel_builder_that_fails_says_which_event(story: Story) -> None:
    url = story.runner.database.url
    database = Database(url)
    column = "notification_id" if database.is_postgres else "rowid"
    _sql(url, f"UPDATE ledger_events SET state = ? WHERE {column} = ?", (b"{broken", 3))
    with pytest.raises(ProjectionFailed) as failed:
        replay(url, parallel=True)
    assert failed.value.failure.position == 3
    assert "DecodeError" in failed.value.failure.reason, failed.value.failure.reason


@pytest.mark.parametrize("parallel", [False, True])
def test_replay_keeps_every_key_and_index(story: Story, parallel: bool) -> None:
    """A replay's copies get every key and index of the live tables (on PostgreSQL the copies
    of insert-only tables are loaded without indexes and given them at the end): after the
    swap every live table has the same keys and indexes as before, and they hold."""
    url = story.runner.database.url
    database = Database(url)
    tables = [table for cls in PROJECTIONS.values() for table in cls.tables]

    def shapes() -> dict[str, list[Any]]:
        connection = database.connect()
        try:
            cursor = connection.cursor()
            if database.is_postgres:
                return {table: sorted(_index_shapes(cursor, table)) for table in tables}
            found: dict[str, list[Any]] = {}
            for table in tables:
                cursor.execute(f"SELECT name, pk FROM pragma_table_info('{table}') WHERE pk > 0")
                keys = sorted(cursor.fetchall(), key=lambda column: column[1])
                cursor.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
                    "AND sql IS NOT NULL",
                    (table,),
                )
                indexes = sorted(
                    sql.split(" ON ", 1)[1].replace('"', "") for (sql,) in cursor.fetchall()
                )
                found[table] = [keys, indexes]
            return found
        finally:
            connection.close()

    before = shapes()
    assert before["rm_entries"] and before["rm_postings"]
    replay(url, parallel=parallel)
    assert shapes() == before
    with pytest.raises(Exception, match=r"(?i)unique|duplicate key"):
        _sql(url, "INSERT INTO rm_entries SELECT * FROM rm_entries LIMIT 1")


def _build_in_database(url: str, name: str, until: int, generation: int, batch_size: int) -> None:
    """What an interrupted single-pass replay leaves: `name`'s copy in the database, built up
    to `until`."""
    database = Database(url)
    connection = database.connect()
    try:
        copy = PROJECTIONS[name](database, REPLAY_SUFFIX)
        prepare_copies(database, connection, copy, generation=generation)
        build(database, connection, [copy], until=until, batch_size=batch_size)
    finally:
        connection.close()


def test_replay_of_one_projection_leaves_the_other(story: Story) -> None:
    url = story.runner.database.url
    _sql(url, "UPDATE rm_postings SET description = 'tampered'")
    _sql(url, "UPDATE rm_accounts SET name = 'tampered'")
    replay(url, ["balances"])
    dumps = _dumps(url)
    assert b"tampered" not in dumps["rm_accounts"]
    assert b"tampered" in dumps["rm_postings"]


def test_an_interrupted_replay_resumes_and_live_tables_stay_whole(story: Story) -> None:
    url = story.runner.database.url
    before = _dumps(url)
    _build_in_database(url, "balances", story.position // 2, generation=1, batch_size=3)
    # A half-built copy is invisible to readers: the live tables are untouched.
    assert _dumps(url) == before
    starts: list[tuple[int, int]] = []
    result = replay(url, ["balances"], on_start=lambda *args: starts.append(args))
    assert starts == [(story.position // 2, story.position)]  # resumed, not restarted
    assert result.events == story.position - story.position // 2
    assert _dumps(url) == before


def test_the_runner_continues_on_swapped_tables(story: Story) -> None:
    url = story.runner.database.url
    story.runner.start()
    replay(url)
    story.post(story.checking, story.salary, "3.00")
    assert story.reads.wait_for_position(story.position, timeout_s=10)
    account = story.reads.account(story.space_id, story.salary)
    assert account is not None and account.balances.posted == 100300
    assert verify(url).ok


def test_verify_passes_on_a_sound_ledger_and_the_cli_says_so(story: Story) -> None:
    report = verify(story.runner.database.url)
    assert report.mismatches == []
    assert report.events_checked == story.position
    env = {"LEDGER_DATABASE_URL": story.runner.database.url}
    result = CliRunner().invoke(main, ["verify"], env=env)
    assert result.exit_code == 0, result.output
    assert "no mismatches" in result.output


def test_verify_catches_a_corrupted_read_table_row(story: Story) -> None:
    url = story.runner.database.url
    database = Database(url)
    _sql(
        url,
        "UPDATE rm_entries SET amount_minor = amount_minor + 1 "
        "WHERE account_id = ? AND position = ?",
        (database.dialect.uuid(story.checking), 6),
    )
    _sql(url, "DELETE FROM rm_postings WHERE position = ?", (7,))
    report = verify(url)
    kinds = {(m.kind, m.table) for m in report.mismatches}
    assert kinds == {("row-differs", "rm_entries"), ("row-missing", "rm_postings")}
    entry = next(m for m in report.mismatches if m.table == "rm_entries")
    assert "position=6" in entry.row and "amount_minor" in entry.found
    result = CliRunner().invoke(main, ["verify"], env={"LEDGER_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "MISMATCH row-differs: table rm_entries" in result.output


def test_verify_catches_a_corrupted_event_row(story: Story) -> None:
    url = story.runner.database.url
    database = Database(url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        position_column = "notification_id" if database.is_postgres else "rowid"
        database.execute(
            cursor,
            f"SELECT state FROM ledger_events WHERE {position_column} = ?",
            (6,),
        )
        state = bytes(cursor.fetchone()[0])
        assert b"100000" in state  # the first posting: 1000.00 in minor units
        with database.transaction(connection) as write:
            database.execute(
                write,
                f"UPDATE ledger_events SET state = ? WHERE {position_column} = ?",
                (state.replace(b"100000", b"100001", 1), 6),
            )
    finally:
        connection.close()
    report = verify(url)
    kinds = {m.kind for m in report.mismatches}
    assert {"posting-unbalanced", "money-not-conserved", "row-differs"} <= kinds
    unbalanced = next(m for m in report.mismatches if m.kind == "posting-unbalanced")
    assert "position=6" in unbalanced.row and "= 1" in unbalanced.found


def _event_state(url: str, position: int) -> bytes:
    database = Database(url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        column = "notification_id" if database.is_postgres else "rowid"
        database.execute(cursor, f"SELECT state FROM ledger_events WHERE {column} = ?", (position,))
        return bytes(cursor.fetchone()[0])
    finally:
        connection.close()


def _key_of(state: bytes) -> bytes:
    return state.split(b'"idempotency_key":"')[1].split(b'"')[0]


def test_verify_catches_a_missing_event_and_a_reused_key(story: Story) -> None:
    url = story.runner.database.url
    column = "notification_id" if Database(url).is_postgres else "rowid"
    _sql(url, f"DELETE FROM ledger_events WHERE {column} = ?", (7,))
    first_key = _key_of(_event_state(url, 6))
    state = _event_state(url, 9)
    _sql(
        url,
        f"UPDATE ledger_events SET state = ? WHERE {column} = ?",
        (state.replace(_key_of(state), first_key), 9),
    )
    report = verify(url)
    gap = next(m for m in report.mismatches if m.kind == "stream-version-gap")
    assert "position=8" in gap.row and gap.expected == "version 7" and gap.found == "version 8"
    reused = next(m for m in report.mismatches if m.kind == "idempotency-key-reused")
    assert "position=9" in reused.row


def test_replay_and_status_through_the_cli(story: Story) -> None:
    env = {"LEDGER_DATABASE_URL": story.runner.database.url}
    replayed = CliRunner().invoke(main, ["replay", "--projection", "postings"], env=env)
    assert replayed.exit_code == 0, replayed.output
    assert f"postings: swapped in at position {story.position}" in replayed.output
    assert "events/s" in replayed.output
    status = CliRunner().invoke(main, ["status"], env=env)
    assert status.exit_code == 0, status.output
    assert f"head position: {story.position}" in status.output
    rows = {line.split()[0]: line.split() for line in status.output.splitlines()[2:]}
    assert rows["postings"][1:4] == [str(story.position), "0", "1"]
    assert rows["balances"][1:4] == [str(story.position), "0", "0"]
    unknown = CliRunner().invoke(main, ["replay", "--projection", "nope"], env=env)
    assert unknown.exit_code != 0


def test_status_of_a_database_nothing_has_set_up_yet(database_url: str) -> None:
    """Before the ledger or `ledger migrate` ever ran (no event store, no tracking table):
    status answers that nothing is applied, instead of a driver's traceback."""
    status = CliRunner().invoke(main, ["status"], env={"LEDGER_DATABASE_URL": database_url})
    assert status.exit_code == 0, status.output
    assert status.output.startswith("head position: 0\n")
    rows = {line.split()[0]: line.split() for line in status.output.splitlines()[2:4]}
    assert set(rows) == set(PROJECTIONS) and all(row[1:3] == ["0", "0"] for row in rows.values())
    assert "read models: none yet (run `ledger migrate`" in status.output


def test_readers_never_see_a_half_built_table_during_replay(story: Story) -> None:
    url = story.runner.database.url
    expected = story.reads.account(story.space_id, story.checking)
    expected_entries = story.reads.entries(story.space_id, story.checking, limit=500).items
    assert expected is not None and expected_entries
    seen: list[object] = []
    stop = threading.Event()

    def read_continuously() -> None:
        with ReadModels(url) as reads:
            while not stop.is_set():
                account = reads.account(story.space_id, story.checking)
                entries = reads.entries(story.space_id, story.checking, limit=500).items
                seen.append((account, entries))

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        for _ in range(3):
            replay(url)
    finally:
        stop.set()
        reader.join(30)
    assert len(seen) > 3
    assert all(item == (expected, expected_entries) for item in seen)


def test_ledger_project_runs_until_terminated(story: Story) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": story.runner.database.url}
    process = subprocess.Popen(
        [sys.executable, "-c", "from api.cli import main; main()", "project"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert story.reads.wait_for_position(story.position, timeout_s=30)
        story.post(story.checking, story.salary, "1.00")
        assert story.reads.wait_for_position(story.position, timeout_s=30)
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "projecting balances, postings" in output and "stopped" in output


def test_verify_reports_differing_rows_up_to_its_limit_and_says_when_there_are_more(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    import projections.verify

    monkeypatch.setattr(projections.verify, "MAX_REPORTED_ROWS_PER_TABLE", 3)
    url = story.runner.database.url
    _sql(url, "DELETE FROM rm_postings WHERE position IN (?, ?, ?)", (7, 8, 9))
    at_edge = [m for m in verify(url).mismatches if m.table == "rm_postings"]
    assert [m.kind for m in at_edge] == ["row-missing"] * 3
    _sql(url, "DELETE FROM rm_postings WHERE position = ?", (10,))
    report = verify(url)
    past = [m for m in report.mismatches if m.table == "rm_postings"]
    assert [m.kind for m in past] == ["row-missing"] * 3 + ["rows-not-shown"]
    assert [m.row for m in past[:3]] == [
        f"space_id={story.space_id}, position={p}" for p in (7, 8, 9)
    ]
    assert past[-1].count == 1 and "4 differing rows" in past[-1].expected
    assert report.total == 4
    result = CliRunner().invoke(main, ["verify"], env={"LEDGER_DATABASE_URL": url})
    assert result.exit_code == 1 and "MISMATCH rows-not-shown: table rm_postings" in result.output
    assert "4 mismatch(es)" in result.output


def test_verify_past_its_limit_tells_each_shown_row_rightly_and_counts_them_all(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every entry row differs and one is also gone: the rows shown are the first in key order,
    each told as it is (differing, not missing and unexpected: the two sides are cut in the same
    order), and the count covers every differing row."""
    import projections.verify

    monkeypatch.setattr(projections.verify, "MAX_REPORTED_ROWS_PER_TABLE", 3)
    url = story.runner.database.url
    database = Database(url)
    connection = database.connect()
    try:
        cursor = connection.cursor()
        cursor.execute("SELECT count(*) FROM rm_entries")
        (entries,) = cursor.fetchone()
        cursor.execute("SELECT account_id, position, leg FROM rm_entries ORDER BY space_id, "
                       "account_id, position, leg")  # fmt: skip
        keys = cursor.fetchall()
    finally:
        connection.close()
    assert entries > 10
    _sql(url, "UPDATE rm_entries SET balance_after_minor = balance_after_minor + 1")
    _sql(url, "DELETE FROM rm_entries WHERE account_id = ? AND position = ? AND leg = ?", keys[1])
    report = verify(url)
    shown = [m for m in report.mismatches if m.table == "rm_entries"]
    assert [m.kind for m in shown] == ["row-differs", "row-missing", "row-differs",
                                       "rows-not-shown"]  # fmt: skip
    assert shown[1].found == "(no row)" and f"position={keys[1][1]}" in shown[1].row
    assert "balance_after_minor" in shown[0].found
    assert shown[-1].count == entries - 3
    assert report.total == entries
    result = CliRunner().invoke(main, ["verify"], env={"LEDGER_DATABASE_URL": url})
    assert result.exit_code == 1 and f"{entries} mismatch(es)" in result.output


def test_an_event_that_no_longer_applies_is_a_finding_and_one_line_everywhere(
    story: Story,
) -> None:
    """An event of the applied range made undecodable: verify reports it (the re-derivation
    that failed and the log check), exit 1; replay and export say so in one line, exit 1; none
    prints a traceback."""
    url = story.runner.database.url
    column = "notification_id" if Database(url).is_postgres else "rowid"
    _sql(url, f"UPDATE ledger_events SET state = ? WHERE {column} = ?", (b"{garbage", 6))
    report = verify(url)
    kinds = {(m.kind, m.table) for m in report.mismatches}
    assert {("event-not-reapplied", "balances"), ("event-not-reapplied", "postings"),
            ("event-undecodable", "ledger_events")} <= kinds  # fmt: skip
    failed = next(m for m in report.mismatches if m.kind == "event-not-reapplied")
    assert failed.row.startswith("position=6 (") and "\n" not in failed.found
    env = {"LEDGER_DATABASE_URL": url}
    verified = CliRunner().invoke(main, ["verify"], env=env)
    assert verified.exit_code == 1 and "MISMATCH event-not-reapplied" in verified.output
    for command in (["replay"], ["export"]):
        result = CliRunner().invoke(main, command, env=env)
        assert result.exit_code == 1, (command, result.output)
        assert "Traceback" not in result.output and result.exception is not None
        assert isinstance(result.exception, SystemExit)
        last = result.output.strip().splitlines()[-1]
        assert "position 6" in last and "ledger verify" in last, (command, result.output)


@pytest.mark.parametrize("moves", [2, 3])
def test_verify_catches_up_with_a_moving_projection_up_to_max_catch_up_rounds(
    story: Story, monkeypatch: pytest.MonkeyPatch, moves: int
) -> None:
    """A live projection that moved on while verify compared is re-derived further and
    compared again, MAX_CATCH_UP_ROUNDS times at most. With the limit set to 3: moving in the
    first two rounds still verifies in the third (at the edge); moving in all three is reported
    as `not-verified`, never as a pass."""
    import projections.verify

    monkeypatch.setattr(projections.verify, "MAX_CATCH_UP_ROUNDS", 3)
    compare = projections.verify._compare_at
    moved = [0]

    def moving(*args: Any, **kwargs: Any) -> Any:
        if moved[0] < moves:
            moved[0] += 1
            return None  # as if the live projection had applied more meanwhile
        return compare(*args, **kwargs)

    monkeypatch.setattr(projections.verify, "_compare_at", moving)
    report = verify(story.runner.database.url)
    not_verified = [m for m in report.mismatches if m.kind == "not-verified"]
    if moves < 3:
        assert report.ok and not not_verified
    else:
        assert not report.ok and len(not_verified) == 1
        assert "kept moving" in not_verified[0].found


@pytest.mark.parametrize("tool", ["replay", "verify"])
def test_a_second_replay_or_verify_on_one_database_is_refused_at_once(
    story: Story, tool: str
) -> None:
    """Two replays (or verifies) would build in the same scratch tables: while one holds the
    tool's lock, the other says so in one line (exit 3) and touches nothing; once it is
    released (as when its process ends, however), the tool runs."""
    url = story.runner.database.url
    database = Database(url)
    holder = database.connect()
    env = {"LEDGER_DATABASE_URL": url}
    before = _dumps(url)
    try:
        with exclusive(database, holder, tool):
            refused = CliRunner().invoke(main, [tool], env=env)
            assert refused.exit_code == DATABASE_UNAVAILABLE_EXIT, refused.output
            [line] = refused.output.strip().splitlines()
            assert f"another `ledger {tool}` is running on this database" in line
            assert _dumps(url) == before
            other = "verify" if tool == "replay" else "replay"  # a different tool may run
            assert CliRunner().invoke(main, [other], env=env).exit_code == 0
    finally:
        holder.close()
    assert CliRunner().invoke(main, [tool], env=env).exit_code == 0


def test_project_exits_when_a_projection_stops_on_an_unexpected_error(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error that is neither an event's (FAILED, the others go on) nor a database that went
    away (retried) stops `ledger project` with one line and exit 1, so that its supervisor
    restarts it, instead of a process that runs on with nothing projecting."""
    import projections.runner

    def broken(*_args: Any, **_kwargs: Any) -> int:
        raise RuntimeError("the disk said no\nDETAIL: more")

    monkeypatch.setattr(projections.runner.ProjectionRunner, "step", broken)
    started = time.monotonic()
    result = CliRunner().invoke(
        main, ["project"], env={"LEDGER_DATABASE_URL": story.runner.database.url}
    )
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    last = result.output.strip().splitlines()[-1]
    assert "unexpected error (RuntimeError: the disk said no)" in last and "restarted" in last


# SQLite: builders in scratch files ------------------------------------------------------------


@pytest.fixture
def sqlite_story(sqlite_url: str) -> Iterator[Story]:
    with _told(sqlite_url) as opened:
        yield opened


def _build_postings_in_scratch(url: str, until: int) -> str:
    """What a parallel replay's builder of `postings` leaves when it stops at `until`."""
    database = Database(url)
    connection = database.connect()
    try:
        copy = PROJECTIONS["postings"](database, REPLAY_SUFFIX)
        prepare_scratch(database, connection, copy, generation=1)
    finally:
        connection.close()
    path = scratch_path(database, "postings")
    assert path is not None and os.path.exists(path)
    scratch = ScratchDatabase(url, path)
    connection = scratch.connect()
    try:
        build(scratch, connection, [PROJECTIONS["postings"](scratch, REPLAY_SUFFIX)], until=until)
    finally:
        connection.close()
    return path


def _tables(url: str) -> set[str]:
    connection = Database(url).connect()
    try:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master")}
    finally:
        connection.close()


def test_sqlite_builders_write_their_own_files_and_not_the_ledger(sqlite_story: Story) -> None:
    """A builder's batches go to its scratch file: the database gets no copy and no write lock
    from it (the command side writes while a builder's transaction is open), and a parallel
    replay resumes the scratch file where it stopped, copies it in and removes it."""
    url = sqlite_story.runner.database.url
    before = _dumps(url)
    third = sqlite_story.position // 3
    path = _build_postings_in_scratch(url, third)
    assert _dumps(url) == before
    assert not any(name.endswith(REPLAY_SUFFIX) for name in _tables(url))
    scratch = ScratchDatabase(url, path)
    building = scratch.connect()
    try:
        with scratch.transaction(building) as cursor:
            cursor.execute(f"UPDATE {TRACKING_TABLE} SET position = position")  # holds its lock
            ledger = Database(url).connect()
            try:
                ledger.execute("PRAGMA busy_timeout = 0")
                ledger.execute("BEGIN IMMEDIATE")  # the database's write lock is free
                ledger.execute("ROLLBACK")
            finally:
                ledger.close()
    finally:
        building.close()
    starts: list[tuple[int, int]] = []
    replay(url, ["postings"], parallel=True, on_start=lambda *args: starts.append(args))
    assert starts == [(third, sqlite_story.position)]  # resumed in its file
    assert _dumps(url) == before
    assert not [name for name in os.listdir(os.path.dirname(path)) if ".replay-" in name]


@pytest.mark.parametrize("damage", ["garbage", "another schema"])
def test_a_scratch_file_that_cannot_be_trusted_is_started_afresh(
    sqlite_story: Story, damage: str
) -> None:
    """A scratch file that is not a database, or whose copy does not have the live table's
    shape, is not resumed."""
    url = sqlite_story.runner.database.url
    before = _dumps(url)
    path = _build_postings_in_scratch(url, sqlite_story.position // 3)
    if damage == "garbage":
        with open(path, "r+b") as handle:
            handle.write(b"not a database" * 100)
    else:
        connection = sqlite3.connect(path)
        connection.execute("DROP INDEX IF EXISTS rm_postings__by_status__g1")
        connection.commit()
        connection.close()
    starts: list[tuple[int, int]] = []
    replay(url, ["postings"], parallel=True, on_start=lambda *args: starts.append(args))
    assert starts == [(0, sqlite_story.position)]
    assert _dumps(url) == before
    assert not os.path.exists(path)


def test_a_single_pass_replay_finishes_a_scratch_file_in_the_database(
    sqlite_story: Story,
) -> None:
    """Too few events left for builders: the scratch file's copy is copied in and the rest
    applied here."""
    url = sqlite_story.runner.database.url
    before = _dumps(url)
    third = sqlite_story.position // 3
    path = _build_postings_in_scratch(url, third)
    starts: list[tuple[int, int]] = []
    result = replay(url, ["postings"], parallel=False, on_start=lambda *a: starts.append(a))
    assert starts == [(third, sqlite_story.position)]
    assert result.events == sqlite_story.position - third
    assert _dumps(url) == before
    assert not os.path.exists(path)


def test_a_copy_in_cut_short_is_done_again_from_the_scratch_file(
    sqlite_story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy-in commits one table at a time: stopped after the first, the database holds a
    copied table but no tracking row, so the next run copies the scratch file in again."""
    from projections import rebuild

    url = sqlite_story.runner.database.url
    before = _dumps(url)
    half = sqlite_story.position // 2
    path = _build_postings_in_scratch(url, half)
    real_create_copy = rebuild.create_copy

    def failing(database: Database, cursor: Any, table: str, *args: Any, **kw: Any) -> None:
        if table == "rm_posting_accounts" and kw.get("schema", "main") == "main":
            raise RuntimeError("stopped half-way through the copy-in")
        real_create_copy(database, cursor, table, *args, **kw)

    monkeypatch.setattr(rebuild, "create_copy", failing)
    with pytest.raises(RuntimeError, match="half-way"):
        replay(url, ["postings"], parallel=False)
    assert "rm_postings__replay" in _tables(url) and os.path.exists(path)
    monkeypatch.setattr(rebuild, "create_copy", real_create_copy)
    starts: list[tuple[int, int]] = []
    replay(url, ["postings"], parallel=False, on_start=lambda *args: starts.append(args))
    assert starts == [(half, sqlite_story.position)]
    assert _dumps(url) == before
    assert not os.path.exists(path)


def test_a_copy_made_before_the_schema_changed_is_not_resumed(story: Story) -> None:
    """A copy of the database left by an interrupted replay is resumed only if it still has
    the live table's shape: one that lacks an index the live table has (as after a migration)
    is built again, so the swap never drops an index."""
    url = story.runner.database.url
    before = _dumps(url)
    _build_in_database(url, "postings", story.position // 2, generation=9, batch_size=2)
    database = Database(url)
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            if database.is_postgres:
                cursor.execute(
                    "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = "
                    "'rm_postings__replay'::regclass AND NOT indisprimary"
                )
                (index,) = cursor.fetchone()
            else:
                index = "rm_postings__by_status__g9"
            cursor.execute(f"DROP INDEX {index}")
    finally:
        connection.close()
    starts: list[tuple[int, int]] = []
    replay(url, ["postings"], on_start=lambda *args: starts.append(args))
    assert starts == [(0, story.position)]
    assert _dumps(url) == before
    connection = database.connect()
    try:
        cursor = connection.cursor()
        if database.is_postgres:
            assert len(_index_shapes(cursor, "rm_postings")) == 2  # key and by status
        else:
            cursor.execute("SELECT count(*) FROM sqlite_master WHERE tbl_name = 'rm_postings'")
            assert cursor.fetchone() == (2,)  # the table (clustered on its key), by status
    finally:
        connection.close()
