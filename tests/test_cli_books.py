"""The books' first-week slips, through the command line as people type it: a year typo, a voucher
that will never leave its branch, an unknown office or a reversed period, cash below zero, a conflict
against a cancellation, and the balance sheet by group with the loss on its proper side."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest
from helpers import exchange
from procs import cli, here, here_json, make_org, refused, voucher_args

from p2psync.books.posting import financial_year

#: A date inside the current financial year, whatever day the tests run.
DAY = financial_year(dt.date.today())[0] + dt.timedelta(days=4)


@pytest.fixture(scope="module")
def org_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("org")
    make_org(base, ("BR1",))
    return base


@pytest.fixture
def org(org_template: Path, tmp_path: Path) -> list[Path]:
    """Fresh copies of a head office and branch BR1 (closed homes: a plain copy is consistent)."""
    shutil.copytree(org_template, tmp_path / "org")
    return [tmp_path / "org" / code for code in ("HO", "BR1")]


def post(home: Path, kind: str, day: dt.date, dr: str, cr: str, amount: str, narration: str = "") -> dict:
    return json.loads(here(home, *voucher_args(kind, day.isoformat(), dr, cr, amount, narration)))


# ---------------------------------------------------------------- 1. the dates an office accepts


def test_a_year_typo_is_refused_where_the_voucher_is_entered(org: list[Path], tmp_path: Path) -> None:
    ho, br1 = org
    typo = DAY.replace(year=DAY.year + 100)
    line = refused(ho, *voucher_args("payment", typo.isoformat(), "Rent", "Cash", "100"))
    assert f"date {typo} is after {financial_year(DAY)[1]}, the end of the current financial year" in line
    line = refused(ho, *voucher_args("payment", "1900-04-20", "Rent", "Cash", "100"))
    assert "date 1900-04-20 is before" in line and "--books-begin" in line
    sheet = tmp_path / "typo.csv"
    sheet.write_text(f"voucher,type,date,ledger,dr,cr\n1,payment,{typo},Rent,100,\n1,payment,{typo},Cash,,100\n")
    assert "rows 2-3 (voucher 1): date" in refused(ho, "voucher", "import", str(sheet))
    assert here_json(ho, "voucher", "list") == []
    # the office sets its own window: books begin, and how far ahead
    here(ho, "settings", "--books-begin", DAY.isoformat(), "--post-ahead", "0")
    settings = here_json(ho, "settings")
    assert (settings["books_begin"], settings["post_ahead"]) == (DAY.isoformat(), "0")
    assert "is before" in refused(ho, *voucher_args("payment", (DAY - dt.timedelta(days=1)).isoformat(),
                                                   "Rent", "Cash", "1"))
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    assert "0 days after today" in refused(ho, *voucher_args("payment", tomorrow.isoformat(), "Rent", "Bank", "1"))
    assert "post-ahead 'soon' must be" in refused(ho, "settings", "--post-ahead", "soon")
    # a receiver never applies another office's window: BR1's voucher before HO's books-begin arrives
    earlier = post(br1, "payment", DAY - dt.timedelta(days=2), "Rent", "Bank", "10")
    exchange(ho, br1)
    assert earlier["number"] in {v["number"] for v in here_json(ho, "voucher", "list")}
    assert here_json(ho, "status")["quarantined"] == []


def test_without_a_books_begin_date_eight_financial_years_back_are_accepted(org: list[Path]) -> None:
    """The default window, which the fixtures' own books-begin date otherwise hides."""
    ho, _br1 = org
    here(ho, "settings", "--books-begin", "none")
    earliest = financial_year(dt.date.today())[0].replace(year=financial_year(dt.date.today())[0].year - 8)
    line = refused(ho, *voucher_args("payment", (earliest - dt.timedelta(days=1)).isoformat(), "Rent", "Cash", "1"))
    assert f"is before {earliest}, the start of the financial year 8 years back" in line
    assert post(ho, "payment", earliest, "Rent", "Cash", "1")["date"] == earliest.isoformat()


# ---------------------------------------------------------------- 2. vouchers that never leave a branch


def test_a_voucher_before_the_sync_after_date_says_it_stays_in_the_branch(org: list[Path]) -> None:
    ho, br1 = org
    here(ho, "settings", "--sync-after", (DAY + dt.timedelta(days=10)).isoformat())
    exchange(ho, br1)
    shown = here(br1, "voucher", "post", "--type", "payment", "--date", DAY.isoformat(), "--dr", "Rent=50",
                 "--cr", "Bank=50")
    assert "never sent to other offices" in shown
    data = post(br1, "payment", DAY, "Rent", "Bank", "60")
    assert data["local_only"] is True and "before the sync-after date" in data["held_back"]
    shared = post(br1, "payment", DAY + dt.timedelta(days=10), "Rent", "Bank", "70")
    assert shared["local_only"] is False and shared["held_back"] is None
    assert here_json(br1, "report", "trial-balance")["local_only"] == 2
    assert here_json(br1, "report", "day-book", "--office", "BR1")["local_only"] == 2
    assert "2 vouchers in this report are dated before the sync-after date" in here(br1, "report", "day-book")
    assert here_json(br1, "status")["local_only"] == 2
    assert "2 vouchers are dated before the sync-after date" in here(br1, "status")
    exchange(ho, br1)
    assert [v["number"] for v in here_json(ho, "voucher", "list")] == [shared["number"]]


