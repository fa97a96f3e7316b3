"""The rules a voucher must keep, checked identically for local posts and for changes from peers."""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from p2psync.books.groups import CASH_AND_BANK, PURCHASES, SALES, GroupTree, group_key
from p2psync.books.model import (
    MAX_LINES,
    MAX_NARRATION,
    OFFICE_CODE,
    GroupDef,
    LedgerDef,
    Side,
    VoucherContent,
    VoucherType,
)
from p2psync.books.money import MAX_PAISE, format_paise
from p2psync.errors import InvalidInput, RuleViolation

_SALES = frozenset({group_key(SALES)})
_PURCHASES = frozenset({group_key(PURCHASES)})
#: The predefined group every inter-office account (`@CODE`) is under, whoever names it.
BRANCH_DIVISIONS = "Branch / Divisions"


def inter_office_code(name: str) -> str | None:
    """The office code of an inter-office account name (``@BR1``), None for any other name.

    An inter-office account has no masters record: ``@Y`` in office X's books is X's account with Y,
    implied by the office list, so no office can create, re-classify or overwrite another's."""
    if not name.startswith("@"):
        return None
    code = name[1:].strip().upper()
    return code if OFFICE_CODE.match(code) else None


def inter_office_name(code: str) -> str:
    """The name an inter-office account with office `code` carries on a voucher line."""
    return f"@{code}"


@dataclass
class Chart:
    """What the rules need to know about the masters: ledgers, groups and the sync-after date.

    A chart is never changed once made (a new one is read when the masters change)."""

    ledgers: dict[str, LedgerDef] = field(default_factory=dict)
    groups: GroupTree = field(default_factory=GroupTree)
    #: The user groups' records in force, by key (the predefined groups have none).
    group_defs: dict[str, GroupDef] = field(default_factory=dict)
    #: The codes of the head offices, whose records are in force for every office.
    heads: frozenset[str] = frozenset()
    #: Every office's code: ``@CODE`` names an inter-office account only for a known office.
    offices: frozenset[str] = frozenset()
    #: `group_key` of each ledger's own name, the name every resolved voucher line carries: a line's
    #: ledger is then found without normalising its name again.
    _keys: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._keys = {ledger.name: group_key(ledger.name) for ledger in self.ledgers.values()}

    def key(self, name: str) -> str:
        """`group_key(name)`."""
        key = self._keys.get(name)
        return group_key(name) if key is None else key

    def ledger(self, name: str) -> LedgerDef | None:
        found = self.ledgers.get(self.key(name))
        if found is None and name[:1] == "@":
            return self.inter_office(name)
        return found

    def inter_office(self, name: str) -> LedgerDef | None:
        """The implied ledger of inter-office account `name` (``@CODE`` of a known office), always
        under Branch / Divisions: it has no record, so there is nothing to adopt or re-classify."""
        code = inter_office_code(name)
        if code is None or code not in self.offices:
            return None
        return LedgerDef(inter_office_name(code), BRANCH_DIVISIONS, "", "", "")

    def borrowed(self, office: str, ledgers: Iterable[str] = (), groups: Iterable[str] = ()) -> list[LedgerDef | GroupDef]:
        """The records these ledgers and groups stand on (theirs and their user groups') that neither
        `office` nor a head office made: what `office` records as its own before using them (see
        `schema.effective`)."""
        found: dict[tuple[str, str], LedgerDef | GroupDef] = {}
        records: list[LedgerDef | GroupDef] = []
        for name in ledgers:
            ledger = self.ledger(name)
            if ledger is not None and ledger.author:  # an inter-office account has no record to adopt
                records.append(ledger)
                groups = [*groups, ledger.group]
        for group in groups:
            records += [self.group_defs[g.key] for g in self.groups.lineage(group) if g.key in self.group_defs]
        for record in records:
                if record.office != office and record.office not in self.heads:
                    found[(type(record).__name__, record.key)] = record
        return list(found.values())

    def group_of(self, name: str) -> str:
        ledger = self.ledger(name)
        if ledger is None:
            raise RuleViolation(f"unknown ledger {name!r}")
        return ledger.group


def validate_voucher(content: VoucherContent, chart: Chart, office: str | None = None) -> None:
    """Refuse a voucher that would make the books wrong. Raises `RuleViolation` with the reason.

    Used when posting: besides `check_balanced`, the voucher type's rule, which depends on the groups
    of its ledgers as this node sees them now."""
    check_balanced(content, chart, office)
    check_type_rule(content, chart)


