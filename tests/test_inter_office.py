"""Inter-office accounts: ``@CODE`` in an office's books is its account with office CODE, under
Branch / Divisions, implied by the office list (no record another office could overwrite)."""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path
from typing import Any

import pytest
from helpers import all_reports, draft, exchange, forge_entry, forged_revision, sync
from procs import here, here_json, make_org, post_here, refused, voucher_args
from pycrdt import Doc
from test_dashboard_browser import browser  # noqa: F401

from p2psync.books import interoffice as interoffice_books
from p2psync.books import schema
from p2psync.books.change import Change
from p2psync.books.model import Line, Side, encode_revision
from p2psync.books.money import to_decimal
from p2psync.errors import InvalidInput, NotFound, RuleViolation
from p2psync.node import interoffice, views
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


def io_items(node: Node, office: str | None = None) -> list[dict]:
    return [item for pair in interoffice.report(node, office, TODAY)["pairs"] for item in pair["items"]]


TODAY = dt.date(2026, 4, 30)


def test_a_counterpart_is_accepted_or_disputed_by_the_other_office_alone(trio: list[Node]) -> None:
    head, br1, br2 = trio
    float_ = post(head, "payment", {"@BR1": "25000"}, {"Bank": "25000"}, "cash float")
    paid = post(br1, "payment", {"@HO": "1200"}, {"Cash": "1200"}, "paid supplier for HO")
    sync(head, br1, br2)
    pending = interoffice.counterparts(br1, TODAY)
    assert [(p["ref"], p["status"], p["age_days"]) for p in pending] == [(float_, "pending", 24)]
    assert pending[0]["suggested"] == [{"ledger": "@HO", "side": "Cr", "amount": pending[0]["amount"]},
                                       {"ledger": "Bank", "side": "Dr", "amount": pending[0]["amount"]}]
    mirror = interoffice.accept(br1, float_.lower())
    assert mirror.office == "BR1" and mirror.content.type.value == "receipt"
    assert mirror.content.narration.endswith(f"[inter-office {float_}]")
    with pytest.raises(InvalidInput, match="already accepted"):
        interoffice.accept(br1, float_)
    with pytest.raises(InvalidInput, match="own voucher"):
        interoffice.accept(head, float_)
    with pytest.raises(InvalidInput, match="does not touch"):
        interoffice.accept(br2, float_)
    interoffice.dispute(head, paid, "not ours: no such supplier")
    with pytest.raises(InvalidInput, match="already disputed"):
        interoffice.dispute(head, paid, "again")
    sync(head, br1, br2)
    for node in trio:
        statuses = {(i["ref"], i["status"]) for i in io_items(node)}
        assert statuses == {(float_, "matched"), (paid, "disputed")}
        assert interoffice.report(node, "BR1", TODAY) == interoffice.report(head, "BR1", TODAY)
    assert [(p["ref"], p["status"]) for p in interoffice.counterparts(head, TODAY)] == [(paid, "disputed")]
    # amending the origin puts the pair out of step, at both offices
    head.amend(float_, draft("payment", DAY, {"@BR1": "26000"}, {"Bank": "26000"}, "cash float"))
    sync(head, br1, br2)
    for node in trio:
        assert {(i["ref"], i["status"], i["why"]) for i in io_items(node) if i["ref"] == float_} == {
            (float_, "mismatched", "amount")}
    assert [(p["ref"], p["status"]) for p in interoffice.counterparts(br1, TODAY)] == [(float_, "out of step")]


def test_a_forged_mirror_or_dispute_is_refused_by_receivers(trio: list[Node]) -> None:
    head, br1, br2 = trio
    float_ = post(head, "payment", {"@BR1": "100"}, {"Bank": "100"})
    sync(head, br1, br2)
    doc = schema.voucher_doc("BR1", dt.date(2026, 4, 1))
    lines = (Line("Cash", Side.DR, 100), Line("Rent", Side.CR, 100))
    rev = forged_revision("BR1", "BR1/JRN/00009", lines)
    rev = type(rev)(rev.id, rev.number, rev.office, type(rev.content)(rev.content.type, rev.content.date,
                    rev.content.lines, f"x {interoffice_books.tag(float_)}"), rev.action, rev.parents,
                    rev.generation, rev.author, rev.at)
    blob = forge_entry(br1, doc, lambda revs: revs.__setitem__(rev.id, encode_revision(rev)))
    result = head.receive([blob])
    assert result.quarantined and "does not touch @HO" in result.quarantined[0]
    # BR2 may not dispute on BR1's behalf: a dispute is its own office's record
    record = interoffice_books.Dispute(float_, "BR1", "forged", br2.identity.node_id, "2026-04-01T00:00:00Z")
    masters = Doc(client_id=schema.client_id(br2.identity.node_id))
    masters.apply_update(br2.store.read_doc(schema.MASTERS).get_update())
    updates: list[bytes] = []
    masters.observe(lambda event: updates.append(event.update))
    schema.put_dispute(masters, record)
    seq = br2.vectors()[schema.MASTERS].get(br2.identity.node_id, 0) + 1
    vector = {a: s for a, s in br2.vectors()[schema.MASTERS].items() if a != br2.identity.node_id}
    blob = br2.trust.seal(Change(schema.MASTERS, br2.identity.node_id, seq, updates[-1], {schema.MASTERS: vector}))
    result = head.receive([blob])
    assert result.quarantined and "may not" in result.quarantined[0], result.quarantined


