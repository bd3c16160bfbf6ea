"""`ledger export`: the log as JSON Lines, for auditors, integrations and archives.

The lines are those of `projections.export` (the items of `GET /v1/events`). To a file, the export
is written beside it under a temporary name and renamed into place only once complete, so a file
at the given path is always a whole export, never the first part of one that failed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from pathlib import Path
from typing import IO, Any

import click

from ledger_core.settings import LedgerSettings


@click.command()
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Export the events after this position (the last position of an earlier export).",
)
@click.option(
    "--space",
    "space_id",
    type=click.UUID,
    help="Only this space's events (the whole log is read to find them).",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write to this file (atomically, with a progress bar) instead of standard output.",
)
def export(after: int, space_id: uuid.UUID | None, output: Path | None) -> None:
    """Write the log as JSON Lines: one event per line, as GET /v1/events gives them (position,
    space_id, type, recorded_at, data), sealed text opened with LEDGER_ENCRYPTION_KEY. It covers
    the events up to the head as it was when the export started."""
    from ledger_core.crypto import Cipher, check_store_keys
    from projections.export import export_lines, export_range
    from projections.status import sealing_key_ids

    if output is not None and not output.parent.is_dir():
        raise click.BadParameter(f"no directory {output.parent}", param_hint="--output")
    settings = LedgerSettings()
    url = settings.database_url
    cipher = Cipher.from_setting(settings.encryption_key)
    check_store_keys(cipher, sealing_key_ids(url))
    covered = export_range(url, after)
    if output is None:
        lines = export_lines(url, covered, cipher=cipher, space_id=space_id)
        written = _write(lines, sys.stdout.buffer)
        click.echo(_summary(written, covered, "standard output"), err=True)
        return
    with _progress(covered.until - covered.after) as advance, _replacing(output) as file:
        start = covered.after

        def on_page(position: int) -> None:
            nonlocal start
            advance(position - start)
            start = position

        lines = export_lines(url, covered, cipher=cipher, space_id=space_id, on_page=on_page)
        written = _write(lines, file)
    click.echo(_summary(written, covered, str(output)), err=True)


def _write(lines: Any, file: IO[bytes]) -> int:
    written = 0
    for line in lines:
        file.write(line)
        written += 1
    file.flush()
    return written


def _summary(written: int, covered: Any, where: str) -> str:
    if covered.until == covered.after:
        return f"no events after position {covered.after}; nothing exported to {where}"
    return (
        f"exported {written:,} events (log positions {covered.after + 1} to {covered.until}) "
        f"to {where}; the next export starts with --after {covered.until}"
    )


@contextlib.contextmanager
def _replacing(path: Path) -> Any:
    """A file that becomes `path` only if the block completes (written, synced, renamed);
    otherwise removed, leaving whatever was at `path` before untouched."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        with partial.open("wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)
        directory = os.open(path.parent, os.O_RDONLY)  # the rename itself made durable
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _progress(total: int) -> Any:
    """A progress bar on standard error (events/s and ETA); yields the function to advance it."""
    from tqdm import tqdm  # type: ignore[import-untyped]

    bar = tqdm(total=total, desc="export", unit=" events", unit_scale=True, dynamic_ncols=True)
    try:
        yield bar.update
    finally:
        bar.close()
