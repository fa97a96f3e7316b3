"""Money: `Decimal` with two places in every API, an integer count of paise in storage.

Floats never appear: amounts are parsed from text and kept as integers.
"""

from __future__ import annotations

import re
from decimal import Decimal

from p2psync.errors import InvalidInput

PAISE_PER_RUPEE = 100
#: The largest amount one line, one voucher (the total of its debits) or one opening balance may carry:
#: just under 10^9 rupees (100 crore). Bounded so that no sum a report takes can overflow SQLite's
#: 64-bit integers: ten million vouchers at this total sum to 10^18 paise, a ninth of 2^63.
MAX_PAISE = 99_999_999_999

#: Plain ASCII digits, ungrouped or grouped the international (1,234,567) or Indian (12,34,567) way.
_AMOUNT = re.compile(
    r"^(?P<int>\d+|\d{1,3}(?:,\d{3})+|\d{1,2}(?:,\d{2})*,\d{3})(?:\.(?P<frac>\d{1,2}))?$", re.ASCII
)
_MAX_RUPEE_DIGITS = len(str(MAX_PAISE // PAISE_PER_RUPEE))
TWO_PLACES = Decimal("0.01")


def parse_amount(text: str, *, allow_zero: bool = False) -> int:
    """Parse a positive amount such as ``1250``, ``1,250.5`` or ``12,50,000.00`` into paise.

    Refuses negatives, more than two decimals, exponents, NaN and anything that is not plain digits,
    because an accountant's amount is never any of those.
    """
    if not isinstance(text, str):
        raise InvalidInput(f"amount {text!r} must be written as text like 1250.00")
    cleaned = text.strip()
    if cleaned.startswith("-"):
        raise InvalidInput(f"amount {text!r} is negative; use the other side (Dr/Cr) instead")
    match = _AMOUNT.match(cleaned)
    if not match:
        if re.match(r"^\d+\.\d{3,}$", cleaned.replace(",", ""), re.ASCII):
            raise InvalidInput(f"amount {text!r} has more than two decimal places")
        raise InvalidInput(f"amount {text!r} is not a number like 1250 or 1,250.50")
    digits = match.group("int").replace(",", "").lstrip("0")
    if len(digits) > _MAX_RUPEE_DIGITS:  # checked before int(), which refuses very long digit strings
        raise InvalidInput(f"amount {text[:40]!r} is larger than the largest allowed amount")
    rupees = int(digits or "0")
    frac = (match.group("frac") or "").ljust(2, "0")
    paise = rupees * PAISE_PER_RUPEE + int(frac or 0)
    if paise == 0 and not allow_zero:
        raise InvalidInput(f"amount {text!r} is zero")
    if paise > MAX_PAISE:
        raise InvalidInput(f"amount {text!r} is larger than the largest allowed amount")
    return paise


def to_decimal(paise: int) -> Decimal:
    """Paise as a two-place `Decimal` (exact)."""
    return (Decimal(paise) / PAISE_PER_RUPEE).quantize(TWO_PLACES)


def from_decimal(value: Decimal) -> int:
    """A `Decimal` with at most two places as paise; refuses anything finer."""
    if not isinstance(value, Decimal) or not value.is_finite():
        raise InvalidInput(f"amount {value!r} is not a finite Decimal")
    scaled = value * PAISE_PER_RUPEE
    if scaled != scaled.to_integral_value():
        raise InvalidInput(f"amount {value} has more than two decimal places")
    return int(scaled)


def format_paise(paise: int) -> str:
    """Paise as ``1234.50`` (sign kept), the form used in JSON output."""
    return str(to_decimal(paise))


def format_indian(paise: int) -> str:
    """Paise grouped the Indian way (``12,34,567.89``) for tables read by accountants."""
    sign = "-" if paise < 0 else ""
    rupees, rest = divmod(abs(paise), PAISE_PER_RUPEE)
    digits = str(rupees)
    if len(digits) > 3:
        head, tail = digits[:-3], digits[-3:]
        groups = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        digits = ",".join(groups + [tail])
    return f"{sign}{digits}.{rest:02d}"
