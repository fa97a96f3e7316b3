"""p2psync measured end to end: two `NodeRuntime`s in one process, linked by a real TLS websocket on
loopback with sealed (encrypted, signed) entries, exactly as two `p2psync run` nodes link.

(2) bulk: `Node.post_many` of N vouchers at A until B's reports show all N.
(4) live: one voucher at a time posted at A (on A's worker, then `notify`) until B's voucher table has it.
(5) wire: bytes through the websocket and through the TCP connection (a counting proxy), per voucher.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import count_vouchers, make_drafts, make_org, percentile, query, total_paise
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection

from p2psync.books import reports
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.store import queries

LINK_TIMEOUT = 60.0


# ---------------------------------------------------------------- byte counters


@dataclass
class WsCounter:
    """Websocket message payloads sent, by direction (A serves, B dials), and messages."""

    a_to_b: int = 0
    b_to_a: int = 0
    messages: int = 0

    def reset(self) -> None:
        self.a_to_b = self.b_to_a = self.messages = 0


WS = WsCounter()
_original_send = Connection.send


async def _counting_send(self: Connection, message: Any, text: bool | None = None) -> None:
    size = len(message.encode() if isinstance(message, str) else message) if isinstance(message, (str, bytes, bytearray, memoryview)) else 0
    if isinstance(self, ServerConnection):
        WS.a_to_b += size
    else:
        WS.b_to_a += size
    WS.messages += 1
    await _original_send(self, message, text=text)


def count_websocket_messages() -> None:
    """Count every websocket message this process sends (a bench-only wrapper, nothing else changes)."""
    Connection.send = _counting_send  # type: ignore[method-assign]


@dataclass
class TcpProxy:
    """A loopback TCP relay between B and A that counts the bytes on the wire (TLS records included)."""

    upstream_port: int
    a_to_b: int = 0
    b_to_a: int = 0
    server: asyncio.Server | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    def reset(self) -> None:
        self.a_to_b = self.b_to_a = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, to_b: bool) -> None:
            try:
                while data := await src.read(65536):
                    if to_b:
                        self.a_to_b += len(data)
                    else:
                        self.b_to_a += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        tasks = [asyncio.create_task(pipe(reader, up_writer, False)), asyncio.create_task(pipe(up_reader, writer, True))]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)


# ---------------------------------------------------------------- a linked pair


@dataclass
class Pair:
    a: Node
    b: Node
    ra: NodeRuntime
    rb: NodeRuntime
    home_a: Path
    home_b: Path
    proxy: TcpProxy | None = None


@contextlib.asynccontextmanager
async def linked_pair(base: Path, via_proxy: bool = False) -> AsyncIterator[Pair]:
    """Head office A (serving) and branch BR1 B (dialing A), linked and caught up."""
    home_a, home_b = make_org(base, ("BR1",))
    a, b = Node.open(home_a), Node.open(home_b)
    ra = NodeRuntime(a, host="127.0.0.1", port=0, mdns=False)
    await ra.start()
    proxy = None
    port = ra.port
    if via_proxy:
        proxy = TcpProxy(ra.port)
        port = await proxy.start()
    rb = NodeRuntime(b, host="127.0.0.1", port=0, mdns=False, peers=(f"wss://127.0.0.1:{port}",))
    await rb.start()
    try:
        deadline = time.monotonic() + LINK_TIMEOUT
        while not any(s.online and s.stats.synced_at for s in rb.peers.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"B did not link to A: {[(k, s.last_error) for k, s in rb.peers.items()]}")
            await asyncio.sleep(0.02)
        yield Pair(a, b, ra, rb, home_a, home_b, proxy)
    finally:
        await rb.stop()
        await ra.stop()
        if proxy is not None:
            await proxy.stop()
        a.close()
        b.close()


def trial_balance(node: Node) -> tuple[int, int, dict[str, Any]]:
    """B's reports: the consolidated trial balance, the debit movements it sums, and the voucher count."""
    with node.db.read() as session:
        balances = queries.balances(session)
        report = reports.trial_balance(balances, "consolidated")
        vouchers = len(queries.vouchers(session))
    return sum(b.debit for b in balances), vouchers, report