def test_generated_traffic_between_three_offices_reconciles_alike_everywhere(trio: list[Node]) -> None:
    """A stretch of inter-office traffic: some accepted, some disputed, some left pending, some amended
    or cancelled on one side, some posted but not yet synced. After sync every office shows the same
    reconciliation, and the consolidated statements eliminate exactly the matched pairs."""
    rng = random.Random(20260406)
    nodes = dict(zip(("HO", "BR1", "BR2"), trio, strict=True))
    expected: dict[str, tuple[str, str, int]] = {}  # origin number -> (office, other, signed paise there)
    fate: dict[str, str] = {}
    for n in range(24):
        office, other = rng.sample(sorted(nodes), 2)
        amount = rng.randrange(100, 90000)
        day = f"2026-04-{rng.randrange(1, 28):02d}"
        if rng.random() < 0.5:
            number = post(nodes[office], "payment", {f"@{other}": str(amount)}, {"Bank": str(amount)}, f"sent {n}", day)
            expected[number] = (office, other, amount * 100)
        else:
            number = post(nodes[office], "journal", {"Rent": str(amount)}, {f"@{other}": str(amount)}, f"paid {n}", day)
            expected[number] = (office, other, -amount * 100)
    sync(*trio)
    mirrors: dict[str, str] = {}
    for number, (office, other, paise) in sorted(expected.items()):
        roll = rng.random()
        if roll < 0.55:
            mirrors[number] = interoffice.accept(nodes[other], number).number
            fate[number] = "matched"
        elif roll < 0.75:
            interoffice.dispute(nodes[other], number, f"not ours ({number})")
            fate[number] = "disputed"
        else:
            fate[number] = "in transit"
    accepted = sorted(mirrors)
    amended, cancelled_origin, cancelled_mirror = accepted[0], accepted[1], accepted[2]
    office, other, paise = expected[amended]
    side = "dr" if paise > 0 else "cr"
    nodes[office].amend(amended, draft("payment" if paise > 0 else "journal", str(nodes[office].store.revisions(
        amended)[0].content.date), {f"@{other}" if side == "dr" else "Rent": "7"},
        {"Bank" if side == "dr" else f"@{other}": "7"}))
    fate[amended] = "mismatched"
    nodes[expected[cancelled_origin][0]].cancel(cancelled_origin, "sent twice")
    fate[cancelled_origin] = "mismatched"
    nodes[expected[cancelled_mirror][1]].cancel(mirrors[cancelled_mirror], "taken by mistake")
    fate[cancelled_mirror] = "mismatched"
    # traffic BR2 has posted but not yet sent anywhere: in transit at BR2 only
    unsent = post(nodes["BR2"], "payment", {"@HO": "500"}, {"Bank": "500"}, "not yet synced", "2026-04-29")
    assert unsent not in {i["ref"] for i in io_items(nodes["HO"])}
    assert ("in transit", 1) in {(i["status"], i["age_days"]) for i in io_items(nodes["BR2"]) if i["ref"] == unsent}
    expected[unsent], fate[unsent] = ("BR2", "HO", 50000), "in transit"
    sync(*trio)

    reports_ = [interoffice.report(node, None, TODAY) for node in trio]
    assert reports_[0] == reports_[1] == reports_[2]
    got = {i["ref"]: i["status"] for i in io_items(nodes["HO"])}
    assert got == fate
    # the two balances side by side
    for pair in reports_[0]["pairs"]:
        first, second = pair["offices"]
        for office, other in ((first, second), (second, first)):
            tb = node_report(nodes["HO"], "trial-balance", office)
            row = next((r for r in tb["rows"] if r["ledger"] == f"@{other}"), None)
            shown = (row["debit"] - row["credit"]) if row else 0
            assert pair["balances"][office] == shown

    # consolidation: exactly the matched pairs go; the rest is one explicit line
    live_mirror = {n: m for n, m in mirrors.items() if fate[n] == "matched"}
    eliminated = sum(abs(expected[n][2]) for n in live_mirror)
    left: dict[tuple[str, str], int] = {}
    for number, (office, other, paise) in expected.items():
        if number == amended:
            paise = 700 if paise > 0 else -700
        if fate[number] != "matched" and number != cancelled_origin:
            left[(office, other)] = left.get((office, other), 0) + paise
        if number in mirrors and number not in live_mirror and number != cancelled_mirror:
            back = -expected[number][2]
            left[(other, office)] = left.get((other, office), 0) + back
    debit = sum(v for v in left.values() if v > 0)
    credit = -sum(v for v in left.values() if v < 0)
    for node in trio:
        tb = node_report(node, "trial-balance")
        assert not [r for r in tb["rows"] if r["ledger"].startswith("@")]
        assert tb["total"]["debit"] == tb["total"]["credit"]
        summary = tb["inter_office"]
        assert (summary["eliminated"], summary["unreconciled_debit"], summary["unreconciled_credit"]) == (
            to_decimal(eliminated), to_decimal(debit), to_decimal(credit))
        line = next(r for r in tb["rows"] if r["ledger"] == interoffice.UNRECONCILED)
        assert line["debit"] - line["credit"] == to_decimal(debit - credit)
        sheet = node_report(node, "balance-sheet")
        assert sheet["total_assets"] == sheet["total_liabilities"] and sheet["inter_office"] == summary
    assert all_reports(trio[0]) == all_reports(trio[1]) == all_reports(trio[2])


