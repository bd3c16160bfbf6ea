"""Every way a ledger command can fail: one class per failure, each with a stable code.

The codes are the ones of API.md; the HTTP layer maps each code to its status in one table
(`api.problems`). The domain knows nothing of HTTP. A refusal raised by the writer carries
`replayed` (True when it is the stored answer to an earlier command with the same key) and, for a
declined posting, `posting_id` and `position`.
"""

from __future__ import annotations

from typing import Any, ClassVar
from uuid import UUID


class LedgerError(Exception):
    """Base of every refusal the ledger gives. `code` is stable and part of the contract."""

    code: ClassVar[str] = "ledger-error"
    #: Whether the ledger stores this refusal with the command's idempotency key, so a retry with
    #: the same key answers the same refusal forever. Not-found refusals are not stored: the
    #: client may fix the request and retry with the same key (API.md).
    stored: ClassVar[bool] = True

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.code)
        self.detail = detail or (self.__doc__ or self.code).strip().splitlines()[0]
        self.extra: dict[str, Any] = extra
        self.replayed = False
        self.position: int | None = None
        self.posting_id: UUID | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.detail!r}, code={self.code!r})"


# Request shape -----------------------------------------------------------------------------------


class MalformedRequest(LedgerError):
    """The request cannot be read (for example an idempotency key that is not 1-255 printable
    ASCII characters)."""

    code = "malformed-request"
    stored = False


class IdempotencyKeyMissing(LedgerError):
    """A command was sent without an idempotency key."""

    code = "idempotency-key-missing"
    stored = False


class InvalidRequest(LedgerError):
    """A field is missing, unknown, out of range or of the wrong kind."""

    code = "invalid-request"


class InvalidAmount(LedgerError):
    """An amount is not a positive decimal within the maximum, or has more decimal places than
    its currency allows (never rounded)."""

    code = "invalid-amount"


class UnknownCurrency(LedgerError):
    """The currency is neither an ISO 4217 code nor a registered asset."""

    code = "unknown-currency"


# Idempotency -------------------------------------------------------------------------------------


class IdempotencyKeyReused(LedgerError):
    """The idempotency key was already used for a different command or request body."""

    code = "idempotency-key-reused"


class IdempotencyKeyInFlight(LedgerError):
    """A command with this idempotency key is still being processed."""

    code = "idempotency-key-in-flight"
    stored = False


# Not found (not stored with the key) -------------------------------------------------------------


class SpaceNotFound(LedgerError):
    """No such space (or none the caller may see)."""

    code = "space-not-found"
    stored = False


class AccountNotFound(LedgerError):
    """No such account in this space."""

    code = "account-not-found"
    stored = False


class PostingNotFound(LedgerError):
    """No such posting in this space."""

    code = "posting-not-found"
    stored = False


class TokenNotFound(LedgerError):
    """No such API token."""

    code = "token-not-found"
    stored = False


# Accounts ----------------------------------------------------------------------------------------


class AccountCodeTaken(LedgerError):
    """Another account of the space already has this code."""

    code = "account-code-taken"


class AccountNotEmpty(LedgerError):
    """An account can be closed only at a zero balance with no open pending postings."""

    code = "account-not-empty"


class AccountFrozen(LedgerError):
    """The account is frozen and accepts no new postings."""

    code = "account-frozen"


class AccountClosed(LedgerError):
    """The account is closed and accepts no new postings or changes."""

    code = "account-closed"


class LimitBelowAvailable(LedgerError):
    """The new overdraft limit is tighter than the account's current available balance allows."""

    code = "limit-below-available"


class AssetExists(LedgerError):
    """An asset with this code exists already with another exponent (or is an ISO currency)."""

    code = "asset-exists"


# Postings ----------------------------------------------------------------------------------------


class TooFewEntries(LedgerError):
    """A posting needs at least two entries."""

    code = "too-few-entries"


class TooManyEntries(LedgerError):
    """A posting has more entries than the maximum."""

    code = "too-many-entries"


class UnbalancedPosting(LedgerError):
    """Debits and credits differ in at least one currency."""

    code = "unbalanced-posting"


class CurrencyMismatch(LedgerError):
    """An entry's currency differs from its account's currency."""

    code = "currency-mismatch"


class InsufficientFunds(LedgerError):
    """The posting would take an account's available balance below minus its overdraft limit."""

    code = "insufficient-funds"


class PostingNotPending(LedgerError):
    """Only a pending posting can be posted or voided."""

    code = "posting-not-pending"


class PostingNotPosted(LedgerError):
    """Only a posted posting can be reversed."""

    code = "posting-not-posted"


class PostingAlreadyReversed(LedgerError):
    """The posting was reversed already; a posting is reversed at most once."""

    code = "posting-already-reversed"


class ExceedsPendingAmount(LedgerError):
    """The amount to post is more than the pending posting holds. (A partial amount on a hold of
    more than two entries is `invalid-request`: API.md allows partial capture of two-entry holds
    only.)"""

    code = "exceeds-pending-amount"


class PendingExpired(LedgerError):
    """The pending posting expired and can no longer be posted."""

    code = "pending-expired"


class BatchTooLarge(LedgerError):
    """A batch has more postings than the maximum."""

    code = "batch-too-large"


class BatchItemFailed(LedgerError):
    """One posting of a batch was refused, so none was recorded. `index` and `item_code` say
    which and why."""

    code = "batch-item-failed"


# Availability ------------------------------------------------------------------------------------


class Unavailable(LedgerError):
    """The ledger cannot complete the command now (database unreachable, shutting down, or too
    much contention); nothing was recorded and the command may be retried with the same key."""

    code = "unavailable"
    stored = False


class PositionNotReached(LedgerError):
    """The projections did not reach the requested log position in time."""

    code = "position-not-reached"
    stored = False


#: Refusals that depend on the state of an account make a declined posting (API.md).
DECLINE_CODES: frozenset[str] = frozenset(
    {InsufficientFunds.code, AccountFrozen.code, AccountClosed.code}
)

ERROR_CLASSES: dict[str, type[LedgerError]] = {
    cls.code: cls
    for cls in (
        MalformedRequest,
        IdempotencyKeyMissing,
        InvalidRequest,
        InvalidAmount,
        UnknownCurrency,
        IdempotencyKeyReused,
        IdempotencyKeyInFlight,
        SpaceNotFound,
        AccountNotFound,
        PostingNotFound,
        TokenNotFound,
        AccountCodeTaken,
        AccountNotEmpty,
        AccountFrozen,
        AccountClosed,
        LimitBelowAvailable,
        AssetExists,
        TooFewEntries,
        TooManyEntries,
        UnbalancedPosting,
        CurrencyMismatch,
        InsufficientFunds,
        PostingNotPending,
        PostingNotPosted,
        PostingAlreadyReversed,
        ExceedsPendingAmount,
        PendingExpired,
        BatchTooLarge,
        BatchItemFailed,
        Unavailable,
        PositionNotReached,
    )
}


def error_from_code(code: str, detail: str, extra: dict[str, Any] | None = None) -> LedgerError:
    """Rebuild a stored refusal (the writer stores refusals by code, detail and extra fields)."""
    cls = ERROR_CLASSES.get(code, LedgerError)
    error = cls(detail, **(extra or {}))
    return error
