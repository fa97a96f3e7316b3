"""Short commands start without the libraries they do not use: ``--version`` and a report import
neither the ORM nor the CRDT library nor the network and cryptography (checked in a fresh
interpreter, so that lazy imports stay lazy). A report read with `sqlite3` alone says exactly what
the same report through the open node says, and a home that needs something done first goes
through the node."""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from helpers import draft, send, setup_branch, setup_head, sync

from p2psync.errors import RuleViolation
from p2psync.node import registrar, views
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.store.tables import ConflictRow, GroupRow, LedgerRow, OfficeRow, VoucherRow

HEAVY = ("sqlalchemy", "sqlmodel", "pycrdt", "websockets", "zeroconf", "cryptography", "aiohttp")
DAY = dt.date.today().replace(day=1)


def heavy_modules_after(code: str) -> list[str]:
    """Which of `HEAVY` a fresh interpreter holds after running `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                            env={k: v for k, v in os.environ.items() if k != "P2PSYNC_HOME"})
    return json.loads(result.stdout.splitlines()[-1])


def test_the_command_line_and_version_load_no_heavy_library() -> None:
    assert heavy_modules_after("import p2psync.cli.main") == []
    assert heavy_modules_after("from p2psync.cli.main import main\nmain(['--version'])") == []


def test_a_report_loads_no_heavy_library(head: Node) -> None:
    head.post(draft("receipt", DAY.isoformat(), {"Cash": "10"}, {"Sales": "10"}))
    run = f"from p2psync.cli.main import main\nmain(['--home', {str(head.home)!r}, 'report', 'trial-balance'])"
    assert heavy_modules_after(run) == []


def test_a_report_read_alone_is_the_report_of_the_open_node(head: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    head.post(draft("receipt", DAY.isoformat(), {"Cash": "1000"}, {"Sales": "1000"}, "cash sale"))
    paid = head.post(draft("payment", (DAY + dt.timedelta(days=2)).isoformat(), {"Rent": "300"}, {"Bank": "300"}))
    head.post(draft("journal", (DAY + dt.timedelta(days=3)).isoformat(), {"Furniture": "50"}, {"Capital": "50"}))
    head.cancel(paid.number, "entered twice")
    registrar.set_sync_after(head, DAY + dt.timedelta(days=5))
    head.post(draft("receipt", (DAY + dt.timedelta(days=1)).isoformat(), {"Cash": "7"}, {"Interest": "7"}))  # local
    asked = [(kind, office, start, end, ledger) for kind in views.REPORTS for office in (None, "HO", "BR1")
             for start, end in ((None, None), (DAY + dt.timedelta(days=1), DAY + dt.timedelta(days=2)))
             for ledger in (["Cash", "Rent"] if kind == "ledger" else [None])]
    through_node = [views.report(head, kind, office, _text(start), _text(end), ledger, detail=True)
                    for kind, office, start, end, ledger in asked]
    monkeypatch.setattr(Node, "open", _must_not_open)
    alone = [views.report_at(head.home, kind, office, _text(start), _text(end), ledger, detail=True)
             for kind, office, start, end, ledger in asked]
    assert alone == through_node
    assert through_node[0]["local_only"] == 1 and through_node[0]["sync_after"] == (DAY + dt.timedelta(days=5)).isoformat()


def test_a_branch_report_read_alone_covers_what_its_read_scope_grants(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    head = setup_head(tmp_path / "HO", read_all=False)  # the default scopes: BR1 reads its own books
    br1 = setup_branch(tmp_path / "BR1", "BR1", head)
    try:
        head.post(draft("receipt", DAY.isoformat(), {"Cash": "1000"}, {"Sales": "1000"}, "at the head office"))
        br1.post(draft("receipt", DAY.isoformat(), {"Cash": "7"}, {"Sales": "7"}, "at BR1"))
        sync(head, br1)
        asked = [(kind, office) for kind in ("trial-balance", "day-book", "profit-loss") for office in (None, "BR1")]
        through_node = [views.report(br1, kind, office) for kind, office in asked]
        assert through_node[0]["scope"] == "BR1: 1 of 3 offices"
        with monkeypatch.context() as patched:
            patched.setattr(Node, "open", _must_not_open)
            assert [views.report_at(br1.home, kind, office) for kind, office in asked] == through_node
            with pytest.raises(RuleViolation, match="may not read HO"):
                views.report_at(br1.home, "day-book", "HO")
        registrar.set_grants(head, "BR1", add=["*"])
        send(head, br1)
        assert views.report_at(br1.home, "trial-balance")["scope"] == "consolidated"
        run = f"from p2psync.cli.main import main\nmain(['--home', {str(br1.home)!r}, 'report', 'trial-balance'])"
        assert heavy_modules_after(run) == []
    finally:
        head.close()
        br1.close()


def test_a_home_whose_report_tables_are_stale_is_reported_through_the_node(head: Node) -> None:
    head.post(draft("receipt", DAY.isoformat(), {"Cash": "25"}, {"Sales": "25"}))
    expected = views.report(head, "trial-balance")
    with closing(sqlite3.connect(head.home / DB_FILE)) as db, db:
        db.execute("UPDATE setting SET value = '1' WHERE key = 'reports_version'")  # made by an older p2psync
        db.execute("DELETE FROM linerow")
    assert views.report_at(head.home, "trial-balance") == expected  # Node.open rebuilt the tables first


@pytest.mark.parametrize(("record", "table"), [(queries.Office, OfficeRow), (queries.Group, GroupRow),
                                               (queries.Ledger, LedgerRow), (queries.Voucher, VoucherRow),
                                               (queries.Conflict, ConflictRow)])
def test_each_row_of_the_queries_has_its_tables_columns(record: type, table: type) -> None:
    """The queries name the columns after their rows' fields (they cannot import the table classes
    without SQLModel): a column added to a table must be added to its row too."""
    assert record._fields == tuple(table.model_fields)


def _text(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _must_not_open(home: Path) -> Node:
    raise AssertionError(f"the report opened the node at {home}")