# ---------------------------------------------------------------- the command line and the dashboard


def test_the_command_line_lists_accepts_disputes_and_reconciles(tmp_path: Path) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    sent = post_here(ho, "payment", DAY, "@BR1", "Cash", "25,000", "cash float")
    paid = post_here(br1, "payment", DAY, "@HO", "Cash", "1200", "paid supplier for HO")
    assert "Contra" in refused(ho, *voucher_args("contra", DAY, "@BR1", "Cash", "1"))
    exchange(ho, br1)
    listed = here_json(br1, "inter-office", "list")
    assert [(i["ref"], i["status"], i["amount"]) for i in listed] == [(sent, "pending", "25000.00")]
    assert sent in here(br1, "inter-office", "list")
    mirror = here_json(br1, "inter-office", "accept", sent, "--dr", "Cash")
    assert (mirror["type"], mirror["narration"]) == ("receipt", f"cash float [inter-office {sent}]")
    assert "already accepted" in refused(br1, "inter-office", "accept", sent)
    assert "unknown voucher" in refused(ho, "inter-office", "dispute", "BR1/PMT/00099", "--reason", "x")
    here(ho, "inter-office", "dispute", paid, "--reason", "no such supplier")
    exchange(ho, br1)
    reports_ = [here_json(home, "report", "inter-office") for home in (ho, br1)]
    assert reports_[0] == reports_[1]
    (pair,) = reports_[0]["pairs"]
    assert pair["offices"] == ["BR1", "HO"] and pair["balances"] == {"BR1": "-23800.00", "HO": "25000.00"}
    assert {(i["ref"], i["status"]) for i in pair["items"]} == {(sent, "matched"), (paid, "disputed")}
    text = here(ho, "report", "inter-office", "--office", "BR1")
    assert "disputed" in text and "no such supplier" in text
    assert "unknown office" in refused(ho, "report", "inter-office", "--office", "BR7")
    tb = here_json(ho, "report", "trial-balance")
    assert tb["inter_office"] == {"eliminated": "25000.00", "unreconciled_debit": "1200.00",
                                  "unreconciled_credit": "0.00"}
    assert [r["ledger"] for r in tb["rows"] if "nter-office" in r["ledger"] or r["ledger"].startswith("@")] == [
        interoffice.UNRECONCILED]


@pytest.mark.slow
def test_the_dashboard_shows_counterparts_and_reconciliation(tmp_path: Path, fleet: Any, browser: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect
    from test_dashboard_browser import open_page, screen

    ho, br1 = make_org(tmp_path, ("BR1",))
    sent = post_here(ho, "payment", DAY, "@BR1", "Cash", "500", "float")
    exchange(ho, br1)
    node = fleet.start(br1, dashboard=True)
    page = open_page(browser, node.dashboard_url)
    screen(page, "interoffice")
    row = page.locator(f"#io-counterparts tr[data-ref='{sent}']")
    expect(row).to_contain_text("pending")
    row.locator("button.accept").click()
    expect(page.locator(".notice")).to_contain_text(f"Accepted {sent} as BR1/RCT/00001")
    expect(page.locator(f".io-pair tr[data-ref='{sent}'][data-status='matched']")).to_have_count(1)
    assert not page.errors
