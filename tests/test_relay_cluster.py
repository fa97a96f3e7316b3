"""Several relay processes on one PostgreSQL database, as a hosting firm runs them behind one address:
members on different processes converge live, and when one process is killed mid-stream its members
fail over to another (through a load balancer) with nothing lost or duplicated. Each process's
metrics endpoint is scraped and checked against what happened."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from balancer import Balancer
from procs import Fleet, environment, make_org, post_here, vectors, voucher_numbers, wait_converged, wait_until
from test_relay import Client, books, build_org, creds, post, run, scrape, take, until

pytestmark = pytest.mark.slow


class RelayProcess:
    """``p2psync relay --db postgresql://...`` on a free loopback port, with its metrics endpoint."""

    def __init__(self, db: str, base: Path, name: str) -> None:
        self.log = base / f"relay-{name}.log"
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port", "0", "--db", db,
                 "--metrics", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=log, text=True, env=environment(base))
        assert self.proc.stdout is not None
        listening, metrics = self.proc.stdout.readline(), self.proc.stdout.readline()
        url = re.search(r"relay listening on (ws://127\.0\.0\.1:(\d+))", listening)
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", metrics)
        assert url and port, f"{listening}{metrics}{self.log.read_text()}"
        self.url, self.port, self.metrics = url.group(1), int(url.group(2)), int(port.group(1))

    def scrape(self) -> dict[str, float]:
        return scrape(self.metrics)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(20) == 0, self.log.read_text()


@pytest.fixture
def relay_pair(pg_url: str, tmp_path: Path) -> Iterator[tuple[RelayProcess, RelayProcess]]:
    pair = RelayProcess(pg_url, tmp_path, "a"), RelayProcess(pg_url, tmp_path, "b")
    yield pair
    for relay in pair:
        relay.stop()


def test_members_on_two_relay_processes_converge_live(tmp_path: Path,
                                                      relay_pair: tuple[RelayProcess, RelayProcess]) -> None:
    head, (branch, second) = build_org(tmp_path, ("BR1", "BR2"))
    a, b = relay_pair
    first = len(head.entries())

    async def scenario() -> None:
        ho = await Client.open(a.url, creds(head))
        await ho.push_node(head)
        br = await Client.open(b.url, creds(branch))  # on the other process: catches up from the shared store
        await br.wait_caught_up()
        assert take(branch, br) == first
        late = await Client.open(a.url, creds(second))
        await late.wait_caught_up()
        assert take(second, late) == first

        post(head, 3)  # live from process A to a member on process B
        await ho.push(head.entries(branch.vectors()))
        await until(lambda: len(br.received) == first + 3, "the head office's live entries on process B")
        post(branch, 2, "10.00")  # and back, to members on process A
        await br.push(branch.entries(head.vectors()))
        await until(lambda: len(ho.received) == 2 and len(late.received) == first + 5,
                    "the branch's live entries on process A")
        for client in (br, late):
            client.received = client.received[first:]
        assert take(branch, br) == 3 and take(head, ho) == 2 and take(second, late) == 5
        assert books(head) == books(branch) == books(second)
        for client in (ho, br, late):
            assert len(set(client.received)) == len(client.received)  # nothing came twice
            await client.close()

    run(scenario())
    at_a, at_b = a.scrape(), b.scrape()
    assert at_a["p2psync_relay_entries_stored_total"] == first + 3
    assert at_b["p2psync_relay_entries_stored_total"] == 2
    assert at_a["p2psync_relay_entries_forwarded_total"] == (first + 5) + 2  # to the late branch and the head office
    assert at_b["p2psync_relay_entries_forwarded_total"] == first + 3
    assert (at_a["p2psync_relay_connections_total"], at_b["p2psync_relay_connections_total"]) == (2, 1)
    org = f'p2psync_relay_org_entries{{org="{head.trust.org}"}}'
    assert at_a[org] == at_b[org] == first + 5  # both read the one shared store


def test_a_relay_process_killed_mid_stream_loses_nothing(tmp_path: Path, fleet: Fleet, pg_url: str,
                                                         relay_pair: tuple[RelayProcess, RelayProcess]) -> None:
    a, b = relay_pair
    balancer = Balancer([("127.0.0.1", a.port), ("127.0.0.1", b.port)]).start()
    try:
        ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(balancer.url,))
        fleet.start(ho)
        wait_until(lambda: a.scrape()["p2psync_relay_connections_open"] == 1, "the head office on relay A")
        fleet.start(br1)
        wait_until(lambda: b.scrape()["p2psync_relay_connections_open"] == 1, "the branch on relay B")

        posted: list[str] = []
        killed = threading.Event()

        def stream() -> None:
            """Post until 8 vouchers after the kill (so the kill falls inside the stream), at most 200."""
            after = 0
            while after < 8 and len(posted) < 200:
                posted.append(post_here(ho, "receipt", "2026-04-03", "Cash", "Sales", f"{100 + len(posted)}.00",
                                        f"stream {len(posted)}"))
                after += killed.is_set()

        poster = threading.Thread(target=stream)
        poster.start()
        try:
            wait_until(lambda: a.scrape()["p2psync_relay_entries_stored_total"] >= 4, "the stream to reach relay A")
            a.kill()  # mid-stream: the head office's link drops, it reconnects through the balancer to B
        finally:
            killed.set()
            poster.join(120)
        at_branch = post_here(br1, "receipt", "2026-04-04", "Cash", "Sales", "55.00", "after the failover")
        wait_converged(ho, br1, timeout=90)
        assert {*posted, at_branch} <= voucher_numbers(br1) == voucher_numbers(ho)
        assert balancer.routed.count(1) >= 2  # the head office came back through B
    finally:
        balancer.close()
    with psycopg.connect(pg_url) as db:
        held = db.execute("SELECT doc, author, count(*), min(seq), max(seq) FROM relay_entry "
                          "GROUP BY doc, author").fetchall()
    relay_vectors: dict[str, dict[str, int]] = {}
    for doc, author, count, low, high in held:
        assert (count, low) == (high, 1), f"{doc}/{author[:8]}: {count} entries for sequences {low}..{high}"
        relay_vectors.setdefault(doc, {})[author] = high
    assert relay_vectors == vectors(ho)  # every entry of the organisation, once
