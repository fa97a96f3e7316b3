"""Equivocation across offices: a branch signs two different entries for one position of its chain
and hands one to each of two offices. When those offices meet (a real node process and a real
`sync` over TLS websockets), their chain heads differ, they find where the chains part, both keep the
entry of lower hash, the other side is quarantined, the books converge, and both name the author."""

from __future__ import annotations

import hashlib
from pathlib import Path

from helpers import copy_home, draft
from procs import Fleet, make_org, status, sync_here

from p2psync.node import Node
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