def check_balanced(content: VoucherContent, chart: Chart, office: str | None = None) -> None:
    """The invariants every replica checks identically whatever its masters hold: at least two
    lines, positive amounts within limits, known ledgers, one ledger per side, debits = credits.

    Ledgers are never deleted, and a voucher's entry depends on the entries that created its
    ledgers, so 'known' gives the same answer on every replica at the moment the entry is applied."""
    lines = content.lines
    if len(lines) < 2:
        raise RuleViolation("a voucher needs at least two lines (one debit and one credit)")
    if len(lines) > MAX_LINES:
        raise RuleViolation(f"a voucher may have at most {MAX_LINES} lines")
    if len(content.narration) > MAX_NARRATION:
        raise RuleViolation(f"narration is longer than {MAX_NARRATION} characters")
    debit = credit = 0
    debited: set[str] = set()
    credited: list[tuple[str, str]] = []
    for line in lines:
        if not 0 < line.paise <= MAX_PAISE:
            raise RuleViolation(f"line amount for {line.ledger!r} must be positive and within limits")
        key = chart.key(line.ledger)
        if line.ledger[:1] == "@":
            key = _inter_office_key(line.ledger, chart, office)
        elif chart.ledgers.get(key) is None:
            raise RuleViolation(f"unknown ledger {line.ledger!r}")
        if line.side is Side.DR:
            debit += line.paise
            debited.add(key)
        elif line.side is Side.CR:
            credit += line.paise
            credited.append((key, line.ledger))
    if debit == 0 or credit == 0:
        raise RuleViolation("a voucher needs at least one debit and one credit line")
    if debit != credit:
        raise RuleViolation(
            f"debits ({format_paise(debit)}) do not equal credits ({format_paise(credit)})"
        )
    if debit > MAX_PAISE:
        raise RuleViolation(f"a voucher's total may not exceed {format_paise(MAX_PAISE)}")
    both = [name for key, name in credited if key in debited]
    if both:
        raise RuleViolation(f"ledger {both[0]!r} is both debited and credited in one voucher")


def _inter_office_key(name: str, chart: Chart, office: str | None) -> str:
    """The key of inter-office account `name` in `office`'s books: ``@Y`` is valid there iff Y is a
    known office other than `office` (None: the office is not known here, only Y is checked)."""
    code = inter_office_code(name)
    if code is None or code not in chart.offices:
        raise RuleViolation(f"unknown ledger {name[:60]!r}: it names no office")
    if name != inter_office_name(code):  # one spelling, so that every replica files it under one key
        raise RuleViolation(f"inter-office account {name[:60]!r} must be written {inter_office_name(code)!r}")
    if code == office:
        raise RuleViolation(f"office {office} has no inter-office account with itself ({name!r})")
    return group_key(inter_office_name(code))


#: The types that need one ledger of one side under some groups: that side, those groups, and the refusal.
_ONE_UNDER: dict[VoucherType, tuple[Side, frozenset[str], str]] = {
    VoucherType.PAYMENT: (Side.CR, CASH_AND_BANK, "a Payment must be paid out of a cash or bank ledger (credit side)"),
    VoucherType.RECEIPT: (Side.DR, CASH_AND_BANK, "a Receipt must be received into a cash or bank ledger (debit side)"),
    VoucherType.SALES: (Side.CR, _SALES, "a Sales voucher must credit a ledger under Sales Accounts"),
    VoucherType.PURCHASE: (Side.DR, _PURCHASES, "a Purchase voucher must debit a ledger under Purchase Accounts"),
    VoucherType.CREDIT_NOTE: (Side.DR, _SALES, "a Credit Note (sales return) must debit a ledger under Sales Accounts"),
    VoucherType.DEBIT_NOTE: (Side.CR, _PURCHASES,
                             "a Debit Note (purchase return) must credit a ledger under Purchase Accounts"),
}


def check_type_rule(content: VoucherContent, chart: Chart) -> None:
    """The voucher type's rule, by the groups of its ledgers in `chart` (which must know them all)."""
    tree = chart.groups

    def under(line_ledger: str, groups: frozenset[str]) -> bool:
        return tree.is_under(chart.group_of(line_ledger), groups)

    kind = content.type
    one = _ONE_UNDER.get(kind)
    if one is not None:
        side, groups, refusal = one
        if not any(under(ln.ledger, groups) for ln in content.lines if ln.side is side):
            raise RuleViolation(refusal)
        return
    debits = [ln.ledger for ln in content.lines if ln.side is Side.DR]
    credits = [ln.ledger for ln in content.lines if ln.side is Side.CR]
    if kind is VoucherType.CONTRA:
        odd = [name for name in debits + credits if not under(name, CASH_AND_BANK)]
        if odd:
            raise RuleViolation(f"a Contra moves money only between cash and bank ledgers, not {odd[0]!r}")
    elif kind is VoucherType.JOURNAL:
        money = [name for name in debits + credits if under(name, CASH_AND_BANK)]
        if money:
            raise RuleViolation(
                f"a Journal may not use cash or bank ledger {money[0]!r}; use Payment, Receipt or Contra"
            )


_DATE_FORMATS = ("%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y")


def parse_date(text: str) -> dt.date:
    """Parse a date written as 2026-04-01, 01-04-2026, 01/04/2026 or 01.04.2026.

    Short texts are remembered (`strptime` costs some 4 us, and an import repeats a year's dates
    thousands of times); a refused one is not, and raises each time."""
    return _parse_short_date(text) if len(text) <= _SHORT else _parse_date(text)


def _parse_date(text: str) -> dt.date:
    cleaned = text.strip()
    if re.fullmatch(r"[0-9./-]{8,10}", cleaned):
        for fmt in _DATE_FORMATS:
            try:
                value = dt.datetime.strptime(cleaned, fmt).date()
            except ValueError:
                continue
            if 1900 <= value.year <= 2999:
                return value
    raise InvalidInput(f"date {text!r} is not a valid date like 2026-04-01 or 01-04-2026")


#: The longest text `parse_date` remembers: a date with some spaces around it.
_SHORT = 32
_parse_short_date = functools.lru_cache(maxsize=4096)(_parse_date)
