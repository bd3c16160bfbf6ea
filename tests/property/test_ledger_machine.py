"""A hypothesis state machine over the whole ledger, on SQLite and on PostgreSQL.

Random sequences of commands (open accounts of every type in USD and JPY with or without an
overdraft limit; post; hold; capture fully or partly; void; let holds expire by moving an injected
clock; reverse; record all-or-nothing batches; change limits; freeze, unfreeze and close; retry a
command with the same key and the same body or another body) run against a real Ledger while a
small model of the expected books, written independently of `ledger_core.rules`, predicts every
answer. After every step it checks:

- money is conserved per currency (debits equal credits across all posted balances);
- each account's posted balance is its credits minus its debits in its normal direction;
- no account with a limit is below minus that limit (invariant 3);
- each account's pending totals are the sum of the open holds' entries;
- a refused command changed nothing (a declined posting only adds its event);
- the space reloaded from the store equals the live state.

Each example works in a fresh space of one shared Ledger, so a run costs one database.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ledger_core import Ledger, errors
from ledger_core import commands as cmd
from ledger_core.crypto import generate_key
from ledger_core.money import format_amount
from ledger_core.records import AccountRecord, CommandResult, PostingRecord
from ledger_core.settings import LedgerSettings
from ledger_core.state import SpaceState, state_fingerprint

EXPONENTS = {"USD": 2, "JPY": 0}
NORMAL = {
    "asset": "debit",
    "expense": "debit",
    "liability": "credit",
    "equity": "credit",
    "income": "credit",
}
MACHINE_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

Entry = tuple[UUID, str, int]  # (account id, direction, amount in minor units)


class ManualClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ModelAccount:
    id: UUID
    type: str
    currency: str
    limit: int | None
    status: str = "active"
    debits: int = 0
    credits: int = 0
    pending_debits: int = 0
    pending_credits: int = 0
    open_holds: int = 0

    @property
    def normal(self) -> str:
        return NORMAL[self.type]

    @property
    def posted(self) -> int:
        return self.debits - self.credits if self.normal == "debit" else self.credits - self.debits

    @property
    def available(self) -> int:
        return self.posted - (
            self.pending_credits if self.normal == "debit" else self.pending_debits
        )


@dataclass
class ModelPosting:
    id: UUID
    entries: list[Entry]
    status: str  # posted, pending, voided, expired, declined
    expires_at: datetime | None = None
    reversed: bool = False


@dataclass
class Expected:
    """What a command answered the first time: replays must answer the same."""

    command: cmd.Command
    code: str | None
    outcome: Any = None
    position: int | None = None
    posting_id: UUID | None = None


@dataclass
class Model:
    accounts: dict[UUID, ModelAccount] = field(default_factory=dict)
    postings: dict[UUID, ModelPosting] = field(default_factory=dict)
    keys: dict[str, Expected] = field(default_factory=dict)

    def decline_code(self, entries: list[Entry], pending: bool) -> str | None:
        """Why a posting of these entries would be declined (None: recorded)."""
        for account_id, _, _ in entries:
            status = self.accounts[account_id].status
            if status != "active":
                return f"account-{status}"
        changes: dict[UUID, int] = {}
        for account_id, direction, amount in entries:
            account = self.accounts[account_id]
            if pending:
                against = direction != account.normal
                change = -amount if against else 0
            else:
                change = amount if direction == account.normal else -amount
            changes[account_id] = changes.get(account_id, 0) + change
        for account_id, change in changes.items():
            account = self.accounts[account_id]
            if (
                account.limit is not None
                and change < 0
                and account.available + change < -account.limit
            ):
                return "insufficient-funds"
        return None

    def post(self, entries: list[Entry], sign: int = 1) -> None:
        for account_id, direction, amount in entries:
            account = self.accounts[account_id]
            if direction == "debit":
                account.debits += sign * amount
            else:
                account.credits += sign * amount

    def hold(self, entries: list[Entry], sign: int) -> None:
        for account_id, direction, amount in entries:
            account = self.accounts[account_id]
            if direction == "debit":
                account.pending_debits += sign * amount
            else:
                account.pending_credits += sign * amount
            account.open_holds += sign

    def of_status(self, status: str) -> list[ModelPosting]:
        return [p for p in self.postings.values() if p.status == status]


def mirrored(entries: list[Entry]) -> list[Entry]:
    return [(a, "credit" if d == "debit" else "debit", m) for a, d, m in entries]


def books_of(state: SpaceState) -> dict[str, Any]:
    """What the invariants read from the live state, taken on the writer thread."""
    held: dict[UUID, list[int]] = {}
    for event, _ in state.holds.values():
        for entry in event.entries:
            totals = held.setdefault(entry.account_id, [0, 0])
            totals[0 if entry.direction == "debit" else 1] += entry.amount_minor
    return {
        "accounts": {
            a.id: (
                a.posted,
                a.pending_debits,
                a.pending_credits,
                a.available,
                a.status,
                a.overdraft_limit,
            )
            for a in state.accounts.values()
        },
        "normal": {a.id: (a.normal, a.currency) for a in state.accounts.values()},
        "held": held,
        "holds": set(state.holds),
        "fingerprint": state_fingerprint(state),
    }


class LedgerMachine(RuleBasedStateMachine):
    ledger: ClassVar[Ledger]
    clock: ClassVar[ManualClock]
    #: Further Ledgers on the same database (as other processes): commands go to each in turn.
    others: ClassVar[tuple[Ledger, ...]] = ()
    _keys = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.model = Model()
        opened = self.ledger.execute(
            cmd.OpenSpace(idempotency_key=f"space-{uuid4()}", name="Machine", base_currency="USD")
        )
        self.space_id: UUID = opened.outcome.id  # type: ignore[union-attr]

    # Sending commands --------------------------------------------------------------------------

    def key(self) -> str:
        return f"k{next(self._keys)}"

    def writer(self) -> Ledger:
        """The Ledger that takes the next command (always the same one, unless `others`)."""
        ledgers = (self.ledger, *self.others)
        self.turn = getattr(self, "turn", -1) + 1
        return ledgers[self.turn % len(ledgers)]

    def stored_state(self) -> SpaceState:
        state = self.ledger.load_space(self.space_id)
        assert state is not None
        return state

    def fingerprint(self) -> Any:
        """The space's state: the live one, or with several Ledgers (each with its own cache)
        the one in the store."""
        if self.others:
            return state_fingerprint(self.stored_state())
        return self.ledger.inspect(self.space_id, state_fingerprint)

    def send(
        self, command: cmd.Command, expected_code: str | None
    ) -> CommandResult | errors.LedgerError:
        """Send a new command, check its code against the model's, and remember the answer."""
        before = self.fingerprint()
        try:
            result: CommandResult | errors.LedgerError = self.writer().execute(command)
        except errors.LedgerError as error:
            result = error
        code = result.code if isinstance(result, errors.LedgerError) else None
        assert code == expected_code, (type(command).__name__, code, expected_code, result)
        if isinstance(result, errors.LedgerError):
            assert not result.replayed
            after = self.fingerprint()
            if result.posting_id is not None:  # declined: only the event was added
                assert after[0] == before[0] + 1 and after[1:] == before[1:]
            else:  # refused: nothing changed
                assert after == before
            self.model.keys[command.idempotency_key] = Expected(
                command, code, None, result.position, result.posting_id
            )
        else:
            assert not result.replayed
            self.model.keys[command.idempotency_key] = Expected(
                command, None, result.outcome, result.position
            )
        return result

    def accounts_in(self, currency: str) -> list[UUID]:
        return [a.id for a in self.model.accounts.values() if a.currency == currency]

    def pair(self, data: st.DataObject) -> tuple[UUID, UUID]:
        currency = data.draw(st.sampled_from([c for c in EXPONENTS if self.accounts_in(c)]))
        candidates = self.accounts_in(currency)
        return data.draw(st.sampled_from(candidates)), data.draw(st.sampled_from(candidates))

    def entry_specs(self, entries: list[Entry]) -> tuple[cmd.EntrySpec, ...]:
        return tuple(
            cmd.EntrySpec(
                account_id=a,
                direction=d,  # type: ignore[arg-type]
                amount=format_amount(m, EXPONENTS[self.model.accounts[a].currency]),
            )
            for a, d, m in entries
        )

    # Rules -------------------------------------------------------------------------------------

    @initialize(limits=st.lists(st.sampled_from([0, 500, 5000]), min_size=4, max_size=4))
    def open_books(self, limits: list[int]) -> None:
        """A small book in each currency: two limited asset accounts, a card, equity, income."""
        for currency, (first, second) in zip(EXPONENTS, (limits[:2], limits[2:]), strict=True):
            self.open_account("asset", currency, first)
            self.open_account("asset", currency, second)
            self.open_account("liability", currency, None)
            self.open_account("equity", currency, None)
            self.open_account("income", currency, None)

    @rule(
        type=st.sampled_from(sorted(NORMAL)),
        currency=st.sampled_from(sorted(EXPONENTS)),
        limit=st.one_of(st.none(), st.sampled_from([0, 500, 5000])),
    )
    def open_account(self, type: str, currency: str, limit: int | None) -> None:
        command = cmd.OpenAccount(
            idempotency_key=self.key(),
            space_id=self.space_id,
            name=f"{type} {currency}",
            type=type,  # type: ignore[arg-type]
            currency=currency,
            overdraft_limit=None if limit is None else format_amount(limit, EXPONENTS[currency]),
        )
        result = self.send(command, None)
        assert isinstance(result, CommandResult) and isinstance(result.outcome, AccountRecord)
        account = result.outcome
        assert (account.normal_balance, account.overdraft_limit_minor) == (NORMAL[type], limit)
        self.model.accounts[account.id] = ModelAccount(account.id, type, currency, limit)

    @rule(data=st.data(), amount=st.integers(min_value=1, max_value=4000))
    def post(self, data: st.DataObject, amount: int) -> None:
        self.record(data, amount, pending=False, expires_in_minutes=None)

    @rule(
        data=st.data(),
        amount=st.integers(min_value=1, max_value=4000),
        expires_in_minutes=st.one_of(st.none(), st.integers(min_value=1, max_value=120)),
    )
    def hold(self, data: st.DataObject, amount: int, expires_in_minutes: int | None) -> None:
        self.record(data, amount, pending=True, expires_in_minutes=expires_in_minutes)

    def record(
        self, data: st.DataObject, amount: int, pending: bool, expires_in_minutes: int | None
    ) -> None:
        debit, credit = self.pair(data)
        entries: list[Entry] = [(debit, "debit", amount), (credit, "credit", amount)]
        expires_at = None
        if pending and expires_in_minutes is not None:
            expires_at = self.clock.now + timedelta(minutes=expires_in_minutes)
        spec = cmd.PostingSpec(
            entries=self.entry_specs(entries), pending=pending, expires_at=expires_at
        )
        command = cmd.RecordPosting(
            idempotency_key=self.key(), space_id=self.space_id, posting=spec
        )
        code = self.model.decline_code(entries, pending)
        result = self.send(command, code)
        if isinstance(result, errors.LedgerError):
            assert result.posting_id is not None
            self.model.postings[result.posting_id] = ModelPosting(
                result.posting_id, entries, "declined"
            )
            return
        posting = result.outcome
        assert isinstance(posting, PostingRecord)
        assert posting.status == ("pending" if pending else "posted")
        assert [(e.account_id, e.direction, e.amount_minor) for e in posting.entries] == entries
        if pending:
            self.model.hold(entries, +1)
        else:
            self.model.post(entries)
        self.model.postings[posting.id] = ModelPosting(
            posting.id, entries, posting.status, expires_at=expires_at
        )

    @rule(
        data=st.data(),
        amounts=st.lists(st.integers(min_value=1, max_value=3000), min_size=1, max_size=4),
    )
    def batch(self, data: st.DataObject, amounts: list[int]) -> None:
        """All or nothing: the model applies the items one by one to a copy of the books."""
        items = []
        for amount in amounts:
            debit, credit = self.pair(data)
            items.append([(debit, "debit", amount), (credit, "credit", amount)])
        trial = Model(accounts=copy.deepcopy(self.model.accounts))
        failed: tuple[int, str] | None = None
        for index, entries in enumerate(items):
            code = trial.decline_code(entries, pending=False)
            if code is not None:
                failed = (index, code)
                break
            trial.post(entries)
        specs = tuple(cmd.PostingSpec(entries=self.entry_specs(entries)) for entries in items)
        command = cmd.RecordBatch(
            idempotency_key=self.key(), space_id=self.space_id, postings=specs
        )
        result = self.send(command, None if failed is None else "batch-item-failed")
        if isinstance(result, errors.LedgerError):
            assert failed is not None
            assert result.extra == {"index": failed[0], "item_code": failed[1]}
            return
        postings = result.outcome.postings  # type: ignore[union-attr]
        assert len(postings) == len(items)
        for posting, entries in zip(postings, items, strict=True):
            self.model.post(entries)
            self.model.postings[posting.id] = ModelPosting(posting.id, entries, "posted")

    @precondition(lambda self: bool(self.model.of_status("pending")))
    @rule(data=st.data(), fraction=st.one_of(st.none(), st.integers(min_value=1, max_value=120)))
    def capture(self, data: st.DataObject, fraction: int | None) -> None:
        """Post a hold fully (None) or `fraction` percent of it (over 100: more than held)."""
        hold = data.draw(st.sampled_from(self.model.of_status("pending")))
        held = hold.entries[0][2]
        amount = None if fraction is None else max(1, held * fraction // 100)
        currency = self.model.accounts[hold.entries[0][0]].currency
        command = cmd.PostPending(
            idempotency_key=self.key(),
            space_id=self.space_id,
            posting_id=hold.id,
            amount=None if amount is None else format_amount(amount, EXPONENTS[currency]),
        )
        if amount is not None and amount > held:
            self.send(command, "exceeds-pending-amount")
            return
        result = self.send(command, None)
        captured = [(a, d, amount or m) for a, d, m in hold.entries]
        assert isinstance(result, CommandResult) and isinstance(result.outcome, PostingRecord)
        assert [
            (e.account_id, e.direction, e.amount_minor) for e in result.outcome.entries
        ] == captured
        self.model.hold(hold.entries, -1)
        self.model.post(captured)
        hold.entries, hold.status = captured, "posted"

    @precondition(lambda self: bool(self.model.postings))
    @rule(data=st.data())
    def void(self, data: st.DataObject) -> None:
        posting = data.draw(st.sampled_from(list(self.model.postings.values())))
        command = cmd.VoidPending(
            idempotency_key=self.key(), space_id=self.space_id, posting_id=posting.id
        )
        if posting.status != "pending":
            self.send(command, "posting-not-pending")
            return
        self.send(command, None)
        self.model.hold(posting.entries, -1)
        posting.status = "voided"

    @precondition(lambda self: bool(self.model.of_status("expired")))
    @rule(data=st.data())
    def capture_expired(self, data: st.DataObject) -> None:
        hold = data.draw(st.sampled_from(self.model.of_status("expired")))
        command = cmd.PostPending(
            idempotency_key=self.key(), space_id=self.space_id, posting_id=hold.id
        )
        self.send(command, "pending-expired")

    @rule(minutes=st.integers(min_value=1, max_value=90))
    def advance_clock(self, minutes: int) -> None:
        self.clock.now += timedelta(minutes=minutes)
        for ledger in (self.ledger, *self.others):
            some_account = next(iter(self.model.accounts))
            ledger.account(self.space_id, some_account)  # the space is loaded there
            ledger.expire_due_holds()
        for hold in self.model.of_status("pending"):
            if hold.expires_at is not None and hold.expires_at <= self.clock.now:
                self.model.hold(hold.entries, -1)
                hold.status = "expired"

    @precondition(lambda self: bool(self.model.postings))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        original = data.draw(st.sampled_from(list(self.model.postings.values())))
        command = cmd.ReversePosting(
            idempotency_key=self.key(), space_id=self.space_id, posting_id=original.id
        )
        if original.status != "posted":
            self.send(command, "posting-not-posted")
            return
        if original.reversed:
            self.send(command, "posting-already-reversed")
            return
        entries = mirrored(original.entries)
        code = self.model.decline_code(entries, pending=False)
        result = self.send(command, code)
        if isinstance(result, errors.LedgerError):
            assert result.posting_id is not None
            self.model.postings[result.posting_id] = ModelPosting(
                result.posting_id, entries, "declined"
            )
            return
        reversal = result.outcome
        assert isinstance(reversal, PostingRecord) and reversal.reverses == original.id
        self.model.post(entries)
        original.reversed = True
        self.model.postings[reversal.id] = ModelPosting(reversal.id, entries, "posted")

    @precondition(lambda self: bool(self.model.accounts))
    @rule(data=st.data(), action=st.sampled_from(["freeze", "unfreeze", "close"]))
    def set_status(self, data: st.DataObject, action: str) -> None:
        account = data.draw(st.sampled_from(list(self.model.accounts.values())))
        command_type: type[cmd.FreezeAccount | cmd.UnfreezeAccount | cmd.CloseAccount] = {
            "freeze": cmd.FreezeAccount,
            "unfreeze": cmd.UnfreezeAccount,
            "close": cmd.CloseAccount,
        }[action]
        command = command_type(
            idempotency_key=self.key(), space_id=self.space_id, account_id=account.id
        )
        if account.status == "closed":
            self.send(command, "account-closed")
            return
        if action == "close" and (account.posted != 0 or account.open_holds != 0):
            self.send(command, "account-not-empty")
            return
        result = self.send(command, None)
        account.status = {"freeze": "frozen", "unfreeze": "active", "close": "closed"}[action]
        assert isinstance(result, CommandResult) and isinstance(result.outcome, AccountRecord)
        assert result.outcome.status == account.status

    @precondition(lambda self: bool(self.model.accounts))
    @rule(data=st.data(), limit=st.one_of(st.none(), st.sampled_from([0, 300, 2000])))
    def set_limit(self, data: st.DataObject, limit: int | None) -> None:
        account = data.draw(st.sampled_from(list(self.model.accounts.values())))
        text = None if limit is None else format_amount(limit, EXPONENTS[account.currency])
        command = cmd.UpdateAccount(
            idempotency_key=self.key(),
            space_id=self.space_id,
            account_id=account.id,
            overdraft_limit=text,
        )
        if account.status == "closed":
            self.send(command, "account-closed")
        elif limit is not None and account.available < -limit:
            self.send(command, "limit-below-available")
        else:
            self.send(command, None)
            account.limit = limit

    @precondition(lambda self: bool(self.model.keys))
    @rule(data=st.data())
    def retry_same_body(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.keys)))
        expected = self.model.keys[key]
        before = self.fingerprint()
        try:
            result = self.writer().execute(expected.command)
        except errors.LedgerError as error:
            assert (error.code, error.replayed) == (expected.code, True), error
            assert (error.position, error.posting_id) == (expected.position, expected.posting_id)
        else:
            assert expected.code is None, result
            assert (result.outcome, result.position, result.replayed) == (
                expected.outcome,
                expected.position,
                True,
            )
        assert self.fingerprint() == before

    @precondition(lambda self: bool(self.model.keys) and bool(self.model.accounts))
    @rule(data=st.data())
    def retry_other_body(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.model.keys)))
        account = data.draw(st.sampled_from(sorted(self.model.accounts)))
        other = cmd.UpdateAccount(
            idempotency_key=key,
            space_id=self.space_id,
            account_id=account,
            name=f"renamed by {key}",
        )
        before = self.fingerprint()
        try:
            self.writer().execute(other)
        except errors.IdempotencyKeyReused:
            pass
        else:
            raise AssertionError(f"key {key} was accepted for another body")
        assert self.fingerprint() == before

    # Invariants --------------------------------------------------------------------------------

    @invariant()
    def books_agree_with_the_model(self) -> None:
        if self.others:
            books = books_of(self.stored_state())
        else:
            books = self.ledger.inspect(self.space_id, books_of)
        conserved: dict[str, int] = {}
        for account_id, (
            posted,
            pending_debits,
            pending_credits,
            available,
            status,
            limit,
        ) in books["accounts"].items():
            normal, currency = books["normal"][account_id]
            model = self.model.accounts[account_id]
            # Money is conserved per currency: debits equal credits.
            conserved[currency] = conserved.get(currency, 0) + (
                posted if normal == "debit" else -posted
            )
            # Each balance is its credits minus its debits in its normal direction.
            assert posted == model.posted
            assert (pending_debits, pending_credits, available) == (
                model.pending_debits,
                model.pending_credits,
                model.available,
            )
            assert (status, limit) == (model.status, model.limit)
            # Limits hold.
            if limit is not None:
                assert available >= -limit, (account_id, available, limit)
            # Holds add up.
            assert books["held"].get(account_id, [0, 0]) == [pending_debits, pending_credits]
        assert set(books["accounts"]) == set(self.model.accounts)
        assert all(total == 0 for total in conserved.values()), conserved
        assert books["holds"] == {p.id for p in self.model.of_status("pending")}

    @invariant()
    def reload_gives_the_same_state(self) -> None:
        if self.others:
            return  # each Ledger's cache may lag the store until its next command
        reloaded = self.ledger.load_space(self.space_id)
        assert reloaded is not None
        assert state_fingerprint(reloaded) == self.fingerprint()


