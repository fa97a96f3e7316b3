"""p2psync measured end to end between two node processes: head office A serving, branch B dialing
it over a real TLS websocket on loopback with sealed (encrypted, signed) entries, as two
`p2psync run` nodes link. This process drives both over their stdin (one JSON command a line) and
watches B's report tables from a read-only connection of its own, so neither node shares a GIL
with the watcher or with the other node.

(2) bulk: `Node.post_many` of N vouchers at A until B's consolidated trial balance shows them all.
(1) per voucher: N vouchers posted at A one per post, each durable before it returns (concurrent
    posts share a commit where the runtime can group them), until B's voucher table holds them all.
(4) live: one voucher at a time posted at A until B's voucher table has its number.

Timestamps are `time.perf_counter()`, CLOCK_MONOTONIC on Linux, one clock for every process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import make_drafts, make_org, percentile, read_json_line, side, total_paise

LINK_TIMEOUT = 60.0


# ---------------------------------------------------------------- the node sides


def _commands() -> Any:
    """Commands from the driver, one JSON object a line, read off the event loop."""
    async def next_command() -> dict[str, Any]:
        line = await asyncio.to_thread(sys.stdin.readline)
        return json.loads(line) if line.strip() else {"cmd": "stop"}
    return next_command


def _emit(**values: Any) -> None:
    print(json.dumps(values), flush=True)


async def _post_one(runtime: Any, draft: Any) -> Any:
    """One post, durable when it returns: through the runtime's group commit when it has one."""
    post = getattr(runtime, "post", None)
    rev = await post(draft) if post is not None else await runtime.call(runtime.node.post, draft)
    if post is None:
        await runtime.notify()
    return rev


def serve_a(home: Path) -> None:
    """Side A: a head office node serving links; posts what the driver asks, reports when."""
    from p2psync.node.office import Node
    from p2psync.node.runtime import NodeRuntime

    async def main() -> None:
        node = Node.open(home)
        runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
        await runtime.start()
        _emit(port=runtime.port)
        command = _commands()
        while (cmd := await command())["cmd"] != "stop":
            drafts = make_drafts(cmd.get("count", 1), seed=cmd["seed"], start=cmd["start"])
            started = time.perf_counter()
            if cmd["cmd"] == "bulk":
                await runtime.call(node.post_many, drafts)
                await runtime.notify()
                _emit(started=started, posted=time.perf_counter(), paise=total_paise(drafts))
            elif cmd["cmd"] == "stream":
                await asyncio.gather(*(_post_one(runtime, d.draft) for d in drafts))
                _emit(started=started, posted=time.perf_counter())
            elif cmd["cmd"] == "post":
                rev = await _post_one(runtime, drafts[0].draft)
                _emit(started=started, posted=time.perf_counter(), number=rev.number)
        await runtime.stop()
        node.close()

    asyncio.run(main())


def dial_b(home: Path, url: str) -> None:
    """Side B: a branch node dialing A; times its own receive calls; runs its trial balance when asked."""
    from p2psync.books import reports
    from p2psync.node.office import Node
    from p2psync.node.runtime import NodeRuntime
    from p2psync.store import queries
    from p2psync.sqlite import raw_connection

    calls: list[tuple[float, float]] = []
    node = Node.open(home)
    receive = node.receive

    def timed_receive(*args: Any) -> Any:  # bench-only wrapper on this instance
        began = time.perf_counter()
        try:
            return receive(*args)
        finally:
            calls.append((began, time.perf_counter()))

    node.receive = timed_receive  # type: ignore[method-assign]

    def report() -> dict[str, Any]:
        with node.db.read() as session:
            balances = queries.balances(session)
            rows = reports.trial_balance(balances, "consolidated")["rows"]
            (count,) = raw_connection(session).execute("SELECT count(*) FROM voucherrow").fetchone()
        return {"debit": sum(b.debit for b in balances), "vouchers": count, "rows": len(rows)}

    async def main() -> None:
        runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False, peers=(url,))
        await runtime.start()
        deadline = time.monotonic() + LINK_TIMEOUT
        while not any(s.online and s.stats.synced_at for s in runtime.peers.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"B did not link to A: {[(k, s.last_error) for k, s in runtime.peers.items()]}")
            await asyncio.sleep(0.02)
        _emit(linked=True)
        command = _commands()
        while (cmd := await command())["cmd"] != "stop":
            if cmd["cmd"] == "report":
                began = time.perf_counter()
                out = await runtime.call(report)
                _emit(**out, started=began, done=time.perf_counter())
            elif cmd["cmd"] == "receive-times":
                _emit(calls=calls)
                calls.clear()
        await runtime.stop()
        node.close()

    asyncio.run(main())


# ---------------------------------------------------------------- the driver


