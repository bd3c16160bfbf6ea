"""`ledger demo`: open a space, accounts and postings on the configured database and print the
balances: the quickest way to see the ledger work."""

from __future__ import annotations

import uuid
from uuid import UUID

import click

from ledger_core import Ledger
from ledger_core import commands as cmd
from ledger_core.money import format_amount
from ledger_core.records import AccountRecord, SpaceRecord
from ledger_core.settings import LedgerSettings
from ledger_core.types import AccountType


@click.command()
def demo() -> None:
    """Record a small household month and print the balances."""
    from migrations import apply_migrations

    settings = LedgerSettings()
    apply_migrations(settings.database_url)  # a whole ledger database, as `ledger serve` makes
    run = uuid.uuid4().hex[:8]
    with Ledger.open(settings=settings) as ledger:
        space = ledger.execute(
            cmd.OpenSpace(idempotency_key=f"demo-{run}", name="Demo household", base_currency="USD")
        ).outcome
        assert isinstance(space, SpaceRecord)
        accounts: dict[str, UUID] = {}
        chart: tuple[tuple[str, AccountType, str | None], ...] = (
            ("Checking", "asset", "0.00"),
            ("Credit card", "liability", None),
            ("Salary", "income", None),
            ("Rent", "expense", None),
            ("Groceries", "expense", None),
        )
        for name, kind, limit in chart:
            opened = ledger.execute(
                cmd.OpenAccount(
                    idempotency_key=f"demo-{run}-{name}",
                    space_id=space.id,
                    name=name,
                    type=kind,
                    currency="USD",
                    overdraft_limit=limit,
                )
            ).outcome
            assert isinstance(opened, AccountRecord)
            accounts[name] = opened.id

        def post(key: str, debit: str, credit: str, amount: str, description: str) -> None:
            ledger.execute(
                cmd.RecordPosting(
                    idempotency_key=f"demo-{run}-{key}",
                    space_id=space.id,
                    posting=cmd.PostingSpec(
                        description=description,
                        entries=(
                            cmd.EntrySpec(
                                account_id=accounts[debit], direction="debit", amount=amount
                            ),
                            cmd.EntrySpec(
                                account_id=accounts[credit], direction="credit", amount=amount
                            ),
                        ),
                    ),
                )
            )

        post("salary", "Checking", "Salary", "3200.00", "November salary")
        post("rent", "Rent", "Checking", "1450.00", "Rent")
        post("groceries", "Groceries", "Credit card", "86.40", "Corner shop")
        post("card-payment", "Credit card", "Checking", "86.40", "Card payment")
        click.echo(f"space {space.id} on {settings.database_url}")
        for name, account_id in accounts.items():
            record = ledger.account(space.id, account_id)
            amount = format_amount(record.balances.posted, 2)
            click.echo(f"  {name:<12} {record.type:<9} {amount:>10} {record.currency}")
