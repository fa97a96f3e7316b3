"""CPU per voucher of the live paths in one process, and the transactions each side opens per voucher.

Single: N single-voucher posts at A (`Node.post`), each received at B at once (`Node.receive` of the
new entries, with the acknowledgement's vectors), one after the other. Group: `Node.post_group` of G
single-voucher drafts at A (one entry for each month they fall in: `Batch.coalescing`), then B
receives those entries in one call, R times. CPU is `time.process_time` around each call (the durable commit's system time included);
the transactions are counted, over 100 vouchers before the timed ones, from the statements SQLite
runs inside `post` and inside `receive` (a trace callback on every connection of each node): BEGIN
(a read) and BEGIN IMMEDIATE (a write), per voucher.

Paced: the same single posts and receives, each call after `--idle` ms with nothing to do (as on a
live link, where vouchers come a few ms apart), beside the same calls back to back; and a fixed piece
of work that is not p2psync's (an Ed25519 sign and verify, JSON and zlib of a voucher-sized value,
rows into an in-memory SQLite) timed the same two ways: how much more this machine charges for work
that follows idle time (cold caches, a vCPU woken up), a floor of the live path that no code change
moves.

    python bench/live_cpu.py [--vouchers 2000] [--group 64] [--groups 30] [--paced 300] [--idle 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import statistics
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import common
from sqlalchemy import event

from p2psync.books.importer import ImportedDraft
from p2psync.node.office import Node

WARMUP = 20


class Statements:
    """Counts, by their first words, the statements a node's connections run while `side` names a
    counter (traced connections cost more CPU: the timed calls run untraced)."""

    def __init__(self, *nodes: Node) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self.side: str | None = None
        self.connections: list[sqlite3.Connection] = []
        for node in nodes:
            event.listen(node.db.engine, "connect", self._on_connect)
            node.db.dispose()

    def _on_connect(self, connection: sqlite3.Connection, _record: object) -> None:
        def trace(sql: str) -> None:
            if self.side is not None:
                words = sql.split(None, 2)
                first = words[0].upper()
                self.counts.setdefault(self.side, Counter())[" ".join(words[:2]).upper() if first == "BEGIN" else first] += 1
        connection.set_trace_callback(trace)
        self.connections.append(connection)

    def stop(self) -> None:
        for connection in self.connections:
            connection.set_trace_callback(None)

    def per_voucher(self, side: str, vouchers: int) -> dict[str, float]:
        counts = self.counts.get(side, Counter())
        return {"reads": counts["BEGIN"] / vouchers, "writes": counts["BEGIN IMMEDIATE"] / vouchers,
                "commits": counts["COMMIT"] / vouchers, "selects": counts["SELECT"] / vouchers}


def _one_by_one(a: Node, b: Node, drafts: list[ImportedDraft], idle: float = 0.0,
                trace: Callable[[int, str | None], None] | None = None) -> Iterator[tuple[float, float]]:
    """Post each draft at A and receive its entry at B at once, `idle` s of nothing before each call;
    yields the CPU (s) of each post and of its receive. `trace(i, side)` is told which call of
    voucher `i` runs (None between them)."""
    last = a.last_entry_id()
    mark = trace or (lambda _i, _side: None)
    for i, item in enumerate(drafts):
        if idle:
            time.sleep(idle)
        mark(i, "post")
        began = time.process_time()
        a.post(item.draft)
        posted = time.process_time()
        mark(i, None)
        rows = a.entries_since(last)
        last = rows[-1][0]
        if idle:
            time.sleep(idle)
        mark(i, "receive")
        sent = time.process_time()
        result = b.receive([row[5] for row in rows], [row[1] for row in rows])
        received = time.process_time()
        mark(i, None)
        if result.applied != len(rows) or result.quarantined:
            raise AssertionError(f"B refused entries: {result.quarantined}")
        yield posted - began, received - sent
        if i % 100 == 99:  # what a running node does when idle (`defer_snapshots`)
            a.store.write_due_snapshots()
            b.store.write_due_snapshots()


def single(a: Node, b: Node, vouchers: int) -> dict[str, Any]:
    counted = 100  # after the warm-up, traced; the timed vouchers come after them
    statements = Statements(a, b)

    def trace(i: int, side: str | None) -> None:
        statements.side = side if WARMUP <= i < WARMUP + counted else None
        if i == WARMUP + counted and side == "post":
            statements.stop()

    figures = list(_one_by_one(a, b, common.make_drafts(vouchers + WARMUP + counted, seed=3), trace=trace))
    timed = figures[WARMUP + counted:]
    return {"vouchers": vouchers, "post_cpu_us": sum(p for p, _r in timed) / vouchers * 1e6,
            "receive_cpu_us": sum(r for _p, r in timed) / vouchers * 1e6,
            "post_per_voucher": statements.per_voucher("post", counted),
            "receive_per_voucher": statements.per_voucher("receive", counted)}


def grouped(a: Node, b: Node, size: int, groups: int) -> dict[str, Any]:
    drafts = [item.draft for item in common.make_drafts(size * groups, seed=5)]
    last = a.last_entry_id()
    post_cpu = receive_cpu = 0.0
    for g in range(groups):
        began = time.process_time()
        a.post_group(drafts[g * size:(g + 1) * size])
        posted = time.process_time()
        rows = a.entries_since(last, limit=size * 2)
        last = rows[-1][0]
        sent = time.process_time()
        result = b.receive([row[5] for row in rows], sorted({row[1] for row in rows}))
        received = time.process_time()
        if result.applied != len(rows) or result.quarantined:
            raise AssertionError(f"B refused entries: {result.quarantined}")
        post_cpu += posted - began
        receive_cpu += received - sent
        a.store.write_due_snapshots()
        b.store.write_due_snapshots()
    vouchers = size * groups
    return {"group": size, "groups": groups, "post_group_cpu_us": post_cpu / vouchers * 1e6,
            "receive_cpu_us": receive_cpu / vouchers * 1e6}


def _single_cpu(a: Node, b: Node, count: int, idle: float, seed: int) -> tuple[float, float]:
    """Median CPU (us) of one `Node.post` and of receiving its entry, each after `idle` s."""
    figures = list(_one_by_one(a, b, common.make_drafts(count + WARMUP, seed=seed), idle))[WARMUP:]
    return (statistics.median(p for p, _r in figures) * 1e6, statistics.median(r for _p, r in figures) * 1e6)


def fixed_work() -> Callable[[], None]:
    """A piece of work of some 0.5 ms that is not p2psync's, from the libraries it uses."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (a, b, c)")
    value = {"lines": [{"ledger": f"Ledger {i}", "paise": i * 100} for i in range(20)], "narration": "x" * 200}

    def work() -> None:
        blob = json.dumps(value).encode()
        public.verify(key.sign(blob), blob)
        packed = zlib.compress(blob * 4)
        db.executemany("INSERT INTO t VALUES (?, ?, ?)", [(i, blob[:50], len(packed)) for i in range(30)])
        json.loads(blob)
    return work


