"""Rendering the core's records (and read views of the same shape) as wire types.

Every amount is rendered with exactly its currency's exponent: 10000 USD minor units -> "100.00",
JPY "100", BTC "0.00000001". `Exponents` is whatever answers `exponent(code)`: the ledger's
`CurrencyTable`.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any, Protocol

from api import wire
from ledger_core.money import format_amount
from ledger_core.records import (
    AccountRecord,
    AssetRecord,
    BatchRecord,
    PostingRecord,
    SpaceRecord,
)


class Exponents(Protocol):
    def exponent(self, code: str) -> int: ...


def amount(amount_minor: int, currency: str, exponents: Exponents) -> str:
    return format_amount(amount_minor, exponents.exponent(currency))


def space(record: SpaceRecord | Any) -> wire.Space:
    return wire.Space(
        id=record.id,
        name=record.name,
        base_currency=record.base_currency,
        recorded_at=record.recorded_at,
    )


def account(record: AccountRecord | Any, exponents: Exponents) -> wire.Account:
    currency: str = record.currency
    balances = record.balances
    limit = record.overdraft_limit_minor
    return wire.Account(
        id=record.id,
        space_id=record.space_id,
        name=record.name,
        type=record.type,
        subtype=record.subtype,
        currency=currency,
        code=record.code,
        overdraft_limit=None if limit is None else amount(limit, currency, exponents),
        metadata=dict(record.metadata),
        status=record.status,
        normal_balance=record.normal_balance,
        balances=wire.Balances(
            posted=amount(balances.posted, currency, exponents),
            pending_debits=amount(balances.pending_debits, currency, exponents),
            pending_credits=amount(balances.pending_credits, currency, exponents),
            available=amount(balances.available, currency, exponents),
        ),
    )


def posting(record: PostingRecord | Any, exponents: Exponents) -> wire.Posting:
    return wire.Posting(
        id=record.id,
        space_id=record.space_id,
        status=record.status,
        entries=[
            wire.Entry(
                account_id=entry.account_id,
                direction=entry.direction,
                amount=amount(entry.amount_minor, entry.currency, exponents),
                currency=entry.currency,
            )
            for entry in record.entries
        ],
        description=record.description,
        effective_date=record.effective_date,
        merchant=record.merchant,
        category_id=record.category_id,
        metadata=dict(record.metadata),
        pending=record.pending,
        # UTC (API.md), also in answers stored before times were recorded in UTC.
        expires_at=None if record.expires_at is None else record.expires_at.astimezone(UTC),
        recorded_at=record.recorded_at,
        reverses=record.reverses,
        reversed_by=record.reversed_by,
        declined_reason=record.declined_reason,
    )


def batch(record: BatchRecord, exponents: Exponents) -> wire.Batch:
    return wire.Batch(postings=[posting(item, exponents) for item in record.postings])


def asset(record: AssetRecord) -> wire.Asset:
    return wire.Asset(code=record.code, exponent=record.exponent, name=record.name)
