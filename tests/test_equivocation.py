"""Equivocation across offices: a branch signs two different entries for one position of its chain
and hands one to each of two offices. When those offices meet (a real node process and a real
`sync` over TLS websockets), their chain heads differ, they find where the chains part, both keep the
entry of lower hash, the other side is quarantined, the books converge, and both name the author."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import pytest
from helpers import copy_home, draft
from procs import WAIT, Fleet, RelayProcess, free_port, make_org, status, sync_here

from p2psync.net.link import ForkSettled
from p2psync.node import Node
from p2psync.node.runtime import NodeRuntime, PeerState
from p2psync.relay import server
from p2psync.relay.server import Relay, start
from p2psync.relay.store import open_store
from p2psync.sqlite import raw_connection
from p2psync.store import log


def _entry(home: Path, key: tuple[str, str, int]) -> bytes | None:
    node = Node.open(home)
    try:
        with node.db.read() as session:
            return log.envelope(session, *key)
    finally:
        node.close()


def _books(home: Path) -> list[tuple[str, int]]:
    node = Node.open(home)
    try:
        with node.db.read() as session:
            return raw_connection(session).execute("SELECT number, amount FROM voucherrow ORDER BY number").fetchall()
    finally:
        node.close()


def _fork(base: Path, ho: Path, br2: Path) -> tuple[tuple[str, str, int], bytes, bytes]:
    """BR1 posts two different vouchers as its entry 1 of one document (from two copies of its home);
    the head office receives one, BR2 the other."""
    copy_home(base / "BR1", base / "BR1-twin")
    signed = []
    for home, amount in ((base / "BR1", "100"), (base / "BR1-twin", "999")):
        node = Node.open(home)
        try:
            node.post(draft("journal", "2026-04-02", {"Rent": amount}, {"Capital": amount}))
            key = ("vouchers/BR1/2026-04", node.identity.node_id, 1)
            with node.db.read() as session:
                signed.append(log.envelope(session, *key))
        finally:
            node.close()
    for home, blob in ((ho, signed[0]), (br2, signed[1])):
        node = Node.open(home)
        try:
            assert node.receive([blob]).applied == 1
        finally:
            node.close()
    return key, signed[0], signed[1]


def test_offices_holding_two_sides_of_an_equivocation_settle_on_one_when_they_meet(tmp_path: Path,
                                                                                  fleet: Fleet) -> None:
    ho, _br1, br2 = make_org(tmp_path)
    key, one, other = _fork(tmp_path, ho, br2)
    kept, lost = sorted((one, other), key=lambda blob: hashlib.sha256(blob).digest())
    head = fleet.start(ho)
    sync_here(br2, head.url)  # they meet: the side that lost is dropped, and the conversation starts again
    sync_here(br2, head.url)  # the kept side reaches the office that dropped its own
    head.stop(10)
    assert _entry(ho, key) == _entry(br2, key) == kept
    assert _books(ho) == _books(br2) and len(_books(ho)) == 1
    for home in (ho, br2):
        data = status(home)
        assert [(e["office"], e["document"], e["seq"]) for e in data["equivocations"]] == [("BR1", key[0], 1)]
    dropped_at = br2 if kept is one else ho
    reasons = [q["reason"] for q in status(dropped_at)["quarantined"]]
    assert any(r.startswith("equivocation") for r in reasons), reasons
    assert lost != kept


def test_offices_that_meet_only_through_a_relay_settle_an_equivocation_there(tmp_path: Path) -> None:
    """Each side of the equivocation reaches the relay from a different office; the relay's chain heads
    let each office find where its chain and the relay's part, the relay drops its side if it lost,
    and after a few exchanges the two offices, which never link directly, hold the same entry."""
    url = f"ws://127.0.0.1:{free_port()}"
    ho, _br1, br2 = make_org(tmp_path, relays=(url,))
    key, one, other = _fork(tmp_path, ho, br2)
    kept = min((one, other), key=lambda blob: hashlib.sha256(blob).digest())
    relay = RelayProcess(tmp_path, int(url.rsplit(":", 1)[1]))
    try:
        for _round in range(3):  # each round: an office meets the relay, settles, and starts again
            for home in (ho, br2, br2, ho):
                sync_here(home)
    finally:
        relay.stop()
    assert _entry(ho, key) == _entry(br2, key) == kept
    assert _books(ho) == _books(br2)
    assert any(e["office"] == "BR1" for e in status(ho)["equivocations"] + status(br2)["equivocations"])


async def _sync(home: Path) -> PeerState:
    """One ``p2psync sync`` of `home` (its only target: the organisation's relay), in the running loop."""
    node = Node.open(home)
    try:
        runtime = NodeRuntime(node, peers=(), mdns=False)
        try:
            [state] = await runtime.sync_once(timeout=WAIT)
            return state
        finally:
            runtime.worker.shutdown(wait=True)
    finally:
        node.close()


def test_a_sync_is_not_complete_before_the_relay_has_answered_its_fork(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Caught-up from both sides can arrive before the relay's answer to the office's chain hashes (a
    slow store under load): one `sync` of the office whose side lost must still wait for that answer,
    drop its side and say that it starts again, rather than report a complete exchange that settled
    nothing."""
    port = free_port()
    ho, _br1, br2 = make_org(tmp_path, relays=(f"ws://127.0.0.1:{port}",))
    key, one, other = _fork(tmp_path, ho, br2)
    winner, loser = (ho, br2) if hashlib.sha256(one).digest() < hashlib.sha256(other).digest() else (br2, ho)
    answer = server.Session._settle

    async def slow_answer(self: server.Session, event: server.Fork) -> bool:
        await asyncio.sleep(1.0)
        return await answer(self, event)

    monkeypatch.setattr(server.Session, "_settle", slow_answer)

    async def scenario() -> PeerState:
        store = open_store(tmp_path / "relay.db")
        relay = Relay(store)
        relay_server = await start(relay, "127.0.0.1", port)
        try:
            assert (await _sync(winner)).last_sync  # the relay now holds the side that is kept
            return await _sync(loser)
        finally:
            relay_server.close()
            await relay_server.wait_closed()
            relay.close()
            store.close()

    state = asyncio.run(scenario())
    assert not state.last_sync and ForkSettled.__name__ in state.last_error_detail, state.last_error_detail
    assert _entry(loser, key) is None
    assert any(q["reason"].startswith("equivocation") for q in status(loser)["quarantined"])
