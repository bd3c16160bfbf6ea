"""Money at the edges: decimal strings in, integer minor units inside, never a rounding.

Covers `parse_amount`/`format_amount` for currencies of every exponent the ledger meets (USD 2,
JPY 0, KWD 3, BTC 8 as a registered asset), every malformed or out-of-range amount, the named
limits at and one past their edge, and the ISO 4217 table itself.
"""

from __future__ import annotations

import re

import pytest

from ledger_core import errors
from ledger_core.limits import MAX_AMOUNT_MINOR, MAX_CURRENCY_EXPONENT
from ledger_core.money import (
    ISO_4217_EXPONENTS,
    MAX_AMOUNT_TEXT_LENGTH,
    CurrencyTable,
    check_amount_minor,
    check_asset_code,
    check_exponent,
    format_amount,
    parse_amount,
)

USD, JPY, KWD, BTC = 2, 0, 3, 8


@pytest.mark.parametrize(
    ("text", "exponent", "minor"),
    [
        ("12.50", USD, 1250),
        ("12.5", USD, 1250),
        ("0.01", USD, 1),
        ("12", USD, 1200),
        ("100", JPY, 100),
        ("1.234", KWD, 1234),
        ("0.001", KWD, 1),
        ("0.00000001", BTC, 1),
        ("21000000", BTC, 2_100_000_000_000_000),
        ("007.10", USD, 710),
    ],
)
def test_parse_amount_gives_exact_minor_units(text: str, exponent: int, minor: int) -> None:
    assert parse_amount(text, exponent) == minor


@pytest.mark.parametrize(
    ("minor", "exponent", "text"),
    [
        (1250, USD, "12.50"),
        (10000, USD, "100.00"),
        (1, USD, "0.01"),
        (0, USD, "0.00"),
        (-4000, USD, "-40.00"),
        (100, JPY, "100"),
        (-7, JPY, "-7"),
        (1234, KWD, "1.234"),
        (1, BTC, "0.00000001"),
        (123_456_789, BTC, "1.23456789"),
    ],
)
def test_format_amount_renders_exactly_the_currency_places(
    minor: int, exponent: int, text: str
) -> None:
    assert format_amount(minor, exponent) == text


@pytest.mark.parametrize(
    ("text", "exponent"),
    [
        ("12.505", USD),  # three places for a two-place currency: never rounded
        ("0.001", USD),
        ("1.0", JPY),  # even a zero place is a place JPY does not have
        ("1.5", JPY),
        ("1.2345", KWD),
        ("0.000000001", BTC),
    ],
)
def test_more_places_than_the_currency_is_invalid_never_rounded(text: str, exponent: int) -> None:
    with pytest.raises(errors.InvalidAmount) as raised:
        parse_amount(text, exponent)
    assert raised.value.code == "invalid-amount"


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "0.00",
        "-1",
        "-0.01",
        "+1",
        "1e3",
        "1E3",
        "NaN",
        "nan",
        "Infinity",
        "-Infinity",
        "inf",
        "",
        " 1.00",
        "1.00 ",
        "1 000",
        "\t5",
        "1,00",
        "1.",
        ".5",
        "0x10",
        "١٢",  # Arabic-Indic digits: not ASCII digits
        "1_000",
    ],
)
def test_malformed_or_non_positive_amounts_are_invalid(text: str) -> None:
    with pytest.raises(errors.InvalidAmount):
        parse_amount(text, USD)


@pytest.mark.parametrize("number", [1, 12.5, 0.1, 1250, True, None])
def test_a_json_number_is_not_an_amount(number: object) -> None:
    """API.md: amounts are strings; a number (int or float) is `invalid-amount`."""
    with pytest.raises(errors.InvalidAmount):
        parse_amount(number, USD)


def test_maximum_amount_at_and_one_past_the_edge() -> None:
    assert parse_amount(str(MAX_AMOUNT_MINOR), 0) == MAX_AMOUNT_MINOR
    with pytest.raises(errors.InvalidAmount):
        parse_amount(str(MAX_AMOUNT_MINOR + 1), 0)
    # The same edge seen through a two-place currency.
    units, cents = divmod(MAX_AMOUNT_MINOR, 100)
    assert parse_amount(f"{units}.{cents:02d}", USD) == MAX_AMOUNT_MINOR
    with pytest.raises(errors.InvalidAmount):
        parse_amount(format_amount(MAX_AMOUNT_MINOR + 1, USD), USD)


