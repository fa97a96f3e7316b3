"""Voucher rules, dates, drafts, and the canonical encoding of revisions."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from msgspec.structs import replace

from p2psync.books.drafts import make_draft, parse_line, resolve_names
from p2psync.books.groups import BANK_ACCOUNTS, CASH_AND_BANK, Group, GroupTree, Nature, group_key
from p2psync.books.model import (
    MAX_LINES,
    MAX_NARRATION,
    Action,
    LedgerDef,
    Line,
    Revision,
    Side,
    VoucherContent,
    VoucherType,
    decode_revision,
    encode_revision,
)
from p2psync.books.money import MAX_PAISE, format_paise
from p2psync.books.rules import Chart, check_balanced, parse_date, validate_voucher
from p2psync.errors import InvalidInput, RuleViolation

FAST = settings(max_examples=150, deadline=None)
DAY = dt.date(2026, 4, 1)

#: A chart built directly (no node): includes a user sub-group under Bank Accounts.
CHART_LEDGERS = {
    "Cash": "Cash-in-Hand",
    "HDFC": BANK_ACCOUNTS,
    "SBI Branch": "Branch Banks",
    "Overdraft": "Bank OD A/c",
    "Sales": "Sales Accounts",
    "Export Sales": "Sales Accounts",
    "Purchases": "Purchase Accounts",
    "Rent": "Indirect Expenses",
    "Debtors": "Sundry Debtors",
    "Creditors": "Sundry Creditors",
    "Capital": "Capital Account",
    "GST Payable": "Duties & Taxes",
}
CASH_OR_BANK = ("Cash", "HDFC", "SBI Branch", "Overdraft")
NOT_CASH_OR_BANK = tuple(name for name in CHART_LEDGERS if name not in CASH_OR_BANK)


@pytest.fixture(scope="module")
def chart() -> Chart:
    tree = GroupTree([Group("Branch Banks", Nature.ASSET, BANK_ACCOUNTS, predefined=False)])
    ledgers = {group_key(name): LedgerDef(name, group, "HO", "node", "2026-01-01T00:00:00.000000Z")
               for name, group in CHART_LEDGERS.items()}
    return Chart(ledgers=ledgers, groups=tree)


def voucher(kind: VoucherType, dr: dict[str, int], cr: dict[str, int], narration: str = "") -> VoucherContent:
    lines = tuple(Line(k, Side.DR, v) for k, v in dr.items()) + tuple(Line(k, Side.CR, v) for k, v in cr.items())
    return VoucherContent(kind, DAY, lines, narration)


# ---------------------------------------------------------------- per-type rules

VALID = [
    (VoucherType.CONTRA, {"HDFC": 500}, {"Cash": 500}),
    (VoucherType.CONTRA, {"Cash": 500}, {"SBI Branch": 200, "Overdraft": 300}),
    (VoucherType.PAYMENT, {"Rent": 500}, {"Cash": 500}),
    (VoucherType.PAYMENT, {"Creditors": 700}, {"HDFC": 650, "Debtors": 50}),
    (VoucherType.PAYMENT, {"Rent": 300}, {"SBI Branch": 300}),
    (VoucherType.RECEIPT, {"Cash": 500}, {"Debtors": 500}),
    (VoucherType.RECEIPT, {"Overdraft": 400, "Rent": 100}, {"Sales": 500}),
    (VoucherType.JOURNAL, {"Rent": 500}, {"Creditors": 500}),
    (VoucherType.JOURNAL, {"Debtors": 590}, {"Sales": 500, "GST Payable": 90}),
    (VoucherType.SALES, {"Debtors": 590}, {"Sales": 500, "GST Payable": 90}),
    (VoucherType.SALES, {"Cash": 100}, {"Export Sales": 100}),
    (VoucherType.PURCHASE, {"Purchases": 500, "GST Payable": 90}, {"Creditors": 590}),
    (VoucherType.PURCHASE, {"Purchases": 100}, {"HDFC": 100}),
    (VoucherType.CREDIT_NOTE, {"Sales": 500}, {"Debtors": 500}),
    (VoucherType.DEBIT_NOTE, {"Creditors": 500}, {"Purchases": 500}),
]


@pytest.mark.parametrize(("kind", "dr", "cr"), VALID)
def test_valid_vouchers_of_each_type_pass(chart: Chart, kind: VoucherType, dr: dict, cr: dict) -> None:
    validate_voucher(voucher(kind, dr, cr), chart)


INVALID = [
    # a Contra moves money only between cash and bank ledgers
    (VoucherType.CONTRA, {"Rent": 500}, {"Cash": 500}, "Contra"),
    (VoucherType.CONTRA, {"HDFC": 500}, {"Capital": 500}, "Contra"),
    (VoucherType.CONTRA, {"HDFC": 500}, {"Cash": 400, "Sales": 100}, "Contra"),
    # a Payment pays out of cash or bank: the credit side
    (VoucherType.PAYMENT, {"Rent": 500}, {"Creditors": 500}, "Payment"),
    (VoucherType.PAYMENT, {"Cash": 500}, {"Debtors": 500}, "Payment"),
    # a Receipt takes into cash or bank: the debit side
    (VoucherType.RECEIPT, {"Debtors": 500}, {"Sales": 500}, "Receipt"),
    (VoucherType.RECEIPT, {"Rent": 500}, {"Cash": 500}, "Receipt"),
    # a Journal never touches cash or bank
    (VoucherType.JOURNAL, {"Rent": 500}, {"Cash": 500}, "Journal"),
    (VoucherType.JOURNAL, {"SBI Branch": 500}, {"Capital": 500}, "Journal"),
    (VoucherType.JOURNAL, {"Overdraft": 500}, {"Capital": 500}, "Journal"),
    # Sales credit a sales ledger; Purchase debit a purchase ledger
    (VoucherType.SALES, {"Debtors": 500}, {"Capital": 500}, "Sales"),
    (VoucherType.SALES, {"Sales": 500}, {"Debtors": 500}, "Sales"),
    (VoucherType.PURCHASE, {"Rent": 500}, {"Creditors": 500}, "Purchase"),
    (VoucherType.PURCHASE, {"Creditors": 500}, {"Purchases": 500}, "Purchase"),
    # a Credit Note (sales return) debits sales; a Debit Note (purchase return) credits purchases
    (VoucherType.CREDIT_NOTE, {"Debtors": 500}, {"Sales": 500}, "Credit Note"),
    (VoucherType.CREDIT_NOTE, {"Rent": 500}, {"Debtors": 500}, "Credit Note"),
    (VoucherType.DEBIT_NOTE, {"Purchases": 500}, {"Creditors": 500}, "Debit Note"),
    (VoucherType.DEBIT_NOTE, {"Creditors": 500}, {"Rent": 500}, "Debit Note"),
]


@pytest.mark.parametrize(("kind", "dr", "cr", "named"), INVALID)
def test_type_rules_refuse(chart: Chart, kind: VoucherType, dr: dict, cr: dict, named: str) -> None:
    with pytest.raises(RuleViolation, match=named):
        validate_voucher(voucher(kind, dr, cr), chart)


@FAST
@given(
    kind=st.sampled_from(list(VoucherType)),
    names=st.lists(st.sampled_from(list(CHART_LEDGERS)), min_size=2, max_size=6),
    amounts=st.lists(st.integers(1, 10**9), min_size=6, max_size=6),
    debit_count=st.integers(1, 5),
)
def test_type_rules_match_an_independent_statement_of_them(
    chart: Chart, kind: VoucherType, names: list[str], amounts: list[int], debit_count: int
) -> None:
    """Any balanced voucher passes exactly when the rule for its type, stated independently, holds."""
    debit_count = min(debit_count, len(names) - 1)
    dr_names, cr_names = names[:debit_count], names[debit_count:]
    dr = [Line(n, Side.DR, a) for n, a in zip(dr_names, amounts)]
    total = sum(line.paise for line in dr)
    cr = [Line(n, Side.CR, total // len(cr_names)) for n in cr_names]
    cr[0] = Line(cr[0].ledger, Side.CR, total - sum(line.paise for line in cr[1:]))
    if any(line.paise <= 0 for line in cr):
        return
    sales, purchases = {"Sales", "Export Sales"}, {"Purchases"}
    money = set(CASH_OR_BANK)
    one_per_side = not set(dr_names) & set(cr_names)
    expected = one_per_side and {
        VoucherType.CONTRA: set(names) <= money,
        VoucherType.PAYMENT: bool(set(cr_names) & money),
        VoucherType.RECEIPT: bool(set(dr_names) & money),
        VoucherType.JOURNAL: not set(names) & money,
        VoucherType.SALES: bool(set(cr_names) & sales),
        VoucherType.PURCHASE: bool(set(dr_names) & purchases),
        VoucherType.CREDIT_NOTE: bool(set(dr_names) & sales),
        VoucherType.DEBIT_NOTE: bool(set(cr_names) & purchases),
    }[kind]
    content = VoucherContent(kind, DAY, tuple(dr + cr))
    if expected:
        validate_voucher(content, chart)
    else:
        with pytest.raises(RuleViolation):
            validate_voucher(content, chart)


def refusal_as_before(content: VoucherContent, chart: Chart) -> str | None:
    """`validate_voucher` as first written (each name normalised where it was used, lineages walked
    per line): the message it refused `content` with, or None."""
    tree = chart.groups

    def ledger(name: str) -> LedgerDef | None:
        return chart.ledgers.get(group_key(name))

    def under(name: str, groups: frozenset[str]) -> bool:
        found = ledger(name)
        if found is None:
            raise RuleViolation(f"unknown ledger {name!r}")
        return any(g.key in groups for g in tree.lineage(found.group))

    try:
        lines = content.lines
        if len(lines) < 2:
            raise RuleViolation("a voucher needs at least two lines (one debit and one credit)")
        if len(lines) > MAX_LINES:
            raise RuleViolation(f"a voucher may have at most {MAX_LINES} lines")
        if len(content.narration) > MAX_NARRATION:
            raise RuleViolation(f"narration is longer than {MAX_NARRATION} characters")
        for line in lines:
            if not 0 < line.paise <= MAX_PAISE:
                raise RuleViolation(f"line amount for {line.ledger!r} must be positive and within limits")
            if line.ledger[:1] == "@":  # an inter-office account: this chart knows no office (tested elsewhere)
                raise RuleViolation(f"unknown ledger {line.ledger[:60]!r}: it names no office")
            if ledger(line.ledger) is None:
                raise RuleViolation(f"unknown ledger {line.ledger!r}")
        debit = sum(ln.paise for ln in lines if ln.side is Side.DR)
        credit = sum(ln.paise for ln in lines if ln.side is Side.CR)
        if debit == 0 or credit == 0:
            raise RuleViolation("a voucher needs at least one debit and one credit line")
        if debit != credit:
            raise RuleViolation(f"debits ({format_paise(debit)}) do not equal credits ({format_paise(credit)})")
        debited = {group_key(ln.ledger) for ln in lines if ln.side is Side.DR}
        both = [ln.ledger for ln in lines if ln.side is Side.CR and group_key(ln.ledger) in debited]
        if both:
            raise RuleViolation(f"ledger {both[0]!r} is both debited and credited in one voucher")
        debits = [ln.ledger for ln in lines if ln.side is Side.DR]
        credits = [ln.ledger for ln in lines if ln.side is Side.CR]
        sales, purchases = frozenset({group_key("Sales Accounts")}), frozenset({group_key("Purchase Accounts")})
        kind = content.type
        if kind is VoucherType.CONTRA:
            odd = [name for name in debits + credits if not under(name, CASH_AND_BANK)]
            if odd:
                raise RuleViolation(f"a Contra moves money only between cash and bank ledgers, not {odd[0]!r}")
        elif kind is VoucherType.PAYMENT:
            if not any(under(name, CASH_AND_BANK) for name in credits):
                raise RuleViolation("a Payment must be paid out of a cash or bank ledger (credit side)")
        elif kind is VoucherType.RECEIPT:
            if not any(under(name, CASH_AND_BANK) for name in debits):
                raise RuleViolation("a Receipt must be received into a cash or bank ledger (debit side)")
        elif kind is VoucherType.JOURNAL:
            money = [name for name in debits + credits if under(name, CASH_AND_BANK)]
            if money:
                raise RuleViolation(
                    f"a Journal may not use cash or bank ledger {money[0]!r}; use Payment, Receipt or Contra")
        elif kind is VoucherType.SALES:
            if not any(under(name, sales) for name in credits):
                raise RuleViolation("a Sales voucher must credit a ledger under Sales Accounts")
        elif kind is VoucherType.PURCHASE:
            if not any(under(name, purchases) for name in debits):
                raise RuleViolation("a Purchase voucher must debit a ledger under Purchase Accounts")
        elif kind is VoucherType.CREDIT_NOTE:
            if not any(under(name, sales) for name in debits):
                raise RuleViolation("a Credit Note (sales return) must debit a ledger under Sales Accounts")
        elif kind is VoucherType.DEBIT_NOTE:
            if not any(under(name, purchases) for name in credits):
                raise RuleViolation("a Debit Note (purchase return) must credit a ledger under Purchase Accounts")
    except RuleViolation as exc:
        return str(exc)
    return None


#: Ledger names as lines may carry them: exact, in other case or spacing, unknown, or any text.
line_names = (st.sampled_from(list(CHART_LEDGERS))
              | st.sampled_from(list(CHART_LEDGERS)).map(lambda n: f"  {n.upper()} ".replace(" ", "  "))
              | st.sampled_from(["Petty Cash", "Sales Accounts", "", " "]) | st.text(max_size=8))
line_amounts = st.sampled_from([0, -1, 1, 500, MAX_PAISE, MAX_PAISE + 1]) | st.integers(1, 2000)
checked_contents = st.builds(
    VoucherContent, st.sampled_from(list(VoucherType)), st.just(DAY),
    st.lists(st.builds(Line, line_names, st.sampled_from(list(Side)), line_amounts), max_size=6).map(tuple),
    st.sampled_from(["", "x" * MAX_NARRATION, "x" * (MAX_NARRATION + 1)]),
)



@st.composite
def balanced_contents(draw: st.DrawFn) -> VoucherContent:
    """Vouchers whose debits equal their credits, so that the later checks are reached; now and then
    with a ledger on both sides, and names in other case."""
    names = draw(st.lists(st.sampled_from(list(CHART_LEDGERS)), min_size=2, max_size=5, unique=True))
    names = [name.lower() if draw(st.booleans()) else name for name in names]
    split = draw(st.integers(1, len(names) - 1))
    debit_names, credit_names = names[:split], names[split:]
    if draw(st.integers(0, 3)) == 0:
        credit_names += [name.upper() for name in draw(st.lists(st.sampled_from(debit_names), min_size=1,
                                                                 max_size=2, unique=True))]
    debits = [Line(name, Side.DR, draw(st.integers(1, 1000))) for name in debit_names]
    total = sum(line.paise for line in debits)
    shares = [total // len(credit_names)] * len(credit_names)
    shares[0] += total - sum(shares)
    lines = debits + [Line(name, Side.CR, share) for name, share in zip(credit_names, shares)]
    order = draw(st.permutations(range(len(lines))))
    return VoucherContent(draw(st.sampled_from(list(VoucherType))), DAY, tuple(lines[i] for i in order))


@settings(max_examples=800, deadline=None)
@given(checked_contents | balanced_contents())
@example(content=VoucherContent(VoucherType.JOURNAL, DAY, (Line("@", Side.DR, 5), Line("Rent", Side.CR, 5))))
@example(content=VoucherContent(VoucherType.JOURNAL, DAY, (Line("Rent", Side.DR, 5), Line("@BR1", Side.CR, 5))))
def test_voucher_checks_refuse_exactly_as_before(chart: Chart, content: VoucherContent) -> None:
    """Same verdict, same message: the faster checks may not accept or refuse anything differently."""
    try:
        validate_voucher(content, chart)
        refusal = None
    except RuleViolation as exc:
        refusal = str(exc)
    assert refusal == refusal_as_before(content, chart)


@FAST
@given(line_names)
def test_chart_finds_a_ledger_as_group_key_does(chart: Chart, name: str) -> None:
    assert chart.ledger(name) is chart.ledgers.get(group_key(name))


# ---------------------------------------------------------------- shape rules


def test_unbalanced_voucher_is_refused_with_both_totals(chart: Chart) -> None:
    with pytest.raises(RuleViolation, match=r"debits \(5\.00\) do not equal credits \(4\.99\)"):
        validate_voucher(voucher(VoucherType.PAYMENT, {"Rent": 500}, {"Cash": 499}), chart)


def test_one_line_voucher_is_refused(chart: Chart) -> None:
    with pytest.raises(RuleViolation, match="at least two lines"):
        validate_voucher(voucher(VoucherType.JOURNAL, {"Rent": 500}, {}), chart)


def test_empty_voucher_is_refused(chart: Chart) -> None:
    with pytest.raises(RuleViolation):
        validate_voucher(voucher(VoucherType.JOURNAL, {}, {}), chart)


def test_voucher_with_only_debits_is_refused(chart: Chart) -> None:
    content = VoucherContent(VoucherType.JOURNAL, DAY, (Line("Rent", Side.DR, 5), Line("Capital", Side.DR, 5)))
    with pytest.raises(RuleViolation, match="one debit and one credit"):
        validate_voucher(content, chart)


def test_unknown_ledger_is_refused_and_named(chart: Chart) -> None:
    with pytest.raises(RuleViolation, match="unknown ledger 'Petty Cash'"):
        validate_voucher(voucher(VoucherType.PAYMENT, {"Petty Cash": 500}, {"Cash": 500}), chart)


def test_one_ledger_on_both_sides_is_refused(chart: Chart) -> None:
    content = VoucherContent(VoucherType.JOURNAL, DAY, (Line("Rent", Side.DR, 5), Line("Capital", Side.CR, 3),
                                                        Line(" RENT", Side.CR, 2)))
    with pytest.raises(RuleViolation, match="both debited and credited"):
        check_balanced(content, chart)
    two_debits = VoucherContent(VoucherType.JOURNAL, DAY, (Line("Rent", Side.DR, 2), Line("rent", Side.DR, 3),
                                                           Line("Capital", Side.CR, 5)))
    validate_voucher(two_debits, chart)


@pytest.mark.parametrize(("kind", "dr", "cr", "named"), INVALID)
def test_type_rules_are_not_part_of_the_chart_independent_check(chart: Chart, kind: VoucherType, dr: dict,
                                                                 cr: dict, named: str) -> None:
    check_balanced(voucher(kind, dr, cr), chart)


def test_ledger_names_in_lines_ignore_case_and_spacing(chart: Chart) -> None:
    validate_voucher(voucher(VoucherType.PAYMENT, {"  rent ": 500}, {"CASH": 500}), chart)
    draft = make_draft("payment", "2026-04-01", ["export   SALES=1"], ["cash=1"])
    content = resolve_names(draft, chart)
    assert [line.ledger for line in content.lines] == ["Export Sales", "Cash"]


@pytest.mark.parametrize("paise", [0, -100, MAX_PAISE + 1])
def test_line_amount_out_of_range_is_refused(chart: Chart, paise: int) -> None:
    content = VoucherContent(VoucherType.JOURNAL, DAY, (Line("Rent", Side.DR, paise), Line("Capital", Side.CR, paise)))
    with pytest.raises(RuleViolation, match="positive and within limits"):
        validate_voucher(content, chart)


def test_too_many_lines_and_too_long_narration_are_refused(chart: Chart) -> None:
    lines = tuple(Line("Rent", Side.DR, 1) for _ in range(MAX_LINES)) + (Line("Capital", Side.CR, MAX_LINES),)
    with pytest.raises(RuleViolation, match="at most"):
        validate_voucher(VoucherContent(VoucherType.JOURNAL, DAY, lines), chart)
    ok = voucher(VoucherType.JOURNAL, {"Rent": 1}, {"Capital": 1}, "n" * MAX_NARRATION)
    validate_voucher(ok, chart)
    with pytest.raises(RuleViolation, match="narration"):
        validate_voucher(voucher(VoucherType.JOURNAL, {"Rent": 1}, {"Capital": 1}, "n" * (MAX_NARRATION + 1)), chart)


# ---------------------------------------------------------------- drafts and types


@pytest.mark.parametrize(
    ("text", "kind"),
    [("payment", VoucherType.PAYMENT), ("PMT", VoucherType.PAYMENT), ("Credit Note", VoucherType.CREDIT_NOTE),
     ("credit_note", VoucherType.CREDIT_NOTE), ("dbn", VoucherType.DEBIT_NOTE), (" Sales ", VoucherType.SALES)],
)
def test_voucher_type_parse(text: str, kind: VoucherType) -> None:
    assert VoucherType.parse(text) is kind


@pytest.mark.parametrize("text", ["", "pay", "memo", "credit"])
def test_voucher_type_parse_refuses_unknown(text: str) -> None:
    with pytest.raises(InvalidInput, match="unknown voucher type"):
        VoucherType.parse(text)


def test_parse_line_splits_on_the_last_equals_sign() -> None:
    assert parse_line("A=B Traders=1,250.50", Side.DR) == Line("A=B Traders", Side.DR, 125050)
    for bad in ("Cash", "=100", "  =100", "Cash=", "Cash=abc", "Cash=-5"):
        with pytest.raises(InvalidInput):
            parse_line(bad, Side.CR)


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize("text", ["2026-04-01", "01-04-2026", "01/04/2026", "01.04.2026", " 2026-04-01 ",
                                  "1-4-2026", "2026-4-1"])
def test_parse_date_formats_are_day_first(text: str) -> None:
    assert parse_date(text) == dt.date(2026, 4, 1)


@pytest.mark.parametrize(
    "text",
    ["2026-02-30", "31-04-2026", "29/02/2025", "2026-13-01", "00-01-2026", "2026/04/01", "04-01-26",
     "01-04-1899", "01-04-3000", "0001-01-01", "", "today", "2026-04-01T00:00", "20260401", "१२-०४-२०२६",
     "01 04 2026", "2026-04-01-"],
)
def test_parse_date_refuses_bad_dates(text: str) -> None:
    with pytest.raises(InvalidInput, match="not a valid date"):
        parse_date(text)


def test_parse_date_accepts_leap_day() -> None:
    assert parse_date("29-02-2028") == dt.date(2028, 2, 29)


@FAST
@given(st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2999, 12, 31)),
       st.sampled_from(["%Y-%m-%d", "%d-%m-%Y", "%d/%m/%Y", "%d.%m.%Y"]))
def test_parse_date_round_trips(day: dt.date, fmt: str) -> None:
    assert parse_date(day.strftime(fmt)) == day


@FAST
@given(st.text(max_size=14))
def test_parse_date_only_ever_raises_invalid_input(text: str) -> None:
    try:
        day = parse_date(text)
    except InvalidInput:
        return
    assert 1900 <= day.year <= 2999


# ---------------------------------------------------------------- revision encoding

text = st.text(max_size=20)
lines = st.lists(
    st.builds(Line, text, st.sampled_from(list(Side)), st.integers(-(2**63), 2**63)), max_size=5
).map(tuple)
contents = st.builds(VoucherContent, st.sampled_from(list(VoucherType)), st.dates(), lines, text)
revisions = st.builds(
    Revision,
    id=text, number=text, office=text, content=contents, action=st.sampled_from(list(Action)),
    parents=st.lists(text, max_size=3).map(tuple), generation=st.integers(-(2**63), 2**63),
    author=text, at=text, reason=text,
)


@FAST
@given(revisions)
def test_revision_encoding_round_trips(rev: Revision) -> None:
    encoded = encode_revision(rev)
    assert decode_revision(encoded) == rev
    assert encode_revision(decode_revision(encoded)) == encoded  # canonical: one text per revision


def test_revision_encoding_is_canonical_json() -> None:
    rev = Revision("r1", "HO/PMT/00001", "HO", voucher(VoucherType.PAYMENT, {"Rent": 5}, {"Cash": 5}, "ऑफिस"),
                   Action.POST, (), 1, "node", "2026-04-01T00:00:00.000000Z")
    encoded = encode_revision(rev)
    data = json.loads(encoded)
    assert encoded == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert data["lines"] == [["Rent", "Dr", 5], ["Cash", "Cr", 5]]
    assert isinstance(data["lines"][0][2], int)


def encoded_as_before(rev: Revision) -> str:
    """The revision's text as `encode_revision` first wrote it: canonical `json.dumps` of its fields."""
    c = rev.content
    return json.dumps(
        {"v": 1, "id": rev.id, "number": rev.number, "office": rev.office, "type": c.type.value,
         "date": c.date.isoformat(), "narration": c.narration,
         "lines": [[ln.ledger, ln.side.value, ln.paise] for ln in c.lines], "action": rev.action.value,
         "parents": list(rev.parents), "gen": rev.generation, "author": rev.author, "at": rev.at,
         "reason": rev.reason},
        sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    )