def run_machine(
    url: str,
    ledgers: int = 1,
    max_examples: int | None = None,
    encryption_key: str | None = None,
) -> None:
    clock = ManualClock()
    ledger_settings = LedgerSettings(database_url=url, encryption_key=encryption_key)
    opened = [Ledger.open(url, settings=ledger_settings, clock=clock) for _ in range(ledgers)]
    try:
        machine: Callable[[], LedgerMachine] = type(
            "LedgerMachineOn" + url.partition(":")[0].title(),
            (LedgerMachine,),
            {"ledger": opened[0], "others": tuple(opened[1:]), "clock": clock},
        )
        chosen = MACHINE_SETTINGS
        if max_examples is not None:
            chosen = settings(MACHINE_SETTINGS, max_examples=max_examples)
        run_state_machine_as_test(machine, settings=chosen)
    finally:
        for ledger in opened:
            ledger.close()


@pytest.mark.slow
def test_ledger_state_machine(database_url: str) -> None:
    run_machine(database_url)


def test_model_predicts_a_known_history() -> None:
    """The model on its own, so a wrong model cannot silently agree with a wrong ledger."""
    model = Model()
    checking = ModelAccount(uuid4(), "asset", "USD", limit=0)
    card = ModelAccount(uuid4(), "liability", "USD", limit=None)
    model.accounts = {checking.id: checking, card.id: card}
    entries: list[Entry] = [(checking.id, "debit", 1000), (card.id, "credit", 1000)]
    assert model.decline_code(entries, pending=False) is None
    model.post(entries)
    assert (checking.posted, card.posted) == (1000, 1000)
    spend: list[Entry] = [(card.id, "debit", 700), (checking.id, "credit", 700)]
    model.hold(spend, +1)
    assert (checking.available, card.available) == (300, 300)
    assert model.decline_code(mirrored(entries), pending=False) == "insufficient-funds"
    assert (
        model.decline_code([(card.id, "debit", 300), (checking.id, "credit", 300)], False) is None
    )
    checking.status = "frozen"
    assert model.decline_code(spend, pending=True) == "account-frozen"


@pytest.mark.slow
def test_ledger_state_machine_with_tiny_memory(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same machine with snapshots every few events and tiny in-memory windows, so captures,
    voids, reversals and retries constantly need what only the store still holds; and with an
    encryption key, so what it reads back (snapshots, events, stored answers) was sealed."""
    import ledger_core.state
    import ledger_core.writer

    monkeypatch.setattr(ledger_core.writer, "SNAPSHOT_INTERVAL_EVENTS", 7)
    monkeypatch.setattr(ledger_core.state, "RECENT_POSTINGS_PER_SPACE", 2)
    monkeypatch.setattr(ledger_core.state, "RECENT_KEYS_PER_SPACE", 3)
    run_machine(sqlite_url, encryption_key=generate_key())


@pytest.mark.slow
def test_ledger_state_machine_with_two_writers(postgres_url: str) -> None:
    """Two Ledgers on one PostgreSQL database (as two processes), taking commands in turn: every
    answer must still be the one the current state gives, though each has its own cache."""
    run_machine(postgres_url, ledgers=2, max_examples=12)
