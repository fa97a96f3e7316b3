"""Storage faults in the real SQLite file: pages of the snapshot table or of a report table torn
(half written) or zeroed, and bytes flipped in them. The entry log is the source of truth: snapshot
damage is rebuilt from it when the node opens; report-table damage gives one clear line pointing to
``p2psync rebuild``, which restores every report from the log."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import copy_home, draft
from procs import cli
from test_crash import book_state, books_with_snapshots

from p2psync.node.home import DB_FILE
from p2psync.node.office import Node


@pytest.fixture(scope="module")
def books_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("faults") / "HO"
    books_with_snapshots(home).close()
    return home


def pages(db: Path, table: str) -> list[tuple[int, str]]:
    """(page number, kind) of every page that holds `table` (SQLite's dbstat table)."""
    with sqlite3.connect(db) as conn:
        found = conn.execute("SELECT pageno, pagetype FROM dbstat WHERE name = ?", (table,)).fetchall()
    conn.close()
    return found


Damage = Callable[[bytearray, int, int], None]


def torn(page: bytearray, _size: int, _seed: int) -> None:
    """The second half of the page never reached the disk."""
    page[len(page) // 2:] = bytes(len(page) - len(page) // 2)


def zeroed(page: bytearray, _size: int, _seed: int) -> None:
    page[:] = bytes(len(page))


def flipped(page: bytearray, _size: int, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(8):
        page[rng.randrange(len(page) // 2, len(page))] ^= 1 << rng.randrange(8)


def damage_file(db: Path, table: str, kind: str, damage: Damage) -> int:
    """Damage, in the file itself, every page of `kind` that holds `table`; returns how many."""
    targets = [number for number, page_kind in pages(db, table) if page_kind == kind]
    with sqlite3.connect(db) as conn:
        size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    raw = bytearray(db.read_bytes())
    for number in targets:
        start = (number - 1) * size
        page = raw[start:start + size]
        damage(page, size, number)
        raw[start:start + size] = page
    db.write_bytes(bytes(raw))
    return len(targets)


def integrity(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        found = [row[0] for row in conn.execute("PRAGMA integrity_check")]
    conn.close()
    return found


@pytest.mark.parametrize("kind, damage", [("leaf", torn), ("leaf", zeroed), ("leaf", flipped),
                                          ("overflow", torn), ("overflow", flipped)],
                         ids=["torn-leaf", "zeroed-leaf", "flipped-leaf", "torn-overflow", "flipped-overflow"])
def test_a_damaged_snapshot_page_is_rebuilt_from_the_log(books_home: Path, tmp_path: Path, kind: str,
                                                         damage: Damage) -> None:
    home = tmp_path / "HO"
    copy_home(books_home, home)
    node = Node.open(home)
    expected = book_state(node)
    node.close()
    assert damage_file(home / DB_FILE, "snapshot", kind, damage) >= 1

    node = Node.open(home)
    try:
        assert book_state(node) == expected
        node.post(draft("payment", "2026-04-11", {"Rent": "3"}, {"Cash": "3"}))
        after = book_state(node)
    finally:
        node.close()
    assert integrity(home / DB_FILE) == ["ok"]
    node = Node.open(home)
    try:
        assert book_state(node) == after
    finally:
        node.close()


@pytest.mark.parametrize("table", ["voucherrow", "linerow"])
def test_a_torn_report_table_is_one_clear_line_and_rebuild_restores_it(books_home: Path, tmp_path: Path,
                                                                       table: str) -> None:
    home = tmp_path / "HO"
    copy_home(books_home, home)
    expected = cli(home, "report", "trial-balance", "--json").stdout
    assert damage_file(home / DB_FILE, table, "leaf", zeroed) >= 1

    failed = cli(home, "report", "day-book", "--json", check=False)
    assert failed.returncode != 0
    message = failed.stderr.strip()
    assert len(message.splitlines()) == 1 and "damaged" in message and "p2psync rebuild" in message
    assert "Traceback" not in failed.stderr

    cli(home, "rebuild")
    assert integrity(home / DB_FILE) == ["ok"]
    assert cli(home, "report", "trial-balance", "--json").stdout == expected
    cli(home, "voucher", "post", "--type", "payment", "--date", "2026-04-12", "--dr", "Rent=5", "--cr", "Cash=5")
