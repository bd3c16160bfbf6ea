"""The ledger's rules: decide, from a command and a space's state, which events to record, or
refuse with a named error. Pure: nothing here mutates state or touches the store.

Postings are checked in this order, so a request's answer never depends on luck: shape (entry
count, directions, amounts, text), accounts (exist, same space, currency), balance per currency,
then account state (frozen, closed: a declined posting), then overdraft limits against the
available balance, pending debits counting (invariant 3; a declined posting).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Final
from uuid import UUID, SafeUUID

import msgspec

from ledger_core import errors
from ledger_core import events as ev
from ledger_core.commands import EntrySpec, PostingSpec
from ledger_core.limits import (
    MAX_ACCOUNT_CODE_LENGTH,
    MAX_ACCOUNT_NAME_LENGTH,
    MAX_BALANCE_MINOR,
    MAX_DESCRIPTION_LENGTH,
    MAX_ENTRIES_PER_POSTING,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_MERCHANT_LENGTH,
    MAX_METADATA_BYTES,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_KEYS,
    MAX_METADATA_VALUE_LENGTH,
    MAX_REASON_LENGTH,
    MIN_ENTRIES_PER_POSTING,
)
from ledger_core.money import CurrencyTable, parse_amount
from ledger_core.state import AccountState, SpaceState
from ledger_core.types import ACCOUNT_SUBTYPES, ACCOUNT_TYPES

TOKEN_HASH_PATTERN: Final = re.compile(r"[0-9a-f]{64}")
_KEY_PATTERN: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_IDEMPOTENCY_KEY_LENGTH}}}")


# Identity ----------------------------------------------------------------------------------------


def check_idempotency_key(key: object) -> str:
    if key is None or key == "":
        raise errors.IdempotencyKeyMissing("a command needs an idempotency key")
    if not isinstance(key, str) or _KEY_PATTERN.fullmatch(key) is None:
        raise errors.MalformedRequest(
            f"an idempotency key is 1-{MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters"
        )
    return key


def command_id(scope_id: UUID, key: str) -> UUID:
    """The id of what a command creates, derived from its scope and idempotency key: the
    RFC 4122 name-based (SHA-1) UUID `uuid5(scope_id, "command:" + key)`."""
    return _uuid5(scope_id, "command:" + key)


def batch_item_id(scope_id: UUID, key: str, index: int) -> UUID:
    """The id of posting `index` of a batch. A key is printable ASCII, so the NUL keeps these
    apart from every `command_id`."""
    return _uuid5(scope_id, f"item\x00{index}\x00{key}")


_VERSION_5_MASK: Final = ~((0xC000 << 48) | (0xF000 << 64))
_VERSION_5_BITS: Final = (0x8000 << 48) | (5 << 76)
_new_uuid = object.__new__
_set = object.__setattr__
_UNKNOWN_SAFETY: Final = SafeUUID.unknown  # an enum member lookup per call showed in profiles


def _uuid5(namespace: UUID, name: str) -> UUID:
    """`uuid.uuid5`, bit for bit, without `UUID.__init__`'s argument checks (hot path: one per
    command). A unit test compares it with the standard library on many inputs."""
    digest = hashlib.sha1(namespace.bytes + name.encode(), usedforsecurity=False).digest()
    value = (int.from_bytes(digest[:16]) & _VERSION_5_MASK) | _VERSION_5_BITS
    result: UUID = _new_uuid(UUID)
    _set(result, "int", value)
    _set(result, "is_safe", _UNKNOWN_SAFETY)
    return result


# Text and metadata -------------------------------------------------------------------------------


#: Text of any field may hold any character but U+0000: PostgreSQL's text cannot store it, so a
#: name with one would be recorded and then stop the read models on PostgreSQL (never on SQLite).
NUL_REFUSAL: Final = "{field} may not contain the NUL character (U+0000)"


def check_text(value: object, field: str, maximum: int, *, required: bool = False) -> None:
    if not isinstance(value, str):
        raise errors.InvalidRequest(f"{field} is text")
    if required and not value.strip():
        raise errors.InvalidRequest(f"{field} is required")
    if len(value) > maximum:
        raise errors.InvalidRequest(f"{field} has at most {maximum} characters")
    if "\x00" in value:
        raise errors.InvalidRequest(NUL_REFUSAL.format(field=field))


def check_optional_text(value: object, field: str, maximum: int) -> None:
    if value is not None:
        check_text(value, field, maximum)


def check_metadata(metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise errors.InvalidRequest("metadata is an object of string keys and string values")
    if len(metadata) > MAX_METADATA_KEYS:
        raise errors.InvalidRequest(f"metadata has at most {MAX_METADATA_KEYS} keys")
    total = 0
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise errors.InvalidRequest("metadata keys and values are strings")
        if not key or len(key) > MAX_METADATA_KEY_LENGTH:
            raise errors.InvalidRequest(
                f"a metadata key has 1-{MAX_METADATA_KEY_LENGTH} characters"
            )
        if len(value) > MAX_METADATA_VALUE_LENGTH:
            raise errors.InvalidRequest(
                f"a metadata value has at most {MAX_METADATA_VALUE_LENGTH} characters"
            )
        if "\x00" in key or "\x00" in value:
            raise errors.InvalidRequest(NUL_REFUSAL.format(field="metadata"))
        total += len(key.encode()) + len(value.encode())
    if total > MAX_METADATA_BYTES:
        raise errors.InvalidRequest(f"metadata has at most {MAX_METADATA_BYTES} bytes in all")
    return dict(metadata)


def check_code(code: object) -> None:
    if code is None:
        return
    check_text(code, "code", MAX_ACCOUNT_CODE_LENGTH, required=True)


def parse_limit(text: object, exponent: int) -> int | None:
    """An overdraft limit: None (no limit) or a non-negative decimal ("0" forbids overdraft)."""
    if text is None:
        return None
    if isinstance(text, str) and _ZERO_PATTERN.fullmatch(text):
        places = len(text.partition(".")[2])
        if places > exponent:
            raise errors.InvalidAmount(
                f"{text!r} has {places} decimal places; this currency has {exponent}"
            )
        return 0
    return parse_amount(text, exponent)


_ZERO_PATTERN: Final = re.compile(r"0+(?:\.0+)?")


# Accounts ----------------------------------------------------------------------------------------


def decide_open_account(
    state: SpaceState,
    currencies: CurrencyTable,
    *,
    account_id: UUID,
    name: str,
    type: str,
    subtype: str,
    currency: str,
    code: str | None,
    overdraft_limit: str | None,
    metadata: dict[str, str] | None,
) -> dict[str, object]:
    check_text(name, "name", MAX_ACCOUNT_NAME_LENGTH, required=True)
    if type not in ACCOUNT_TYPES:
        raise errors.InvalidRequest(f"type is one of {', '.join(ACCOUNT_TYPES)}")
    if subtype not in ACCOUNT_SUBTYPES:
        raise errors.InvalidRequest(f"subtype is one of {', '.join(ACCOUNT_SUBTYPES)}")
    if not isinstance(currency, str):
        raise errors.InvalidRequest("currency is a currency code")
    exponent = currencies.exponent(currency)
    check_code(code)
    clean_metadata = check_metadata(metadata)
    limit = parse_limit(overdraft_limit, exponent)
    if code is not None and code in state.codes:
        raise errors.AccountCodeTaken(f"the code {code!r} is taken in this space")
    return {
        "account_id": account_id,
        "name": name,
        "type": type,
        "subtype": subtype,
        "currency": currency,
        "code": code,
        "overdraft_limit_minor": limit,
        "metadata": clean_metadata,
    }


def account_or_404(state: SpaceState, account_id: UUID) -> AccountState:
    account = state.accounts.get(account_id)
    if account is None:
        raise errors.AccountNotFound(f"no account {account_id} in this space")
    return account


def check_not_closed(account: AccountState) -> None:
    if account.status == "closed":
        raise errors.AccountClosed(f"account {account.id} is closed")


def decide_update_account(
    account: AccountState,
    currencies: CurrencyTable,
    name: str | msgspec.UnsetType,
    overdraft_limit: str | msgspec.UnsetType | None,
    metadata: dict[str, str] | msgspec.UnsetType,
) -> dict[str, object]:
    check_not_closed(account)
    changes: dict[str, object] = {}
    if name is not msgspec.UNSET:
        check_text(name, "name", MAX_ACCOUNT_NAME_LENGTH, required=True)
        changes["name"] = name
    if overdraft_limit is not msgspec.UNSET:
        limit = parse_limit(overdraft_limit, currencies.exponent(account.currency))
        if limit is not None and account.available < -limit:
            raise errors.LimitBelowAvailable(
                "the account's available balance is already below minus that limit"
            )
        changes["overdraft_limit_minor"] = limit
    if metadata is not msgspec.UNSET:
        changes["metadata"] = check_metadata(metadata)
    return changes


def check_reason(reason: object) -> None:
    check_optional_text(reason, "reason", MAX_REASON_LENGTH)


def decide_close(account: AccountState) -> None:
    check_not_closed(account)
    if account.posted != 0 or account.open_holds != 0:
        raise errors.AccountNotEmpty(
            "an account is closed only at a zero balance with no open pending postings"
        )


# Postings ----------------------------------------------------------------------------------------

#: Per-account changes of a posting or of earlier postings of the same batch:
#: account id -> [posted change in the normal direction, pending debits, pending credits].
Deltas = dict[UUID, list[int]]


class Decline(Exception):
    """A refusal for the state of an account: the posting is recorded as declined."""

    def __init__(self, error: errors.LedgerError, entries: tuple[ev.EntryRecorded, ...]) -> None:
        super().__init__(error.detail)
        self.error = error
        self.entries = entries


def check_posting_fields(spec: PostingSpec, now: datetime) -> None:
    if not isinstance(spec.entries, (tuple, list)):
        raise errors.InvalidRequest("entries is a list")
    if len(spec.entries) < MIN_ENTRIES_PER_POSTING:
        raise errors.TooFewEntries(f"a posting has at least {MIN_ENTRIES_PER_POSTING} entries")
    if len(spec.entries) > MAX_ENTRIES_PER_POSTING:
        raise errors.TooManyEntries(f"a posting has at most {MAX_ENTRIES_PER_POSTING} entries")
    check_text(spec.description, "description", MAX_DESCRIPTION_LENGTH)
    check_optional_text(spec.merchant, "merchant", MAX_MERCHANT_LENGTH)
    check_metadata(spec.metadata)
    if spec.effective_date is not None and not isinstance(spec.effective_date, date):
        raise errors.InvalidRequest("effective_date is a date")
    if spec.expires_at is not None:
        if not spec.pending:
            raise errors.InvalidRequest("expires_at is for pending postings only")
        if spec.expires_at.tzinfo is None:
            raise errors.InvalidRequest("expires_at needs a time zone (RFC 3339)")
        if spec.expires_at <= now:
            raise errors.InvalidRequest("expires_at is in the past")


def parse_entries(
    state: SpaceState, currencies: CurrencyTable, entries: Sequence[EntrySpec]
) -> tuple[tuple[ev.EntryRecorded, ...], list[AccountState]]:
    """Check each entry's account, direction, currency and amount, then the balance per
    currency. Returns the entries and their accounts, in order."""
    parsed: list[ev.EntryRecorded] = []
    accounts: list[AccountState] = []
    totals: dict[str, int] = {}
    known = state.accounts
    for entry in entries:
        direction = entry.direction
        if direction != "debit" and direction != "credit":
            raise errors.InvalidRequest("direction is debit or credit")
        account = known.get(entry.account_id)
        if account is None:
            raise errors.AccountNotFound(f"no account {entry.account_id} in this space")
        currency = account.currency
        if entry.currency is not None and entry.currency != currency:
            currencies.exponent(entry.currency)  # a code nobody knows is unknown-currency first
            raise errors.CurrencyMismatch(
                f"entry currency {entry.currency!r} differs from the account's {currency!r}"
            )
        amount = parse_amount(entry.amount, currencies.exponent(currency))
        totals[currency] = totals.get(currency, 0) + (amount if direction == "debit" else -amount)
        parsed.append(ev.EntryRecorded(entry.account_id, direction, amount, currency))
        accounts.append(account)
    unbalanced = sorted(currency for currency, total in totals.items() if total != 0)
    if unbalanced:
        raise errors.UnbalancedPosting(f"debits and credits differ in {', '.join(unbalanced)}")
    return tuple(parsed), accounts


def posting_deltas(
    entries: tuple[ev.EntryRecorded, ...], accounts: Sequence[AccountState], pending: bool
) -> Deltas:
    """Per-account changes: [posted in the normal direction, pending debits, pending credits]."""
    deltas: Deltas = {}
    for entry, account in zip(entries, accounts, strict=True):
        delta = deltas.get(account.id)
        if delta is None:
            delta = deltas[account.id] = [0, 0, 0]
        if pending:
            delta[1 if entry.direction == "debit" else 2] += entry.amount_minor
        elif entry.direction == account.normal:
            delta[0] += entry.amount_minor
        else:
            delta[0] -= entry.amount_minor
    return deltas


def check_accounts_open(accounts: Sequence[AccountState]) -> None:
    for account in accounts:
        if account.status == "frozen":
            raise errors.AccountFrozen(f"account {account.id} is frozen")
        if account.status == "closed":
            raise errors.AccountClosed(f"account {account.id} is closed")


_NO_CHANGE: Final = (0, 0, 0)


def check_limits(state: SpaceState, deltas: Deltas, earlier: Deltas) -> None:
    """Invariant 3: no account with a limit ends below minus its limit, counting the open holds
    and the earlier postings of the same batch. A posting that raises an account's available
    balance is never refused, even if it stays below the limit."""
    accounts = state.accounts
    for account_id, (posted, pending_debits, pending_credits) in deltas.items():
        account = accounts[account_id]
        before = earlier.get(account_id, _NO_CHANGE) if earlier else _NO_CHANGE
        all_posted = account.posted + before[0] + posted
        all_debits = account.pending_debits + before[1] + pending_debits
        all_credits = account.pending_credits + before[2] + pending_credits
        if (
            all_posted > MAX_BALANCE_MINOR
            or -all_posted > MAX_BALANCE_MINOR
            or all_debits > MAX_BALANCE_MINOR
            or all_credits > MAX_BALANCE_MINOR
        ):
            raise errors.InvalidAmount("the posting would take a balance past the maximum")
        limit = account.overdraft_limit
        if limit is None:
            continue
        held = pending_credits if account.normal == "debit" else pending_debits
        change = posted - held
        if change >= 0:
            continue
        held_before = before[2] if account.normal == "debit" else before[1]
        available = account.available + before[0] - held_before + change
        if available < -limit:
            raise errors.InsufficientFunds(
                f"account {account_id} would have {available} minor units available, "
                f"below its overdraft limit of {limit}"
            )


def merge_deltas(into: Deltas, deltas: Deltas) -> None:
    for account_id, delta in deltas.items():
        total = into.setdefault(account_id, [0, 0, 0])
        total[0] += delta[0]
        total[1] += delta[1]
        total[2] += delta[2]


def decide_posting(
    state: SpaceState,
    currencies: CurrencyTable,
    spec: PostingSpec,
    now: datetime,
    earlier: Deltas,
) -> tuple[tuple[ev.EntryRecorded, ...], Deltas]:
    """Entries and balance changes of a posting, or a refusal. A `Decline` carries the parsed
    entries so the declined posting can be recorded."""
    check_posting_fields(spec, now)
    entries, accounts = parse_entries(state, currencies, spec.entries)
    deltas = posting_deltas(entries, accounts, spec.pending)
    try:
        check_accounts_open(accounts)
        check_limits(state, deltas, earlier)
    except (errors.AccountFrozen, errors.AccountClosed, errors.InsufficientFunds) as error:
        raise Decline(error, entries) from None
    return entries, deltas


def mirrored(entries: tuple[ev.EntryRecorded, ...]) -> tuple[ev.EntryRecorded, ...]:
    """The entries of a reversal: the same amounts on the opposite sides."""
    return tuple(
        ev.EntryRecorded(
            e.account_id,
            "credit" if e.direction == "debit" else "debit",
            e.amount_minor,
            e.currency,
        )
        for e in entries
    )


def decide_reversal(
    state: SpaceState, entries: tuple[ev.EntryRecorded, ...]
) -> tuple[tuple[ev.EntryRecorded, ...], Deltas]:
    reversal = mirrored(entries)
    accounts = [state.accounts[entry.account_id] for entry in reversal]
    deltas = posting_deltas(reversal, accounts, False)
    try:
        check_accounts_open(accounts)
        check_limits(state, deltas, {})
    except (errors.AccountFrozen, errors.AccountClosed, errors.InsufficientFunds) as error:
        raise Decline(error, reversal) from None
    return reversal, deltas


def decide_capture(
    currencies: CurrencyTable, hold: ev.PostingRecorded, amount: str | None
) -> tuple[ev.EntryRecorded, ...]:
    """The entries to post for a hold: all of it, or `amount` of a two-entry hold."""
    if amount is None:
        return hold.entries
    if len(hold.entries) != 2:
        raise errors.InvalidRequest("a partial amount can be posted on two-entry holds only")
    held = hold.entries[0].amount_minor
    captured = parse_amount(amount, currencies.exponent(hold.entries[0].currency))
    if captured > held:
        raise errors.ExceedsPendingAmount(f"the hold is for {held} minor units; {captured} is more")
    return tuple(
        ev.EntryRecorded(e.account_id, e.direction, captured, e.currency) for e in hold.entries
    )