# ---------------------------------------------------------------- 3. questions with no honest answer


def test_an_unknown_office_or_a_reversed_period_is_an_error(org: list[Path]) -> None:
    ho, _br1 = org
    for args in (("report", "trial-balance", "--office", "ZZZ"), ("voucher", "list", "--office", "zzz"),
                 ("report", "balance-sheet", "--office", "ZZZ", "--json")):
        assert refused(ho, *args) == "error: unknown office ZZZ; see 'p2psync branch list'"
    assert refused(ho, "report", "day-book", "--from", "2026-05-01", "--to", "2026-04-01") == (
        "error: the period starts (2026-05-01) after it ends (2026-04-01)")
    assert "after it ends" in refused(ho, "report", "ledger", "Cash", "--from", "02-04-2026", "--to", "01-04-2026")
    assert here_json(ho, "report", "trial-balance", "--office", "br1")["scope"] == "BR1"


# ---------------------------------------------------------------- 4. cash below zero


def test_cash_in_hand_below_zero_is_warned_of_and_can_be_refused(org: list[Path]) -> None:
    ho, _br1 = org
    here(ho, "ledger", "opening", "Cash", "1,000")
    result = cli(ho, *voucher_args("payment", DAY.isoformat(), "Rent", "Cash", "5,00,00,000"))
    assert result.returncode == 0
    warning = f"Cash stands at 4,99,99,000.00 Cr at HO on {DAY}: cash in hand cannot be below zero"
    assert json.loads(result.stdout)["warnings"] == [warning]
    assert result.stderr.strip() == f"warning: {warning}"
    bank = post(ho, "payment", DAY, "Rent", "Bank", "1,000")  # an overdraft is normal for a bank
    assert bank["warnings"] == []
    here(ho, "settings", "--negative-cash", "refuse")
    before = here_json(ho, "voucher", "list")
    line = refused(ho, *voucher_args("payment", DAY.isoformat(), "Rent", "Cash", "1"))
    assert "Cash stands at 4,99,99,001.00 Cr" in line and "--negative-cash" in line
    assert here_json(ho, "voucher", "list") == before
    post(ho, "receipt", DAY, "Cash", "Capital", "5,00,00,000")  # bringing cash back is always allowed


# ---------------------------------------------------------------- 5. conflicts


def _amended_and_cancelled(ho: Path, br1: Path) -> str:
    """BR1's voucher amended at HO while BR1 cancels it, before they exchange: a conflict."""
    number = post(br1, "payment", DAY, "Rent", "Bank", "100", "April rent")["number"]
    exchange(ho, br1)
    here(ho, "voucher", "amend", number, "--date", DAY.isoformat(), "--dr", "Rent=120", "--cr", "Bank=120",
         "--narration", "HO: rent with maintenance")
    here(br1, "voucher", "cancel", number, "--reason", "entered twice")
    exchange(ho, br1)
    return number


def test_a_conflict_shows_each_version_and_settles_by_keeping_the_cancellation(org: list[Path]) -> None:
    ho, br1 = org
    number = _amended_and_cancelled(ho, br1)
    for home in (ho, br1):
        [listed] = here_json(home, "conflicts")
        assert listed["number"] == number and "cancellation always wins" in listed["why"]
        versions = {v["action"]: v for v in listed["versions"]}
        assert (versions["cancel"]["current"], versions["amend"]["current"]) == (True, False)
        assert versions["amend"]["amount"] == "120.00" and versions["amend"]["made_at_office"] == "HO"
        assert versions["amend"]["narration"] == "HO: rent with maintenance"
        assert versions["cancel"]["made_at_office"] == "BR1" and versions["cancel"]["reason"] == "entered twice"
    text = here(ho, "conflicts")
    assert number in text and "120.00" in text and "conflicts resolve" in text
    # neither amending nor cancelling again can clear it; settling can
    assert "cancelled" in refused(ho, "voucher", "amend", number, "--date", DAY.isoformat(), "--dr", "Rent=1",
                                  "--cr", "Bank=1")
    assert "no single version" in refused(ho, "conflicts", "resolve", number, "--restore", "zzzz")
    assert "Settled" in here(ho, "conflicts", "resolve", number, "--keep-cancellation")
    exchange(ho, br1)
    for home in (ho, br1):
        assert here_json(home, "conflicts") == []
        assert here_json(home, "voucher", "show", number)["current"]["action"] == "cancel"
        assert here_json(home, "status")["quarantined"] == []
    assert "no conflict" in refused(ho, "conflicts", "resolve", number, "--keep-cancellation")


