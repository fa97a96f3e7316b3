"""Relay throughput: entries per second stored by relay processes and forwarded live to members, on
SQLite (one process, for reference) and on PostgreSQL through one and through two relay processes.

    pip install -e '.[bench,postgres]'      # and Debian's postgresql package
    python bench/relays.py [--orgs 4] [--entries 600]

Each of `--orgs` organisations has a head office that posted `--entries` vouchers, one entry each.
Per organisation a branch connects first and waits, caught up; then every head office pushes all its
entries at once (windowed batches, as nodes do) and the clock runs until every branch has received
every entry live; also each relay process's peak memory. With two processes, head offices connect to one and their branches to the other,
so every entry crosses processes through the shared database (LISTEN/NOTIFY and a store read). The
PostgreSQL server is a throwaway one (fsync on, like SQLite's full sync); client, relays and server
share this machine's cores, so the figures are for comparing set-ups, not absolute capacity.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import COMPANY, LEDGERS, make_drafts
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from websockets.asyncio.client import ClientConnection, connect

from p2psync.node import registrar
from p2psync.node.office import Node
from p2psync.protocol import relay_auth
from p2psync.protocol.sync import MAX_FRAME, Ack, CaughtUp, Entries, SyncConnection, batches
from p2psync.store.db import get_setting
from p2psync.trust.keys import unb64

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgserver import PostgresServer, missing  # the test suite's throwaway server

LISTENING = re.compile(r"relay listening on (ws://\S+)")


@dataclass(frozen=True)
class Member:
    """What a member needs to prove itself to a relay."""

    node_id: str
    org: str
    role: str
    root_cert: bytes
    cert: bytes
    signing: Ed25519PrivateKey


@dataclass
class Org:
    head: Member
    branch: Member
    entries: list[bytes] = field(default_factory=list)


def member_of(node: Node) -> Member:
    with node.db.read() as session:
        root_cert, cert = get_setting(session, "root_cert"), get_setting(session, "cert")
    assert root_cert and cert
    return Member(node.identity.node_id, node.trust.org, node.identity.role, unb64(root_cert), unb64(cert),
                  node.trust.keys.signing)


def build_org(base: Path, vouchers: int, seed: int) -> Org:
    """A head office with `vouchers` vouchers posted one by one (one entry each) and an enrolled branch."""
    head = Node.create_head(base / "HO", COMPANY, "HO", "Head Office", open_books=True)  # as earlier rounds
    head.add_office("BR1", "Branch BR1")
    for name, group in LEDGERS.items():
        head.add_ledger(name, group)
    branch = registrar.enroll_here(head, base / "BR1", "BR1")
    for draft in make_drafts(vouchers, seed=seed):
        head.post_many([draft])
    org = Org(member_of(head), member_of(branch), head.entries())
    head.close()
    branch.close()
    return org


class Link:
    """A member's connection to a relay: pushes entries within the window, counts and acks received ones."""

    def __init__(self, ws: ClientConnection, member: Member, expect: int) -> None:
        self.ws, self.member, self.expect = ws, member, expect
        self.conn = SyncConnection()
        self.received = 0
        self.caught_up = asyncio.Event()
        self.done = asyncio.Event()
        self.acked = asyncio.Event()
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, member: Member, expect: int = 0) -> Link:
        ws = await connect(url, compression=None, max_size=MAX_FRAME, proxy=None, open_timeout=30)
        link = cls(ws, member, expect)
        await ws.send(relay_auth.answer(await ws.recv(), member.root_cert, member.cert, member.signing))
        await ws.send(link.conn.hello(member.node_id, member.org, member.role, 0, {}))
        link.reader = asyncio.create_task(link._read())
        return link

    async def _read(self) -> None:
        async for frame in self.ws:
            event = self.conn.receive(frame)
            if isinstance(event, Entries):
                self.received += len(event.blobs)
                await self.ws.send(self.conn.ack(event.batch, {}))
                if self.received >= self.expect:
                    self.done.set()
            elif isinstance(event, Ack):
                self.acked.set()
            elif isinstance(event, CaughtUp):
                self.caught_up.set()

    async def push(self, blobs: list[bytes]) -> None:
        for chunk in batches(blobs):
            while not self.conn.can_send:
                self.acked.clear()
                await self.acked.wait()
            await self.ws.send(self.conn.entries(chunk))
        while self.conn.in_flight:
            self.acked.clear()
            await self.acked.wait()

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()


