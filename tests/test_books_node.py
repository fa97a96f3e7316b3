"""The books through `Node`: masters, openings, numbering, amendments, cancellations, imports,
refusals that change nothing, and the reports, per office and consolidated."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import LEDGERS, OFFICES, all_reports, day_book, draft, open_trio, state, statement, sync
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.books import reports
from p2psync.books.drafts import Draft
from p2psync.books.importer import ImportedDraft, parse_csv, parse_json, read_file
from p2psync.books.money import parse_amount, to_decimal
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.store.tables import VoucherRow


def balances(node: Node, office: str | None = None) -> dict[str, reports.LedgerBalance]:
    with node.db.read() as session:
        return {b.name: b for b in queries.balances(session, office)}


def voucher_row(node: Node, number: str) -> VoucherRow:
    with node.db.read() as session:
        row = queries.voucher(session, number)
        assert row is not None, number
        return row


# ---------------------------------------------------------------- masters


def test_ledger_names_are_unique_ignoring_case_and_spacing(head: Node, branch: Node) -> None:
    before = state(head)
    for name in ("cash", "CASH", "  Cash ", "cAsH"):
        with pytest.raises(InvalidInput, match="already exists"):
            head.add_ledger(name, "Indirect Expenses")
    assert state(head) == before
    head.add_ledger("Petty  Cash", "Cash-in-Hand")
    with pytest.raises(InvalidInput, match="already exists as 'Petty Cash'"):
        head.add_ledger("petty cash", "Cash-in-Hand")
    sync(head, branch)
    branch_before = state(branch)
    with pytest.raises(InvalidInput, match="already exists"):
        branch.add_ledger("PETTY CASH", "Cash-in-Hand")
    assert state(branch) == branch_before


def test_ledger_needs_a_known_group_and_a_clean_name(head: Node) -> None:
    before = state(head)
    with pytest.raises(NotFound):
        head.add_ledger("Stationery", "Office Expenses")
    for bad in ("", "   ", "a@b", "x" * 121, "tab\x01name"):
        with pytest.raises(InvalidInput):
            head.add_ledger(bad, "Indirect Expenses")
    assert state(head) == before


def test_user_groups_nest_and_take_their_nature(head: Node) -> None:
    head.add_group("Office Expenses", "Indirect Expenses")
    head.add_group("Stationery & Printing", "office expenses")
    head.add_ledger("Paper", "Stationery & Printing", opening="100")
    head.post(draft("payment", "2026-04-02", {"Paper": "50"}, {"Cash": "50"}))
    paper = balances(head, "HO")["Paper"]
    assert (paper.nature, paper.primary, paper.direct) == ("expense", "Indirect Expenses", False)
    assert paper.opening == 10000  # an expense's opening sits on the debit side by default
    assert paper.closing == 15000
    before = state(head)
    with pytest.raises(InvalidInput):
        head.add_group("OFFICE expenses", "Indirect Expenses")
    with pytest.raises(NotFound):
        head.add_group("Misc", "No Such Group")
    assert state(head) == before


def test_only_the_head_office_adds_offices(head: Node, branch: Node) -> None:
    before = state(branch)
    with pytest.raises(RuleViolation):
        branch.add_office("BR9", "Rogue")
    assert state(branch) == before
    with pytest.raises(InvalidInput):
        head.add_office("BR1", "Again")
    with pytest.raises(InvalidInput):
        head.add_office("bad code!", "Bad")
    head.add_office("br3", "Branch Three")
    with head.db.read() as session:
        assert [o.code for o in queries.offices(session)] == sorted([*OFFICES, "BR3"])


# ---------------------------------------------------------------- opening balances


@pytest.mark.parametrize(
    ("group", "text", "signed"),
    [
        ("Fixed Assets", "5,000", 500000),  # asset: debit by default
        ("Indirect Expenses", "5000", 500000),  # expense: debit
        ("Secured Loans", "5000", -500000),  # liability: credit
        ("Capital Account", "5000.50", -500050),  # equity: credit
        ("Indirect Incomes", "5000", -500000),  # income: credit
        ("Secured Loans", "5000 Dr", 500000),  # the side given wins
        ("Fixed Assets", "5000 cr", -500000),
    ],
)
def test_opening_side_defaults_by_group_nature(head: Node, group: str, text: str, signed: int) -> None:
    head.add_ledger("Subject", group, opening=text)
    assert balances(head, "HO")["Subject"].opening == signed
    assert statement(head, "Subject", "HO")["opening"] == to_decimal(signed)


def test_openings_are_per_office_and_consolidate(head: Node, branch: Node) -> None:
    head.set_opening("Cash", "1000")
    head.set_opening("Cash", "250 Cr", office="BR1")  # the head office may set any office's opening
    sync(head, branch)
    with pytest.raises(RuleViolation):
        branch.set_opening("Cash", "300", office="HO")
    branch.set_opening("Bank", "400")
    sync(head, branch)
    for node in (head, branch):
        assert balances(node, "HO")["Cash"].opening == 100000
        assert balances(node, "BR1")["Cash"].opening == -25000
        assert balances(node, "BR1")["Bank"].opening == 40000
        assert balances(node, "BR2")["Cash"].opening == 0
        consolidated = balances(node)
        assert consolidated["Cash"].opening == 100000 - 25000
        assert consolidated["Bank"].opening == 40000
    # overwriting an office's own opening replaces only that office's number
    head.set_opening("Cash", "1200")
    assert balances(head, "HO")["Cash"].opening == 120000
    assert balances(head, "BR1")["Cash"].opening == -25000


BAD_OPENINGS = ["abc", "5000 Xr", "-5", "1.234", "Dr 5000", "5,00", "5000 DrCr", "5000 Cr extra", "5000 Cr Dr"]


@pytest.mark.parametrize("text", BAD_OPENINGS)
def test_bad_opening_is_refused_and_changes_nothing(head: Node, text: str) -> None:
    before = state(head)
    with pytest.raises(InvalidInput):
        head.set_opening("Cash", text)
    with pytest.raises(InvalidInput):
        head.add_ledger("Vault", "Cash-in-Hand", opening=text)
    assert state(head) == before


def test_empty_opening_is_refused_but_a_ledger_may_have_none(head: Node) -> None:
    before = state(head)
    with pytest.raises(InvalidInput):
        head.set_opening("Cash", "")
    assert state(head) == before
    head.add_ledger("Vault", "Cash-in-Hand", opening="")
    assert balances(head)["Vault"].opening == 0


def test_opening_of_unknown_ledger_or_office_is_refused(head: Node) -> None:
    before = state(head)
    with pytest.raises(NotFound):
        head.set_opening("Vault", "100")
    with pytest.raises(NotFound):
        head.set_opening("Cash", "100", office="BR9")
    assert state(head) == before


# ---------------------------------------------------------------- numbering


def test_numbers_follow_each_office_and_type_series(head: Node, branch: Node) -> None:
    payment = draft("payment", "2026-04-01", {"Rent": "10"}, {"Cash": "10"})
    receipt = draft("receipt", "2026-04-01", {"Cash": "10"}, {"Debtors": "10"})
    assert head.post(payment).number == "HO/PMT/00001"
    assert head.post(payment).number == "HO/PMT/00002"
    assert head.post(receipt).number == "HO/RCT/00001"
    assert branch.post(payment).number == "BR1/PMT/00001"
    sync(head, branch)
    # another office's series never moves this office's counter
    assert head.post(payment).number == "HO/PMT/00003"
    assert branch.post(payment).number == "BR1/PMT/00002"
    batch = head.post_many([ImportedDraft(f"item {i}", d) for i, d in enumerate([payment, receipt, payment], 1)])
    assert [r.number for r in batch] == ["HO/PMT/00004", "HO/RCT/00002", "HO/PMT/00005"]
    # amendments and cancellations neither take nor free a number
    head.amend("HO/PMT/00005", payment)
    head.cancel("HO/PMT/00004", "duplicate")
    assert head.post(payment).number == "HO/PMT/00006"


def test_a_voucher_goes_into_its_office_month_document(head: Node, branch: Node) -> None:
    head.post(draft("payment", "2026-04-30", {"Rent": "10"}, {"Cash": "10"}))
    head.post(draft("payment", "2026-05-01", {"Rent": "10"}, {"Cash": "10"}))
    branch.post(draft("payment", "2026-04-15", {"Rent": "10"}, {"Cash": "10"}))
    assert {"vouchers/HO/2026-04", "vouchers/HO/2026-05"} <= set(head.vectors())
    assert "vouchers/BR1/2026-04" in branch.vectors()
    assert not any(name.startswith("vouchers/HO/") for name in branch.vectors())


# ---------------------------------------------------------------- amendment and cancellation


def test_amendment_replaces_the_whole_voucher(head: Node) -> None:
    rev = head.post(draft("payment", "2026-04-01", {"Rent": "100", "Freight": "50"}, {"Cash": "150"}, "April"))
    amended = head.amend(rev.number, draft("payment", "2026-04-03", {"Rent": "70"}, {"Bank": "70"}, "fixed"))
    assert amended.number == rev.number and amended.parents == (rev.id,) and amended.generation == 2
    row = voucher_row(head, rev.number)
    assert (row.date, row.narration, row.amount, row.revisions, row.current) == (
        "2026-04-03", "fixed", 7000, 2, amended.id)
    bal = balances(head)
    assert (bal["Rent"].debit, bal["Freight"].debit, bal["Cash"].credit, bal["Bank"].credit) == (7000, 0, 0, 7000)
    assert statement(head, "Freight")["rows"] == []
    assert statement(head, "Cash")["rows"] == []
    [entry] = day_book(head)["rows"]
    assert entry["narration"] == "fixed"
    assert [(ln["ledger"], ln["debit"], ln["credit"]) for ln in entry["lines"]] == [
        ("Rent", Decimal("70.00"), Decimal("0.00")), ("Bank", Decimal("0.00"), Decimal("70.00"))]
    # the replaced revision is kept in the document, never deleted
    assert {r.id for r in head.store.revisions(rev.number)} == {rev.id, amended.id}


def test_amendment_keeps_the_type_and_needs_a_known_number(head: Node) -> None:
    rev = head.post(draft("payment", "2026-04-01", {"Rent": "100"}, {"Cash": "100"}))
    before = state(head)
    with pytest.raises(RuleViolation, match="keeps its type"):
        head.amend(rev.number, draft("journal", "2026-04-01", {"Rent": "100"}, {"Creditors": "100"}))
    with pytest.raises(NotFound):
        head.amend("HO/PMT/00099", draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"}))
    with pytest.raises(RuleViolation):
        head.amend(rev.number, draft("payment", "2026-04-01", {"Rent": "100"}, {"Cash": "99"}))
    assert state(head) == before
    # numbers are matched ignoring case and surrounding space
    head.amend(f"  {rev.number.lower()} ", draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"}))
    assert voucher_row(head, rev.number).amount == 100


def test_cancellation_keeps_the_voucher_but_excludes_it_from_balances(head: Node) -> None:
    kept = head.post(draft("payment", "2026-04-01", {"Rent": "40"}, {"Cash": "40"}))
    gone = head.post(draft("payment", "2026-04-02", {"Rent": "100"}, {"Cash": "100"}))
    with pytest.raises(InvalidInput, match="reason"):
        head.cancel(gone.number, "   ")
    cancel = head.cancel(gone.number, "entered twice")
    assert cancel.parents == (gone.id,) and cancel.content == gone.content
    row = voucher_row(head, gone.number)
    assert row.cancelled and row.reason == "entered twice" and row.revisions == 2
    bal = balances(head)
    assert (bal["Rent"].debit, bal["Cash"].credit) == (4000, 4000)
    assert [r["number"] for r in statement(head, "Rent")["rows"]] == [kept.number]
    book = {r["number"]: r for r in day_book(head)["rows"]}
    assert book[gone.number]["cancelled"] is True and book[gone.number]["lines"] == []
    assert book[kept.number]["cancelled"] is False
    with head.db.read() as session:
        assert [v.number for v in queries.vouchers(session, include_cancelled=False)] == [kept.number]


def test_a_cancelled_voucher_cannot_be_amended_or_cancelled_again(head: Node) -> None:
    rev = head.post(draft("payment", "2026-04-01", {"Rent": "40"}, {"Cash": "40"}))
    head.cancel(rev.number, "wrong")
    before = state(head)
    with pytest.raises(RuleViolation, match="cancelled"):
        head.amend(rev.number, draft("payment", "2026-04-01", {"Rent": "41"}, {"Cash": "41"}))
    with pytest.raises(RuleViolation, match="cancelled"):
        head.cancel(rev.number, "again")
    assert state(head) == before


def test_branch_changes_only_its_own_vouchers_head_changes_any(head: Node, branch: Node) -> None:
    ho_rev = head.post(draft("payment", "2026-04-01", {"Rent": "40"}, {"Cash": "40"}))
    br_rev = branch.post(draft("payment", "2026-04-01", {"Rent": "60"}, {"Cash": "60"}))
    sync(head, branch)
    before = state(branch)
    with pytest.raises(RuleViolation, match="belongs to office HO"):
        branch.amend(ho_rev.number, draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"}))
    with pytest.raises(RuleViolation, match="belongs to office HO"):
        branch.cancel(ho_rev.number, "not mine")
    assert state(branch) == before
    amended = head.amend(br_rev.number, draft("payment", "2026-04-01", {"Rent": "65"}, {"Cash": "65"}))
    assert amended.office == "BR1" and amended.number == br_rev.number
    sync(head, branch)
    for node in (head, branch):
        assert voucher_row(node, br_rev.number).current == amended.id
        assert balances(node, "BR1")["Rent"].debit == 6500
        assert balances(node, "HO")["Rent"].debit == 4000


# ---------------------------------------------------------------- refusals change nothing

REFUSALS: dict[str, Callable[[Node, Node], object]] = {
    "unbalanced": lambda h, b: h.post(draft("payment", "2026-04-01", {"Rent": "10"}, {"Cash": "9.99"})),
    "unknown ledger": lambda h, b: h.post(draft("payment", "2026-04-01", {"Vault": "10"}, {"Cash": "10"})),
    "journal with cash": lambda h, b: h.post(draft("journal", "2026-04-01", {"Rent": "10"}, {"Cash": "10"})),
    "contra with rent": lambda h, b: h.post(draft("contra", "2026-04-01", {"Rent": "10"}, {"Cash": "10"})),
    "payment into cash": lambda h, b: h.post(draft("payment", "2026-04-01", {"Cash": "10"}, {"Rent": "10"})),
    "one bad in many": lambda h, b: h.post_many([
        ImportedDraft("item 1", draft("payment", "2026-04-01", {"Rent": "10"}, {"Cash": "10"})),
        ImportedDraft("item 2", draft("sales", "2026-04-01", {"Debtors": "10"}, {"Rent": "10"})),
    ]),
    "amend cancelled": lambda h, b: h.amend("HO/PMT/00002", draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"})),
    "amend changes type": lambda h, b: h.amend("HO/PMT/00001", draft("contra", "2026-04-01", {"Bank": "1"}, {"Cash": "1"})),
    "amend unknown number": lambda h, b: h.amend("HO/PMT/00042", draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"})),
    "amend unbalanced": lambda h, b: h.amend("HO/PMT/00001", draft("payment", "2026-04-01", {"Rent": "2"}, {"Cash": "1"})),
    "cancel cancelled": lambda h, b: h.cancel("HO/PMT/00002", "again"),
    "cancel without reason": lambda h, b: h.cancel("HO/PMT/00001", ""),
    "duplicate ledger": lambda h, b: h.add_ledger("RENT", "Indirect Expenses"),
    "ledger in unknown group": lambda h, b: h.add_ledger("Tips", "Tips Group"),
    "duplicate group": lambda h, b: h.add_group("sundry debtors", "Current Assets"),
    "bad opening": lambda h, b: h.set_opening("Cash", "ten"),
    "branch adds office": lambda h, b: b.add_office("BR7", "Rogue"),
    "branch sets HO opening": lambda h, b: b.set_opening("Cash", "10", office="HO"),
    "branch amends HO voucher": lambda h, b: b.amend("HO/PMT/00001", draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"})),
    "branch cancels HO voucher": lambda h, b: b.cancel("HO/PMT/00001", "mine now"),
    "branch amends other branch": lambda h, b: b.amend("BR2/RCT/00001", draft("receipt", "2026-04-01", {"Cash": "1"}, {"Debtors": "1"})),
}


@pytest.fixture(scope="module")
def refusal_template(trio_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three offices with a live voucher, a cancelled one and another branch's, all exchanged."""
    where = tmp_path_factory.mktemp("refusals")
    head, branch, other = open_trio(trio_template, where)
    head.post(draft("payment", "2026-04-01", {"Rent": "10"}, {"Cash": "10"}))
    head.post(draft("payment", "2026-04-02", {"Rent": "20"}, {"Cash": "20"}))
    head.cancel("HO/PMT/00002", "typo")
    other.post(draft("receipt", "2026-04-01", {"Cash": "5"}, {"Debtors": "5"}))
    sync(head, branch, other)
    for node in (head, branch, other):
        node.close()
    return where


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_every_refused_operation_changes_nothing(refusal_template: Path, tmp_path: Path, name: str) -> None:
    head, branch, other = open_trio(refusal_template, tmp_path)
    try:
        before = {"head": state(head), "branch": state(branch)}
        with pytest.raises(P2PSyncError):
            REFUSALS[name](head, branch)
        assert {"head": state(head), "branch": state(branch)} == before
        # and the node still works: the next post takes the next free number
        assert head.post(draft("payment", "2026-04-03", {"Rent": "1"}, {"Cash": "1"})).number == "HO/PMT/00003"
    finally:
        for node in (head, branch, other):
            node.close()


