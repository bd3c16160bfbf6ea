"""Properties of exact money (invariant 6): parsing and formatting are inverse, places beyond the
currency's exponent are refused (never rounded), and no float is ever accepted as an amount."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger_core import errors
from ledger_core.limits import MAX_AMOUNT_MINOR, MAX_CURRENCY_EXPONENT
from ledger_core.money import check_amount_minor, format_amount, parse_amount

exponents = st.integers(min_value=0, max_value=MAX_CURRENCY_EXPONENT)
amounts = st.integers(min_value=1, max_value=MAX_AMOUNT_MINOR)


@given(amount=amounts, exponent=exponents)
def test_format_then_parse_is_the_identity(amount: int, exponent: int) -> None:
    text = format_amount(amount, exponent)
    assert parse_amount(text, exponent) == amount
    # Exactly the currency's places, always.
    places = len(text.partition(".")[2])
    assert places == exponent


@given(
    units=st.integers(min_value=0, max_value=10**6),
    fraction=st.text(alphabet="0123456789", min_size=1, max_size=20),
    exponent=exponents,
)
def test_parse_then_format_gives_the_canonical_text(
    units: int, fraction: str, exponent: int
) -> None:
    text = f"{units}.{fraction}"
    if len(fraction) > exponent:
        expected = None  # more places than the currency has: refused, never rounded
    else:
        expected = units * 10**exponent + int(fraction.ljust(exponent, "0"))
        if not 0 < expected <= MAX_AMOUNT_MINOR:
            expected = None
    try:
        minor = parse_amount(text, exponent)
    except errors.InvalidAmount:
        assert expected is None
        return
    assert minor == expected
    assert format_amount(minor, exponent) == f"{units}.{fraction.ljust(exponent, '0')}"


@given(value=st.floats(allow_nan=True, allow_infinity=True), exponent=exponents)
def test_no_float_is_ever_an_amount(value: float, exponent: int) -> None:
    for check in (lambda: parse_amount(value, exponent), lambda: check_amount_minor(value)):  # type: ignore[arg-type]
        try:
            check()
        except errors.InvalidAmount:
            continue
        raise AssertionError(f"the float {value!r} was accepted")


@given(value=st.floats(allow_nan=True, allow_infinity=True).map(repr), exponent=exponents)
def test_float_text_in_exponent_or_special_form_is_refused(value: str, exponent: int) -> None:
    """Python's float spellings: only a plain decimal ("0.5") may parse, and then exactly."""
    try:
        minor = parse_amount(value, exponent)
    except errors.InvalidAmount:
        return
    assert "e" not in value.lower() and "n" not in value.lower()
    assert minor == int(value.replace(".", "")) * 10 ** (exponent - len(value.partition(".")[2]))


@given(amount=amounts, exponent=st.integers(min_value=0, max_value=MAX_CURRENCY_EXPONENT - 1))
def test_one_place_too_many_is_refused(amount: int, exponent: int) -> None:
    text = format_amount(amount, exponent + 1)
    if text.endswith("0"):
        text = text[:-1] + "1"
    try:
        parse_amount(text, exponent)
    except errors.InvalidAmount:
        return
    raise AssertionError(f"{text!r} parsed at exponent {exponent}")
