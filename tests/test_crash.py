"""Crash safety: `kill -9` at any moment loses nothing that was acknowledged, and every cache (the
document snapshots, the materialized report tables) is rebuilt from the entry log alone."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import shutil
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from helpers import LEDGERS, all_reports, assert_log_whole, copy_home, doc_contents, draft, setup_head
from pycrdt import Doc
from sqlmodel import func, select

from p2psync.books.model import decode_revision
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.store.docs import SNAPSHOT_EVERY, checksum
from p2psync.store.tables import Entry, Snapshot

#: A zygote: imports p2psync once, then for each "go SEED" line forks a worker that opens the node
#: and posts vouchers forever, printing each number only after post() returned. The parent kills
#: workers with SIGKILL; forking keeps each round fast (no interpreter start-up per round).
WORKER = r'''
import asyncio
import os
import random
import sys
from pathlib import Path

from p2psync.books.drafts import make_draft
from p2psync.books.importer import ImportedDraft
from p2psync.node.office import Node

SHAPES = [("payment", "Rent", "Cash"), ("receipt", "Bank", "Debtors"), ("sales", "Debtors", "Sales"),
          ("contra", "Bank", "Cash"), ("journal", "Rent", "Creditors")]


def a_draft(rng):
    kind, dr, cr = rng.choice(SHAPES)
    amount = f"{rng.randint(1, 99999)}.{rng.randint(0, 99):02d}"
    day = f"2026-{rng.choice(['04', '05'])}-{rng.randint(1, 28):02d}"
    return make_draft(kind, day, [f"{dr}={amount}"], [f"{cr}={amount}"], f"crash {rng.random()}")


def work(home, seed):
    rng = random.Random(seed)
    node = Node.open(home)
    while True:
        if rng.random() < 0.25:
            revs = node.post_many([ImportedDraft(f"item {i}", a_draft(rng)) for i in range(rng.randint(2, 6))])
        else:
            revs = [node.post(a_draft(rng))]
        sys.stdout.write("".join(f"posted {rev.number}\n" for rev in revs))
        sys.stdout.flush()


def main():
    home = Path(sys.argv[1])
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        seed = int(line.split()[1])
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            try:
                work(home, seed)
            finally:
                os._exit(1)
        os.write(1, f"pid {pid}\n".encode())  # one write a line: print() writes the newline apart
        os.waitpid(pid, 0)                    # when output is unbuffered, and the worker writes too
        os.write(1, b"done\n")


main()
'''

ROUNDS = 24


def book_state(node: Node) -> dict[str, Any]:
    return {"reports": all_reports(node, (None, "HO")), "docs": doc_contents(node)}


def assert_vouchers_balanced(node: Node) -> None:
    with node.db.read() as session:
        rows = queries.vouchers(session)
    for row in rows:
        for rev in node.store.revisions(row.number):
            assert sum(line.signed for line in rev.content.lines) == 0, row.number


def test_kill_9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    home = tmp_path / "HO"
    setup_head(home).close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    rng = random.Random()
    acknowledged: list[str] = []
    killed_mid_work = 0
    zygote = subprocess.Popen([sys.executable, str(script), str(home)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, bufsize=1)
    assert zygote.stdin is not None and zygote.stdout is not None
    worker = 0
    try:
        rounds = 0
        while rounds < ROUNDS or (killed_mid_work < 5 and rounds < 10 * ROUNDS):
            rounds += 1
            zygote.stdin.write(f"go {rng.randrange(2**32)}\n")
            zygote.stdin.flush()
            line = zygote.stdout.readline()
            while line.startswith("posted "):
                acknowledged.append(line.split()[1])
                line = zygote.stdout.readline()
            assert line.startswith("pid "), line
            worker = int(line.split()[1])
            time.sleep(rng.uniform(0.0, 0.25))  # a random moment: opening, posting, committing...
            os.kill(worker, signal.SIGKILL)
            before = len(acknowledged)
            for line in iter(zygote.stdout.readline, "done\n"):
                assert line.startswith("posted "), line
                acknowledged.append(line.split()[1])
            worker = 0
            killed_mid_work += len(acknowledged) > before
    finally:
        if worker:
            os.kill(worker, signal.SIGKILL)
        zygote.stdin.close()
        zygote.wait(timeout=30)

    assert len(acknowledged) == len(set(acknowledged)), "a voucher number was handed out twice"
    node = Node.open(home)
    try:
        with node.db.read() as session:
            held = {row.number for row in queries.vouchers(session)}
        missing = [n for n in acknowledged if n not in held]
        assert not missing, f"{len(missing)} acknowledged vouchers lost, e.g. {missing[:3]}"
        # numbers run without gaps in each series: nothing was half-written
        series: dict[str, list[int]] = {}
        for number in held:
            prefix, _, counter = number.rpartition("/")
            series.setdefault(prefix, []).append(int(counter))
        for prefix, counters in series.items():
            assert sorted(counters) == list(range(1, len(counters) + 1)), prefix
        assert_log_whole(node)
        assert_vouchers_balanced(node)
        # the documents hold exactly the vouchers the tables hold
        revision_numbers = {decode_revision(value).number
                            for name, maps in doc_contents(node).items() if name != "masters"
                            for value in maps["revisions"].values()}
        assert revision_numbers == held
        # the materialized tables agree with a rebuild from the log alone
        before = book_state(node)
        node.store.rebuild()
        assert book_state(node) == before
        # and the node keeps working where the series left off
        series_next = len(series.get("HO/PMT", [])) + 1
        assert node.post(draft("payment", "2026-04-01", {"Rent": "1"}, {"Cash": "1"})).number == \
            f"HO/PMT/{series_next:05d}"
    finally:
        node.close()
    assert killed_mid_work >= 5


# ---------------------------------------------------------------- damaged caches


@pytest.fixture(scope="module")
def snapshot_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A closed node whose documents have snapshots and log entries after them, built once."""
    home = tmp_path_factory.mktemp("snapshots") / "HO"
    books_with_snapshots(home).close()
    return home


