"""The `ledger` command line (click): one entry point for operators.

Each sub-command is a few lines that build what it needs and hand over to `ledger_core` (or to
the projections and the HTTP app). click, because it is the well-kept standard for composable
command groups, with help text and option parsing we would otherwise write by hand.
"""

from __future__ import annotations

import click

from api.cli_projections import migrate, project, replay, status, verify
from api.demo import demo
from api.serve import serve, token


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ledger-core")
def main() -> None:
    """An event-sourced double-entry ledger (LEDGER_DATABASE_URL selects the database)."""


main.add_command(demo)
main.add_command(serve)
main.add_command(token)
main.add_command(migrate)
main.add_command(project)
main.add_command(status)
main.add_command(replay)
main.add_command(verify)
