"""Commands: what a caller asks the ledger to do, imperative, frozen.

Every command carries an idempotency key (1-255 printable ASCII) and an optional `CommandContext`
(who and where). Amounts are decimal strings here, exactly as the client wrote them: the writer
parses them with the currency's exponent, so a command's content is its fingerprint
(`command_fingerprint`), and the same key with other content is refused.
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime
from typing import ClassVar, Literal
from uuid import UUID

import msgspec

from ledger_core.types import AccountSubtype, AccountType, CommandContext, Direction


class Command(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every command. `scope` is "space" for commands on a space's stream and "global"
    for those whose keys are global (`/v1/spaces`, `/v1/assets`, tokens)."""

    scope: ClassVar[str] = "space"
    idempotency_key: str
    context: CommandContext | None = None


class OpenSpace(Command, frozen=True, kw_only=True):
    scope: ClassVar[str] = "global"
    name: str
    base_currency: str


class RegisterAsset(Command, frozen=True, kw_only=True):
    scope: ClassVar[str] = "global"
    code: str
    exponent: int
    name: str = ""


class IssueToken(Command, frozen=True, kw_only=True):
    """Record an API token by its SHA-256 hash (hex); the caller shows the token once."""

    scope: ClassVar[str] = "global"
    token_hash: str
    role: Literal["admin", "write", "read"]
    spaces: tuple[UUID, ...] = ()


class RevokeToken(Command, frozen=True, kw_only=True):
    scope: ClassVar[str] = "global"
    token_id: UUID


class OpenAccount(Command, frozen=True, kw_only=True):
    space_id: UUID
    name: str
    type: AccountType
    currency: str
    subtype: AccountSubtype = "other"
    code: str | None = None
    overdraft_limit: str | None = None
    metadata: dict[str, str] | None = None


class UpdateAccount(Command, frozen=True, kw_only=True):
    """Change what is given; `overdraft_limit=None` removes the limit, UNSET leaves it."""

    space_id: UUID
    account_id: UUID
    name: str | msgspec.UnsetType = msgspec.UNSET
    overdraft_limit: str | msgspec.UnsetType | None = msgspec.UNSET
    metadata: dict[str, str] | msgspec.UnsetType = msgspec.UNSET


class FreezeAccount(Command, frozen=True, kw_only=True):
    space_id: UUID
    account_id: UUID
    reason: str | None = None


class UnfreezeAccount(Command, frozen=True, kw_only=True):
    space_id: UUID
    account_id: UUID
    reason: str | None = None


class CloseAccount(Command, frozen=True, kw_only=True):
    space_id: UUID
    account_id: UUID
    reason: str | None = None


class EntrySpec(msgspec.Struct, frozen=True, kw_only=True):
    """One requested leg: a positive decimal amount debited or credited to an account. A
    `currency`, if given, must be the account's."""

    account_id: UUID
    direction: Direction
    amount: str
    currency: str | None = None


class PostingSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The content of a posting request. `effective_date` defaults to today (UTC)."""

    entries: tuple[EntrySpec, ...]
    description: str = ""
    effective_date: date | None = None
    merchant: str | None = None
    category_id: UUID | None = None
    metadata: dict[str, str] | None = None
    pending: bool = False
    expires_at: datetime | None = None


class RecordPosting(Command, frozen=True, kw_only=True):
    space_id: UUID
    posting: PostingSpec


class RecordBatch(Command, frozen=True, kw_only=True):
    """Up to `MAX_POSTINGS_PER_BATCH` postings, all recorded or none."""

    space_id: UUID
    postings: tuple[PostingSpec, ...]


class PostPending(Command, frozen=True, kw_only=True):
    """Post a hold, fully or (for a two-entry hold) partly: the rest is released."""

    space_id: UUID
    posting_id: UUID
    amount: str | None = None


class VoidPending(Command, frozen=True, kw_only=True):
    space_id: UUID
    posting_id: UUID
    reason: str | None = None


class ReversePosting(Command, frozen=True, kw_only=True):
    """Record a new posting with the mirrored entries of a posted one (at most once)."""

    space_id: UUID
    posting_id: UUID
    description: str | None = None
    effective_date: date | None = None


class RecordRefusal(Command, frozen=True, kw_only=True):
    """Store a refusal decided before the command could be built (for example an API request
    with an unknown field), so a retry with the same key answers it again. `fingerprint` is the
    caller's digest of what was sent; `space_id` None means a global key."""

    space_id: UUID | None
    fingerprint: bytes
    code: str
    detail: str


SPACE_COMMANDS: tuple[type[Command], ...] = (
    OpenAccount,
    UpdateAccount,
    FreezeAccount,
    UnfreezeAccount,
    CloseAccount,
    RecordPosting,
    RecordBatch,
    PostPending,
    VoidPending,
    ReversePosting,
)

_fingerprint_encoder = msgspec.msgpack.Encoder(order="deterministic")


def command_fingerprint(command: Command) -> bytes:
    """A digest of what a command asks, without its key and context: the same key with a
    different fingerprint is `idempotency-key-reused`."""
    if isinstance(command, RecordRefusal):
        return command.fingerprint
    # UNSET fields (UpdateAccount: "leave as is") are left out: msgpack cannot encode UNSET, and
    # an absent field still differs from an explicit None.
    content = {
        name: value
        for name, value in msgspec.structs.asdict(command).items()
        if value is not msgspec.UNSET
    }
    content.pop("idempotency_key", None)
    content.pop("context", None)
    payload = _fingerprint_encoder.encode([type(command).__name__, content])
    return hashlib.blake2b(payload, digest_size=16).digest()