def books_with_snapshots(home: Path) -> Node:
    """A node whose documents have snapshots and log entries after them."""
    node = setup_head(home)
    node.set_opening("Cash", "5,000")
    for i in range(SNAPSHOT_EVERY + 6):
        node.post(draft("payment", f"2026-04-{i % 28 + 1:02d}", {"Rent": f"{i + 1}"}, {"Cash": f"{i + 1}"}))
    node.post(draft("receipt", "2026-05-02", {"Bank": "70"}, {"Debtors": "70"}))
    node.cancel("HO/PMT/00003", "duplicate")
    node.amend("HO/PMT/00004", draft("payment", "2026-04-09", {"Rent": "4.50"}, {"Bank": "4.50"}))
    return node


def _snapshots(home: Path) -> dict[str, bytes]:
    with sqlite3.connect(home / DB_FILE) as conn:
        rows = conn.execute("SELECT doc, state FROM snapshot").fetchall()
    conn.close()
    return dict(rows)


def test_snapshots_exist_and_hold_the_log_position(tmp_path: Path) -> None:
    node = books_with_snapshots(tmp_path / "HO")
    with node.db.read() as session:
        snap = session.get(Snapshot, "vouchers/HO/2026-04")
        assert snap is not None and snap.entries >= SNAPSHOT_EVERY and checksum(snap.state) == snap.checksum
        newest = session.exec(select(Entry.id).where(Entry.doc == "vouchers/HO/2026-04")
                              .order_by(Entry.id.desc())).first()  # type: ignore[union-attr]
        assert snap.upto < newest  # entries after the snapshot: a reload needs snapshot + log tail
    node.close()
    assert set(_snapshots(tmp_path / "HO")) >= {"masters", "vouchers/HO/2026-04", "vouchers/HO/2026-05"}


def _garbage(state: bytes, rng: random.Random) -> bytes:
    return bytes(rng.randrange(256) for _ in range(max(len(state), 16)))