#: Any code point, surrogates, controls, quotes and backslashes included.
any_text = st.text(st.characters(exclude_categories=()), max_size=20)
texts_of_any_char = st.builds(
    Revision,
    id=any_text, number=any_text, office=any_text,
    content=st.builds(VoucherContent, st.sampled_from(list(VoucherType)), st.dates(),
                      st.lists(st.builds(Line, any_text, st.sampled_from(list(Side)), st.integers()),
                               min_size=1, max_size=4).map(tuple), any_text),
    action=st.sampled_from(list(Action)), parents=st.lists(any_text, max_size=3).map(tuple),
    generation=st.integers(), author=any_text, at=any_text, reason=any_text,
)
#: Values of other types than a revision's fields declare, which the encoding must still write as before.
odd = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | any_text


def with_one_odd_value(rev: Revision, where: str, value: object) -> Revision:
    """`rev` with one field (or its first parent, first line's ledger or amount) set to `value`."""
    c = rev.content
    first = c.lines[0]
    if where in ("ledger", "paise"):
        line = Line(value, first.side, first.paise) if where == "ledger" else Line(first.ledger, first.side, value)
        return replace(rev, content=replace(c, lines=(line, *c.lines[1:])))  # type: ignore[arg-type]
    if where == "narration":
        return replace(rev, content=replace(c, narration=value))  # type: ignore[arg-type]
    if where == "parents":
        return replace(rev, parents=(value, *rev.parents))  # type: ignore[arg-type]
    return replace(rev, **{where: value})