class Side:
    """A node process and its command channel."""

    def __init__(self, *args: str) -> None:
        self.proc = side(*args, stdin=True)

    def ask(self, timeout: float = 600, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return read_json_line(self.proc, timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(json.dumps({"cmd": "stop"}) + "\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:  # a stuck side is killed: the figures are already in
                self.proc.kill()


class Watcher:
    """B's voucher table from a read-only connection of this (the driver's) process."""

    def __init__(self, home: Path) -> None:
        from p2psync.node.home import DB_FILE
        self.db = sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True, timeout=30)

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM voucherrow").fetchone()[0]

    def has(self, number: str) -> bool:
        return self.db.execute("SELECT 1 FROM voucherrow WHERE number = ?", (number,)).fetchone() is not None

    def wait(self, predicate: Callable[[], bool], timeout: float, interval: float) -> float:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("B did not show the vouchers in time")
            time.sleep(interval)
        return time.perf_counter()


def bulk(a: Side, b: Side, watcher: Watcher, count: int) -> dict[str, Any]:
    before = b.ask(cmd="report")
    posted = a.ask(cmd="bulk", count=count, seed=2, start=0)
    seen = watcher.wait(lambda: watcher.count() >= before["vouchers"] + count, 600, 0.005)
    after = b.ask(cmd="report")
    if after["debit"] != before["debit"] + posted["paise"] or after["vouchers"] != before["vouchers"] + count:
        raise AssertionError(f"B's trial balance does not show all vouchers: {after['vouchers']}")
    elapsed = after["done"] - posted["started"]
    return {"vouchers": count, "seconds": elapsed, "vouchers_per_s": count / elapsed,
            "post_seconds": posted["posted"] - posted["started"], "transfer_and_apply_seconds": seen - posted["posted"],
            "report_seconds": after["done"] - after["started"], "trial_balance_rows": after["rows"]}


def per_voucher(a: Side, b: Side, watcher: Watcher, count: int) -> dict[str, Any]:
    """N single-voucher posts submitted at once, each durable before it returns, until B has them."""
    base = watcher.count()
    posted = a.ask(cmd="stream", count=count, seed=8, start=3_000_000)
    seen = watcher.wait(lambda: watcher.count() >= base + count, 600, 0.002)
    elapsed = seen - posted["started"]
    return {"vouchers": count, "seconds": elapsed, "vouchers_per_s": count / elapsed,
            "post_seconds": posted["posted"] - posted["started"]}


def live(a: Side, b: Side, watcher: Watcher, count: int, warmup: int = 20) -> dict[str, Any]:
    latencies, post_times, starts = [], [], []
    for i in range(count + warmup):
        posted = a.ask(cmd="post", seed=4, start=1_000_000 + i)
        seen = watcher.wait(lambda n=posted["number"]: watcher.has(n), 60, 0.0002)
        if i >= warmup:
            latencies.append((seen - posted["started"]) * 1000)
            post_times.append((posted["posted"] - posted["started"]) * 1000)
            starts.append(posted["posted"])
    calls = sorted(b.ask(cmd="receive-times")["calls"])
    hops, receives = [], []
    for posted_at in starts:  # B's first receive call after each post is that voucher's
        mine = next((c for c in calls if c[0] >= posted_at), None)
        if mine is not None:
            hops.append((mine[0] - posted_at) * 1000)
            receives.append((mine[1] - mine[0]) * 1000)
    return {"vouchers": count, "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "p99_ms": percentile(latencies, 99), "max_ms": max(latencies), "mean_ms": sum(latencies) / len(latencies),
            "post_at_a_p50_ms": percentile(post_times, 50), "post_at_a_p99_ms": percentile(post_times, 99),
            "a_to_b_hop_p50_ms": percentile(hops, 50), "receive_at_b_p50_ms": percentile(receives, 50),
            "receive_at_b_p99_ms": percentile(receives, 99)}


def run(base: Path, bulk_count: int, per_voucher_count: int, live_count: int) -> dict[str, Any]:
    """The linked pair as two processes; the sections asked for (a count of 0 skips one)."""
    home_a, home_b = make_org(base, ("BR1",))
    a = Side("pair-a", "--home", str(home_a))
    b: Side | None = None
    watcher: Watcher | None = None
    try:
        port = read_json_line(a.proc, 120)["port"]
        b = Side("pair-b", "--home", str(home_b), "--url", f"wss://127.0.0.1:{port}")
        read_json_line(b.proc, LINK_TIMEOUT + 10)
        watcher = Watcher(home_b)
        out: dict[str, Any] = {}
        if bulk_count:
            out["bulk"] = bulk(a, b, watcher, bulk_count)
        if per_voucher_count:
            out["per_voucher"] = per_voucher(a, b, watcher, per_voucher_count)
        if live_count:
            out["live"] = live(a, b, watcher, live_count)
        out["b_vouchers"] = watcher.count()
        return out
    finally:
        if watcher is not None:
            watcher.db.close()
        for node in (b, a):
            if node is not None:
                node.stop()
