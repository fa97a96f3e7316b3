"""CPU per voucher of the two bulk paths, `Node.post_many` and `Node.receive`, against floors measured
in the same run: the plain `sqlite3` floor (the very rows and indexes those paths write, inserted with
`executemany` and committed durably), one Ed25519 verify, and pycrdt applying the same updates.

CPU time (`time.process_time`) in one process, so that the machine's load matters less than for wall
time; each figure is the best of `rounds`, the rounds of the paths and of the floor interleaved.

    python bench/cpu.py [--vouchers N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import common

from p2psync.node.home import DB_FILE
from p2psync.node.office import Node

#: The tables a post or receive writes per voucher and per entry: the floor inserts the same rows.
ROW_TABLES = ("entry", "voucherrow", "linerow")


def _cpu(fn: Callable[[], Any]) -> float:
    began = time.process_time()
    fn()
    return time.process_time() - began


def _copy_home(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rows_of(home: Path, after_entry: int) -> dict[str, tuple[list[str], list[tuple[Any, ...]]]]:
    """The rows a post or receive wrote: entries after `after_entry`, and every voucher and line row."""
    out = {}
    with closing(sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True)) as db:
        for table in ROW_TABLES:
            where = " WHERE id > ?" if table == "entry" else ""
            cursor = db.execute(f"SELECT * FROM {table}{where}", (after_entry,) if where else ())
            out[table] = ([d[0] for d in cursor.description], cursor.fetchall())
    return out


def _schema_of(home: Path) -> list[str]:
    """The CREATE statements of those tables and of their indexes, as the node made them."""
    with closing(sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True)) as db:
        marks = ", ".join("?" * len(ROW_TABLES))
        return [sql for (sql,) in db.execute(
            f"SELECT sql FROM sqlite_master WHERE tbl_name IN ({marks}) AND sql IS NOT NULL "
            "ORDER BY type = 'index'", ROW_TABLES)]


def sqlite_floor(path: Path, schema: list[str], rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]) -> float:
    """CPU seconds of inserting `rows` into empty tables of `schema` with plain `sqlite3`, WAL and
    synchronous=FULL, the node's page cache, one transaction committed durably."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for pragma in ("journal_mode=WAL", "synchronous=FULL", "cache_size=-32768"):
            db.execute(f"PRAGMA {pragma}")
        for sql in schema:
            db.execute(sql)

        def insert() -> None:
            db.execute("BEGIN IMMEDIATE")
            for table, (columns, values) in rows.items():
                names = ", ".join(f'"{c}"' for c in columns)
                db.executemany(f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' * len(columns))})", values)
            db.execute("COMMIT")
        return _cpu(insert)


def ed25519_verify_us(blob: bytes, node: Node, author: str, repeat: int = 2000) -> float:
    key = node.trust.author(author).signing
    began = time.process_time()
    for _ in range(repeat):
        key.verify(blob[-64:], blob[:-64])
    return (time.process_time() - began) / repeat * 1e6


def pycrdt_apply_us(updates: list[bytes], vouchers: int) -> float:
    """pycrdt applying the same updates into fresh documents, per voucher."""
    from pycrdt import Doc
    docs: dict[int, Doc] = {}
    began = time.process_time()
    for n, update in enumerate(updates):
        docs.setdefault(n % 12, Doc()).apply_update(update)
    return (time.process_time() - began) / vouchers * 1e6


def measure(base: Path, vouchers: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    """Best-of-`rounds` CPU per voucher of post_many and receive, with the floors of the same run."""
    base.mkdir(parents=True, exist_ok=True)
    home_a, home_b = common.make_org(base / "org", ("BR1",))
    drafts = common.make_drafts(vouchers, seed=2)
    a0, b0 = Node.open(home_a), Node.open(home_b)
    first_entry, b_first = a0.last_entry_id(), common.query(home_b, "SELECT max(id) FROM entry")[0][0]
    a0.close()
    b0.close()
    posts, receives, floors = [], [], []
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}
    schema: list[str] = []
    blobs: list[bytes] = []
    author = ""
    for n in range(rounds):
        a = Node.open(_copy_home(home_a, base / f"a{n}"))
        posts.append(_cpu(lambda: a.post_many(drafts)) / vouchers * 1e6)
        blobs = [blob for *_k, blob in a.entries_since(first_entry)]
        author = a.identity.node_id
        a.close()
        b = Node.open(_copy_home(home_b, base / f"b{n}"))
        receives.append(_cpu(lambda: b.receive(blobs)) / vouchers * 1e6)
        b.close()
        if not rows:
            rows, schema = _rows_of(base / f"b{n}", b_first), _schema_of(base / f"b{n}")
        floors.append(sqlite_floor(base / f"floor{n}.db", schema, rows) / vouchers * 1e6)
        for path in (base / f"a{n}", base / f"b{n}"):
            shutil.rmtree(path, ignore_errors=True)
    b = Node.open(home_b)
    verify = ed25519_verify_us(blobs[0], b, author)
    b.close()
    updates = [row[rows["entry"][0].index("update")] for row in rows["entry"][1]]
    floor = min(floors)
    return {"vouchers": vouchers, "entries": len(blobs), "rounds": rounds,
            "post_many_cpu_us": min(posts), "receive_cpu_us": min(receives), "sqlite_floor_cpu_us": floor,
            "post_many_cpu_us_all": posts, "receive_cpu_us_all": receives, "sqlite_floor_cpu_us_all": floors,
            "post_cpu_vs_sqlite_floor": min(posts) / floor, "receive_cpu_vs_sqlite_floor": min(receives) / floor,
            "ed25519_verify_us": verify, "pycrdt_apply_us_per_voucher": pycrdt_apply_us(updates, vouchers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vouchers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="p2psync-cpu-"))
    try:
        print(json.dumps(measure(base, args.vouchers, args.rounds), indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
