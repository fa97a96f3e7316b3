"""Attacks on the running system: real ``p2psync run`` and ``p2psync relay`` processes on loopback,
attacked the way an outsider, a revoked branch, a dishonest branch or the relay's operator would.

- the relay process neither stores nor carries a name, amount or narration (its traffic is captured
  by a TCP proxy in front of it);
- a revoked branch's entries past its cut-off, passed on by an honest office that had not heard of
  the revocation yet, are refused by an office that has; and it cannot read what is written after;
- a fake zeroconf advert with the organisation's tag and a rogue TLS server gets no data and no trust;
- a branch cannot write another office's books directly, through the relay, through a third office,
  with the command line, or by importing a file;
- invite codes cannot be guessed, reused or used after they expire, through the real ``join``."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import socket
import sqlite3
import ssl
import subprocess
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from helpers import forge_entry, forged_revision
from procs import (
    WAIT,
    Fleet,
    RelayProcess,
    cli,
    here,
    linked,
    make_org,
    policy,
    post_here,
    quarantined,
    query,
    relay_linked,
    setting,
    status,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)
from test_sync_links import hello_of, raw_link

from p2psync.books.model import Line, Side, encode_revision
from p2psync.net import discovery, tls
from p2psync.node import registrar
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


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path)
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


def test_a_revoked_branchs_late_entries_passed_on_by_an_honest_office_are_refused(tmp_path: Path, fleet: Fleet,
                                                                                   relay: RelayProcess) -> None:
    ho, br1, br2 = make_org(tmp_path / "org", relays=(relay.url,))
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

    # BR2 comes back: neither BR1 nor the relay (which HO gave the new policy) lets it in
    wait_until(lambda: relay_linked(ho), "HO to sync with the relay")
    two = fleet.start(br2, peers=(one.url,))

    def refused() -> list[str]:
        errors = [str(p["last_error"]) for p in status(br2)["peers"] if p["office"] == "BR1" or p["kind"] == "relay"]
        return errors if len(errors) == 2 and all("revoked" in e for e in errors) else []

    print("BR2 is told:", wait_until(refused, "BR1 and the relay to refuse the revoked BR2"))
    two.stop()
    assert late not in voucher_numbers(ho)

    # and BR2, still holding its keys, can read nothing written after its revocation: the epoch changed
    head.stop()
    after = post_here(ho, "receipt", "2026-04-05", "Cash", "Sales", "30.00", "after the revocation")
    node_ho, node_br2 = Node.open(ho), Node.open(br2)
    try:
        # BR2 was handed the revoking policy when refused, so it knows it is revoked; the new epoch's
        # key was never sealed to it
        assert node_br2.trust.revoked and node_br2.trust.policy.epoch == node_ho.trust.policy.epoch
        assert node_ho.trust.policy.epoch not in node_br2.trust.ring
        result = node_br2.receive(node_ho.entries(node_br2.vectors()))
        assert result.quarantined and all("key" in reason for reason in result.quarantined), result.quarantined
    finally:
        node_ho.close()
        node_br2.close()
    assert after not in voucher_numbers(br2)



# ---------------------------------------------------------------- a fake advert on the LAN


class RogueServer:
    """A TLS server with a certificate of another organisation: counts the handshakes it completes
    and the bytes members send it after one (both must stay zero)."""

    def __init__(self, keys_dir: Path, root_der: bytes) -> None:
        self.context = tls.server_context(keys_dir, root_der)
        self.context.verify_mode = ssl.CERT_NONE  # it would talk to anyone
        self.handshakes = 0
        self.received = 0

    async def serve(self) -> asyncio.Server:
        return await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.context)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.handshakes += 1
        with contextlib.suppress(OSError, ConnectionError):
            while data := await reader.read(65536):
                self.received += len(data)
        writer.close()


def test_a_fake_advert_with_the_organisations_tag_gets_no_data_and_no_trust(tmp_path: Path, fleet: Fleet) -> None:
    ho, _br1 = make_org(tmp_path / "ours", ("BR1",))
    (stranger,) = make_org(tmp_path / "theirs", (), company="Rogue Traders")
    node = fleet.start(ho, mdns=True)
    post_here(ho, "receipt", "2026-04-02", "Cash", "Sales", "5.00", "held at HO")
    org = policy(ho)["org"]
    rogue = RogueServer(stranger / KEYS_DIR, unb64(setting(stranger, "root_cert")))
    rogue_node = "f" * 32  # the greatest node id: the real node is always the one that dials

    async def attack() -> list[dict[str, object]]:
        server = await rogue.serve()
        port = server.sockets[0].getsockname()[1]
        async with discovery.Advertiser(org, rogue_node, port, addresses=["127.0.0.1"], interfaces=["127.0.0.1"]):
            def refused() -> list[dict[str, object]]:
                return [p for p in status(ho)["peers"] if str(port) in str(p["address"]) and p["last_error"]]

            seen = await asyncio.to_thread(wait_until, refused, "HO to dial the advertised rogue server and refuse it")
        server.close()
        await server.wait_closed()
        return seen

    seen = asyncio.run(attack())
    print("HO's view of the rogue advert:", seen)
    assert all(not p["online"] and not p["last_sync"] and "certificate" in str(p["last_error"]).lower()
               for p in seen), seen
    assert rogue.handshakes == 0 and rogue.received == 0, "the rogue server completed no handshake, got no data"
    assert not any(p["online"] for p in status(ho)["peers"]), "no link with anyone"
    assert rogue_node not in policy(ho)["members"] and node.running


# ---------------------------------------------------------------- writing another office's books


def refused_by(home: Path, reasons_before: int) -> list[str]:
    return [r for r in quarantined(home)[reasons_before:] if "may not write" in r]


async def push_direct(url: str, author: Path, blobs: list[bytes]) -> None:
    """As the member at `author`, over its own TLS link: hello, then one batch; wait for the ack."""
    async with await raw_link(url, author) as ws:
        conn = SyncConnection()
        await ws.send(hello_of(author))
        conn.receive(await asyncio.wait_for(ws.recv(), WAIT))
        await ws.send(conn.entries(blobs))
        while not isinstance(conn.receive(await asyncio.wait_for(ws.recv(), WAIT)), Ack):
            pass


def test_a_branch_cannot_write_another_offices_books_by_any_path(tmp_path: Path, fleet: Fleet,
                                                                 relay: RelayProcess) -> None:
    ho, br1, br2 = make_org(tmp_path / "org", relays=(relay.url,))
    one = fleet.start(br1)
    head = fleet.start(ho, peers=(one.url,))
    theirs = post_here(br1, "receipt", "2026-04-02", "Cash", "Sales", "100.00", "BR1's own voucher")
    wait_converged(ho, br1)
    books_before = {home: (voucher_numbers(home), vectors(home)) for home in (ho, br1)}

    dishonest = Node.open(br2)  # BR2's keys, used to sign changes to other offices' books
    try:
        into_br1 = forge_entry(dishonest, "vouchers/BR1/2026-04", lambda revisions: revisions.__setitem__(
            "a" * 24, encode_revision(forged_revision("BR1", "BR1/RCT/00009", (
                Line("Cash", Side.DR, 100), Line("Sales", Side.CR, 100))))))
        into_ho = forge_entry(dishonest, "vouchers/HO/2026-04", lambda revisions: revisions.__setitem__(
            "b" * 24, encode_revision(forged_revision("HO", "HO/RCT/00009", (
                Line("Cash", Side.DR, 100), Line("Sales", Side.CR, 100))))))
    finally:
        dishonest.close()

    # directly, to the office whose books it targets
    asyncio.run(push_direct(one.url, br2, [into_br1]))
    wait_until(lambda: refused_by(br1, 0), "BR1 to refuse BR2's entry into its books")
    # to a third office (HO), which would pass it on to BR1 if it took it
    asyncio.run(push_direct(head.url, br2, [into_br1]))
    wait_until(lambda: refused_by(ho, 0), "HO to refuse BR2's entry into BR1's books")
    # through the relay, which cannot check (it cannot read) and forwards it to both
    async def through_relay() -> None:
        from test_relay import Client, creds

        node = Node.open(br2)
        try:
            who = creds(node)
        finally:
            node.close()
        client = await Client.open(relay.url, who)
        await client.push([into_ho])
        await client.close()

    asyncio.run(through_relay())
    wait_until(lambda: len(refused_by(ho, 0)) >= 2 and len(refused_by(br1, 0)) >= 2,
               "HO and BR1 to refuse BR2's entry into HO's books, forwarded by the relay")
    for home in (ho, br1):
        assert (voucher_numbers(home), vectors(home)) == books_before[home], f"{home.name}'s books changed"

    # and with the command line at BR2: amend, cancel, or set another office's opening...
    for args in (("voucher", "amend", theirs, "--date", "2026-04-02", "--dr", "Cash=1.00", "--cr", "Sales=1.00"),
                 ("voucher", "cancel", theirs, "--reason", "not mine"),
                 ("ledger", "opening", "Cash", "500", "--office", "BR1")):
        result = cli(br2, *args, check=False)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (args, result.stderr)
        assert "BR1" in result.stderr or "head office" in result.stderr.lower(), (args, result.stderr)
    # or by importing a file that places its vouchers in BR1's books
    meant_for_br1 = tmp_path / "br1-sales.json"
    meant_for_br1.write_text(json.dumps([{"office": "BR1", "type": "receipt", "date": "2026-04-03",
                                          "lines": [{"ledger": "Cash", "dr": "7.00"}, {"ledger": "Sales", "cr": "7.00"}]}]))
    result = cli(br2, "voucher", "import", str(meant_for_br1), check=False)
    assert result.returncode != 0 and "'office'" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert not query(br2, "SELECT doc FROM entry WHERE doc LIKE 'vouchers/%' AND author = ?", setting(br2, "node_id"))


# ---------------------------------------------------------------- invite codes through the real join


def join(base: Path, name: str, code: str, via: str) -> subprocess.CompletedProcess[str]:
    return cli(base / name, "join", code, "--via", via, check=False)


def test_invite_codes_resist_guessing_reuse_and_expiry_through_join(tmp_path: Path, fleet: Fleet) -> None:
    ho, _br1 = make_org(tmp_path / "org", ("BR1",))
    here(ho, "branch", "add", "BR3", "Branch Three")
    here(ho, "branch", "add", "BR4", "Branch Four")
    head = fleet.start(ho)
    code = here(ho, "invite", "BR3").strip().split()[-1]
    real = InviteCode.parse(code)

    # guessing: the right invite id and organisation pin, a wrong secret; each refusal is the one
    # answer for every reason, and the tries lock nothing: the branch then joins with its code
    for attempt in range(6):
        guess = InviteCode(real.invite_id, os.urandom(len(real.secret)), real.pin).text()
        result = join(tmp_path, f"guess{attempt}", guess, head.url)
        assert result.returncode != 0 and registrar.REFUSED in result.stderr, result.stderr
        assert not (tmp_path / f"guess{attempt}" / DB_FILE).exists(), "a refused join leaves no node behind"
    first = join(tmp_path, "BR3", code, head.url)
    assert first.returncode == 0, first.stderr

    # reuse: the code worked once; anyone else with it is refused alike
    again = join(tmp_path, "copycat", code, head.url)
    assert again.returncode != 0 and registrar.REFUSED in again.stderr, again.stderr

    # expiry: a code past its time is refused, even with the right secret
    code = here(ho, "invite", "BR4").strip().split()[-1]
    with closing(sqlite3.connect(ho / DB_FILE)) as db, db:
        db.execute("UPDATE invite SET expires_at = ? WHERE invite_id = ?",
                   ((dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat(),
                    InviteCode.parse(code).invite_id.hex()))
    expired = join(tmp_path, "BR4", code, head.url)
    assert expired.returncode != 0 and registrar.REFUSED in expired.stderr, expired.stderr
    assert not (tmp_path / "BR4" / DB_FILE).exists()
    members = policy(ho)["members"]
    assert len(members) == 3, "HO, BR1 and BR3 only"


def test_an_advert_spoofing_a_members_node_id_does_not_cut_it_off(tmp_path: Path, fleet: Fleet) -> None:
    homes = make_org(tmp_path / "ours", ("BR1",))
    (stranger,) = make_org(tmp_path / "theirs", (), company="Rogue Traders")
    nodes = [fleet.start(home, mdns=True) for home in homes]
    wait_until(lambda: linked(homes[0], "BR1") and linked(homes[1], "HO"), "HO and BR1 to link by zeroconf")
    # only the member with the smaller node id dials: the rogue claims the other one's id
    dialer, dialed = sorted(homes, key=lambda home: setting(home, "node_id"))
    rogue = RogueServer(stranger / KEYS_DIR, unb64(setting(stranger, "root_cert")))

    async def attack() -> str:
        server = await rogue.serve()
        port = server.sockets[0].getsockname()[1]
        async with discovery.Advertiser(policy(dialer)["org"], setting(dialed, "node_id"), port,
                                        addresses=["127.0.0.1"], interfaces=["127.0.0.1"]):
            await asyncio.to_thread(wait_until, lambda: any(str(port) in str(p["address"]) and p["last_error"]
                                                            for p in status(dialer)["peers"]),
                                    f"{dialer.name} to try the spoofed advert of {dialed.name}")
            number = await asyncio.to_thread(post_here, dialed, "receipt", "2026-04-02", "Cash", "Sales", "3.00",
                                             "posted while a rogue claims this node's id")
            try:
                await asyncio.to_thread(wait_until, lambda: number in voucher_numbers(dialer),
                                        f"{dialed.name}'s voucher to reach {dialer.name} over their own link")
            finally:
                print(f"{dialer.name}'s view:", await asyncio.to_thread(lambda: status(dialer)["peers"]))
            assert await asyncio.to_thread(linked, dialer, dialed.name), "the genuine link is up"
        server.close()
        await server.wait_closed()
        return number

    asyncio.run(attack())
    assert rogue.handshakes == 0 and rogue.received == 0
    assert all(node.running for node in nodes)