# ---------------------------------------------------------------- import


def _json_item(kind: str, day: str, dr: tuple[str, str], cr: tuple[str, str]) -> dict:
    return {"type": kind, "date": day, "lines": [{"ledger": dr[0], "dr": dr[1]}, {"ledger": cr[0], "cr": cr[1]}]}


def test_import_with_one_bad_item_imports_nothing_and_names_it(head: Node) -> None:
    rent = _json_item("payment", "2026-04-01", ("Rent", "100"), ("Cash", "100"))
    receipt = _json_item("receipt", "2026-04-02", ("Cash", "50"), ("Debtors", "50"))
    vault = _json_item("payment", "2026-04-03", ("Rent", "10"), ("Vault", "10"))
    journal = _json_item("journal", "2026-04-04", ("Rent", "10"), ("Creditors", "10"))
    unbalanced = _json_item("journal", "2026-04-04", ("Rent", "10"), ("Creditors", "9"))
    before = state(head)
    with pytest.raises(RuleViolation, match=r"^item 3: unknown ledger 'Vault'"):
        head.post_many(parse_json(json.dumps({"vouchers": [rent, receipt, vault, journal]})))
    assert state(head) == before
    with pytest.raises(RuleViolation, match=r"^item 4: debits \(10\.00\) do not equal credits \(9\.00\)"):
        head.post_many(parse_json(json.dumps([rent, receipt, rent, unbalanced])))
    assert state(head) == before
    posted = head.post_many(parse_json(json.dumps([rent, receipt, rent, journal])))
    assert [r.number for r in posted] == ["HO/PMT/00001", "HO/RCT/00001", "HO/PMT/00002", "HO/JRN/00001"]
    assert len(day_book(head)["rows"]) == 4


