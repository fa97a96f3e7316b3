"""The report tables: a voucher's revisions read from the documents its row names, and the tables of
a home an older p2psync made rebuilt when it is opened, the entry log untouched."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
from helpers import (
    all_reports,
    conflict_rows,
    doc_contents,
    draft,
    entries,
    forge_entry,
    open_trio,
    sync,
    voucher_rows,
)

from p2psync.books import schema
from p2psync.books.model import Action, encode_revision
from p2psync.canonical import utc_now
from p2psync.node import views
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.store.db import REPORTS_VERSION, REPORTS_VERSION_KEY, get_setting
from p2psync.store.materialize import read_refs, refs_text

#: The report tables that changed in version 2, as version 1 created them.
VERSION_1_TABLES = """
CREATE TABLE revisionrow (
    id VARCHAR NOT NULL, number VARCHAR NOT NULL, doc VARCHAR NOT NULL, body VARCHAR NOT NULL, PRIMARY KEY (id));
CREATE INDEX ix_revisionrow_number ON revisionrow (number);
CREATE TABLE voucherrow (
    number VARCHAR NOT NULL, doc VARCHAR NOT NULL, office VARCHAR NOT NULL, type VARCHAR NOT NULL,
    date VARCHAR NOT NULL, narration VARCHAR NOT NULL, amount INTEGER NOT NULL, cancelled BOOLEAN NOT NULL,
    reason VARCHAR NOT NULL, current VARCHAR NOT NULL, revisions INTEGER NOT NULL, conflicts INTEGER NOT NULL,
    series INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (number));