odd_revisions = st.builds(
    with_one_odd_value, texts_of_any_char,
    st.sampled_from(["id", "number", "office", "generation", "author", "at", "reason", "parents", "narration",
                     "ledger", "paise"]),
    odd,
)


@settings(max_examples=600, deadline=None)
@given(revisions | texts_of_any_char | odd_revisions)
def test_revision_encoding_is_byte_identical_to_the_first_one(rev: Revision) -> None:
    assert encode_revision(rev) == encoded_as_before(rev)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ("v", "id", "number", "office", "type", "date", "narration", "lines", "action", "parents", "gen",
          "author", "at", "reason")


def _sample_encoded() -> dict:
    rev = Revision("r1", "HO/PMT/00001", "HO", voucher(VoucherType.PAYMENT, {"Rent": 5}, {"Cash": 5}),
                   Action.AMEND, ("r0",), 2, "node", "2026-04-01T00:00:00.000000Z")
    return json.loads(encode_revision(rev))


@FAST
@given(st.sampled_from(FIELDS), json_values)
def test_decode_revision_refuses_any_field_of_the_wrong_shape(field: str, value: object) -> None:
    data = _sample_encoded()
    original = data[field]
    data[field] = value
    try:
        rev = decode_revision(json.dumps(data))
    except InvalidInput:
        return
    # accepted: then the value must have been well-formed for its field, so it survives a round trip
    if field == "date":  # any ISO 8601 calendar form names the same day
        assert rev.content.date == dt.date.fromisoformat(value)  # type: ignore[arg-type]
    else:
        assert json.loads(encode_revision(rev))[field] == value, (field, value, original)


