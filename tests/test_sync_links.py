"""Node links end to end: real ``p2psync run`` processes on loopback talking TLS websockets.

Each test sets up an organisation in-process (fast), then runs its offices as separate processes
with their own homes and ``--peer`` addresses, and looks at what users and peers can observe:
vouchers, reports, ``status``, the signed policy each node holds, and what a hostile client gets.
Every wait is bounded (`procs.wait_until`); processes are stopped by the `fleet` fixture even when a
test fails.
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from procs import (
    WAIT,
    Fleet,
    cli,
    converged,
    here,
    linked,
    make_org,
    peers_of,
    policy,
    post_here,
    quarantined,
    reports,
    setting,
    status,
    sync_here,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidMessage

from p2psync.net import tls, wire
from p2psync.node.home import KEYS_DIR, LOG_FILE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.protocol.sync import MAX_FRAME, SyncConnection
from p2psync.trust.keys import unb64


def receipt(home: Path, amount: str, date: str = "2026-04-02", narration: str = "") -> str:
    return post_here(home, "receipt", date, "Cash", "Sales", amount, narration)


# ---------------------------------------------------------------- topology and partitions


@pytest.mark.slow
def test_branches_keep_syncing_with_each_other_while_the_head_office_is_down(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1, br2 = make_org(tmp_path)
    head = fleet.start(ho)
    one = fleet.start(br1, peers=(head.url,))
    fleet.start(br2, peers=(head.url, one.url))
    wait_until(lambda: linked(br2, "HO", "BR1"), "BR2 to link with the head office and with BR1")

    head.stop()
    wait_until(lambda: not any(p["online"] for p in peers_of(br2, "HO")), "BR2 to see the head office offline")
    at_one = receipt(br1, "1200.00", narration="posted at BR1 while HO is down")
    at_two = receipt(br2, "340.50", narration="posted at BR2 while HO is down")

    wait_converged(br1, br2)
    assert {at_one, at_two} <= voucher_numbers(br1) == voucher_numbers(br2)
    assert not {at_one, at_two} & voucher_numbers(ho)
    assert here(br1, "report", "trial-balance", "--json") == here(br2, "report", "trial-balance", "--json")


@pytest.mark.slow
def test_partition_heals_to_identical_books_and_reports(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    shared = receipt(br1, "500.00", narration="before the partition")
    wait_until(lambda: shared in voucher_numbers(ho), "the head office to receive BR1's voucher")

    branch.stop()  # the link is cut; both offices keep working
    at_head = receipt(ho, "75.00", date="2026-04-03", narration="at HO during the partition")
    at_branch = receipt(br1, "60.00", date="2026-04-03", narration="at BR1 during the partition")
    here(ho, "voucher", "amend", shared, "--date", "2026-04-02", "--dr", "Cash=510.00", "--cr", "Sales=510.00",
         "--narration", "amended at HO")
    here(br1, "voucher", "amend", shared, "--date", "2026-04-02", "--dr", "Bank=520.00", "--cr", "Sales=520.00",
         "--narration", "amended at BR1")
    assert at_head not in voucher_numbers(br1) and at_branch not in voucher_numbers(ho)

    branch.start()  # the link heals
    wait_converged(ho, br1)
    books = reports(ho, ("HO", "BR1"))
    assert books == reports(br1, ("HO", "BR1"))
    assert {at_head, at_branch, shared} <= {v["number"] for v in books["vouchers"]}
    assert [c["subject"] for c in books["conflicts"]] == [shared], "the losing amendment is listed, not lost"
    assert not quarantined(ho) and not quarantined(br1)


@pytest.mark.slow
def test_sigkilled_nodes_resume_a_large_import_without_loss(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    files = []
    for part in range(4):  # 2,000 vouchers in four imports, spread over the year
        items = [{"type": "receipt", "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}",
                  "narration": f"bulk {part}-{i}",
                  "lines": [{"ledger": "Cash", "dr": f"{part * 500 + i + 1}.25"},
                            {"ledger": "Sales", "cr": f"{part * 500 + i + 1}.25"}]} for i in range(500)]
        files.append(tmp_path / f"bulk-{part}.json")
        files[-1].write_text(json.dumps(items))
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    own = receipt(br1, "99.00", narration="acknowledged at BR1 before it is killed")

    failures: list[Exception] = []

    def import_all() -> None:
        try:
            for path in files:
                cli(ho, "voucher", "import", str(path))
        except (AssertionError, subprocess.SubprocessError) as exc:  # reported by the test below
            failures.append(exc)

    importer = threading.Thread(target=import_all)
    importer.start()
    try:
        # kill -9 the receiver once it holds part of the import and the next part is on its way
        wait_until(lambda: len(voucher_numbers(ho)) >= 1000 and len(voucher_numbers(br1)) > 500,
                   "BR1 to receive the first part while the head office imports the second", interval=0.02)
        branch.kill()
        branch.start()
        # and the sender as soon as the third part is in its log, while the import goes on
        wait_until(lambda: len(voucher_numbers(ho)) >= 1500, "the head office to import the third part",
                   interval=0.02)
        head.kill()
        head.start()
    finally:
        importer.join(120)
    assert not failures, failures

    wait_converged(ho, br1, timeout=60)
    numbers = voucher_numbers(ho)
    assert len(numbers) == 2001 and own in numbers
    assert voucher_numbers(br1) == numbers
    assert not quarantined(ho) and not quarantined(br1)
    assert here(ho, "report", "trial-balance", "--json") == here(br1, "report", "trial-balance", "--json")


# ---------------------------------------------------------------- policy


def test_sync_after_date_spreads_and_older_vouchers_stay_local(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    wait_until(lambda: linked(br1, "HO"), "BR1 to link with the head office")

    here(ho, "settings", "--sync-after", "2026-04-01")
    newer = policy(ho)
    assert newer["sync_after"] == "2026-04-01"
    wait_until(lambda: policy(br1)["version"] == newer["version"], "the new policy to reach BR1 over the link")
    assert status(br1)["node"]["sync_after"] == "2026-04-01"

    shared = receipt(br1, "10.00", date="2026-04-05", narration="after the sync-after date")
    from_head = receipt(ho, "30.00", date="2026-04-06", narration="from the head office")
    wait_converged(ho, br1)
    assert shared in voucher_numbers(ho) and from_head in voucher_numbers(br1)
    kept = receipt(br1, "20.00", date="2026-03-05", narration="before the sync-after date: stays here")
    assert kept in voucher_numbers(br1)

    # The newest entry at BR1 is now local. Its link must wait quietly for the next shared entry:
    # an idle node uses a tiny share of one CPU, a link that spins uses all it can get.
    assert branch.proc is not None
    before = cpu_seconds(branch.proc.pid)
    time.sleep(2.5)  # a fixed window in which CPU use is measured, not a wait for an event
    assert cpu_seconds(branch.proc.pid) - before < 1.0, "BR1's link spins after a local-only entry"
    assert kept not in voucher_numbers(ho) and linked(br1, "HO")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process, from /proc (Linux, like the loopback tests of discovery)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_revoked_branch_is_refused_at_connect_once_the_policy_spreads(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1, br2 = make_org(tmp_path)
    head = fleet.start(ho)
    one = fleet.start(br1, peers=(head.url,))
    fleet.start(br2, peers=(head.url, one.url))
    wait_until(lambda: linked(br2, "HO", "BR1"), "BR2 to link with the head office and with BR1")
    earlier = receipt(br2, "45.00", narration="by BR2 before it is revoked")
    wait_until(lambda: earlier in voucher_numbers(br1) and earlier in voucher_numbers(ho), "BR2's voucher to spread")

    here(ho, "revoke", "BR2")
    revoked = policy(ho)
    wait_until(lambda: policy(br1)["version"] == revoked["version"], "the revocation to reach BR1")
    assert setting(br2, "node_id") in policy(br1)["revoked"]

    def refused_everywhere() -> bool:
        errors = [p["last_error"] for office in ("HO", "BR1") for p in peers_of(br2, office)]
        return len(errors) == 2 and all("revoked" in e for e in errors) and not any(
            p["online"] for office in ("HO", "BR1") for p in peers_of(br2, office))

    wait_until(refused_everywhere, "BR2 to be dropped and refused by the head office and by BR1")
    assert not any(p["online"] for p in peers_of(br1, "BR2") + peers_of(ho, "BR2"))

    after = receipt(ho, "46.00", narration="after BR2 was revoked")
    wait_until(lambda: after in voucher_numbers(br1), "BR1 to receive the head office's voucher")
    assert after not in voucher_numbers(br2)
    assert earlier in voucher_numbers(ho) and earlier in voucher_numbers(br1), "entries made before revocation stay"
    assert not quarantined(br1)


# ---------------------------------------------------------------- hostile clients


def member_context(home: Path, verify: bool = True) -> ssl.SSLContext:
    """The TLS client context of the node at `home` (its certificate, its organisation's root)."""
    context = tls.client_context(home / KEYS_DIR, unb64(setting(home, "root_cert")))
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    return context


def hello_of(home: Path) -> str:
    body = policy(home)
    return SyncConnection().hello(setting(home, "node_id"), body["org"], "branch", body["version"], {})


async def raw_link(url: str, home: Path, compress: bool = False) -> ClientConnection:
    """A member's link with nothing of the node's client behind it; compressed as nodes do, or not."""
    options = wire.client_options() if compress else {"compression": None}
    return await connect(url, ssl=member_context(home), max_size=None, open_timeout=WAIT, **options)


async def closed_after(url: str, home: Path, *frames: str | bytes, hello: bool = True,
                       compress: bool = False) -> tuple[int, str]:
    """Send `frames` over a member's link and read until the node closes it: (code, reason)."""
    async with await raw_link(url, home, compress) as ws:
        for frame in ((hello_of(home),) if hello else ()) + frames:
            await ws.send(frame)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.recv(), WAIT)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def offline(home: Path, office: str) -> None:
    await asyncio.to_thread(wait_until, lambda: not any(p["online"] for p in peers_of(home, office)),
                            f"{office}'s link to end at {home.name}")


