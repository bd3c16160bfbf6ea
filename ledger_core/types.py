"""Small shared value types of the ledger vocabulary (DESIGN.md): directions, account types,
statuses, and who-and-where context of a command."""

from __future__ import annotations

from typing import Final, Literal
from uuid import UUID

import msgspec

Direction = Literal["debit", "credit"]
AccountType = Literal["asset", "liability", "equity", "income", "expense"]
AccountSubtype = Literal[
    "checking", "savings", "credit", "investment", "crypto", "loan", "cash", "other"
]
AccountStatus = Literal["active", "frozen", "closed"]
PostingStatus = Literal["posted", "pending", "voided", "expired", "declined"]

DIRECTIONS: Final = ("debit", "credit")
ACCOUNT_TYPES: Final = ("asset", "liability", "equity", "income", "expense")
ACCOUNT_SUBTYPES: Final = (
    "checking",
    "savings",
    "credit",
    "investment",
    "crypto",
    "loan",
    "cash",
    "other",
)

#: The side on which each account type grows (API.md: debit for asset and expense, credit for the
#: rest). Balances are reported in this direction.
NORMAL_BALANCE: Final[dict[str, Direction]] = {
    "asset": "debit",
    "expense": "debit",
    "liability": "credit",
    "equity": "credit",
    "income": "credit",
}


class Entry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One leg of a recorded posting: [account_id, direction, amount_minor, currency]."""

    account_id: UUID
    direction: Direction
    amount_minor: int
    currency: str


class CommandContext(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Who sent a command and from where; recorded in its events for the audit view. Not part of
    the command's fingerprint: a retry from another request id is still the same command."""

    token_id: str | None = None
    request_id: str | None = None
    client_address: str | None = None
    user_agent: str | None = None
