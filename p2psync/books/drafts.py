"""Voucher drafts: what a user typed, before ledger names are resolved and rules are checked."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass

from p2psync.books.model import Line, Side, VoucherContent, VoucherType
from p2psync.books.money import parse_amount
from p2psync.books.rules import Chart, parse_date
from p2psync.errors import InvalidInput, RuleViolation


@dataclass(frozen=True)
class Draft:
    type: VoucherType
    date: dt.date
    lines: tuple[Line, ...]
    narration: str = ""


def parse_line(text: str, side: Side) -> Line:
    """``LEDGER=AMOUNT`` as given to ``--dr`` / ``--cr`` (the last ``=`` splits, names may hold one)."""
    ledger, sep, amount = text.rpartition("=")
    if not sep or not ledger.strip():
        raise InvalidInput(f"{side.value.lower()} line {text!r} must be LEDGER=AMOUNT")
    return make_line(ledger, amount, side)


def make_line(ledger: str, amount: str, side: Side) -> Line:
    """One line as typed in a form: a ledger name and an amount."""
    if not ledger.strip():
        raise InvalidInput(f"a {side.value.lower()} line needs a ledger")
    return Line(" ".join(ledger.split()), side, parse_amount(amount))


def make_draft(kind: str, date: str, debits: list[str], credits: list[str], narration: str = "") -> Draft:
    lines = tuple(parse_line(d, Side.DR) for d in debits) + tuple(parse_line(c, Side.CR) for c in credits)
    return draft_of(kind, date, lines, narration)


def draft_of(kind: str, date: str, lines: tuple[Line, ...], narration: str = "") -> Draft:
    return Draft(parse_type(kind), parse_date(date), lines, narration.strip())


def parse_type(text: str) -> VoucherType:
    """`VoucherType.parse`, remembered for short texts (an import repeats a few thousands of times);
    a refused one is not, and raises each time."""
    return _parse_short_type(text) if len(text) <= 32 else VoucherType.parse(text)


_parse_short_type = functools.lru_cache(maxsize=256)(VoucherType.parse)


def resolve_names(draft: Draft, chart: Chart) -> VoucherContent:
    """The voucher content with each ledger written as the ledger's own name (a line that already
    is, as most are, is kept as it is)."""
    lines = []
    for line in draft.lines:
        ledger = chart.ledger(line.ledger)
        if ledger is None:
            raise RuleViolation(f"unknown ledger {line.ledger!r}")
        lines.append(line if line.ledger == ledger.name else Line(ledger.name, line.side, line.paise))
    return VoucherContent(draft.type, draft.date, tuple(lines), draft.narration)
