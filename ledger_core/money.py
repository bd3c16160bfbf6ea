"""Exact money: integer minor units and the currency's exponent.

Beancount's rule: a money module that forbids floats. Amounts live in the domain as `int` minor
units (cents, yen, fils, satoshis); decimal strings exist only at the edges, parsed by
`parse_amount` and rendered by `format_amount`. More decimal places than the currency has is an
`invalid-amount` error, never a rounding.

Currencies are the ISO 4217 codes with their exponents (`ISO_4217_EXPONENTS`) plus assets a
ledger registers (`RegisterAsset`: a code of 2-12 uppercase letters and digits with an exponent
0-18, for example BTC with 8). `CurrencyTable` answers the exponent of either kind.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from ledger_core.errors import InvalidAmount, InvalidRequest, UnknownCurrency
from ledger_core.limits import MAX_AMOUNT_MINOR, MAX_CURRENCY_EXPONENT

#: ISO 4217 active codes and their minor-unit exponents. Codes whose minor unit is "N.A." in the
#: standard (precious metals, SDR, test codes) are left out: register them as assets with the
#: exponent you account them in.
ISO_4217_EXPONENTS: Final[Mapping[str, int]] = {
    **dict.fromkeys(
        [
            "AED",
            "AFN",
            "ALL",
            "AMD",
            "ANG",
            "AOA",
            "ARS",
            "AUD",
            "AWG",
            "AZN",
            "BAM",
            "BBD",
            "BDT",
            "BGN",
            "BMD",
            "BND",
            "BOB",
            "BOV",
            "BRL",
            "BSD",
            "BTN",
            "BWP",
            "BYN",
            "BZD",
            "CAD",
            "CDF",
            "CHE",
            "CHF",
            "CHW",
            "CNY",
            "COP",
            "COU",
            "CRC",
            "CUC",
            "CUP",
            "CVE",
            "CZK",
            "DKK",
            "DOP",
            "DZD",
            "EGP",
            "ERN",
            "ETB",
            "EUR",
            "FJD",
            "FKP",
            "GBP",
            "GEL",
            "GHS",
            "GIP",
            "GMD",
            "GTQ",
            "GYD",
            "HKD",
            "HNL",
            "HTG",
            "HUF",
            "IDR",
            "ILS",
            "INR",
            "IRR",
            "JMD",
            "KES",
            "KGS",
            "KHR",
            "KPW",
            "KYD",
            "KZT",
            "LAK",
            "LBP",
            "LKR",
            "LRD",
            "LSL",
            "MAD",
            "MDL",
            "MGA",
            "MKD",
            "MMK",
            "MNT",
            "MOP",
            "MRU",
            "MUR",
            "MVR",
            "MWK",
            "MXN",
            "MXV",
            "MYR",
            "MZN",
            "NAD",
            "NGN",
            "NIO",
            "NOK",
            "NPR",
            "NZD",
            "PAB",
            "PEN",
            "PGK",
            "PHP",
            "PKR",
            "PLN",
            "QAR",
            "RON",
            "RSD",
            "RUB",
            "SAR",
            "SBD",
            "SCR",
            "SDG",
            "SEK",
            "SGD",
            "SHP",
            "SLE",
            "SLL",
            "SOS",
            "SRD",
            "SSP",
            "STN",
            "SVC",
            "SYP",
            "SZL",
            "THB",
            "TJS",
            "TMT",
            "TOP",
            "TRY",
            "TTD",
            "TWD",
            "TZS",
            "UAH",
            "USD",
            "USN",
            "UYU",
            "UZS",
            "VED",
            "VES",
            "WST",
            "XCD",
            "XCG",
            "YER",
            "ZAR",
            "ZMW",
            "ZWG",
            "ZWL",
        ],
        2,
    ),
    **dict.fromkeys(
        [
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

ASSET_CODE_PATTERN: Final = re.compile(r"[A-Z0-9]{2,12}")
_AMOUNT_PATTERN: Final = re.compile(r"(?P<units>[0-9]+)(?:\.(?P<fraction>[0-9]+))?")
#: Longest amount text worth parsing: 18 integer digits, a point and 18 places, with slack for
#: leading zeros. Longer text is refused before any arithmetic.
MAX_AMOUNT_TEXT_LENGTH: Final = 64


def parse_amount(text: object, exponent: int) -> int:
    """Parse a positive decimal string into minor units of a currency with `exponent` places.

    >>> parse_amount("12.50", 2)
    1250
    >>> parse_amount("100", 0)
    100
    """
    if not isinstance(text, str):
        raise InvalidAmount('an amount is a decimal string such as "12.50", not a number')
    if len(text) > MAX_AMOUNT_TEXT_LENGTH:
        raise InvalidAmount(f"an amount has at most {MAX_AMOUNT_TEXT_LENGTH} characters")
    match = _AMOUNT_PATTERN.fullmatch(text)
    if match is None:
        raise InvalidAmount(
            f"{text!r} is not a plain positive decimal (digits, optionally a point and places)"
        )
    fraction = match.group("fraction") or ""
    if len(fraction) > exponent:
        raise InvalidAmount(
            f"{text!r} has {len(fraction)} decimal places; this currency has {exponent}"
        )
    minor: int = int(match.group("units")) * 10**exponent + int(
        fraction.ljust(exponent, "0") or "0"
    )
    if minor <= 0:
        raise InvalidAmount(f"{text!r} is not positive")
    if minor > MAX_AMOUNT_MINOR:
        raise InvalidAmount(f"{text!r} is more than the maximum amount")
    return minor


def check_amount_minor(amount_minor: int) -> int:
    """Check an amount already in minor units (positive, within the maximum)."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise InvalidAmount("an amount in minor units is an integer")
    if amount_minor <= 0:
        raise InvalidAmount("an amount is positive")
    if amount_minor > MAX_AMOUNT_MINOR:
        raise InvalidAmount("the amount is more than the maximum amount")
    return amount_minor


