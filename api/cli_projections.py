"""The operator's projection commands: `ledger migrate`, `project`, `status`, `replay`, `verify`.

Each reads LEDGER_DATABASE_URL through `LedgerSettings` and hands over to `migrations` or
`projections`. The replay progress bar is tqdm (events/s and ETA without hand-written code).
"""

from __future__ import annotations

import signal
import threading
from typing import Any, Final

import click

from ledger_core.settings import LedgerSettings

#: The exit status of a command that needs the read models' tables on a database that has none
#: yet (the migrations were never applied to it).
READ_MODELS_MISSING_EXIT: Final = 5


class ReadModelsMissing(click.ClickException):
    exit_code = READ_MODELS_MISSING_EXIT


def _database_url() -> str:
    return LedgerSettings().database_url


def _require_read_models(url: str) -> None:
    """Refuse, in one line, a database without the read models' tables (and, connecting,
    one that cannot be reached: exit 3, as every command)."""
    from projections.status import read_models_exist

    if not read_models_exist(url):
        raise ReadModelsMissing(
            "this database has no read models yet: run `ledger migrate` first (`ledger serve` "
            "applies the migrations itself)"
        )


@click.command()
def migrate() -> None:
    """Apply the schema migrations not applied yet (a no-op when up to date) and create the event
    store's tables if missing, so every table exists before the ledger first runs."""
    from ledger_core.store import open_store
    from migrations import apply_migrations

    url = _database_url()
    applied = apply_migrations(url)
    open_store(url, create_tables=True).close()
    if applied:
        for migration_id in applied:
            click.echo(f"applied {migration_id}")
    else:
        click.echo("schema is up to date")