class Watcher:
    """Polls B's materialized voucher table from its own read-only connection (not B's worker)."""

    def __init__(self, home: Path) -> None:
        self.db = sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True, timeout=30, check_same_thread=False)

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM voucherrow").fetchone()[0]

    def has(self, number: str) -> bool:
        return self.db.execute("SELECT 1 FROM voucherrow WHERE number = ?", (number,)).fetchone() is not None

    def wait(self, predicate: Callable[[], bool], timeout: float, interval: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("B did not show the vouchers in time")
            time.sleep(interval)

    def close(self) -> None:
        self.db.close()


def _entry_sizes(home: Path, after_id: int) -> tuple[int, int, int, int]:
    """Entries logged at `home` after `after_id`: count, raw update bytes, sealed entry bytes, last id."""
    count, raw, sealed, last = query(home, 'SELECT count(*), coalesce(sum(length("update")), 0), '
                                           "coalesce(sum(length(envelope)), 0), coalesce(max(id), 0) FROM entry "
                                           "WHERE id > ? AND envelope IS NOT NULL", after_id)[0]
    return count, raw, sealed, last


def _last_entry(home: Path) -> int:
    return query(home, "SELECT coalesce(max(id), 0) FROM entry")[0][0]


# ---------------------------------------------------------------- (2) bulk


async def bulk(pair: Pair, count: int, seed: int = 2, start: int = 0) -> dict[str, Any]:
    drafts = make_drafts(count, seed=seed, start=start)
    before_debit, before_count, _ = await pair.rb.call(trial_balance, pair.b)
    expected_debit = before_debit + total_paise(drafts)
    expected_count = before_count + count
    watcher = Watcher(pair.home_b)
    first_entry = _last_entry(pair.home_a)
    ws0 = (WS.a_to_b, WS.b_to_a)
    tcp0 = (pair.proxy.a_to_b, pair.proxy.b_to_a) if pair.proxy else (0, 0)
    try:
        started = time.perf_counter()
        await pair.ra.call(pair.a.post_many, drafts)
        await pair.ra.notify()
        posted = time.perf_counter()
        await asyncio.to_thread(watcher.wait, lambda: watcher.count() >= expected_count, 600, 0.005)
        seen = time.perf_counter()
        debit, vouchers, report = await pair.rb.call(trial_balance, pair.b)
        done = time.perf_counter()
    finally:
        watcher.close()
    if debit != expected_debit or vouchers != expected_count:
        raise AssertionError(f"B's trial balance does not show all vouchers: {vouchers} of {expected_count}")
    await asyncio.sleep(0.3)  # B's acknowledgement, for the byte counts (not timed)
    elapsed = done - started
    entries, raw, sealed, _ = _entry_sizes(pair.home_a, first_entry)
    out = {"vouchers": count, "seconds": elapsed, "vouchers_per_s": count / elapsed,
           "post_seconds": posted - started, "transfer_and_apply_seconds": seen - posted,
           "report_seconds": done - seen, "entries": entries, "raw_update_bytes": raw, "entry_bytes": sealed,
           "ws_bytes_a_to_b": WS.a_to_b - ws0[0], "ws_bytes_b_to_a": WS.b_to_a - ws0[1],
           "trial_balance_rows": len(report["rows"])}
    if pair.proxy:
        out.update(tcp_bytes_a_to_b=pair.proxy.a_to_b - tcp0[0], tcp_bytes_b_to_a=pair.proxy.b_to_a - tcp0[1])
    return out


# ---------------------------------------------------------------- (4) live


async def live(pair: Pair, count: int, warmup: int = 20, seed: int = 4, start: int = 1_000_000) -> dict[str, Any]:
    drafts = make_drafts(count + warmup, seed=seed, start=start)
    watcher = Watcher(pair.home_b)
    latencies, post_times, hop_times, receive_times = [], [], [], []
    calls: list[tuple[float, float]] = []
    receive = pair.b.receive

    def timed_receive(blobs: Any, *args: Any) -> Any:  # B's node call, timed (bench-only wrapper on this instance)
        began = time.perf_counter()
        try:
            return receive(blobs, *args)
        finally:
            calls.append((began, time.perf_counter()))

    pair.b.receive = timed_receive  # type: ignore[method-assign]
    first_entry = 0
    ws0 = (0, 0)
    tcp0 = (0, 0)
    try:
        for i, item in enumerate(drafts):
            if i == warmup:
                await asyncio.sleep(0.2)  # let the warm-up's acknowledgements settle before counting bytes
                first_entry = _last_entry(pair.home_a)
                ws0 = (WS.a_to_b, WS.b_to_a)
                tcp0 = (pair.proxy.a_to_b, pair.proxy.b_to_a) if pair.proxy else (0, 0)
            calls.clear()
            started = time.perf_counter()
            rev = await pair.ra.call(pair.a.post, item.draft)
            posted = time.perf_counter()
            await pair.ra.notify()
            await asyncio.to_thread(watcher.wait, lambda n=rev.number: watcher.has(n), 60, 0.0002)
            seen = time.perf_counter()
            if i >= warmup:
                latencies.append((seen - started) * 1000)
                post_times.append((posted - started) * 1000)
                mine = [c for c in calls if c[0] >= posted]  # a previous voucher's call may be recorded late
                if mine:
                    hop_times.append((mine[0][0] - posted) * 1000)
                    receive_times.append((mine[0][1] - mine[0][0]) * 1000)
        await asyncio.sleep(0.3)  # the last acknowledgement
    finally:
        watcher.close()
        pair.b.receive = receive  # type: ignore[method-assign]
    entries, raw, sealed, _ = _entry_sizes(pair.home_a, first_entry)
    out = {"vouchers": count, "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
           "p99_ms": percentile(latencies, 99), "max_ms": max(latencies), "mean_ms": sum(latencies) / len(latencies),
           "post_at_a_p50_ms": percentile(post_times, 50), "post_at_a_p99_ms": percentile(post_times, 99),
           "a_to_b_hop_p50_ms": percentile(hop_times, 50), "receive_at_b_p50_ms": percentile(receive_times, 50),
           "receive_at_b_p99_ms": percentile(receive_times, 99),
           "entries": entries, "raw_update_bytes": raw, "entry_bytes": sealed,
           "ws_bytes_a_to_b": WS.a_to_b - ws0[0], "ws_bytes_b_to_a": WS.b_to_a - ws0[1]}
    if pair.proxy:
        out.update(tcp_bytes_a_to_b=pair.proxy.a_to_b - tcp0[0], tcp_bytes_b_to_a=pair.proxy.b_to_a - tcp0[1])
    return out


async def run_pair(base: Path, bulk_count: int, live_count: int, via_proxy: bool) -> dict[str, Any]:
    count_websocket_messages()
    async with linked_pair(base, via_proxy=via_proxy) as pair:
        result = {"bulk": await bulk(pair, bulk_count)}
        if live_count:
            result["live"] = await live(pair, live_count)
        result["b_vouchers"] = count_vouchers(pair.home_b)
    return result
