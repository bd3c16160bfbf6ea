"""The account rules on a space state built by applying events: opening (names, codes, types,
currencies, limits, metadata), updating (limit below available), closing (only at zero with no
open holds) and the text limits of each field, at and one past their edge."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from ledger_core import errors, rules
from ledger_core import events as ev
from ledger_core.limits import (
    MAX_ACCOUNT_CODE_LENGTH,
    MAX_ACCOUNT_NAME_LENGTH,
    MAX_METADATA_KEYS,
    MAX_REASON_LENGTH,
)
from ledger_core.money import CurrencyTable
from ledger_core.state import SpaceState

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
CURRENCIES = CurrencyTable({"BTC": 8})


def new_space() -> SpaceState:
    state = SpaceState(uuid4())
    state.apply(
        ev.SpaceOpened(space_id=state.space_id, name="Book", base_currency="USD", recorded_at=NOW)
    )
    return state


def open_fields(state: SpaceState, **overrides: Any) -> dict[str, object]:
    arguments: dict[str, Any] = {
        "account_id": uuid4(),
        "name": "Checking",
        "type": "asset",
        "subtype": "checking",
        "currency": "USD",
        "code": None,
        "overdraft_limit": None,
        "metadata": None,
    }
    arguments.update(overrides)
    return rules.decide_open_account(state, CURRENCIES, **arguments)


def open_account(state: SpaceState, **overrides: Any) -> UUID:
    fields = open_fields(state, **overrides)
    state.apply(ev.AccountOpened(**fields, recorded_at=NOW))  # type: ignore[arg-type]
    account_id = fields["account_id"]
    assert isinstance(account_id, UUID)
    return account_id


def post(state: SpaceState, debit: UUID, credit: UUID, amount_minor: int, pending: bool) -> None:
    state.apply(
        ev.PostingRecorded(
            posting_id=uuid4(),
            entries=(
                ev.EntryRecorded(debit, "debit", amount_minor, "USD"),
                ev.EntryRecorded(credit, "credit", amount_minor, "USD"),
            ),
            effective_date=NOW.date(),
            pending=pending,
            recorded_at=NOW,
        )
    )


# Opening -----------------------------------------------------------------------------------------


def test_open_account_fields() -> None:
    state = new_space()
    fields = open_fields(state, code="1000", overdraft_limit="250.00", metadata={"branch": "north"})
    assert fields["overdraft_limit_minor"] == 25_000
    assert fields["metadata"] == {"branch": "north"}
    assert open_fields(state, overdraft_limit="0")["overdraft_limit_minor"] == 0
    assert open_fields(state, overdraft_limit="0.00")["overdraft_limit_minor"] == 0
    assert open_fields(state, overdraft_limit=None)["overdraft_limit_minor"] is None
    assert open_fields(state, currency="BTC", overdraft_limit="0.5")["overdraft_limit_minor"] == (
        50_000_000
    )


@pytest.mark.parametrize(
    ("overrides", "error_type"),
    [
        ({"name": ""}, errors.InvalidRequest),
        ({"name": "   "}, errors.InvalidRequest),
        ({"name": "n" * (MAX_ACCOUNT_NAME_LENGTH + 1)}, errors.InvalidRequest),
        ({"type": "asset-ish"}, errors.InvalidRequest),
        ({"subtype": "piggy-bank"}, errors.InvalidRequest),
        ({"currency": "ZZZ"}, errors.UnknownCurrency),
        ({"currency": 840}, errors.InvalidRequest),
        ({"code": ""}, errors.InvalidRequest),
        ({"code": "c" * (MAX_ACCOUNT_CODE_LENGTH + 1)}, errors.InvalidRequest),
        ({"overdraft_limit": "-1.00"}, errors.InvalidAmount),
        ({"overdraft_limit": "0.000"}, errors.InvalidAmount),
        ({"overdraft_limit": "1.001"}, errors.InvalidAmount),
        ({"overdraft_limit": 100}, errors.InvalidAmount),
        ({"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_KEYS + 1)}}, errors.InvalidRequest),
        ({"name": "Check\x00ing"}, errors.InvalidRequest),  # U+0000: PostgreSQL can't store it
        ({"code": "10\x00"}, errors.InvalidRequest),
        ({"metadata": {"k": "v\x00"}}, errors.InvalidRequest),
        ({"metadata": {"k\x00": "v"}}, errors.InvalidRequest),
    ],
)
def test_open_account_refusals(overrides: dict[str, Any], error_type: type) -> None:
    with pytest.raises(error_type):
        open_fields(new_space(), **overrides)


def test_name_and_code_at_their_limit_are_accepted() -> None:
    fields = open_fields(
        new_space(), name="n" * MAX_ACCOUNT_NAME_LENGTH, code="c" * MAX_ACCOUNT_CODE_LENGTH
    )
    assert len(str(fields["name"])) == MAX_ACCOUNT_NAME_LENGTH


def test_account_code_is_unique_in_the_space() -> None:
    state = new_space()
    open_account(state, code="1000")
    with pytest.raises(errors.AccountCodeTaken):
        open_fields(state, code="1000")
    open_fields(state, code="1001")
    open_fields(new_space(), code="1000")  # another space: free


# Updating ----------------------------------------------------------------------------------------


def test_update_changes_only_what_is_given() -> None:
    state = new_space()
    account = state.accounts[open_account(state)]
    unset = msgspec.UNSET
    assert rules.decide_update_account(account, CURRENCIES, unset, unset, unset) == {}
    changes = rules.decide_update_account(account, CURRENCIES, "Main", "10.00", {"a": "b"})
    assert changes == {"name": "Main", "overdraft_limit_minor": 1000, "metadata": {"a": "b"}}
    removed = rules.decide_update_account(account, CURRENCIES, unset, None, unset)
    assert removed == {"overdraft_limit_minor": None}
    with pytest.raises(errors.InvalidRequest):
        rules.decide_update_account(account, CURRENCIES, "", unset, unset)


def test_limit_below_available_at_and_past_the_edge() -> None:
    state = new_space()
    checking = open_account(state, overdraft_limit="100.00")
    equity = open_account(state, type="equity", name="Equity")
    post(state, equity, checking, 5000, pending=False)  # available -50.00
    account = state.accounts[checking]
    assert account.available == -5000
    unset = msgspec.UNSET
    at_edge = rules.decide_update_account(account, CURRENCIES, unset, "50.00", unset)
    assert at_edge == {"overdraft_limit_minor": 5000}
    with pytest.raises(errors.LimitBelowAvailable):
        rules.decide_update_account(account, CURRENCIES, unset, "49.99", unset)
    with pytest.raises(errors.LimitBelowAvailable):
        rules.decide_update_account(account, CURRENCIES, unset, "0", unset)


def test_limit_check_counts_open_holds() -> None:
    state = new_space()
    checking = open_account(state, overdraft_limit="100.00")
    equity = open_account(state, type="equity", name="Equity")
    post(state, equity, checking, 3000, pending=True)  # a hold crediting checking 30.00
    account = state.accounts[checking]
    unset = msgspec.UNSET
    rules.decide_update_account(account, CURRENCIES, unset, "30.00", unset)
    with pytest.raises(errors.LimitBelowAvailable):
        rules.decide_update_account(account, CURRENCIES, unset, "29.99", unset)


def test_closed_account_takes_no_changes() -> None:
    state = new_space()
    checking = open_account(state)
    state.apply(ev.AccountClosed(account_id=checking, recorded_at=NOW))
    with pytest.raises(errors.AccountClosed):
        rules.decide_update_account(
            state.accounts[checking], CURRENCIES, "New name", msgspec.UNSET, msgspec.UNSET
        )


# Closing -----------------------------------------------------------------------------------------


def test_close_only_at_zero_with_no_open_holds() -> None:
    state = new_space()
    checking = open_account(state)
    equity = open_account(state, type="equity", name="Equity")
    rules.decide_close(state.accounts[checking])  # zero, no holds
    post(state, checking, equity, 1, pending=False)
    with pytest.raises(errors.AccountNotEmpty):
        rules.decide_close(state.accounts[checking])
    post(state, equity, checking, 1, pending=False)  # back to zero
    rules.decide_close(state.accounts[checking])
    post(state, checking, equity, 1, pending=True)  # a hold, posted balance still zero
    assert state.accounts[checking].posted == 0
    with pytest.raises(errors.AccountNotEmpty):
        rules.decide_close(state.accounts[checking])
    with pytest.raises(errors.AccountNotEmpty):  # the other side of the hold too
        rules.decide_close(state.accounts[equity])


def test_closed_account_cannot_be_closed_again() -> None:
    state = new_space()
    checking = open_account(state)
    state.apply(ev.AccountClosed(account_id=checking, recorded_at=NOW))
    with pytest.raises(errors.AccountClosed):
        rules.decide_close(state.accounts[checking])
    with pytest.raises(errors.AccountClosed):
        rules.check_not_closed(state.accounts[checking])


def test_reason_length_at_and_past_the_limit() -> None:
    rules.check_reason(None)
    rules.check_reason("r" * MAX_REASON_LENGTH)
    with pytest.raises(errors.InvalidRequest):
        rules.check_reason("r" * (MAX_REASON_LENGTH + 1))
    with pytest.raises(errors.InvalidRequest):
        rules.check_reason(42)


def test_account_lookup() -> None:
    state = new_space()
    checking = open_account(state)
    assert rules.account_or_404(state, checking).id == checking
    with pytest.raises(errors.AccountNotFound):
        rules.account_or_404(state, uuid4())