DAMAGE = {
    # the checksum no longer matches
    "garbage": lambda state, rng: (_garbage(state, rng), None),
    "truncated": lambda state, rng: (state[: len(state) // 2], None),
    "empty": lambda state, rng: (b"", None),
    # a well-formed state that is not the one saved (an older one, say): only the checksum tells
    "stale": lambda state, rng: (Doc().get_update(), None),
    # the checksum matches the damage: the state itself must fail to decode, or be caught otherwise
    "garbage, checksum fixed": lambda state, rng: ((g := _garbage(state, rng)), checksum(g)),
    "truncated, checksum fixed": lambda state, rng: ((t := state[: len(state) // 2]), checksum(t)),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_snapshots_are_rebuilt_from_the_log(snapshot_home: Path, tmp_path: Path, damage: str) -> None:
    home = tmp_path / "HO"
    copy_home(snapshot_home, home)
    node = Node.open(home)
    expected = book_state(node)
    node.close()
    rng = random.Random(damage)
    with sqlite3.connect(home / DB_FILE) as conn:
        for doc, state in conn.execute("SELECT doc, state FROM snapshot").fetchall():
            new_state, new_sum = DAMAGE[damage](state, rng)
            conn.execute("UPDATE snapshot SET state = ? WHERE doc = ?", (new_state, doc))
            if new_sum is not None:
                conn.execute("UPDATE snapshot SET checksum = ? WHERE doc = ?", (new_sum, doc))
    conn.close()

    node = Node.open(home)
    try:
        assert book_state(node) == expected
        # writing on top of the reloaded documents works and continues the series
        rev = node.post(draft("payment", "2026-04-10", {"Rent": "9"}, {"Cash": "9"}))
        assert rev.number == f"HO/PMT/{SNAPSHOT_EVERY + 7:05d}"
        node.amend("HO/PMT/00005", draft("payment", "2026-04-10", {"Rent": "8"}, {"Cash": "8"}))
        after = book_state(node)
        node.store.rebuild()
        assert book_state(node) == after
    finally:
        node.close()
    node = Node.open(home)
    try:
        assert book_state(node) == after
    finally:
        node.close()


def test_materialized_tables_are_rebuilt_from_the_log(snapshot_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "HO"
    copy_home(snapshot_home, home)
    node = Node.open(home)
    expected = book_state(node)
    node.close()
    with sqlite3.connect(home / DB_FILE) as conn:
        for table in ("voucherrow", "linerow", "ledgerrow", "openingrow", "snapshot"):
            conn.execute(f"DELETE FROM {table}")
    conn.close()
    node = Node.open(home)
    try:
        assert book_state(node)["reports"] != expected["reports"]  # the damage is visible...
        node.store.rebuild()
        assert book_state(node) == expected  # ...and the log alone restores every report
        assert {name for name in LEDGERS} <= {row.name for row, _ in _ledgers(node)}
    finally:
        node.close()


def _ledgers(node: Node) -> list:
    with node.db.read() as session:
        return queries.ledgers(session)


def test_documents_past_the_cache_bound_are_dropped_snapshotted_and_reload_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("p2psync.store.books.MAX_CACHED_DOCS", 3)
    node = setup_head(tmp_path / "HO")
    try:
        for month in range(1, 11):
            for day in (3, 9):
                node.post(draft("payment", f"2026-{month:02d}-{day:02d}", {"Rent": f"{month}"}, {"Cash": f"{month}"}))
            assert len(node.store._docs) <= 4  # three months and the masters
        node.amend("HO/PMT/00001", draft("payment", "2026-01-03", {"Rent": "7"}, {"Bank": "7"}))  # an evicted month
        expected = book_state(node)
        assert len(node.store._docs) <= 4
        with node.db.read() as session:
            snapshots = {row.doc: row.entries for row in session.exec(select(Snapshot))}
            logged = dict(session.exec(select(Entry.doc, func.count()).group_by(Entry.doc)).all())
        evicted = {f"vouchers/HO/2026-{m:02d}" for m in range(2, 8)}  # untouched since they were dropped
        assert all(snapshots.get(doc) == logged[doc] for doc in evicted)  # dropped only once snapshotted
    finally:
        node.close()
    reopened = Node.open(tmp_path / "HO")
    try:
        assert book_state(reopened) == expected
        assert len(expected["docs"]) == 11 and all(len(expected["docs"][f"vouchers/HO/2026-{m:02d}"]["revisions"])
                                                   == 2 for m in range(2, 11))
    finally:
        reopened.close()


def _snapshot_entries(node: Node, doc: str) -> int:
    with node.db.read() as session:
        row = session.get(Snapshot, doc)
        return row.entries if row else 0


def test_deferred_snapshots_stay_out_of_the_changes_and_are_written_when_asked(tmp_path: Path) -> None:
    node = setup_head(tmp_path / "HO")
    node.store.defer_snapshots = True
    try:
        for i in range(SNAPSHOT_EVERY + 2):
            node.post(draft("payment", f"2026-04-{i % 28 + 1:02d}", {"Rent": f"{i + 1}"}, {"Cash": f"{i + 1}"}))
        assert _snapshot_entries(node, "vouchers/HO/2026-04") == 0  # no post paid for re-encoding the month
        assert node.store.write_due_snapshots() == 1
        assert _snapshot_entries(node, "vouchers/HO/2026-04") == SNAPSHOT_EVERY + 2
        assert node.store.write_due_snapshots() == 0
        expected = book_state(node)
    finally:
        node.close()
    reopened = Node.open(tmp_path / "HO")
    try:
        assert book_state(reopened) == expected
    finally:
        reopened.close()


def test_a_running_node_writes_due_snapshots_once_idle(tmp_path: Path) -> None:
    from p2psync.node.runtime import NodeRuntime

    node = setup_head(tmp_path / "HO")

    async def scenario() -> int:
        runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
        await runtime.start()
        try:
            assert node.store.defer_snapshots
            for i in range(SNAPSHOT_EVERY + 1):
                await runtime.call(node.post, draft("payment", f"2026-04-{i % 28 + 1:02d}", {"Rent": "1"}, {"Cash": "1"}))
            for _ in range(300):
                written = await runtime.call(_snapshot_entries, node, "vouchers/HO/2026-04")
                if written:
                    return written
                await asyncio.sleep(0.1)
            return 0
        finally:
            await runtime.stop()

    try:
        assert asyncio.run(scenario()) == SNAPSHOT_EVERY + 1
    finally:
        node.close()


def _entries_in_database_file(home: Path, scratch: Path) -> int:
    """Entries the database file holds on its own, without its write-ahead log: what a checkpoint
    has copied back."""
    scratch.mkdir(exist_ok=True)
    copy = scratch / "alone.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(home / DB_FILE, copy)
    with closing(sqlite3.connect(copy)) as conn:
        return conn.execute("SELECT count(*) FROM entry").fetchone()[0]


def test_deferred_checkpoints_leave_the_log_to_the_idle_node(tmp_path: Path) -> None:
    from p2psync.node.runtime import NodeRuntime

    home, scratch = tmp_path / "HO", tmp_path / "scratch"
    node = setup_head(home)
    node.db.checkpoint()
    node.db.defer_checkpoints()
    try:
        before = _entries_in_database_file(home, scratch)
        for i in range(120):  # some 2,000 pages: a commit would copy the log back itself at 1,000
            node.post(draft("payment", f"2026-04-{i % 28 + 1:02d}", {"Rent": "1"}, {"Cash": "1"}))
        assert _entries_in_database_file(home, scratch) == before  # no commit copied the log back
        node.db.checkpoint()
        assert _entries_in_database_file(home, scratch) == before + 120

        async def scenario() -> int:
            runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
            await runtime.start()
            try:
                for i in range(120):
                    await runtime.call(node.post, draft("receipt", f"2026-05-{i % 28 + 1:02d}", {"Cash": "2"},
                                                        {"Debtors": "2"}))
                for _ in range(300):  # the running node checkpoints once idle
                    if (alone := _entries_in_database_file(home, scratch)) == before + 240:
                        break
                    await asyncio.sleep(0.1)
                return alone
            finally:
                await runtime.stop()

        assert asyncio.run(scenario()) == before + 240
        state = book_state(node)["docs"]
        assert len(state["vouchers/HO/2026-04"]["revisions"]) == len(state["vouchers/HO/2026-05"]["revisions"]) == 120
    finally:
        node.close()