async def measure(orgs: list[Org], head_urls: list[str], branch_urls: list[str]) -> float:
    """Seconds from the first push until every branch has every entry of its organisation."""
    branches = [await Link.open(branch_urls[i % len(branch_urls)], org.branch, len(org.entries))
                for i, org in enumerate(orgs)]
    for link in branches:
        await asyncio.wait_for(link.caught_up.wait(), 60)
    heads = [await Link.open(head_urls[i % len(head_urls)], org.head) for i, org in enumerate(orgs)]
    for link in heads:
        await asyncio.wait_for(link.caught_up.wait(), 60)
    started = time.perf_counter()
    await asyncio.gather(*(link.push(org.entries) for link, org in zip(heads, orgs, strict=True)))
    await asyncio.wait_for(asyncio.gather(*(link.done.wait() for link in branches)), 600)
    elapsed = time.perf_counter() - started
    for link in (*heads, *branches):
        await link.close()
    return elapsed


def start_relay(db: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    with log.open("ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port", "0",
                                 "--db", db], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    match = LISTENING.search(proc.stdout.readline())
    if not match:
        raise RuntimeError(f"relay did not start:\n{log.read_text()}")
    return proc, match.group(1)


def stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        proc.wait(30)


def run_case(name: str, dbs: list[str], orgs: list[Org], work: Path, cross: bool) -> dict[str, float]:
    started = [start_relay(db, work / f"{name}-{i}.log") for i, db in enumerate(dbs)]
    urls = [url for _proc, url in started]
    try:
        heads, branches = (urls[:1], urls[1:]) if cross else (urls, urls)
        seconds = asyncio.run(measure(orgs, heads, branches))
        peak = max(peak_rss_mb(proc.pid) for proc, _url in started)
    finally:
        stop([proc for proc, _url in started])
    total = sum(len(org.entries) for org in orgs)
    return {"entries": total, "seconds": seconds, "per_second": total / seconds, "peak_mb": peak}


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory (VmHWM), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orgs", type=int, default=4)
    parser.add_argument("--entries", type=int, default=600, help="vouchers (entries) per organisation")
    args = parser.parse_args()
    why_not = missing()
    with tempfile.TemporaryDirectory(prefix="p2psync-bench-relays-") as tmp:
        work = Path(tmp)
        print(f"building {args.orgs} organisations of {args.entries} entries ...", flush=True)
        orgs = [build_org(work / f"org{i}", args.entries, seed=i + 1) for i in range(args.orgs)]
        results = {"sqlite, one process": run_case("sqlite", [str(work / "relay.db")], orgs, work, cross=False)}
        if why_not is None:
            server = PostgresServer(durable=True).start()
            try:
                one, two = server.create_database(), server.create_database()
                results["postgresql, one process"] = run_case("pg1", [one], orgs, work, cross=False)
                results["postgresql, two processes"] = run_case("pg2", [two, two], orgs, work, cross=True)
            finally:
                server.stop()
        else:
            print(f"PostgreSQL cases skipped: {why_not}")
    print(f"\n{'relay':<28} {'entries':>8} {'seconds':>8} {'entries/s':>10} {'peak MiB':>9}")
    for name, figures in results.items():
        print(f"{name:<28} {figures['entries']:>8.0f} {figures['seconds']:>8.2f} {figures['per_second']:>10.0f} "
              f"{figures['peak_mb']:>9.0f}")


if __name__ == "__main__":
    main()
