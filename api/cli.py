"""The `ledger` command line (click): one entry point for operators.

Each sub-command is a few lines that build what it needs and hand over to `ledger_core` (or to
the projections and the HTTP app). click, because it is the well-kept standard for composable
command groups, with help text and option parsing we would otherwise write by hand.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any, Final

import click
from pydantic import ValidationError
from yoyo.exceptions import LockTimeout

from api.cli_export import export
from api.cli_projections import first_line, migrate, project, replay, status, verify
from api.demo import demo
from api.serve import keygen, serve, token
from ledger_core.crypto import EncryptionKeyError
from ledger_core.store import sqlite_path_from_url
from projections.base import EventDecodeFailed
from projections.db import is_transient
from projections.rebuild import ToolBusy
from projections.registry import UnknownProjection
from projections.tracking import ProjectionFailed

#: The exit status of a command that could not reach its database (1 is `verify`'s mismatches).
DATABASE_UNAVAILABLE_EXIT: Final = 3
#: The exit status of a command given encryption keys that are malformed or not the database's.
ENCRYPTION_KEY_EXIT: Final = 4
#: The exit status of a command whose LEDGER_* settings are malformed or out of their bounds
#: (click's own status for a usage error).
SETTINGS_EXIT: Final = 2


class SettingsRefused(click.ClickException):
    exit_code = SETTINGS_EXIT


class DatabaseUnavailable(click.ClickException):
    exit_code = DATABASE_UNAVAILABLE_EXIT


class EncryptionKeyRefused(click.ClickException):
    exit_code = ENCRYPTION_KEY_EXIT


class LedgerGroup(click.Group):
    """The commands, with one answer for a database that is down, unreachable or locked (a line
    saying so and what to check, exit status 3) and for encryption keys that do not fit (a line,
    exit status 4), instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EncryptionKeyError as error:
            raise EncryptionKeyRefused(str(error)) from error
        except ValidationError as error:  # the settings (the only pydantic model read here)
            raise SettingsRefused(settings_problems(error)) from error
        except ProjectionFailed as error:
            failure = error.failure
            raise click.ClickException(
                f"projection {failure.projection} cannot apply the event at position "
                f"{failure.position} ({failure.topic}): {first_line(failure.reason)}; "
                "`ledger verify` reports what is wrong with the log"
            ) from error
        except EventDecodeFailed as error:
            raise click.ClickException(
                f"the event at position {error.position} ({error.topic}) cannot be read: "
                f"{first_line(error.reason)}; `ledger verify` reports what is wrong with the log"
            ) from error
        except ToolBusy as error:
            raise DatabaseUnavailable(
                f"{error}; wait for it to finish (an interrupted replay resumes where it stopped)"
            ) from error
        except UnknownProjection as error:
            raise click.UsageError(str(error), ctx) from error
        except LockTimeout as error:  # the migrations' lock: another process holds the database
            if _sqlite_file_read_only():  # yoyo retries a lock it cannot write until it gives up
                raise DatabaseUnavailable(_READ_ONLY) from error
            raise DatabaseUnavailable(
                "the database is busy: another process has held it locked for too long; retry, "
                "or find the process that holds it (check LEDGER_DATABASE_URL)"
            ) from error
        except sqlite3.DatabaseError as error:
            message = str(error).lower()
            if "not a database" in message:
                raise DatabaseUnavailable(
                    "LEDGER_DATABASE_URL names a file that is not an SQLite database"
                ) from error
            if "readonly" in message or "read-only" in message:
                raise DatabaseUnavailable(_READ_ONLY) from error
            if not is_transient(error):
                raise
            raise DatabaseUnavailable(_unreachable(error)) from error
        except Exception as error:
            if not is_transient(error):
                raise
            raise DatabaseUnavailable(_unreachable(error)) from error


_READ_ONLY: Final = (
    "the database is read-only here (this command writes to it); check LEDGER_DATABASE_URL "
    "and the file's and its directory's permissions"
)


def _unreachable(error: Exception) -> str:
    reason = first_line(str(error)) or type(error).__name__
    return (
        f"the database is unreachable or busy ({reason}); check LEDGER_DATABASE_URL "
        "and that the server is running"
    )


def _sqlite_file_read_only() -> bool:
    """Whether LEDGER_DATABASE_URL is an SQLite file this process may not write (or, for WAL,
    create files beside)."""
    url = os.environ.get("LEDGER_DATABASE_URL", "")
    if not url.startswith("sqlite:"):
        return False
    path = sqlite_path_from_url(url)
    if path == ":memory:" or not os.path.exists(path):
        return False
    return not (os.access(path, os.W_OK) and os.access(os.path.dirname(path) or ".", os.W_OK))


def settings_problems(error: ValidationError) -> str:
    """One line per setting refused: its variable, what is wrong, what was given."""
    lines = []
    for problem in error.errors():
        name = "LEDGER_" + "_".join(str(part) for part in problem["loc"]).upper()
        given = problem.get("input")
        lines.append(f"{name}: {problem['msg']} (got {given!r})")
    return "; ".join(lines)


@click.group(cls=LedgerGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ledger-core")
def main() -> None:
    """An event-sourced double-entry ledger (LEDGER_DATABASE_URL selects the database)."""


main.add_command(demo)
main.add_command(serve)
main.add_command(token)
main.add_command(keygen)
main.add_command(migrate)
main.add_command(project)
main.add_command(status)
main.add_command(replay)
main.add_command(verify)
main.add_command(export)
