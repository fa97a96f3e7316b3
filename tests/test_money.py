"""Money: amounts are parsed from text into integer paise and formatted back, never through floats."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.books.money import (
    MAX_PAISE,
    format_indian,
    format_paise,
    from_decimal,
    parse_amount,
    to_decimal,
)
from p2psync.errors import InvalidInput

FAST = settings(max_examples=200, deadline=None)
paise_amounts = st.integers(min_value=1, max_value=MAX_PAISE)


def international(paise: int) -> str:
    rupees, rest = divmod(paise, 100)
    return f"{rupees:,}.{rest:02d}"


@pytest.mark.parametrize(
    ("text", "paise"),
    [
        ("1250", 125000),
        ("1250.5", 125050),
        ("1250.50", 125050),
        ("0.01", 1),
        ("0.10", 10),
        ("007", 700),
        ("1,250", 125000),
        ("1,250.75", 125075),
        ("12,345,678.90", 1234567890),  # international grouping
        ("1,23,45,678.90", 1234567890),  # Indian grouping
        ("1,00,00,000", 1000000000),  # one crore
        ("  42.00  ", 4200),
    ],
)
def test_parse_amount_accepts_plain_and_grouped_amounts(text: str, paise: int) -> None:
    assert parse_amount(text) == paise


@pytest.mark.parametrize(
    "text",
    ["1.234", "0.001", "1,250.505", "10.000"],
)
def test_parse_amount_refuses_more_than_two_decimals(text: str) -> None:
    with pytest.raises(InvalidInput, match="two decimal places"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["-1", "-0.50", " -1,000", "-0"])
def test_parse_amount_refuses_negative(text: str) -> None:
    with pytest.raises(InvalidInput, match="negative"):
        parse_amount(text)


@pytest.mark.parametrize("text", ["0", "0.00", "0,000", "00.0"])
def test_parse_amount_zero_is_refused_unless_allowed(text: str) -> None:
    with pytest.raises(InvalidInput, match="zero"):
        parse_amount(text)
    assert parse_amount(text, allow_zero=True) == 0


@pytest.mark.parametrize(
    "text",
    [
        "1e5", "1E5", "1.5e2", "NaN", "nan", "inf", "Infinity", "-inf", "0x10", "1_000", "+5", ".5", "5.",
        "1 000", "12.5.0", "", "   ", "Rs 100", "100 INR", "₹100", "1,2,3", ",100", "100,", "1,,000",
        "1234,567", "1.0f", "½",
    ],
)
def test_parse_amount_refuses_float_ish_and_non_numbers(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(text)


@pytest.mark.parametrize(
    "text",
    [
        "1,50",  # a European decimal comma, not ₹150
        "1,234,56",  # neither Indian nor international grouping
        "12,3456",
        "123,45,678",  # Indian groups are two digits wide, led by at most two
    ],
)
def test_parse_amount_refuses_groupings_that_are_neither_indian_nor_international(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(text)


@pytest.mark.parametrize("text", ["१२३", "١٢٣", "１２３", "12,३४,567"])
def test_parse_amount_refuses_digits_that_are_not_plain_ascii(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(text)


@pytest.mark.parametrize("text", [None, 100, 100.0, Decimal(100), b"100"])
def test_parse_amount_refuses_non_text(text: object) -> None:
    with pytest.raises(InvalidInput):
        parse_amount(text)  # type: ignore[arg-type]


def test_parse_amount_maximum_is_inclusive() -> None:
    assert parse_amount(format_paise(MAX_PAISE)) == MAX_PAISE
    assert parse_amount(format_indian(MAX_PAISE)) == MAX_PAISE
    with pytest.raises(InvalidInput, match="largest"):
        parse_amount(format_paise(MAX_PAISE + 1))


@pytest.mark.parametrize("digits", [20, 400, 5000, 100_000])
def test_parse_amount_refuses_absurdly_long_numbers_with_invalid_input(digits: int) -> None:
    with pytest.raises(InvalidInput):
        parse_amount("9" * digits)
    with pytest.raises(InvalidInput):
        parse_amount("1" + "0" * digits + ".00")


@FAST
@given(paise_amounts)
def test_parse_amount_round_trips_every_written_form(paise: int) -> None:
    assert parse_amount(format_paise(paise)) == paise
    assert parse_amount(format_indian(paise)) == paise
    assert parse_amount(international(paise)) == paise


@FAST
@given(st.text(max_size=30))
def test_parse_amount_only_ever_raises_invalid_input(text: str) -> None:
    try:
        paise = parse_amount(text)
    except InvalidInput:
        return
    assert isinstance(paise, int)
    assert 0 < paise <= MAX_PAISE


@FAST
@given(st.floats(allow_nan=True, allow_infinity=True))
def test_parse_amount_refuses_float_repr_with_exponent(value: float) -> None:
    text = repr(value)
    if "e" in text or "n" in text:  # exponent, nan, inf
        with pytest.raises(InvalidInput):
            parse_amount(text)


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (0, "0.00"),
        (5, "0.05"),
        (-5, "-0.05"),
        (99_999, "999.99"),
        (100_000, "1,000.00"),
        (1_000_000, "10,000.00"),
        (10_000_000, "1,00,000.00"),
        (123_456_789, "12,34,567.89"),
        (1_000_000_000, "1,00,00,000.00"),
        (-1_000_000_000, "-1,00,00,000.00"),
    ],
)
def test_format_indian_groups_lakhs_and_crores(paise: int, text: str) -> None:
    assert format_indian(paise) == text


@FAST
@given(st.integers(min_value=-MAX_PAISE, max_value=MAX_PAISE))
def test_format_indian_shape(paise: int) -> None:
    text = format_indian(paise)
    sign, body = ("-", text[1:]) if text.startswith("-") else ("", text)
    assert sign == ("-" if paise < 0 else "")
    whole, _, fraction = body.partition(".")
    assert len(fraction) == 2
    groups = whole.split(",")
    assert len(groups[-1]) <= 3 and all(len(g) == 2 for g in groups[1:-1])
    assert len(groups) == 1 or (len(groups[-1]) == 3 and 1 <= len(groups[0]) <= 2)
    assert int(whole.replace(",", "")) * 100 + int(fraction) == abs(paise)


@FAST
@given(st.integers(min_value=-MAX_PAISE, max_value=MAX_PAISE))
def test_decimal_conversions_are_exact(paise: int) -> None:
    value = to_decimal(paise)
    assert value.as_tuple().exponent == -2
    assert from_decimal(value) == paise
    assert str(value) == format_paise(paise)


@pytest.mark.parametrize("value", [Decimal("1.001"), Decimal("NaN"), Decimal("Infinity"), 1.5, "1.50"])
def test_from_decimal_refuses_inexact_or_non_decimal(value: object) -> None:
    with pytest.raises(InvalidInput):
        from_decimal(value)  # type: ignore[arg-type]