GOOD_ITEM = '{"type": "payment", "date": "2026-04-01", "lines": [{"ledger": "Rent", "dr": "1"}, {"ledger": "Cash", "cr": "1"}]}'


@pytest.mark.parametrize(
    ("item", "named"),
    [
        ('{"type": "payment", "date": "2026-04-01", "lines": [{"ledger": "Rent", "dr": "1.001"}, {"ledger": "Cash", "cr": "1"}]}',
         "item 2: line 1: amount"),
        ('{"type": "payment", "date": "2026-04-01", "lines": [{"ledger": "Rent", "dr": 1.5e3}, {"ledger": "Cash", "cr": 1500}]}',
         "item 2: line 1: amount"),
        ('{"type": "payment", "date": "2026-04-01", "lines": [{"ledger": "Rent", "dr": -5}, {"ledger": "Cash", "cr": 5}]}',
         "item 2: line 1: amount"),
        ('{"type": "payment", "date": "31-02-2026", "lines": []}', "item 2: date"),
        ('{"type": "memo", "date": "2026-04-01", "lines": []}', "item 2: unknown voucher type"),
        ('{"type": "payment", "date": "2026-04-01", "lines": [{"ledger": "Rent", "dr": "1", "cr": "1"}]}',
         "item 2: line 1: give exactly one"),
        ('{"type": "payment", "date": "2026-04-01", "lines": {"Rent": 1}}', "item 2: lines"),
        ('"not an object"', "item 2"),
        ('{"office": "BR1", "type": "payment", "date": "2026-04-01", "lines": []}', "item 2: voucher has 'office'"),
        ('{"number": "BR1/PMT/00001", "type": "payment", "date": "2026-04-01", "lines": []}',
         "item 2: voucher has 'number'"),
    ],
)
def test_import_parse_errors_name_the_item(item: str, named: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{named}"):
        parse_json(f"[{GOOD_ITEM}, {item}]")


def test_csv_import_refuses_a_column_placing_vouchers_in_another_office() -> None:
    # a branch importing a file meant for another office gets an error, not vouchers in its own books
    with pytest.raises(InvalidInput, match="CSV header has 'office'"):
        parse_csv("voucher,office,type,date,ledger,dr,cr\nA,BR1,payment,01-04-2026,Rent,100,\n"
                  "A,BR1,payment,01-04-2026,Cash,,100\n")


def test_csv_import_groups_rows_into_vouchers(head: Node) -> None:
    text = (
        "voucher,type,date,ledger,dr,cr,narration\n"
        "A,payment,01-04-2026,Rent,100,,rent\n"
        "A,payment,01-04-2026,Cash,,100,rent\n"
        "\n"
        'B,sales,02-04-2026,Debtors,"1,180.00",,bill 7\n'
        'B,,,Sales,,"1,000",\n'
        "B,,,Commission,,180,\n"
    )
    drafts = parse_csv(text)
    assert [d.where for d in drafts] == ["rows 2-3 (voucher A)", "rows 5-7 (voucher B)"]
    posted = head.post_many(drafts)
    assert [r.number for r in posted] == ["HO/PMT/00001", "HO/SAL/00001"]
    sale = voucher_row(head, "HO/SAL/00001")
    assert (sale.amount, sale.narration, sale.date) == (118000, "bill 7", "2026-04-02")
    with pytest.raises(InvalidInput, match="^row 3: date differs"):
        parse_csv("voucher,type,date,ledger,dr,cr\nA,payment,01-04-2026,Rent,1,\nA,payment,02-04-2026,Cash,,1\n")
    with pytest.raises(InvalidInput, match="^row 3: amount"):
        parse_csv("voucher,type,date,ledger,dr,cr\nA,payment,01-04-2026,Rent,1,\nA,payment,01-04-2026,Cash,,x\n")
    with pytest.raises(InvalidInput, match="header"):
        parse_csv("voucher,kind,date,ledger,dr,cr\nA,payment,01-04-2026,Rent,1,\n")


def test_csv_import_is_all_or_nothing(head: Node, tmp_path: Path) -> None:
    good = "A,payment,01-04-2026,Rent,100,,rent\nA,payment,01-04-2026,Cash,,100,rent\n"
    bad = "B,receipt,02-04-2026,Debtors,50,,\nB,receipt,02-04-2026,Sales,,50,\n"  # a Receipt must debit cash/bank
    path = tmp_path / "vouchers.csv"
    path.write_text("voucher,type,date,ledger,dr,cr,narration\n" + good + bad, encoding="utf-8")
    before = state(head)
    with pytest.raises(RuleViolation, match=r"^rows 4-5 \(voucher B\): a Receipt"):
        head.post_many(read_file(path))
    assert state(head) == before
    path.write_text("voucher,type,date,ledger,dr,cr,narration\n" + good + bad.replace("Debtors", "Cash"),
                    encoding="utf-8")
    assert [r.number for r in head.post_many(read_file(path))] == ["HO/PMT/00001", "HO/RCT/00001"]


# ---------------------------------------------------------------- reports

#: Valid voucher shapes over the standard chart: (type, debit ledgers, credit ledgers).
SHAPES = [
    ("payment", ["Rent"], ["Cash"]),
    ("payment", ["Creditors", "Freight"], ["Bank"]),
    ("receipt", ["Cash"], ["Debtors"]),
    ("receipt", ["Bank"], ["Interest", "Commission"]),
    ("contra", ["Bank"], ["Cash"]),
    ("journal", ["Furniture"], ["Loan"]),
    ("journal", ["Rent"], ["Creditors"]),
    ("sales", ["Debtors"], ["Sales"]),
    ("sales", ["Cash"], ["Sales", "Commission"]),
    ("purchase", ["Purchases", "Freight"], ["Creditors"]),
    ("credit-note", ["Sales"], ["Debtors"]),
    ("debit-note", ["Creditors"], ["Purchases"]),
]

posting_plans = st.lists(
    st.tuples(
        st.sampled_from(["HO", "BR1"]),
        st.sampled_from(range(len(SHAPES))),
        st.lists(st.integers(1, 10**8), min_size=2, max_size=2),
        st.integers(1, 60),  # day offset
        st.sampled_from(["post", "post", "post", "cancel", "amend"]),
    ),
    min_size=1,
    max_size=12,
)
openings_plan = st.dictionaries(
    st.tuples(st.sampled_from(["Cash", "Bank", "Capital", "Furniture", "Loan", "Sales"]), st.sampled_from(["HO", "BR1"])),
    st.integers(-(10**9), 10**9).filter(bool),
    max_size=6,
)


def _shape_draft(shape: int, amounts: list[int], day: dt.date) -> tuple[Draft, dict[str, int]]:
    kind, drs, crs = SHAPES[shape]
    total = amounts[0] + (amounts[1] if len(drs) > 1 else 0)
    dr = dict(zip(drs, amounts))
    cr = {crs[0]: total} if len(crs) == 1 else {crs[0]: total - total // 2, crs[1]: total // 2}
    cr = {k: v for k, v in cr.items() if v}
    signed: dict[str, int] = defaultdict(int)
    for k, v in dr.items():
        signed[k] += v
    for k, v in cr.items():
        signed[k] -= v
    def as_text(side: dict[str, int]) -> dict[str, str]:
        return {k: str(to_decimal(v)) for k, v in side.items()}

    return draft(kind, day.isoformat(), as_text(dr), as_text(cr), f"{kind} {day}"), dict(signed)


@pytest.mark.timeout(900)  # room for Hypothesis to shrink a failure (it stops after 300 s)
@settings(max_examples=10, deadline=None)
@given(plan=posting_plans, openings=openings_plan)
def test_reports_agree_with_an_independent_ledger(trio_template: Path, tmp_path_factory: pytest.TempPathFactory,
                                                  plan: list, openings: dict) -> None:
    head, branch, other = open_trio(trio_template, tmp_path_factory.mktemp("reports"))
    try:
        _check_reports(head, branch, plan, openings)
    finally:
        for node in (head, branch, other):
            node.close()


def _check_reports(head: Node, branch: Node, plan: list, openings: dict) -> None:
    nodes = {"HO": head, "BR1": branch}
    expected: dict[tuple[str, str], int] = defaultdict(int)  # (office, ledger) -> closing, debit positive
    opening: dict[tuple[str, str], int] = defaultdict(int)
    movements: dict[tuple[str, str], list[tuple[dt.date, str, int]]] = defaultdict(list)
    live: dict[str, tuple[str, dt.date, dict[str, int]]] = {}
    cancelled: set[str] = set()
    for (ledger, office), paise in openings.items():
        side = "Dr" if paise > 0 else "Cr"
        head.set_opening(ledger, f"{to_decimal(abs(paise))} {side}", office=office)
        opening[(office, ledger)] = paise
    for office, shape, amounts, offset, action in plan:
        node = nodes[office]
        day = dt.date(2026, 4, 1) + dt.timedelta(days=offset)
        new_draft, signed = _shape_draft(shape, amounts, day)
        prefix = f"{office}/{new_draft.type.prefix}/"
        ours = sorted(n for n in live if n.startswith(f"{office}/"))
        same_type = [n for n in ours if n.startswith(prefix)]
        if action == "cancel" and ours:
            node.cancel(ours[0], "test")
            del live[ours[0]]
            cancelled.add(ours[0])
        elif action == "amend" and same_type:
            node.amend(same_type[-1], new_draft)
            live[same_type[-1]] = (office, day, signed)
        else:
            live[node.post(new_draft).number] = (office, day, signed)
    for number, (office, day, signed) in live.items():
        for ledger, paise in signed.items():
            expected[(office, ledger)] += paise
            movements[(office, ledger)].append((day, number, paise))
    sync(head, branch)  # the reports are the head office's, holding both offices' books
    for scope in ("HO", "BR1", None):
        offices = [scope] if scope else ["HO", "BR1"]
        got = balances(head, scope)
        for ledger in LEDGERS:
            want_open = sum(opening[(o, ledger)] for o in offices)
            want_close = want_open + sum(expected[(o, ledger)] for o in offices)
            assert got[ledger].opening == want_open, (scope, ledger)
            assert got[ledger].closing == want_close, (scope, ledger)
        _check_report_shapes(scope, got)
        _check_statements(head, scope, offices, opening, movements)
        book = day_book(head, scope)["rows"]
        want_numbers = sorted((d, n) for n, (o, d, _) in live.items() if o in offices)
        assert [(r["date"], r["number"]) for r in book if not r["cancelled"]] == [
            (d.isoformat(), n) for d, n in want_numbers]
        assert {r["number"] for r in book if r["cancelled"]} == {n for n in cancelled if n.split("/")[0] in offices}
        for row in book:
            debit = sum(line["debit"] for line in row["lines"])
            credit = sum(line["credit"] for line in row["lines"])
            assert debit == credit
            if not row["cancelled"]:
                assert debit == row["amount"]


def _check_report_shapes(scope: str | None, got: dict[str, reports.LedgerBalance]) -> None:
    tb = reports.trial_balance(list(got.values()), scope or "consolidated")
    assert tb["total"]["debit"] == tb["total"]["credit"]
    assert sum(r["debit"] for r in tb["rows"]) == tb["total"]["debit"]
    assert sum(r["credit"] for r in tb["rows"]) == tb["total"]["credit"]
    imbalance = sum(b.opening for b in got.values())  # vouchers always balance; openings may not
    difference = [r for r in tb["rows"] if r["ledger"] == "Difference in opening balances"]
    if imbalance:
        [row] = difference
        assert row["credit"] - row["debit"] == to_decimal(imbalance)
    else:
        assert not difference
    pl = reports.profit_and_loss(list(got.values()), scope or "consolidated")
    def total(nature: str, direct: bool) -> Decimal:
        sign = -1 if nature == "income" else 1
        return sum((to_decimal(sign * b.closing) for b in got.values() if b.nature == nature and b.direct == direct),
                   Decimal("0.00"))
    assert pl["gross_profit"] == total("income", True) - total("expense", True)
    assert pl["net_profit"] == pl["gross_profit"] + total("income", False) - total("expense", False)
    bs = reports.balance_sheet(list(got.values()), scope or "consolidated")
    assert bs["total_assets"] == bs["total_liabilities"]
    liabilities = {item["group"]: item["amount"] for item in bs["liabilities"]}
    assets = {item["group"]: item["amount"] for item in bs["assets"]}
    carried = sum((assets.get(k, Decimal("0.00")) for k in ("Profit & Loss A/c", "Difference in opening balances")),
                  Decimal("0.00"))
    assert bs["total_assets"] == sum((to_decimal(b.closing) for b in got.values() if b.nature == "asset"),
                                     Decimal("0.00")) + carried
    # a profit on the liabilities side, a loss on the assets side, both positive
    assert liabilities.get("Profit & Loss A/c", Decimal("0.00")) == max(pl["net_profit"], Decimal("0.00"))
    assert assets.get("Profit & Loss A/c", Decimal("0.00")) == max(-pl["net_profit"], Decimal("0.00"))
    assert ("Difference in opening balances" in liabilities or "Difference in opening balances" in assets) == bool(
        imbalance)
    assert all(item["amount"] > 0 for item in [*bs["liabilities"], *bs["assets"]]
               if item["group"] in ("Profit & Loss A/c", "Difference in opening balances"))


def _check_statements(node: Node, scope: str | None, offices: list[str], opening: dict, movements: dict) -> None:
    for ledger in ("Cash", "Sales", "Creditors"):
        report = statement(node, ledger, scope)
        want_open = sum(opening[(o, ledger)] for o in offices)
        moves = sorted(m for o in offices for m in movements[(o, ledger)])
        assert report["opening"] == to_decimal(want_open)
        running = want_open
        assert len(report["rows"]) == len(moves)
        for row, (day, number, paise) in zip(report["rows"], moves):
            running += paise
            assert (row["date"], row["number"]) == (day.isoformat(), number)
            assert row["debit"] - row["credit"] == to_decimal(paise)
            assert row["balance"] == to_decimal(running)
        assert report["closing"] == to_decimal(running)


def test_reports_by_hand(head: Node, branch: Node) -> None:
    """A small set of books whose figures an accountant can check by hand."""
    head.set_opening("Cash", "10,000")
    head.set_opening("Capital", "10,000")
    head.set_opening("Cash", "2,000", office="BR1")
    head.set_opening("Capital", "2,000", office="BR1")
    head.post(draft("sales", "2026-04-01", {"Debtors": "5,000"}, {"Sales": "5,000"}))
    head.post(draft("purchase", "2026-04-02", {"Purchases": "3,000"}, {"Creditors": "3,000"}))
    head.post(draft("payment", "2026-04-03", {"Freight": "200"}, {"Cash": "200"}))
    head.post(draft("payment", "2026-04-04", {"Rent": "1,000"}, {"Cash": "1,000"}))
    branch.post(draft("sales", "2026-04-01", {"Cash": "800"}, {"Sales": "800"}))
    branch.post(draft("receipt", "2026-04-05", {"Cash": "50"}, {"Interest": "50"}))
    sync(head, branch)
    amounts = {name: parse_amount(text) for name, text in
               {"sales_ho": "5000", "purchases": "3000", "freight": "200", "rent": "1000", "sales_br": "800",
                "interest": "50"}.items()}
    for node in (head, branch):
        for scope, sales, expenses_direct, rent, interest in (
            ("HO", amounts["sales_ho"], amounts["purchases"] + amounts["freight"], amounts["rent"], 0),
            ("BR1", amounts["sales_br"], 0, 0, amounts["interest"]),
            (None, amounts["sales_ho"] + amounts["sales_br"], amounts["purchases"] + amounts["freight"],
             amounts["rent"], amounts["interest"]),
        ):
            got = list(balances(node, scope).values())
            pl = reports.profit_and_loss(got, scope or "consolidated")
            assert pl["gross_profit"] == to_decimal(sales - expenses_direct)
            assert pl["net_profit"] == to_decimal(sales - expenses_direct - rent + interest)
            bs = reports.balance_sheet(got, scope or "consolidated")
            assert bs["total_assets"] == bs["total_liabilities"]
            assert "Difference in opening balances" not in {i["group"] for i in bs["liabilities"] + bs["assets"]}
        cash = statement(node, "Cash")
        assert cash["opening"] == to_decimal(parse_amount("12000"))
        assert [r["balance"] for r in cash["rows"]] == [to_decimal(parse_amount(x)) for x in
                                                        ("12800", "12600", "11600", "11650")]
        assert [r["office"] for r in cash["rows"]] == ["BR1", "HO", "HO", "BR1"]
        later = statement(node, "Cash", start=dt.date(2026, 4, 4))
        assert later["opening"] == to_decimal(parse_amount("12600"))
        assert [r["number"] for r in later["rows"]] == ["HO/PMT/00002", "BR1/RCT/00001"]
        assert later["closing"] == cash["closing"]
        assert [r["number"] for r in day_book(node, "BR1")["rows"]] == ["BR1/SAL/00001", "BR1/RCT/00001"]
    assert all_reports(head) == all_reports(branch)


# ---------------------------------------------------------------- entries the links send from memory

def test_entries_are_served_from_memory_only_when_no_other_writer_came_between(head: Node) -> None:
    """A running node hands its links what it just logged without reading the log, but only when it
    wrote every entry since itself; an entry from another process on the home sends it to the log."""
    start = head.last_entry_id()
    head.post(draft("payment", "2026-04-30", {"Rent": "10"}, {"Cash": "10"}))
    head.post(draft("payment", "2026-05-01", {"Rent": "20"}, {"Cash": "20"}))
    newest = head.last_entry_id()
    assert head.store.sealed_after(start, newest) == head.entries_since(start)
    assert len(head.entries_since(start)) == 2
    assert head.store.sealed_after(newest, newest) == []  # its own commit held the log's newest entry
    assert head.store.sealed_after(newest, newest + 1) is None  # announced beyond what it wrote: the log
    assert head.store.sealed_after(start, 0) == head.entries_since(start)  # a link not yet told how far the log goes
    assert head.store.sealed_after(start - 1, newest) is None  # an entry before what it remembers

    other = Node.open(head.home)  # another process on the same home (the CLI, say)
    try:
        other.post(draft("payment", "2026-04-29", {"Rent": "30"}, {"Cash": "30"}))
    finally:
        other.close()
    head.post(draft("payment", "2026-04-28", {"Rent": "40"}, {"Cash": "40"}))
    latest = head.last_entry_id()
    assert head.store.sealed_after(newest, latest) is None  # the other process's entry is not in memory
    assert len(head.entries_since(newest)) == 2
    assert head.store.sealed_after(latest - 1, latest) == head.entries_since(latest - 1)


def test_a_receive_reports_the_vectors_it_was_asked_for_as_of_its_commit(head: Node, branch: Node) -> None:
    """The acknowledgement's vectors come from the receive's own transaction: what it applied is in
    them, documents not asked about are not, and neither are documents nothing is held of."""
    head.post(draft("payment", "2026-04-30", {"Rent": "10"}, {"Cash": "10"}))
    head.post(draft("payment", "2026-05-02", {"Rent": "20"}, {"Cash": "20"}))
    asked = ["vouchers/HO/2026-04", "vouchers/HO/2026-03"]
    result = branch.receive(head.entries(branch.vectors()), vectors_of=asked)
    assert result.applied >= 2
    assert result.vectors == branch.vectors(asked)
    assert result.vectors["vouchers/HO/2026-04"][head.identity.node_id] == 1
    assert set(result.vectors) == {"vouchers/HO/2026-04"}
    assert branch.receive([], vectors_of=()).vectors == {}