def test_an_asset_with_the_largest_exponent_holds_whole_units() -> None:
    """Exponent 18 (API.md allows 0-18): one unit is 10**18 minor units, within the maximum;
    the edge is 9.223372036854775807 units."""
    places = MAX_CURRENCY_EXPONENT
    assert parse_amount("1", places) == 10**places
    edge = format_amount(MAX_AMOUNT_MINOR, places)
    assert edge == "9.223372036854775807" and parse_amount(edge, places) == MAX_AMOUNT_MINOR
    with pytest.raises(errors.InvalidAmount):
        parse_amount("9.223372036854775808", places)


def test_amount_text_length_at_and_past_the_edge() -> None:
    at_edge = "0" * (MAX_AMOUNT_TEXT_LENGTH - 1) + "1"
    assert len(at_edge) == MAX_AMOUNT_TEXT_LENGTH
    assert parse_amount(at_edge, USD) == 100
    past_edge = "0" + at_edge
    with pytest.raises(errors.InvalidAmount):
        parse_amount(past_edge, USD)


def test_minor_amount_check_at_and_past_the_edges() -> None:
    assert check_amount_minor(1) == 1
    assert check_amount_minor(MAX_AMOUNT_MINOR) == MAX_AMOUNT_MINOR
    for bad in (0, -1, MAX_AMOUNT_MINOR + 1, True, 1.0, "1"):
        with pytest.raises(errors.InvalidAmount):
            check_amount_minor(bad)  # type: ignore[arg-type]


# The ISO 4217 table ---------------------------------------------------------------------------


def test_every_iso_code_is_three_uppercase_letters_with_a_known_exponent() -> None:
    assert len(ISO_4217_EXPONENTS) > 150
    for code, exponent in ISO_4217_EXPONENTS.items():
        assert re.fullmatch(r"[A-Z]{3}", code), code
        assert exponent in {0, 2, 3, 4}, (code, exponent)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("JPY", 0),
        ("KRW", 0),
        ("KWD", 3),
        ("BHD", 3),
        ("CLF", 4),
        ("CHF", 2),
    ],
)
def test_iso_spot_checks(code: str, exponent: int) -> None:
    assert ISO_4217_EXPONENTS[code] == exponent
    assert CurrencyTable().exponent(code) == exponent


@pytest.mark.parametrize("code", ["XAU", "XDR", "XTS", "XXX"])
def test_codes_without_a_minor_unit_are_left_to_registration(code: str) -> None:
    assert code not in ISO_4217_EXPONENTS
    with pytest.raises(errors.UnknownCurrency):
        CurrencyTable().exponent(code)


def test_registered_asset_has_its_own_exponent() -> None:
    table = CurrencyTable()
    assert not table.is_known("BTC")
    with pytest.raises(errors.UnknownCurrency):
        table.exponent("BTC")
    table.register("BTC", BTC)
    assert table.is_known("BTC")
    assert table.exponent("BTC") == 8
    assert table.registered() == {"BTC": 8}
    assert parse_amount("0.00000001", table.exponent("BTC")) == 1
    assert format_amount(1, table.exponent("BTC")) == "0.00000001"


@pytest.mark.parametrize("code", ["BTC", "AB", "ABCDEFGHIJ12", "X1"])
def test_asset_codes_accepted(code: str) -> None:
    assert check_asset_code(code) == code


@pytest.mark.parametrize("code", ["A", "ABCDEFGHIJ123", "btc", "BT-C", "", "B C"])
def test_asset_codes_refused(code: str) -> None:
    with pytest.raises(errors.InvalidRequest):
        check_asset_code(code)


def test_exponent_range_at_and_past_the_edges() -> None:
    assert check_exponent(0) == 0
    assert check_exponent(MAX_CURRENCY_EXPONENT) == MAX_CURRENCY_EXPONENT
    for bad in (-1, MAX_CURRENCY_EXPONENT + 1, True, 2.0):
        with pytest.raises(errors.InvalidRequest):
            check_exponent(bad)  # type: ignore[arg-type]


def test_table_reads_the_assets_mapping_live() -> None:
    """Regression: the writer's table once copied the assets at start, so an asset registered
    later stayed `unknown-currency` (see the contract test `test_register_asset`)."""
    assets: dict[str, int] = {}
    table = CurrencyTable(assets)
    assets["BTC"] = BTC
    assert table.exponent("BTC") == BTC
    del assets["BTC"]  # a rolled-back registration is forgotten
    assert not table.is_known("BTC")