@click.command()
@click.option("--projection", "names", multiple=True, help="Run only this projection (repeatable).")
def project(names: tuple[str, ...]) -> None:
    """Run the projections in the foreground until interrupted (Ctrl-C or SIGTERM)."""
    from projections.runner import ProjectionRunner

    url = _database_url()
    _require_read_models(url)  # then it runs until stopped, reconnecting when the database drops
    runner = ProjectionRunner(url, names=list(names) or None)
    stopping = threading.Event()

    def request_stop(*_: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    runner.start()
    click.echo(f"projecting {', '.join(p.name for p in runner.projections)}; Ctrl-C stops")
    reported: set[str] = set()
    try:
        while not stopping.wait(1.0):
            for name, failure in runner.failures.items():
                if name not in reported:
                    reported.add(name)
                    click.echo(f"FAILED: {failure}", err=True)
            if runner.fatal_error is not None:
                # Not an event's fault (those stop their projection and say FAILED) and not a
                # database that went away (retried): exit, so a supervisor restarts it; it
                # resumes where it stopped.
                error = runner.fatal_error
                raise click.ClickException(
                    f"a projection stopped on an unexpected error "
                    f"({type(error).__name__}: {first_line(str(error))}); exiting so that it is "
                    "restarted (it resumes where it stopped)"
                )
    except KeyboardInterrupt:
        pass
    finally:
        runner.stop()
    click.echo("stopped")


def first_line(text: str) -> str:
    """A database's message without its DETAIL and CONTEXT lines: one line of output."""
    return (text.strip().splitlines() or [""])[0]


@click.command()
def status() -> None:
    """The head of the log, and each projection's applied position and lag. Exits 1 if a
    projection is stopped on a failing event."""
    from projections.status import projection_statuses, read_models_exist

    head, statuses = projection_statuses(_database_url())
    click.echo(f"head position: {head}")
    click.echo(f"{'projection':<12} {'applied':>12} {'lag':>10} {'generation':>10}  state")
    failed = False
    for item in statuses:
        state = "ok"
        if item.failed_position is not None:
            failed = True
            state = (
                f"FAILED at position {item.failed_position} ({item.failed_topic}): "
                f"{item.failed_reason}"
            )
        click.echo(
            f"{item.name:<12} {item.position:>12} {item.lag:>10} {item.generation:>10}  {state}"
        )
    if not read_models_exist(_database_url()):
        click.echo("read models: none yet (run `ledger migrate`, or start `ledger serve`)")
    click.echo(encryption_line(_database_url(), LedgerSettings().encryption_key))
    if failed:
        raise SystemExit(1)


def encryption_line(database_url: str, setting: str | None) -> str:
    """`ledger status`'s line on encryption at rest: the keys the database has recorded (every
    key the ledger has run with: what they sealed needs them), and whether LEDGER_ENCRYPTION_KEY
    lists them all."""
    from ledger_core.crypto import Cipher
    from projections.status import sealing_key_ids

    cipher = Cipher.from_setting(setting)
    sealed_by = sorted(sealing_key_ids(database_url))
    given = ", ".join(cipher.key_ids) or "none"
    if not sealed_by:
        if not cipher.enabled:
            return "encryption: off (LEDGER_ENCRYPTION_KEY is not set; text is stored as it comes)"
        return (
            f"encryption: on (key {cipher.key_ids[0]}), recorded in the database when the "
            "ledger first opens with it"
        )
    missing = [key for key in sealed_by if key not in cipher.key_ids]
    state = f"MISSING {', '.join(missing)}" if missing else "all given"
    return (
        f"encryption: the database needs key(s) {', '.join(sealed_by)}; "
        f"LEDGER_ENCRYPTION_KEY lists {given}: {state}"
    )


@click.command()
@click.option("--projection", "names", multiple=True, help="Rebuild only this projection.")
def replay(names: tuple[str, ...]) -> None:
    """Rebuild projections from position 0 into fresh tables and swap them in atomically.
    Safe to interrupt: running it again resumes the rebuild."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    from migrations import apply_migrations
    from projections.rebuild import replay as run_replay

    apply_migrations(_database_url())  # the tables it rebuilds (a no-op when up to date)
    bar: Any = None

    def on_start(resumed_at: int, head: int) -> None:
        nonlocal bar
        bar = tqdm(
            total=max(head - resumed_at, 0),
            desc="replay",
            unit=" events",
            unit_scale=True,
            dynamic_ncols=True,
        )
        if resumed_at:
            bar.write(f"resuming an interrupted replay at position {resumed_at}")

    def on_progress(events: int, position: int) -> None:
        if bar is not None:
            bar.update(events)

    try:
        result = run_replay(
            _database_url(), list(names) or None, on_start=on_start, on_progress=on_progress
        )
    finally:
        if bar is not None:
            bar.close()
    rate = result.events / result.seconds if result.seconds else 0.0
    click.echo(
        f"{', '.join(result.projections)}: swapped in at position {result.position} "
        f"({result.events} events in {result.seconds:.1f}s, {rate:,.0f} events/s)"
    )


@click.command()
@click.option("--projection", "names", multiple=True, help="Verify only this projection.")
def verify(names: tuple[str, ...]) -> None:
    """Re-derive the projections from the log, compare them with the stored tables and check
    the log's invariants. Prints each mismatch (per table the first 50 rows in key order, and
    how many more differ); exits 1 if there is any."""
    from projections.verify import verify as run_verify

    _require_read_models(_database_url())
    report = run_verify(_database_url(), list(names) or None)
    positions = ", ".join(f"{name} at {position}" for name, position in report.positions.items())
    click.echo(f"verified {positions}; {report.events_checked} events checked")
    for mismatch in report.mismatches:
        click.echo(
            f"MISMATCH {mismatch.kind}: table {mismatch.table}, row {mismatch.row}: "
            f"expected {mismatch.expected}; found {mismatch.found}"
        )
    if not report.ok:
        click.echo(f"{report.total} mismatch(es)", err=True)
        raise SystemExit(1)
    click.echo("no mismatches")
