"""The projection runner, on every backend: exactly-once under SIGKILL, stop-and-report on a
failing event and resume after the fix, and (PostgreSQL) wake-up by NOTIFY and reconnection."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner
from test_projections_queries import Story, close_story, open_story

from api.cli import main
from ledger_core.commands import EntrySpec, PostingSpec, RecordBatch
from projections import runner as runner_module
from projections.db import APPLICATION_NAME, Database
from projections.rebuild import replay
from projections.runner import ProjectionRunner
from projections.tracking import ProjectionFailed
from projections.verify import dump_tables, verify

#: Postings in the log of the SIGKILL test: enough that the projector is killed mid-run.
KILL_TEST_POSTINGS = 4000


@pytest.fixture
def story(database_url: str) -> Iterator[Story]:
    opened = open_story(database_url)
    try:
        yield opened
    finally:
        close_story(opened)


def _record_batches(story: Story, postings: int, per_batch: int = 1000) -> None:
    for number in range(postings // per_batch):
        specs = tuple(
            PostingSpec(
                entries=(
                    EntrySpec(
                        account_id=story.checking, direction="debit", amount=f"{n % 97 + 1}.01"
                    ),
                    EntrySpec(
                        account_id=story.salary, direction="credit", amount=f"{n % 97 + 1}.01"
                    ),
                )
            )
            for n in range(per_batch)
        )
        result = story.ledger.execute(
            RecordBatch(idempotency_key=f"batch-{number}", space_id=story.space_id, postings=specs)
        )
        story.position = result.position or story.position
    story.position = story.ledger.store.max_position()


def _applied(story: Story) -> int:
    return story.runner.applied_position()


@pytest.mark.slow
def test_a_projector_killed_mid_batch_loses_and_doubles_nothing(story: Story) -> None:
    _record_batches(story, KILL_TEST_POSTINGS)
    url = story.runner.database.url
    script = textwrap.dedent(
        f"""
        import time
        from projections.runner import ProjectionRunner
        runner = ProjectionRunner({url!r}, batch_size=40)
        runner.start()
        time.sleep(600)
        """
    )
    kills = 0
    while kills < 3 and _applied(story) < story.position:
        before = _applied(story)
        process = subprocess.Popen([sys.executable, "-c", script], env=os.environ.copy())
        deadline = time.monotonic() + 60
        while _applied(story) <= before and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.01 * (kills + 1))  # land somewhere inside a later batch
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
    assert kills >= 1 and _applied(story) < story.position, "the projector finished too fast"
    story.project()  # restart here: it resumes from the committed position
    incremental = dict(dump_tables(url))
    assert verify(url).ok
    replay(url)
    assert dict(dump_tables(url)) == incremental
    account = story.reads.account(story.space_id, story.checking)
    expected = sum((n % 97 + 1) * 100 + 1 for n in range(1000)) * (KILL_TEST_POSTINGS // 1000)
    assert account is not None and account.balances.posted == expected
    entries = story.reads.entries(story.space_id, story.checking, limit=500)
    assert entries.items[0].balance_after == entries.items[0].amount_minor


def test_a_failing_projection_stops_reports_and_resumes_after_the_fix(story: Story) -> None:
    url = story.runner.database.url
    database = Database(url)
    story.post(story.checking, story.salary, "1.00")
    story.post(story.checking, story.salary, "2.00")
    failing_position = story.position + 1
    # Sabotage: a row already sitting where the next posting's row must go.
    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            database.execute(
                cursor,
                "INSERT INTO rm_posting_accounts (space_id, account_id, position) VALUES (?, ?, ?)",
                (
                    database.dialect.uuid(story.space_id),
                    database.dialect.uuid(story.checking),
                    failing_position,
                ),
            )
    finally:
        connection.close()
    story.post(story.checking, story.salary, "3.00")
    story.post(story.checking, story.salary, "4.00")

    with pytest.raises(ProjectionFailed) as failed:
        story.project()
    failure = failed.value.failure
    assert (failure.projection, failure.position) == ("postings", failing_position)
    assert failure.topic.startswith("PostingRecorded/") and "rm_posting_accounts" in failure.reason
    positions = story.runner.positions()
    assert positions["postings"] == failing_position - 1  # stopped there, skipped nothing
    assert story.reads.projection_failures() == [
        ("postings", failing_position, failure.topic, failure.reason)
    ]
    status = CliRunner().invoke(main, ["status"], env={"LEDGER_DATABASE_URL": url})
    assert status.exit_code == 1
    assert f"FAILED at position {failing_position}" in status.output
    # Other projections go on.
    story.runner.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        story.runner.positions()["balances"] < story.position or story.runner.failure is None
    ):
        time.sleep(0.01)
    assert story.runner.positions()["balances"] == story.position
    assert story.runner.failure == failure
    story.runner.stop()

    connection = database.connect()
    try:
        with database.transaction(connection) as cursor:
            database.execute(
                cursor,
                "DELETE FROM rm_posting_accounts WHERE space_id = ? AND position = ?",
                (database.dialect.uuid(story.space_id), failing_position),
            )
    finally:
        connection.close()
    story.runner.start()
    story.runner.run_until(story.position, timeout_s=10)
    assert story.runner.failure is None
    assert story.reads.projection_failures() == []  # cleared by the batch that got through
    page = story.reads.postings(story.space_id, account_id=story.checking)
    assert [p.entries[0].amount_minor for p in page.items] == [100, 200, 300, 400]
    assert verify(url).ok


def test_an_undecodable_event_stops_the_projections_until_repaired(story: Story) -> None:
    url = story.runner.database.url
    database = Database(url)
    story.post(story.checking, story.salary, "1.00")
    bad_position = story.position
    column = "notification_id" if database.is_postgres else "rowid"
    connection = database.connect()
    try:
        cursor = connection.cursor()
        database.execute(
            cursor, f"SELECT state FROM ledger_events WHERE {column} = ?", (bad_position,)
        )
        good_state = bytes(cursor.fetchone()[0])
        with database.transaction(connection) as write:
            database.execute(
                write,
                f"UPDATE ledger_events SET state = ? WHERE {column} = ?",
                (b"{not json", bad_position),
            )
        with pytest.raises(ProjectionFailed) as failed:
            story.project()
        assert failed.value.failure.position == bad_position
        story.runner.step()  # the other projection meets the same event
        assert set(story.runner.failures) == {"balances", "postings"}
        assert {f.position for f in story.runner.failures.values()} == {bad_position}
        assert story.runner.applied_position() == bad_position - 1
        with database.transaction(connection) as write:
            database.execute(
                write,
                f"UPDATE ledger_events SET state = ? WHERE {column} = ?",
                (good_state, bad_position),
            )
    finally:
        connection.close()
    story.runner.failures.clear()
    story.project()
    assert story.runner.applied_position() == bad_position


def test_lag_and_run_until_timeout(story: Story) -> None:
    story.post(story.checking, story.salary, "1.00")
    assert story.runner.lag() == story.position
    story.runner.run_until(2, timeout_s=10)
    assert story.runner.lag() == story.position - story.runner.applied_position()
    story.project()
    assert story.runner.lag() == 0
    with pytest.raises(TimeoutError):
        story.runner.run_until(story.position + 1, timeout_s=0.1)


def test_notify_wakes_the_runner_and_it_reconnects(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    story = open_story(postgres_url)
    try:
        # With polling pushed out of reach, only NOTIFY can wake the runner in time.
        monkeypatch.setattr(runner_module, "POSTGRES_POLL_INTERVAL_S", 60.0)
        story.runner.start()
        story.post(story.checking, story.salary, "1.00")
        assert story.reads.wait_for_position(story.position, timeout_s=5)
        import psycopg

        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            ).fetchone()
        assert killed is not None and killed[0] >= 2  # the runner's connections
        monkeypatch.setattr(runner_module, "POSTGRES_POLL_INTERVAL_S", 0.5)
        story.post(story.checking, story.salary, "2.00")
        assert story.reads.wait_for_position(story.position, timeout_s=15)
        assert story.runner.running and story.runner.failure is None
    finally:
        close_story(story)


def test_two_runners_never_double_an_event(story: Story) -> None:
    _record_batches(story, 2000, per_batch=500)
    other = ProjectionRunner(story.runner.database.url, batch_size=100)
    story.runner.batch_size = 100
    try:
        other.start()
        story.runner.start()
        story.runner.run_until(story.position, timeout_s=60)
    finally:
        other.stop()
        story.runner.stop()
    assert verify(story.runner.database.url).ok


def test_a_runner_without_its_tables_says_so(database_url: str) -> None:
    runner = ProjectionRunner(database_url)  # migrations never applied
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while runner.running and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not runner.running
        assert "ledger_projections" in str(runner.fatal_error)
        with pytest.raises(RuntimeError, match="stopped"):
            runner.run_until(1, timeout_s=1)
    finally:
        runner.stop()


def test_a_batch_prepared_before_another_projector_moved_on_is_not_applied_twice(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite a batch is prepared in a read transaction before the write lock is taken.
    If another projector applies the same events in between, the write transaction sees the
    positions moved and prepares afresh from there: nothing is doubled."""
    from projections import tracking

    _record_batches(story, 300, per_batch=100)
    url = story.runner.database.url
    database = Database(url)
    other = ProjectionRunner(url)
    original = tracking._prepared
    raced: list[int] = []

    def prepared_then_overtaken(*args: object, **kwargs: object) -> object:
        writers = original(*args, **kwargs)  # type: ignore[arg-type]
        if not raced:
            raced.append(0)  # (the other projector's own call comes through here too)
            raced[0] = other.step()  # it applies the same batch now
        return writers

    monkeypatch.setattr(tracking, "_prepared", prepared_then_overtaken)
    connection = database.connect()
    try:
        tracking.apply_next_batch_together(database, connection, story.runner.projections)
    finally:
        connection.close()
        other.stop()
    monkeypatch.undo()
    assert raced and raced[0] > 0
    story.project()
    assert verify(url).ok
    incremental = dict(dump_tables(url))
    replay(url)
    assert dict(dump_tables(url)) == incremental


def test_a_batch_applies_at_most_max_batch_events(
    story: Story, monkeypatch: pytest.MonkeyPatch
) -> None:
    """However large a batch is asked for, at most MAX_BATCH_EVENTS events are read and applied
    in one transaction (bounding its memory): asked for exactly the limit, the limit; asked for
    more, still the limit. The projections end up exactly as a replay builds them."""
    from projections import tracking

    _record_batches(story, 20, per_batch=10)
    monkeypatch.setattr(tracking, "MAX_BATCH_EVENTS", 4)
    url = story.runner.database.url
    database = Database(url)
    connection = database.connect()
    try:
        projections = story.runner.projections
        assert tracking.apply_next_batch_together(database, connection, projections, limit=4) == 4
        assert tracking.apply_next_batch_together(database, connection, projections, limit=50) == 4
        assert tracking.apply_next_batch(database, connection, projections[0], limit=50) == 4
    finally:
        connection.close()
    monkeypatch.undo()
    story.project()
    assert verify(url).ok
    incremental = dict(dump_tables(url))
    replay(url)
    assert dict(dump_tables(url)) == incremental
