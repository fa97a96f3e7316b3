"""Component costs behind the end-to-end figures, each measured on its own, so that every
recommendation in docs/performance.md is sized by a number from this machine, not a guess.

    python bench/micro.py

Prints a table and writes bench/results/micro.json.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
from sqlalchemy import select
from sqlalchemy.pool import StaticPool

from p2psync.books import schema
from p2psync.books.model import decode_revision
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.protocol import entry
from p2psync.sqlite import raw_connection, sqlite_engine
from p2psync.store import log, materialize
from p2psync.store.tables import Entry

RESULTS = common.BENCH_DIR / "results"


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - started) / repeat)
    return best * 1e6


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="p2psync-micro-"))
    out: dict[str, float] = {}
    try:
        home_a, home_b = common.make_org(base, ("BR1",))
        a, b = Node.open(home_a), Node.open(home_b)
        a.post_many(common.make_drafts(2000, seed=2))
        b.receive(a.entries(b.vectors()))
        doc_name = min(n for n in b.vectors() if n != schema.MASTERS)

        # connections: what the node did (NullPool: a new connection, its PRAGMAs, close) against one kept open
        def read_nullpool() -> None:
            with a.db.read() as session:
                session.exec(select(Entry.id).limit(1)).first()

        def write_nullpool() -> None:
            with a.db.write() as session:
                session.exec(select(Entry.id).limit(1)).first()

        pooled = sqlite_engine(home_a / DB_FILE, poolclass=StaticPool, connect_args={"check_same_thread": False})
        from sqlmodel import Session

        def read_pooled() -> None:
            with Session(pooled) as session:
                session.exec(select(Entry.id).limit(1)).first()

        def write_pooled() -> None:
            with pooled.connect().execution_options(immediate=True) as conn, Session(bind=conn) as session:
                session.exec(select(Entry.id).limit(1)).first()
                session.commit()

        out["read session, NullPool (as before the pool) us"] = per_call_us(read_nullpool, 300)
        out["read session, one kept connection us"] = per_call_us(read_pooled, 300)
        out["write transaction, NullPool (as before the pool) us"] = per_call_us(write_nullpool, 200)
        out["write transaction, one kept connection us"] = per_call_us(write_pooled, 200)
        pooled.dispose()

        # one SQL statement through SQLAlchemy/SQLModel against the same through sqlite3
        raw = sqlite3.connect(home_a / DB_FILE)
        with a.db.read() as session:
            out["log.vector (session's sqlite3 connection) us"] = per_call_us(lambda: log.vector(session, doc_name), 500)
            out["log.has (session's sqlite3 connection) us"] = per_call_us(lambda: log.has(session, doc_name, "x", 1), 500)
        out["same vector query via sqlite3 us"] = per_call_us(lambda: raw.execute(
            "SELECT author, max(seq) FROM entry WHERE doc = ? GROUP BY author", (doc_name,)).fetchall(), 500)
        raw.close()

        # statements and connections per live voucher: one post at A, its entry received at B
        from sqlalchemy import event
        counts = {"statements": 0, "connections": 0}

        def on_execute(*_args: Any) -> None:
            counts["statements"] += 1

        def on_connect(*_args: Any) -> None:
            counts["connections"] += 1

        for engine in (a.db.engine, b.db.engine):
            event.listen(engine, "before_cursor_execute", on_execute)
            event.listen(engine, "connect", on_connect)
        drafts = common.make_drafts(50, seed=5, start=7_000_000)
        after = a.last_entry_id()
        started = time.perf_counter()
        for item in drafts:
            a.post(item.draft)
        post_ms = (time.perf_counter() - started) * 1000 / len(drafts)
        post_counts = dict(counts)
        blobs = [e for *_k, e in a.entries_since(after)]
        counts.update(statements=0, connections=0)
        started = time.perf_counter()
        for item in blobs:
            b.receive([item])
        receive_ms = (time.perf_counter() - started) * 1000 / len(blobs)
        out["Node.post of one voucher ms"] = post_ms
        out["  SQLAlchemy statements per post (plain sqlite3 ones not counted)"] = post_counts["statements"] / len(drafts)
        out["  new SQLite connections per post"] = post_counts["connections"] / len(drafts)
        out["Node.receive of one single-voucher entry ms"] = receive_ms
        out["  SQLAlchemy statements per receive (plain sqlite3 ones not counted)"] = counts["statements"] / len(blobs)
        out["  new SQLite connections per receive"] = counts["connections"] / len(blobs)
        for engine in (a.db.engine, b.db.engine):
            event.remove(engine, "before_cursor_execute", on_execute)
            event.remove(engine, "connect", on_connect)

        # entries: parsing and opening
        blob = blobs[-1]
        out["entry.peek (header parse) us"] = per_call_us(lambda: entry.peek(blob), 2000)
        out["entry.open_entry (peek x2, verify, decrypt) us"] = per_call_us(lambda: entry.open_entry(blob, b.trust), 500)
        out["Ed25519 verify alone us"] = per_call_us(
            lambda: b.trust.author(a.identity.node_id).signing.verify(blob[-64:], blob[:-64]), 500)

        # the chart re-read for every received entry (inbox._apply.validate)
        masters = b.store.read_doc(schema.MASTERS)
        out["schema.read_chart(masters) per received entry us"] = per_call_us(lambda: schema.read_chart(masters), 300)

        # revisions: decoding and materializing
        doc = b.store.read_doc(doc_name)
        revisions = schema.root(doc, schema.REVISIONS)
        values = [revisions[k] for k in list(revisions.keys())[:500]]
        out["decode_revision per revision us"] = per_call_us(lambda: [decode_revision(v) for v in values], 20) / len(values)
        keys = list(revisions.keys())
        from p2psync.store import docs as store_docs
        loaded = b.store._docs[doc_name]
        with b.db.write() as session:
            t = time.perf_counter()
            store_docs.save_snapshot(session, loaded)
            out[f"save_snapshot of a {len(keys)}-voucher document (every 64 entries) us"] = (time.perf_counter() - t) * 1e6
            session.rollback()
        with b.db.write() as session:
            for table in ("conflictrow", "linerow", "voucherrow"):  # so that every voucher is new
                raw_connection(session).execute(f"DELETE FROM {table}")
            t = time.perf_counter()
            revs = schema.read_revisions(doc, keys)
            materialize.vouchers(session, doc_name, revs, lambda _name, _ids: [])
            out["materialize.vouchers per voucher (bulk, all new, decoding included) us"] = (time.perf_counter() - t) * 1e6 / len(keys)
            session.rollback()
        a.close()
        b.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "micro.json").write_text(json.dumps(out, indent=2))
    width = max(map(len, out))
    for key, value in out.items():
        print(f"{key:<{width}}  {value:10.1f}")


if __name__ == "__main__":
    main()
