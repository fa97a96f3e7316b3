"""Attacks on the running system: real ``p2psync run`` and ``p2psync relay`` processes on loopback,
attacked the way an outsider, a revoked branch, a dishonest branch or the relay's operator would.

- the relay process neither stores nor carries a name, amount or narration (its traffic is captured
  by a TCP proxy in front of it);
- a revoked branch's entries past its cut-off, passed on by an honest office that had not heard of
  the revocation yet, are refused by an office that has; and it cannot read what is written after;
- a fake zeroconf advert with the organisation's tag and a rogue TLS server gets no data and no trust;
- a branch cannot write another office's books directly, through the relay, through a third office,
  or with the command line;
- invite codes cannot be guessed, reused or used after they expire, through the real ``join``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import re
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from helpers import forged_revision
from procs import (
    WAIT,
    Fleet,
    cli,
    environment,
    free_port,
    here,
    linked,
    make_org,
    peers_of,
    policy,
    post_here,
    quarantined,
    query,
    setting,
    status,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)
from test_sync_links import hello_of, raw_link

from helpers import forge_entry
from p2psync.books.model import Line, Side, encode_revision
from p2psync.net import discovery, tls
from p2psync.node.home import DB_FILE, KEYS_DIR
from p2psync.node.office import Node
from p2psync.protocol.sync import Ack, SyncConnection
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import unb64

pytestmark = pytest.mark.slow

CANARIES = ("Zanzibar-narration-canary", "Quetzal Canary Stores", "98765.43", "Sync Links Traders", "Branch BR1")


# ---------------------------------------------------------------- a relay process, optionally behind a tap


class Tap:
    """A loopback TCP proxy that records every byte both ways: what the relay's operator (or anyone
    on its network) sees."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.seen = bytearray()
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:  # the tap or the relay is closing
                return
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                with self.lock:
                    self.seen += data
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.listener.close()


class RelayProcess:
    def __init__(self, base: Path, port: int) -> None:
        self.db = base / "relay" / "relay.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port",
                                      str(port), "--db", str(self.db)], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=environment(base))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert re.search(r"relay listening on ws://127\.0\.0\.1:\d+", line), line
        self.url = f"ws://127.0.0.1:{port}"

    def stored(self) -> bytes:
        return b"".join(p.read_bytes() for p in self.db.parent.glob("relay.db*"))

    def stop(self) -> None:
        self.proc.terminate()
        assert self.proc.wait(WAIT) == 0


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path, free_port())
    yield process
    process.stop()


def test_the_relay_process_neither_stores_nor_carries_names_or_amounts(tmp_path: Path, fleet: Fleet,
                                                                      relay: RelayProcess) -> None:
    tap = Tap(int(relay.url.rsplit(":", 1)[1]))
    try:
        ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(f"ws://127.0.0.1:{tap.port}",))
        fleet.start(ho)  # no --peer, no mDNS: everything between them goes through the tap and the relay
        fleet.start(br1)
        here(ho, "ledger", "add", CANARIES[1], "--group", "Cash-in-Hand")
        at_ho = post_here(ho, "receipt", "2026-04-03", CANARIES[1], "Sales", CANARIES[2], f"{CANARIES[0]} at HO")
        at_br1 = post_here(br1, "payment", "2026-04-04", "Rent", "Cash", "1,234.56", f"{CANARIES[0]} at BR1")
        wait_converged(ho, br1)
        assert {at_ho, at_br1} <= voucher_numbers(br1) == voucher_numbers(ho)
        assert any(CANARIES[1] == row["name"] for row in json.loads(here(br1, "ledger", "list", "--json")))
    finally:
        tap.close()
    seen, stored = bytes(tap.seen), relay.stored()
    assert len(seen) > 2000 and setting(ho, "node_id").encode() in stored  # the tap and the store saw traffic
    for canary in (*CANARIES, "1234.56", "1,234.56", "Rent", "Sales"):
        assert canary.encode() not in seen, f"{canary!r} crossed the wire to or from the relay in clear"
        assert canary.encode() not in stored, f"{canary!r} is in the relay's database"


# ---------------------------------------------------------------- a revoked branch


def test_a_revoked_branchs_late_entries_passed_on_by_an_honest_office_are_refused(tmp_path: Path,
                                                                                   fleet: Fleet) -> None:
    ho, br1, br2 = make_org(tmp_path)
    one = fleet.start(br1)
    head = fleet.start(ho, peers=(one.url,))
    two = fleet.start(br2, peers=(one.url,))
    wait_until(lambda: linked(br2, "BR1") and linked(ho, "BR1"), "BR2 and HO to link with BR1")
    before = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", "10.00", "by BR2 before it is revoked")
    wait_until(lambda: before in voucher_numbers(ho), "BR2's early voucher to reach HO")

    head.stop()
    here(ho, "revoke", "BR2")  # while the head office is offline: nobody else has heard of it yet
    late = post_here(br2, "receipt", "2026-04-03", "Cash", "Sales", "20.00", "by BR2 after its revocation")
    wait_until(lambda: late in voucher_numbers(br1), "BR2's late voucher to reach BR1, which has no news yet")
    two.stop()

    head = fleet.start(ho, peers=(one.url,))  # the honest BR1 passes everything it holds to HO
    wait_until(lambda: policy(br1)["version"] == policy(ho)["version"], "the revocation to reach BR1")
    wait_until(lambda: any("revoked" in reason for reason in quarantined(ho)), "HO to refuse BR2's late entry")
    assert late not in voucher_numbers(ho), "an entry past the cut-off is refused where the policy was first"
    assert before in voucher_numbers(ho), "entries made before the revocation stay valid"

    # and BR2, still holding its keys, can read nothing written after its revocation: the epoch changed
    head.stop()
    after = post_here(ho, "receipt", "2026-04-05", "Cash", "Sales", "30.00", "after the revocation")
    node_ho, node_br2 = Node.open(ho), Node.open(br2)
    try:
        assert node_ho.trust.policy.epoch > node_br2.trust.policy.epoch
        result = node_br2.receive(node_ho.entries(node_br2.vectors()))
        assert result.quarantined and all("key" in reason for reason in result.quarantined), result.quarantined
    finally:
        node_ho.close()
        node_br2.close()
    assert after not in voucher_numbers(br2)
