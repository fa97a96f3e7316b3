"""Inter-office accounts: ``@CODE`` in an office's books is its account with office CODE, under
Branch / Divisions, implied by the office list (no record another office could overwrite)."""

from __future__ import annotations

import datetime as dt

import pytest
from helpers import all_reports, draft, forge_entry, forged_revision, sync

from p2psync.books import schema
from p2psync.books.model import Line, Side, encode_revision
from p2psync.errors import InvalidInput, NotFound, RuleViolation
from p2psync.node import views
from p2psync.node.office import Node

DAY = "2026-04-06"


def post(node: Node, kind: str, dr: dict[str, str], cr: dict[str, str], narration: str = "", day: str = DAY) -> str:
    return node.post(draft(kind, day, dr, cr, narration)).number


def tb_row(node: Node, ledger: str, office: str | None) -> dict | None:
    report = node_report(node, "trial-balance", office)
    return next((row for row in report["rows"] if row["ledger"] == ledger), None)


def node_report(node: Node, kind: str, office: str | None = None) -> dict:
    return views.report(node, kind, office=office)


def test_an_inter_office_account_posts_and_is_checked_at_every_receiver(trio: list[Node]) -> None:
    head, br1, br2 = trio
    number = post(head, "payment", {"@br1": "25000"}, {"Bank": "25000"}, "cash float")
    assert number.startswith("HO/PMT/")
    post(br2, "journal", {"@BR1": "700"}, {"Freight": "700"})  # BR2's own account with BR1
    sync(head, br1, br2)
    for node in trio:
        row = tb_row(node, "@BR1", "HO")
        assert row is not None and row["group"] == "Branch / Divisions" and str(row["debit"]) == "25000.00"
        assert str(tb_row(node, "@BR1", "BR2")["debit"]) == "700.00"
    assert all_reports(head) == all_reports(br1) == all_reports(br2)
    # an office has no account with itself, with an unknown office, nor is @ a cash ledger
    with pytest.raises(RuleViolation, match="no inter-office account with itself"):
        post(head, "journal", {"@HO": "1"}, {"Rent": "1"})
    with pytest.raises(RuleViolation, match="unknown ledger"):
        post(head, "journal", {"@BR9": "1"}, {"Rent": "1"})
    with pytest.raises(RuleViolation, match="Contra"):
        post(head, "contra", {"@BR1": "1"}, {"Cash": "1"})
    with pytest.raises(InvalidInput, match="inter-office"):
        head.set_opening("@BR1", "100")
    with pytest.raises((InvalidInput, NotFound, RuleViolation)):
        head.add_ledger("@BR2", "Cash-in-Hand")
    assert not any(led["name"].startswith("@") for led in views.ledgers(head))


def test_receivers_refuse_a_forged_inter_office_line(trio: list[Node]) -> None:
    head, br1, _br2 = trio
    doc = schema.voucher_doc("BR1", dt.date(2026, 4, 1))
    for lines, reason in (
        ((Line("@BR1", Side.DR, 100), Line("Cash", Side.CR, 100)), "with itself"),
        ((Line("@br1x", Side.DR, 100), Line("Cash", Side.CR, 100)), "unknown ledger"),
        ((Line("@ho", Side.DR, 100), Line("Rent", Side.CR, 100)), "must be written '@HO'"),
    ):
        rev = forged_revision("BR1", f"BR1/JRN/0000{len(reason)}", lines)
        blob = forge_entry(br1, doc, lambda revs, rev=rev: revs.__setitem__(rev.id, encode_revision(rev)))
        result = head.receive([blob])
        assert result.quarantined and reason in result.quarantined[0], result.quarantined