CREATE INDEX ix_voucher_office_date ON voucherrow (office, date);
CREATE INDEX ix_voucher_series ON voucherrow (office, type, series, seq);
DROP INDEX ix_line_office_date_number;
CREATE INDEX ix_line_office_date ON linerow (office, date);
CREATE INDEX ix_line_number ON linerow (number);
"""
VERSION_1_COLUMNS = ("number, doc, office, type, date, narration, amount, cancelled, reason, current, revisions, "
                     "conflicts, series, seq")


def observable(node: Node) -> dict[str, Any]:
    """What the reports, `voucher list`, `voucher show` and `conflicts` show, and the voucher rows."""
    listed = views.vouchers(node)
    return {
        "reports": all_reports(node),
        "list": listed,
        "show": {v["number"]: views.voucher(node, v["number"]) for v in listed},
        "conflicts": views.conflicts(node),
        "rows": voucher_rows(node),
    }


def eventful_books(head: Node, branch: Node, other: Node) -> str:
    """Posts, an amendment, a cancellation and a conflict between a concurrent cancellation and
    amendment; the number of the voucher in conflict."""
    for day in range(1, 8):
        branch.post(draft("payment", f"2026-04-{day:02d}", {"Rent": f"{day}0"}, {"Cash": f"{day}0"}))
        head.post(draft("receipt", f"2026-05-{day:02d}", {"Bank": f"{day}5"}, {"Debtors": f"{day}5"}))
    sync(head, branch, other)
    head.amend("HO/RCT/00002", draft("receipt", "2026-05-03", {"Cash": "25"}, {"Debtors": "25"}, "corrected"))
    head.cancel("HO/RCT/00003", "duplicate")
    head.cancel("BR1/PMT/00001", "not paid")
    branch.amend("BR1/PMT/00001", draft("payment", "2026-04-01", {"Rent": "12"}, {"Bank": "12"}))
    sync(head, branch, other)
    return "BR1/PMT/00001"


def test_refs_round_trip_any_id() -> None:
    refs = [("vouchers/HO/2026-04", "a1b2"), ("local/BR-1/2025-12", "odd id: with 12:3 and \n"), ("masters", "")]
    assert read_refs(refs_text(refs)) == refs
    assert read_refs("") == []


def test_a_voucher_shows_every_revision_and_conflict_from_its_documents(trio_template: Path, tmp_path: Path) -> None:
    head, branch, other = open_trio(trio_template, tmp_path)
    try:
        number = eventful_books(head, branch, other)
        shown = views.voucher(head, number)
        assert len(shown["history"]) == 3 and len(shown["conflicts"]) == 1
        assert {c[1] for c in conflict_rows(head)} == {number}
        assert {r.id for r in head.store.revisions("HO/RCT/00002")} == {
            r["revision"] for r in views.voucher(head, "HO/RCT/00002")["history"]}
        assert head.store.revisions("HO/RCT/09999") == []
        for node in (branch, other):
            assert observable(node)["show"] == observable(head)["show"]
    finally:
        for node in (head, branch, other):
            node.close()


def test_an_amendment_filed_in_another_document_is_refused(trio_template: Path, tmp_path: Path) -> None:
    """A revision replaces only revisions its own document holds: an amendment a member files in another
    month's document names a parent that document lacks, so it is refused (its entry need not depend on
    the other document, so a replica could not tell whether it held the parent yet), and nothing changes."""
    head, branch, other = open_trio(trio_template, tmp_path)
    try:
        post = branch.post(draft("payment", "2026-04-05", {"Rent": "40"}, {"Cash": "40"}))
        sync(head, branch)
        moved = msgspec.structs.replace(post, id="moved", action=Action.AMEND, parents=(post.id,), generation=2,
                                        content=msgspec.structs.replace(post.content, date=dt.date(2026, 5, 9)),
                                        at=utc_now())
        elsewhere = "vouchers/BR1/2026-05"
        before = observable(head)
        forged = forge_entry(branch, elsewhere, lambda m: m.__setitem__(moved.id, encode_revision(moved)))
        result = head.receive([forged])
        assert result.applied == 0 and "not a revision of it in this document" in result.quarantined[0]
        assert observable(head) == before
        later = head.amend(post.number, draft("payment", "2026-05-10", {"Rent": "41"}, {"Cash": "41"}))
        assert later.parents == (post.id,)
        head.store.rebuild()
        assert [r["revision"] for r in views.voucher(head, post.number)["history"]][-1] == later.id
    finally:
        for node in (head, branch, other):
            node.close()


def test_report_tables_of_an_older_version_are_rebuilt_on_open(trio_template: Path, tmp_path: Path) -> None:
    head, branch, other = open_trio(trio_template, tmp_path)
    try:
        eventful_books(head, branch, other)
        home = head.home
        head.store.rebuild()
        expected = observable(head)
        log, documents = entries(head), doc_contents(head)
    finally:
        for node in (head, branch, other):
            node.close()
    _as_version_1(home / DB_FILE)
    node = Node.open(home)
    try:
        assert observable(node) == expected
        assert entries(node) == log and doc_contents(node) == documents
        with node.db.read() as session:
            assert get_setting(session, REPORTS_VERSION_KEY) == REPORTS_VERSION
    finally:
        node.close()
    with sqlite3.connect(home / DB_FILE) as conn:
        names = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    assert not names & {"revisionrow", "ix_revisionrow_number", "ix_line_number", "ix_line_office_date"}
    assert {"voucherrow", "linerow", "ix_line_office_date_number"} <= names


def test_report_tables_of_version_5_gain_the_month_totals_of_their_lines(trio_template: Path,
                                                                          tmp_path: Path) -> None:
    head, branch, other = open_trio(trio_template, tmp_path)
    try:
        eventful_books(head, branch, other)
        home = head.home
        expected = observable(head)
        months = month_totals(head.home / DB_FILE)
    finally:
        for node in (head, branch, other):
            node.close()
    with sqlite3.connect(home / DB_FILE) as conn:  # version 5 had no month totals
        conn.execute("DROP TABLE ledgermonthrow")
        conn.execute("UPDATE setting SET value = '5' WHERE key = ?", (REPORTS_VERSION_KEY,))
    conn.close()
    node = Node.open(home)
    try:
        assert observable(node) == expected
        with node.db.read() as session:
            assert get_setting(session, REPORTS_VERSION_KEY) == REPORTS_VERSION
    finally:
        node.close()
    assert month_totals(home / DB_FILE) == months and months


def month_totals(path: Path) -> list[tuple[Any, ...]]:
    """The month totals, each checked against the lines it sums."""
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT ledger_key, month, office, debit, credit FROM ledgermonthrow "
                            "WHERE debit OR credit ORDER BY 1, 2, 3").fetchall()
        lines = conn.execute("SELECT ledger_key, substr(date, 1, 7), office, sum(max(paise, 0)), "
                             "sum(max(-paise, 0)) FROM linerow GROUP BY 1, 2, 3 ORDER BY 1, 2, 3").fetchall()
    conn.close()
    assert rows == lines
    return rows


def _as_version_1(path: Path) -> None:
    """The report tables as version 1 left them: `revisionrow` holding each revision's JSON, voucher
    rows without `revision_refs`, no version setting; and a line row out of date, which only a
    rebuild corrects."""
    conn = sqlite3.connect(path)
    try:
        vouchers = conn.execute(f"SELECT {VERSION_1_COLUMNS}, revision_refs FROM voucherrow").fetchall()
        conn.execute("DROP TABLE voucherrow")
        conn.executescript(VERSION_1_TABLES)
        conn.executemany(f"INSERT INTO voucherrow ({VERSION_1_COLUMNS}) VALUES ({', '.join('?' * 14)})",
                         [row[:-1] for row in vouchers])
        bodies = []
        for row in vouchers:
            for doc_name, rev_id in read_refs(row[-1]):
                value = _document_value(conn, doc_name, rev_id)
                bodies.append((rev_id, row[0], doc_name, value))
        conn.executemany("INSERT INTO revisionrow (id, number, doc, body) VALUES (?, ?, ?, ?)", bodies)
        conn.execute("UPDATE linerow SET paise = paise * 2 WHERE id = (SELECT min(id) FROM linerow)")
        conn.execute("DELETE FROM setting WHERE key = ?", (REPORTS_VERSION_KEY,))
        conn.commit()
    finally:
        conn.close()


def _document_value(conn: sqlite3.Connection, doc_name: str, rev_id: str) -> str:
    """A revision's JSON as its document holds it, rebuilt from the logged updates."""
    doc = schema.new_doc(doc_name)
    for (update,) in conn.execute('SELECT "update" FROM entry WHERE doc = ? ORDER BY id', (doc_name,)):
        doc.apply_update(update)
    value: str = schema.root(doc, schema.REVISIONS)[rev_id]
    return value

