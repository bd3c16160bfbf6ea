"""Idempotency keys and command fingerprints (invariant 4), without a database.

A key is 1-255 printable ASCII characters. The id of what a command creates is derived from its
scope and key, and the command's fingerprint ignores the key and the context (who sent it) but
changes with every content field, so the same key with any other content is detected.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import msgspec
import pytest

from ledger_core import commands as cmd
from ledger_core import errors, rules
from ledger_core.limits import MAX_IDEMPOTENCY_KEY_LENGTH
from ledger_core.types import CommandContext

SPACE = UUID("6f1b2c4e-0000-4000-8000-000000000001")
ACCOUNT = UUID("6f1b2c4e-0000-4000-8000-000000000002")
OTHER = UUID("6f1b2c4e-0000-4000-8000-000000000003")


# Keys --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["k", " ", "~", "a" * MAX_IDEMPOTENCY_KEY_LENGTH, "order-17/attempt:1 ?"]
)
def test_keys_accepted(key: str) -> None:
    assert rules.check_idempotency_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "a" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1),
        "clé",
        "key\n",
        "tab\there",
        "\x7f",
        "\x00",
        "ключ",
        b"bytes",
        17,
    ],
)
def test_malformed_keys(key: object) -> None:
    with pytest.raises(errors.MalformedRequest) as raised:
        rules.check_idempotency_key(key)
    assert not raised.value.stored


@pytest.mark.parametrize("key", ["", None])
def test_missing_key(key: object) -> None:
    with pytest.raises(errors.IdempotencyKeyMissing):
        rules.check_idempotency_key(key)


def test_command_ids_are_derived_from_scope_and_key() -> None:
    assert rules.command_id(SPACE, "k") == rules.command_id(SPACE, "k")
    assert rules.command_id(SPACE, "k") != rules.command_id(SPACE, "k2")
    assert rules.command_id(SPACE, "k") != rules.command_id(OTHER, "k")
    items = {rules.batch_item_id(SPACE, "k", index) for index in range(3)}
    assert len(items) == 3
    assert rules.command_id(SPACE, "k") not in items


# Fingerprints ------------------------------------------------------------------------------------

ENTRY = cmd.EntrySpec(account_id=ACCOUNT, direction="debit", amount="1.00")
SPEC = cmd.PostingSpec(
    entries=(ENTRY, cmd.EntrySpec(account_id=OTHER, direction="credit", amount="1.00"))
)

#: One instance of every command, and for each content field another value for it.
BASES: list[tuple[cmd.Command, dict[str, Any]]] = [
    (
        cmd.OpenSpace(idempotency_key="k", name="Home", base_currency="USD"),
        {"name": "Work", "base_currency": "EUR"},
    ),
    (
        cmd.RegisterAsset(idempotency_key="k", code="BTC", exponent=8),
        {"code": "ETH", "exponent": 18, "name": "Bitcoin"},
    ),
    (
        cmd.IssueToken(idempotency_key="k", token_hash="a" * 64, role="read"),
        {"token_hash": "b" * 64, "role": "write", "spaces": (SPACE,)},
    ),
    (cmd.RevokeToken(idempotency_key="k", token_id=ACCOUNT), {"token_id": OTHER}),
    (
        cmd.OpenAccount(
            idempotency_key="k", space_id=SPACE, name="Cash", type="asset", currency="USD"
        ),
        {
            "space_id": OTHER,
            "name": "Wallet",
            "type": "expense",
            "currency": "JPY",
            "subtype": "cash",
            "code": "1000",
            "overdraft_limit": "0",
            "metadata": {"a": "b"},
        },
    ),
    (
        cmd.UpdateAccount(idempotency_key="k", space_id=SPACE, account_id=ACCOUNT),
        {
            "space_id": OTHER,
            "account_id": OTHER,
            "name": "Renamed",
            "overdraft_limit": None,  # removing the limit is not leaving it unset
            "metadata": {},
        },
    ),
    *(
        (
            command_type(idempotency_key="k", space_id=SPACE, account_id=ACCOUNT),
            {"space_id": OTHER, "account_id": OTHER, "reason": "audit"},
        )
        for command_type in (cmd.FreezeAccount, cmd.UnfreezeAccount, cmd.CloseAccount)
    ),
    (
        cmd.RecordPosting(idempotency_key="k", space_id=SPACE, posting=SPEC),
        {"space_id": OTHER, "posting": msgspec.structs.replace(SPEC, description="x")},
    ),
    (
        cmd.RecordBatch(idempotency_key="k", space_id=SPACE, postings=(SPEC,)),
        {"space_id": OTHER, "postings": (SPEC, SPEC)},
    ),
    (
        cmd.PostPending(idempotency_key="k", space_id=SPACE, posting_id=ACCOUNT),
        {"space_id": OTHER, "posting_id": OTHER, "amount": "1.00"},
    ),
    (
        cmd.VoidPending(idempotency_key="k", space_id=SPACE, posting_id=ACCOUNT),
        {"space_id": OTHER, "posting_id": OTHER, "reason": "cancelled"},
    ),
    (
        cmd.ReversePosting(idempotency_key="k", space_id=SPACE, posting_id=ACCOUNT),
        {
            "space_id": OTHER,
            "posting_id": OTHER,
            "description": "refund",
            "effective_date": date(2026, 1, 1),
        },
    ),
]

#: Another value for every field of a posting request and of an entry.
SPEC_CHANGES: dict[str, Any] = {
    "entries": (ENTRY, ENTRY),
    "description": "Groceries",
    "effective_date": date(2026, 11, 20),
    "merchant": "Corner shop",
    "category_id": uuid4(),
    "metadata": {"receipt": "r-17"},
    "pending": True,
    "expires_at": datetime(2026, 12, 1, tzinfo=UTC),
}
ENTRY_CHANGES: dict[str, Any] = {
    "account_id": SPACE,
    "direction": "credit",
    "amount": "1.0",  # the same money written differently is other content
    "currency": "USD",
}


def content_fields(struct_type: type[msgspec.Struct]) -> set[str]:
    return {f.name for f in msgspec.structs.fields(struct_type)} - {"idempotency_key", "context"}


def test_every_command_type_is_covered() -> None:
    covered = {type(command) for command, _ in BASES}
    assert covered == set(cmd.SPACE_COMMANDS) | {
        cmd.OpenSpace,
        cmd.RegisterAsset,
        cmd.IssueToken,
        cmd.RevokeToken,
    }


@pytest.mark.parametrize(("command", "changes"), BASES, ids=lambda v: type(v).__name__)
def test_fingerprint_ignores_key_and_context(command: cmd.Command, changes: dict[str, Any]) -> None:
    other = msgspec.structs.replace(
        command,
        idempotency_key="another-key",
        context=CommandContext(token_id="t", request_id="r", client_address="10.0.0.1"),
    )
    assert cmd.command_fingerprint(other) == cmd.command_fingerprint(command)


@pytest.mark.parametrize(("command", "changes"), BASES, ids=lambda v: type(v).__name__)
def test_fingerprint_sees_every_content_field(
    command: cmd.Command, changes: dict[str, Any]
) -> None:
    assert set(changes) == content_fields(type(command)), "a content field has no test"
    base = cmd.command_fingerprint(command)
    for name, value in changes.items():
        changed = msgspec.structs.replace(command, **{name: value})
        assert cmd.command_fingerprint(changed) != base, name


def test_fingerprint_sees_every_posting_and_entry_field() -> None:
    assert set(SPEC_CHANGES) == content_fields(cmd.PostingSpec)
    assert set(ENTRY_CHANGES) == content_fields(cmd.EntrySpec)
    base = cmd.command_fingerprint(
        cmd.RecordPosting(idempotency_key="k", space_id=SPACE, posting=SPEC)
    )
    seen = {base}
    for name, value in SPEC_CHANGES.items():
        spec = msgspec.structs.replace(SPEC, **{name: value})
        seen.add(
            cmd.command_fingerprint(
                cmd.RecordPosting(idempotency_key="k", space_id=SPACE, posting=spec)
            )
        )
    for name, value in ENTRY_CHANGES.items():
        entry = msgspec.structs.replace(ENTRY, **{name: value})
        spec = msgspec.structs.replace(SPEC, entries=(entry, SPEC.entries[1]))
        seen.add(
            cmd.command_fingerprint(
                cmd.RecordPosting(idempotency_key="k", space_id=SPACE, posting=spec)
            )
        )
    assert len(seen) == 1 + len(SPEC_CHANGES) + len(ENTRY_CHANGES)


def test_same_fields_of_another_command_type_differ() -> None:
    fields = {"idempotency_key": "k", "space_id": SPACE, "account_id": ACCOUNT}
    prints = {
        cmd.command_fingerprint(command_type(**fields))
        for command_type in (cmd.FreezeAccount, cmd.UnfreezeAccount, cmd.CloseAccount)
    }
    assert len(prints) == 3


def test_unset_update_fields_differ_from_explicit_values() -> None:
    """Regression: UNSET fields once made the fingerprint (and every UpdateAccount) fail."""
    unset = cmd.UpdateAccount(idempotency_key="k", space_id=SPACE, account_id=ACCOUNT)
    removed = msgspec.structs.replace(unset, overdraft_limit=None)
    assert cmd.command_fingerprint(unset) != cmd.command_fingerprint(removed)


def test_refusal_fingerprint_is_the_callers() -> None:
    refusal = cmd.RecordRefusal(
        idempotency_key="k",
        space_id=SPACE,
        fingerprint=b"digest",
        code="invalid-request",
        detail="",
    )
    assert cmd.command_fingerprint(refusal) == b"digest"
