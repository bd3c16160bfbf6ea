"""A small helper for the worked examples: one space of a Ledger, accounts by name, postings
written as "debit this, credit that", and balances read back as the API renders them
(`format_amount` with the currency's exponent, in each account's normal direction)."""

from __future__ import annotations

from uuid import UUID, uuid4

from ledger_core import Ledger
from ledger_core import commands as cmd
from ledger_core.money import format_amount
from ledger_core.records import AccountRecord, CommandResult, PostingRecord


class Book:
    def __init__(self, ledger: Ledger, name: str, currency: str = "USD") -> None:
        self.ledger = ledger
        self.currency = currency
        opened = ledger.execute(
            cmd.OpenSpace(idempotency_key=f"space-{name}", name=name, base_currency=currency)
        )
        self.space_id: UUID = opened.outcome.id  # type: ignore[union-attr]
        self.accounts: dict[str, UUID] = {}

    def open(self, name: str, type: str, subtype: str = "other", limit: str | None = None) -> None:
        command = cmd.OpenAccount(
            idempotency_key=f"open-{name}",
            space_id=self.space_id,
            name=name,
            type=type,  # type: ignore[arg-type]
            subtype=subtype,  # type: ignore[arg-type]
            currency=self.currency,
            overdraft_limit=limit,
        )
        account = self.ledger.execute(command).outcome
        assert isinstance(account, AccountRecord)
        self.accounts[name] = account.id

    def posting(
        self, debit: str, credit: str, amount: str, key: str | None = None, **fields: object
    ) -> cmd.RecordPosting:
        entries = (
            cmd.EntrySpec(account_id=self.accounts[debit], direction="debit", amount=amount),
            cmd.EntrySpec(account_id=self.accounts[credit], direction="credit", amount=amount),
        )
        return cmd.RecordPosting(
            idempotency_key=key or uuid4().hex,
            space_id=self.space_id,
            posting=cmd.PostingSpec(entries=entries, **fields),  # type: ignore[arg-type]
        )

    def post(self, debit: str, credit: str, amount: str, **fields: object) -> PostingRecord:
        result = self.ledger.execute(self.posting(debit, credit, amount, **fields))
        assert isinstance(result.outcome, PostingRecord)
        return result.outcome

    def run(self, command: cmd.Command) -> CommandResult:
        return self.ledger.execute(command)

    def _show(self, minor: int) -> str:
        return format_amount(minor, self.ledger.currencies.exponent(self.currency))

    def balance(self, name: str) -> str:
        """The posted balance, as the API shows it ("100.00")."""
        record = self.ledger.account(self.space_id, self.accounts[name])
        return self._show(record.balances.posted)

    def available(self, name: str) -> str:
        record = self.ledger.account(self.space_id, self.accounts[name])
        return self._show(record.balances.available)

    def balances(self, *names: str) -> dict[str, str]:
        return {name: self.balance(name) for name in names}

    def trial_balance(self) -> tuple[str, str]:
        """Total debit balances and total credit balances: always equal."""
        debit = credit = 0
        for account_id in self.accounts.values():
            record = self.ledger.account(self.space_id, account_id)
            signed = record.balances.posted
            if record.normal_balance == "credit":
                signed = -signed
            if signed >= 0:
                debit += signed
            else:
                credit -= signed
        return self._show(debit), self._show(credit)