def _fixed_cpu(work: Callable[[], None], count: int, idle: float) -> float:
    """Median CPU (us) of `work`, each call after `idle` s."""
    times = []
    for i in range(count + WARMUP):
        time.sleep(idle)
        began = time.process_time()
        work()
        if i >= WARMUP:
            times.append(time.process_time() - began)
    return statistics.median(times) * 1e6


def paced(base: Path, count: int = 300, idle_ms: float = 5.0) -> dict[str, Any]:
    """CPU of a single post and receive back to back and each after `idle_ms` of nothing, the two
    interleaved in halves; and the fixed work's CPU the same two ways (the machine's idle penalty)."""
    org = base / "org"
    common.make_org(org, ("BR1",))
    home = base / "paced"
    shutil.copytree(org, home)
    a, b = Node.open(home / "HO"), Node.open(home / "BR1")
    a.store.defer_snapshots = b.store.defer_snapshots = True
    idle = idle_ms / 1000
    work = fixed_work()
    figures: dict[str, list[float]] = {"busy": [], "idle": [], "fixed_busy": [], "fixed_idle": []}
    try:
        for half in range(2):
            for name, pause in (("busy", 0.0), ("idle", idle)):
                figures[name].append(_single_cpu(a, b, count // 2, pause, seed=40 + half * 2 + (pause > 0)))
                figures[f"fixed_{name}"].append(_fixed_cpu(work, count // 2, pause))
    finally:
        a.close()
        b.close()
    post_busy, receive_busy = (statistics.mean(f[i] for f in figures["busy"]) for i in (0, 1))
    post_idle, receive_idle = (statistics.mean(f[i] for f in figures["idle"]) for i in (0, 1))
    fixed_busy, fixed_idle = statistics.mean(figures["fixed_busy"]), statistics.mean(figures["fixed_idle"])
    return {"vouchers": count, "idle_ms": idle_ms, "post_cpu_us": post_busy, "receive_cpu_us": receive_busy,
            "post_cpu_after_idle_us": post_idle, "receive_cpu_after_idle_us": receive_idle,
            "fixed_work_cpu_us": fixed_busy, "fixed_work_cpu_after_idle_us": fixed_idle,
            "idle_penalty": fixed_idle / fixed_busy, "p2psync_idle_penalty": (post_idle + receive_idle) /
            (post_busy + receive_busy)}


def measure(base: Path, vouchers: int, size: int, groups: int) -> dict[str, Any]:
    org = base / "org"
    common.make_org(org, ("BR1",))
    out: dict[str, Any] = {}
    for name, run in (("single", lambda a, b: single(a, b, vouchers)),
                      ("group", lambda a, b: grouped(a, b, size, groups))):
        home = base / name
        shutil.copytree(org, home)
        a, b = Node.open(home / "HO"), Node.open(home / "BR1")
        a.store.defer_snapshots = b.store.defer_snapshots = True
        try:
            out[name] = run(a, b)
        finally:
            a.close()
            b.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vouchers", type=int, default=2000)
    parser.add_argument("--group", type=int, default=64)
    parser.add_argument("--groups", type=int, default=30)
    parser.add_argument("--paced", type=int, default=300, help="vouchers of the paced measurement (0: none)")
    parser.add_argument("--idle", type=float, default=5.0, help="ms of nothing before each paced call")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="p2psync-live-cpu-"))
    try:
        out = measure(base, args.vouchers, args.group, args.groups)
        if args.paced:
            out["paced"] = paced(base / "paced", args.paced, args.idle)
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