def test_non_member_is_refused_at_the_tls_handshake_and_learns_nothing(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path / "ours", ("BR1",))
    (stranger,) = make_org(tmp_path / "theirs", (), company="Stranger Traders")
    head = fleet.start(ho)

    result = cli(stranger, "sync", "--peer", head.url, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: no exchange succeeded")
    assert "certificate verify failed" in result.stderr and "Traceback" not in result.stdout + result.stderr
    assert [(p["received"], p["online"]) for p in status(stranger)["peers"]] == [(0, False)]
    ours = set(vectors(ho)["masters"])
    assert not any(set(vector) & ours for vector in vectors(stranger).values())

    async def present_foreign_certificate() -> None:
        """Even a client that skips checking the server is stopped by the server's own check."""
        with pytest.raises((InvalidMessage, ssl.SSLError, ConnectionError)):
            async with connect(head.url, ssl=member_context(stranger, verify=False), open_timeout=WAIT) as ws:
                await ws.recv()

    asyncio.run(present_foreign_certificate())
    assert status(ho)["peers"] == [], "the head office never linked with the stranger"
    (member,) = sync_here(br1, head.url)
    assert member.office == "HO" and not member.last_error, "the node still serves its members"


def test_garbage_oversized_and_stalled_peers_do_not_disturb_the_node(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1, br2, br3 = make_org(tmp_path, ("BR1", "BR2", "BR3"))
    head = fleet.start(ho)
    fleet.start(br1, peers=(head.url,))
    wait_until(lambda: linked(ho, "BR1"), "BR1 to link with the head office")
    url = head.url

    async def scenario() -> dict[str, Any]:
        seen: dict[str, Any] = {}
        async with await raw_link(url, br3) as stalled:  # completes TLS as a member, says hello, then nothing
            await stalled.send(hello_of(br3))

            seen["not json"] = await closed_after(url, br2, "this is not JSON", hello=False)
            await offline(ho, "BR2")
            seen["unknown frame"] = await closed_after(url, br2, b"\x07garbage")
            await offline(ho, "BR2")
            seen["second hello"] = await closed_after(url, br2, hello_of(br2))
            await offline(ho, "BR2")
            seen["oversized"] = await closed_after(url, br2, b"\x01" + bytes(MAX_FRAME + 1))
            await offline(ho, "BR2")
            async with await raw_link(url, br2, compress=True) as compressed:
                seen["extensions"] = compressed.response.headers.get("Sec-WebSocket-Extensions")
            # 16 MiB of zeros travel as some 16 KiB: refused by what they inflate to, not what they weigh
            seen["inflating"] = await closed_after(url, br2, b"\x01" + bytes(MAX_FRAME + 1), compress=True)
            await offline(ho, "BR2")
            seen["junk entries"] = await junk_entries_are_acknowledged(url, br2)
            await offline(ho, "BR2")
            seen["enrollment"] = await junk_enrollment(url)
            seen["not tls"] = await junk_tcp(url)

            at_branch = await asyncio.to_thread(receipt, br1, "11.00")
            at_head = await asyncio.to_thread(receipt, ho, "12.00")
            await asyncio.to_thread(wait_converged, ho, br1)
            seen["exchanged"] = {at_branch, at_head} <= voucher_numbers(ho) & voucher_numbers(br1)
            seen["online"] = {p["office"] for p in (await asyncio.to_thread(status, ho))["peers"] if p["online"]}
        return seen

    seen = asyncio.run(asyncio.wait_for(scenario(), 120))
    assert seen["not json"] == (1002, "control frame is not JSON")
    assert seen["unknown frame"] == (1002, "unknown binary frame")
    assert seen["second hello"] == (1002, "second hello")
    assert seen["oversized"][0] == 1009
    assert seen["extensions"] == "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
    assert seen["inflating"][0] == 1009
    assert seen["junk entries"] is True
    assert seen["enrollment"]["type"] == "refused"
    assert seen["not tls"] is True
    assert seen["exchanged"] is True
    assert seen["online"] == {"BR1", "BR3"}, "BR1 kept its link; the stalled peer is merely held"
    assert head.running
    assert "Traceback" not in (ho / LOG_FILE).read_text(), "every refusal was handled, none crashed a handler"
    assert sorted(quarantined(ho)) == ["entry is truncated", "entry is truncated"]


async def junk_entries_are_acknowledged(url: str, home: Path) -> bool:
    """A well-framed batch of junk entries is quarantined and acknowledged; the link stays up."""
    async with await raw_link(url, home) as ws:
        await ws.send(hello_of(home))
        await ws.send(struct.pack(">BII", 0x01, 1, 5) + b"junk!" + struct.pack(">I", 3) + b"xyz")
        while True:
            frame = await asyncio.wait_for(ws.recv(), WAIT)
            if isinstance(frame, str) and json.loads(frame).get("type") == "ack":
                return bool(json.loads(frame)["batch"] == 1)


async def junk_enrollment(url: str) -> dict[str, Any]:
    """A client without a certificate may only enroll; junk gets a refusal."""
    async with connect(url, ssl=tls.enrollment_context(), open_timeout=WAIT) as ws:
        await ws.send(b"\x00junk enrollment")
        return dict(json.loads(await asyncio.wait_for(ws.recv(), WAIT)))


async def junk_tcp(url: str) -> bool:
    """Bytes that are not TLS at all: the node hangs up."""
    host, port = url.removeprefix("wss://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(range(256)) * 8)
    await writer.drain()
    try:
        while await asyncio.wait_for(reader.read(65536), WAIT):
            pass
    except ConnectionError:
        pass
    writer.close()
    return True


def test_converged_helper_sees_differences(tmp_path: Path) -> None:
    """The tests above rely on `converged`: it must tell apart homes that differ."""
    ho, br1 = make_org(tmp_path, ("BR1",))
    assert converged(ho, br1)
    receipt(ho, "1.00")
    assert not converged(ho, br1)


def test_acks_carry_only_what_the_sender_does_not_know_the_receiver_holds() -> None:
    sender, receiver = SyncConnection(), SyncConnection()
    to_receiver = sender.hello("S", "org", "branch", 1, {"d": {"x": 3}})
    to_sender = receiver.hello("R", "org", "branch", 1, {"d": {"y": 2}})
    sender.receive(to_sender)
    receiver.receive(to_receiver)
    batch = receiver.receive(sender.entries([b"entry x4"]))
    sender.note_peer_has("d", "x", 4)  # what the link does for what it sent...
    receiver.note_peer_has("d", "x", 4)  # ...and for what it received
    held = {"d": {"x": 4, "y": 2}, "e": {"z": 1}}  # z:1 came from a third party meanwhile
    ack = json.loads(receiver.ack(batch.batch, held, new_only=True))
    assert ack["vectors"] == {"e": {"z": 1}}  # x:4 the sender sent, y:2 was in the hello
    sender.receive(json.dumps(ack))
    assert not sender.peer_lacks("e", "z", 1) and sender.peer_lacks("e", "z", 2)
    assert json.loads(receiver.ack(batch.batch, held, new_only=True))["vectors"] == {}  # told once is enough
    assert json.loads(receiver.ack(batch.batch, held))["vectors"] == held  # in full unless asked


def revoked_shown(home: Path) -> bool:
    """What ``p2psync status --json`` says of the node itself."""
    return bool(status(home)["node"]["revoked"])


def test_a_revoked_branch_learns_it_is_revoked_whether_it_dials_is_dialed_or_is_linked(tmp_path: Path,
                                                                                       fleet: Fleet) -> None:
    ho, br1, br2, br3 = make_org(tmp_path, ("BR1", "BR2", "BR3"))
    two = fleet.start(br2)  # the head office dials BR2; BR1 and BR3 dial the head office
    head = fleet.start(ho, peers=(two.url,))
    one = fleet.start(br1, peers=(head.url,))
    fleet.start(br3, peers=(head.url,))
    wait_until(lambda: linked(ho, "BR1", "BR2", "BR3"), "the head office to link with every branch")
    one.stop()
    two.stop()
    wait_until(lambda: not any(p["online"] for office in ("BR1", "BR2") for p in peers_of(ho, office)),
               "the head office to see BR1 and BR2 go")

    for office in ("BR1", "BR2", "BR3"):  # BR1 and BR2 are down, BR3 linked, when they are revoked
        here(ho, "revoke", office)
    revoking = policy(ho)["version"]
    wait_until(lambda: status(ho)["node"]["policy_version"] == revoking, "the running head office to adopt it")
    one.start()  # dials the head office, which refuses it
    two.start()  # is dialed by the head office, which refuses it
    here(ho, "restart")  # the head office dials at once, not after the back-off its failed dials grew
    for home in (br1, br2, br3):
        wait_until(lambda home=home: revoked_shown(home), f"{home.name} to show that it is revoked")
        assert policy(home)["version"] == revoking
    for home in (br1, br2, br3):
        assert not any(p["online"] for p in status(home)["peers"])
        assert any("revoked" in p["last_error"] for p in status(home)["peers"])
    result = cli(br1, "voucher", "post", "--type", "receipt", "--date", "2026-04-02", "--dr", "Cash=5",
                 "--cr", "Sales=5", check=False)
    assert result.returncode != 0 and "revoked" in result.stderr, "a revoked office cannot seal new entries"


def test_a_revocation_reaches_linked_offices_before_the_dead_link_to_the_revoked_one_is_closed(
        tmp_path: Path, fleet: Fleet) -> None:
    """The head office runs in this process, so the close of its link to BR2 (dead: BR2 reads
    nothing) can be held until BR1 has the new policy: a head office that waited for that close
    before passing the policy on never gets BR1 there."""
    ho, br1, br2 = make_org(tmp_path)
    events: list[str] = []

    async def scenario() -> None:
        node = Node.open(ho)
        runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
        await runtime.start()
        try:
            url = f"wss://127.0.0.1:{runtime.port}"
            await asyncio.to_thread(fleet.start, br1, 0, (url,))
            async with await raw_link(url, br2) as dead:
                await dead.send(SyncConnection().hello(setting(br2, "node_id"), policy(br2)["org"], "branch",
                                                       policy(br2)["version"], vectors(br2)))
                held = await hold_close(runtime, setting(br2, "node_id"), events)
                await asyncio.to_thread(wait_until, lambda: linked(br1, "HO"), "BR1 to link with the head office")
                dead.transport.pause_reading()  # BR2 is gone without a word: nothing it is sent is read

                await asyncio.to_thread(cli, ho, "revoke", "BR2")  # as an operator does, beside the running node
                revoking = policy(ho)["version"]
                await asyncio.to_thread(wait_until, lambda: policy(br1)["version"] == revoking,
                                        "BR1 to adopt the revoking policy")
                events.append("BR1 adopted the policy")
                held.set()
                await asyncio.to_thread(wait_until, lambda: not runtime.peers[setting(br2, "node_id")].online,
                                        "the head office to drop BR2")
        finally:
            await runtime.stop()
            node.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
    assert events[0] == "close of BR2's link begun"
    assert events.index("BR1 adopted the policy") < events.index("close of BR2's link done")


async def hold_close(runtime: NodeRuntime, node_id: str, events: list[str]) -> asyncio.Event:
    """Hold every close of the runtime's link with `node_id` until the returned event is set."""
    await asyncio.to_thread(wait_until, lambda: (s := runtime.peers.get(node_id)) is not None and s.link is not None,
                            "the head office to hold a link with BR2")
    link = runtime.peers[node_id].link
    assert link is not None
    close, release = link.close, asyncio.Event()

    async def held(code: int = 1000, reason: str = "") -> None:
        if "close of BR2's link begun" not in events:
            events.append("close of BR2's link begun")
        await release.wait()
        await close(code, reason)
        if "close of BR2's link done" not in events:
            events.append("close of BR2's link done")

    link.close = held  # type: ignore[method-assign]
    return release