def test_restoring_a_version_posts_it_again_and_settles_everywhere(org: list[Path]) -> None:
    ho, br1 = org
    number = _amended_and_cancelled(ho, br1)
    [listed] = here_json(br1, "conflicts")
    amended = next(v for v in listed["versions"] if v["action"] == "amend")
    assert "only office BR1" in refused(ho, "conflicts", "resolve", number, "--restore", amended["revision"][:8])
    made = here_json(br1, "conflicts", "resolve", number, "--restore", amended["revision"][:8])["made"]
    new = next(r for r in made if r["action"] == "post")
    assert new["number"] != number and f"restores {number}" in new["narration"]
    assert [ln["amount"] for ln in new["lines"]] == ["120.00", "120.00"]
    exchange(ho, br1)
    for home in (ho, br1):
        assert here_json(home, "conflicts") == []
        rows = {v["number"]: v for v in here_json(home, "voucher", "list")}
        assert rows[number]["cancelled"] and not rows[new["number"]]["cancelled"]
        assert here_json(home, "report", "ledger", "Rent")["closing"] == "120.00"


def test_two_cancellations_of_one_voucher_are_no_conflict(org: list[Path]) -> None:
    ho, br1 = org
    number = post(br1, "payment", DAY, "Rent", "Bank", "100")["number"]
    exchange(ho, br1)
    here(ho, "voucher", "cancel", number, "--reason", "duplicate (HO)")
    here(br1, "voucher", "cancel", number, "--reason", "duplicate (BR1)")
    exchange(ho, br1)
    for home in (ho, br1):
        assert here_json(home, "conflicts") == []
        assert here_json(home, "voucher", "list")[0]["cancelled"]


def test_two_amendments_settle_by_restoring_either(org: list[Path]) -> None:
    ho, br1 = org
    number = post(br1, "payment", DAY, "Rent", "Bank", "100")["number"]
    exchange(ho, br1)
    here(ho, "voucher", "amend", number, "--date", DAY.isoformat(), "--dr", "Rent=110", "--cr", "Bank=110")
    here(br1, "voucher", "amend", number, "--date", DAY.isoformat(), "--dr", "Rent=90", "--cr", "Bank=90")
    exchange(ho, br1)
    [listed] = here_json(ho, "conflicts")
    lost = next(v for v in listed["versions"] if not v["current"])
    here(ho, "conflicts", "resolve", number, "--restore", lost["revision"])
    exchange(ho, br1)
    for home in (ho, br1):
        assert here_json(home, "conflicts") == []
        assert here_json(home, "voucher", "list")[0]["amount"] == lost["amount"]


# ---------------------------------------------------------------- 6. the balance sheet


def test_balance_sheet_by_group_with_a_loss_on_the_assets_side(org: list[Path]) -> None:
    ho, _br1 = org
    here(ho, "group", "add", "Petty Cash Boxes", "--under", "Cash-in-Hand")
    here(ho, "ledger", "add", "Front Desk", "--group", "Petty Cash Boxes", "--opening", "500")
    here(ho, "ledger", "opening", "Capital", "10,500")
    here(ho, "ledger", "opening", "Bank", "10,000")
    post(ho, "payment", DAY, "Rent", "Bank", "3,000")
    sheet = here_json(ho, "report", "balance-sheet")
    assert {i["group"]: i["amount"] for i in sheet["liabilities"]} == {"Capital Account": "10500.00"}
    assert {i["group"]: i["amount"] for i in sheet["assets"]} == {"Current Assets": "7500.00",
                                                                  "Profit & Loss A/c": "3000.00"}
    assert sheet["total_assets"] == sheet["total_liabilities"] == "10500.00"
    detail = here_json(ho, "report", "balance-sheet", "--detail")
    [current] = [i for i in detail["assets"] if i["group"] == "Current Assets"]
    groups = {g["group"]: g for g in current["groups"]}
    assert groups["Bank Accounts"]["ledgers"] == [{"ledger": "Bank", "amount": "7000.00"}]
    [boxes] = groups["Cash-in-Hand"]["groups"]
    assert (boxes["group"], boxes["amount"], boxes["ledgers"]) == (
        "Petty Cash Boxes", "500.00", [{"ledger": "Front Desk", "amount": "500.00"}])
    text = here(ho, "report", "balance-sheet", "--detail")
    assert "Front Desk" in text and "Petty Cash Boxes" in text and "-3,000" not in text
    post(ho, "receipt", DAY, "Bank", "Sales", "5,000")  # now a profit of 2,000
    sheet = here_json(ho, "report", "balance-sheet")
    assert {i["group"]: i["amount"] for i in sheet["liabilities"]}["Profit & Loss A/c"] == "2000.00"
    assert "Profit & Loss A/c" not in {i["group"] for i in sheet["assets"]}