def format_amount(amount_minor: int, exponent: int) -> str:
    """Render minor units with exactly the currency's places: 10000 at 2 -> "100.00"."""
    sign = "-" if amount_minor < 0 else ""
    magnitude = -amount_minor if amount_minor < 0 else amount_minor
    if exponent == 0:
        return f"{sign}{magnitude}"
    units, fraction = divmod(magnitude, 10**exponent)
    return f"{sign}{units}.{fraction:0{exponent}d}"


def check_asset_code(code: str) -> str:
    """An asset code is 2-12 uppercase letters and digits."""
    if not isinstance(code, str) or ASSET_CODE_PATTERN.fullmatch(code) is None:
        raise InvalidRequest("an asset code is 2-12 uppercase letters and digits")
    return code


def check_exponent(exponent: int) -> int:
    if isinstance(exponent, bool) or not isinstance(exponent, int):
        raise InvalidRequest("an exponent is an integer")
    if not 0 <= exponent <= MAX_CURRENCY_EXPONENT:
        raise InvalidRequest(f"an exponent is between 0 and {MAX_CURRENCY_EXPONENT}")
    return exponent


class CurrencyTable:
    """The currencies a ledger knows: ISO 4217 plus registered assets (code -> exponent)."""

    def __init__(self, assets: dict[str, int] | None = None) -> None:
        # `assets` is read live, not copied: the writer passes its global state's assets, so an
        # asset is known as soon as its AssetRegistered event is applied (and forgotten on a
        # rollback).
        self._assets: dict[str, int] = assets if assets is not None else {}

    def exponent(self, code: str) -> int:
        """The exponent of `code`; `unknown-currency` if neither ISO nor registered."""
        exponent = ISO_4217_EXPONENTS.get(code)
        if exponent is None:
            exponent = self._assets.get(code)
        if exponent is None:
            raise UnknownCurrency(f"{code!r} is not an ISO 4217 code or a registered asset")
        return exponent

    def is_known(self, code: str) -> bool:
        return code in ISO_4217_EXPONENTS or code in self._assets

    def registered(self) -> dict[str, int]:
        return dict(self._assets)

    def register(self, code: str, exponent: int) -> None:
        self._assets[code] = exponent