@FAST
@given(st.sampled_from(FIELDS[1:-1]))
def test_decode_revision_refuses_a_missing_field(field: str) -> None:
    data = _sample_encoded()
    del data[field]
    with pytest.raises(InvalidInput):
        decode_revision(json.dumps(data))


@FAST
@given(st.one_of(json_values.map(json.dumps), st.text(max_size=40), json_values, st.binary(max_size=20)))
def test_decode_revision_only_ever_raises_invalid_input(value: object) -> None:
    try:
        decode_revision(value)
    except InvalidInput:
        pass


@pytest.mark.parametrize(
    "value",
    [
        "[" * 100_000,
        '{"a":' * 100_000,
        "1" * 10_000,
        "",
        "null",
        '"text"',
        "[]",
        None,
        b"{}",
        {"v": 1},
        '{"v": 1, "lines": [["Rent", "Dr", 5]], "parents": "abc"}',
    ],
)
def test_decode_revision_refuses_pathological_input(value: object) -> None:
    with pytest.raises(InvalidInput):
        decode_revision(value)


@pytest.mark.parametrize(
    ("field", "value"),
    [("parents", "r0"), ("parents", {"r0": 1}), ("lines", {"Rent": 5}), ("lines", "RentDr5"), ("gen", True),
     ("gen", 2.0), ("v", 2), ("type", "memo"), ("action", "delete"), ("date", "2026-02-30")],
)
def test_decode_revision_refuses_specific_malformations(field: str, value: object) -> None:
    data = _sample_encoded()
    data[field] = value
    with pytest.raises(InvalidInput):
        decode_revision(json.dumps(data))
