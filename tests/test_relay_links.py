"""Real node processes finding each other without being told where: through a relay process only,
and by zeroconf on the loopback interface."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import (
    Fleet,
    RelayProcess,
    begin_books_here,
    cli,
    free_port,
    linked,
    make_org,
    post_here,
    relay_linked,
    status,
    voucher_numbers,
    wait_converged,
    wait_until,
)

from p2psync.node import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.trust.keys import registration_id

CANARY = "CANARY-relay-narration-Ashoka"


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    process = RelayProcess(tmp_path)
    yield process.url, process.db
    process.stop()


@pytest.mark.slow
def test_a_branch_with_no_direct_path_converges_through_the_relay_alone(tmp_path: Path, fleet: Fleet,
                                                                         relay: tuple[str, Path]) -> None:
    url, db = relay
    ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(url,))
    fleet.start(ho)  # no --peer, no mDNS: the only path between them is the relay
    fleet.start(br1)
    at_ho = post_here(ho, "receipt", "2026-04-03", "Cash", "Sales", "1500.00", f"{CANARY} at HO")
    at_br1 = post_here(br1, "receipt", "2026-04-04", "Cash", "Sales", "2500.00", f"{CANARY} at BR1")
    wait_converged(ho, br1)
    assert {at_ho, at_br1} <= voucher_numbers(ho) == voucher_numbers(br1)
    raw = b"".join(path.read_bytes() for path in db.parent.glob("relay.db*"))
    assert CANARY.encode() not in raw and b"Sales" not in raw and b"Cash" not in raw
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("select name from sqlite_master where type='table'")]
    assert tables  # the relay did store something: ciphertext only


def organisation_of(home: Path) -> str:
    node = Node.open(home)
    try:
        return node.registration_id
    finally:
        node.close()


@pytest.mark.slow
def test_a_relay_serving_one_organisation_syncs_it_and_turns_another_away(tmp_path: Path, fleet: Fleet) -> None:
    url = f"ws://127.0.0.1:{free_port()}"
    ho, br1 = make_org(tmp_path / "ours", ("BR1",), relays=(url,))
    (theirs,) = make_org(tmp_path / "theirs", (), company="Freeloader Storage Co", relays=(url,))
    relay = RelayProcess(tmp_path, int(url.rsplit(":", 1)[1]), "--allow-org", organisation_of(ho))
    try:
        for home in (ho, br1, theirs):
            fleet.start(home)
        post_here(theirs, "receipt", "2026-04-03", "Cash", "Sales", "700.00", f"{CANARY} freeloading")
        number = post_here(br1, "receipt", "2026-04-04", "Cash", "Sales", "2500.00", f"{CANARY} at BR1")
        wait_converged(ho, br1)
        assert number in voucher_numbers(ho)
        refusal = f"peer refused: this relay does not serve organisation {organisation_of(theirs)}"
        wait_until(lambda: any(p["kind"] == "relay" and refusal in p["last_error"] for p in status(theirs)["peers"]),
                   "the other organisation's head office to show the relay's refusal")
        assert not relay_linked(theirs)
    finally:
        relay.stop()
    with sqlite3.connect(relay.db) as conn:
        orgs = {org for (org,) in conn.execute("SELECT org FROM relay_entry UNION SELECT org FROM relay_policy")}
    assert [registration_id(org) for org in orgs] == [organisation_of(ho)]


@pytest.mark.slow
def test_offices_on_one_lan_find_each_other_by_zeroconf(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    fleet.start(ho, mdns=True)
    fleet.start(br1, mdns=True)
    wait_until(lambda: linked(br1, "HO"), "BR1 to find the head office on the LAN and link to it")
    number = post_here(br1, "payment", "2026-04-05", "Rent", "Cash", "800.00", "found by zeroconf")
    wait_converged(ho, br1)
    assert number in voucher_numbers(ho)


@pytest.mark.slow
def test_a_branch_enrolls_through_the_relay_and_syncs_there(tmp_path: Path, fleet: Fleet,
                                                            relay: tuple[str, Path]) -> None:
    url, db = relay
    (ho,) = make_org(tmp_path / "org", (), relays=(url,))
    cli(ho, "branch", "add", "BR1", "Far Away Branch")
    code = cli(ho, "invite", "BR1").stdout.strip().splitlines()[-1]
    fleet.start(ho)
    wait_until(lambda: any(p["kind"] == "relay" and p["online"] for p in status(ho)["peers"]),
               "the head office to link to the relay")
    br1 = tmp_path / "org" / "BR1"
    joined = cli(br1, "join", code, "--via", url)
    assert "Joined" in joined.stdout and "Far Away Branch" in joined.stdout
    assert cli(br1, "join", code, "--via", url, check=False).returncode != 0  # home taken, and code used
    begin_books_here(br1)
    fleet.start(br1)
    wait_converged(ho, br1)  # "sync company details": the new branch receives the masters
    number = post_here(br1, "receipt", "2026-04-06", "Cash", "Sales", "999.00", f"{CANARY} far away")
    wait_converged(ho, br1)
    assert number in voucher_numbers(ho)
    raw = b"".join(path.read_bytes() for path in db.parent.glob("relay.db*"))
    assert CANARY.encode() not in raw and b"Far Away Branch" not in raw


def test_enrolling_through_a_relay_without_its_head_office_is_refused(tmp_path: Path,
                                                                       relay: tuple[str, Path]) -> None:
    url, _db = relay
    (ho,) = make_org(tmp_path / "org", ())
    cli(ho, "branch", "add", "BR1", "Branch")
    code = cli(ho, "invite", "BR1").stdout.strip().splitlines()[-1]
    refused = cli(tmp_path / "org" / "BR1", "join", code, "--via", url, check=False)
    assert refused.returncode == 1
    assert "head office is not connected" in refused.stderr and "Traceback" not in refused.stderr


@pytest.mark.slow
def test_a_peer_reconnecting_replaces_a_link_that_died_silently(tmp_path: Path, fleet: Fleet) -> None:
    """The head office still holds a link to BR1 when BR1's end is gone without a close (its process
    frozen, as after a network blip). A new connection from BR1 must not be refused as "already
    linked": the held link fails its ping and is replaced."""
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    frozen = fleet.start(br1, peers=(head.url,))
    wait_until(lambda: linked(ho, "BR1"), "the head office to link with BR1")
    assert frozen.proc is not None
    os.kill(frozen.proc.pid, signal.SIGSTOP)
    try:
        node = Node.open(br1)
        try:
            runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
            state = asyncio.run(asyncio.wait_for(runtime.dial(head.url, relay=False, once=True), 60))
            assert state.office == "HO" and not state.last_error and state.stats.synced_at
        finally:
            runtime.worker.shutdown(wait=True)
            node.close()
    finally:
        os.kill(frozen.proc.pid, signal.SIGCONT)


@pytest.mark.slow
def test_join_without_an_address_finds_the_head_office_on_the_lan(tmp_path: Path, fleet: Fleet) -> None:
    (ho,) = make_org(tmp_path / "org", ())
    cli(ho, "branch", "add", "BR1", "Lan Branch")
    code = cli(ho, "invite", "BR1").stdout.strip().splitlines()[-1]
    fleet.start(ho, mdns=True)
    joined = cli(tmp_path / "org" / "BR1", "join", code)  # no --via: zeroconf finds the head office
    assert "Joined" in joined.stdout and "Lan Branch" in joined.stdout


@pytest.mark.slow
def test_a_running_node_dials_a_relay_the_head_office_adds(tmp_path: Path, fleet: Fleet,
                                                          relay: tuple[str, Path]) -> None:
    url, _db = relay
    (ho,) = make_org(tmp_path / "org", ())
    fleet.start(ho)
    assert not status(ho)["peers"]
    cli(ho, "settings", "--relay", url)  # another process changes the policy while the node runs
    wait_until(lambda: any(p["kind"] == "relay" and p["online"] for p in status(ho)["peers"]),
               "the running node to dial the relay named by the new policy")
