"""A malicious relay against running nodes: real ``p2psync run`` processes whose only path to each
other is a relay that forges, splices, replays, withholds and offers stale policies.

The hostile relay is the real relay (`p2psync.relay.server`) with a session that lies: it runs in a
thread of the test on a loopback port, and the organisation's policy names it as its relay. The
nodes must refuse everything it makes up, notice what it withholds, and get it by another path."""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import copy_home
from procs import (
    WAIT,
    Fleet,
    converged,
    free_port,
    here,
    make_org,
    policy,
    post_here,
    quarantined,
    query,
    relay_linked,
    status,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)

from p2psync.protocol import entry
from p2psync.relay.server import Relay, Session, Transport, address, start
from p2psync.relay.store import SqliteRelayStore, StoredEntry

pytestmark = pytest.mark.slow

Key = tuple[str, str, int]  # (document, author, sequence)


class LyingSession(Session):
    """Forwards what it stores, except what its relay withholds."""

    relay: HostileRelay

    async def _send_entries(self, stored: list[StoredEntry]) -> None:
        await super()._send_entries([e for e in stored if (e.doc, e.author, e.seq) not in self.relay.withheld])


class HostileRelay(Relay):
    """The relay, serving every connection with a `LyingSession`, and able to send its members
    whatever it likes."""

    def __init__(self, store: SqliteRelayStore) -> None:
        super().__init__(store)
        self.withheld: set[Key] = set()
        self.sessions: list[LyingSession] = []

    async def handle(self, ws: Transport) -> None:
        session = LyingSession(self, ws)
        self.sessions.append(session)
        await session.run()

    def members(self, node: str) -> list[LyingSession]:
        """The live, greeted sessions of `node` (one must exist: a lie needs someone to tell it to)."""
        live = [s for s in self.sessions if s.node == node and s.conn.peer is not None
                and s.org is not None and s in s.org.sessions]
        assert live, f"node {node[:12]} is not connected to the relay"
        return live

    async def inject(self, node: str, blobs: list[bytes]) -> None:
        """Send `node` a batch of made-up entries as if other members had stored them."""
        for session in self.members(node):
            while not session.conn.can_send:
                await asyncio.sleep(0.01)
            await session.ws.send(session.conn.entries(blobs))

    async def offer(self, node: str, blob: bytes) -> None:
        for session in self.members(node):
            await session.ws.send(session.conn.policy(blob))


class RelayThread:
    """An event loop in a thread of the test, serving a `HostileRelay` on a loopback port."""

    def __init__(self, db: Path, port: int) -> None:
        self.store = SqliteRelayStore(db)
        self.relay = HostileRelay(self.store)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.run(start(self.relay, "127.0.0.1", port))
        self.url = address(self.server, "127.0.0.1")

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def close(self) -> None:
        self.server.close()
        self.run(self.server.wait_closed())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.relay.close()
        self.store.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """HO, BR1 and BR2 whose policy names one relay on a loopback port chosen for this module."""
    base = tmp_path_factory.mktemp("hostile-org")
    port = free_port()
    make_org(base, relays=(f"ws://127.0.0.1:{port}",))
    return base, port


@pytest.fixture
def site(template: tuple[Path, int], tmp_path: Path) -> Iterator[tuple[dict[str, Path], RelayThread]]:
    base, port = template
    homes = {}
    for office in ("HO", "BR1", "BR2"):
        copy_home(base / office, tmp_path / office)
        homes[office] = tmp_path / office
    relay = RelayThread(tmp_path / "relay.db", port)
    try:
        yield homes, relay
    finally:
        relay.close()


def node_id(home: Path) -> str:
    return str(status(home)["node"]["node_id"])



def books(home: Path) -> tuple[set[str], str, dict[str, dict[str, int]]]:
    return voucher_numbers(home), here(home, "report", "trial-balance", "--json"), vectors(home)


def receipt(home: Path, amount: str, narration: str) -> str:
    return post_here(home, "receipt", "2026-04-02", "Cash", "Sales", amount, narration)


def held_entries(home: Path, author: str) -> list[bytes]:
    return [bytes(blob) for (blob,) in query(home, "SELECT envelope FROM entry WHERE author = ? ORDER BY id", author)]


def splice(head_of: bytes, body_of: bytes, signature_of: bytes) -> bytes:
    """The header of one entry with the ciphertext of another, under the signature of either."""
    def parts(blob: bytes) -> tuple[bytes, bytes]:
        (hlen,) = struct.unpack_from(">H", blob, 4)
        return blob[6:6 + hlen], blob[6 + hlen:-entry.SIGNATURE_BYTES]

    header, _ = parts(head_of)
    _, ciphertext = parts(body_of)
    return entry.MAGIC + struct.pack(">H", len(header)) + header + ciphertext + signature_of[-entry.SIGNATURE_BYTES:]


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1:]


def resigned(blob: bytes, key: Ed25519PrivateKey) -> bytes:
    body = blob[:-entry.SIGNATURE_BYTES]
    return body + key.sign(body)


def test_entries_forged_spliced_or_replayed_by_the_relay_change_nothing(site: tuple[dict[str, Path], RelayThread],
                                                                        fleet: Fleet) -> None:
    homes, hostile = site
    ho, br1 = homes["HO"], homes["BR1"]
    fleet.start(ho)
    fleet.start(br1)
    first = {receipt(ho, amount, f"genuine {amount}") for amount in ("10.00", "20.00", "30.00")}
    wait_converged(ho, br1)
    wait_until(lambda: relay_linked(br1), "BR1 to sync with the relay")
    assert first <= voucher_numbers(br1)
    before = books(br1)
    old_policy = query(ho, "SELECT value FROM setting WHERE key = 'policy'")[0][0]
    here(ho, "settings", "--sync-after", "2026-01-01")  # a newer policy, signed by HO, spreads
    wait_until(lambda: policy(br1)["version"] == policy(ho)["version"], "the newer policy to reach BR1")
    version = policy(br1)["version"]

    genuine = [e for e in held_entries(br1, node_id(ho)) if entry.peek(e).doc.startswith("vouchers/")]
    a, b = genuine[-1], genuine[-2]
    hlen = struct.unpack_from(">H", a, 4)[0]
    made_up = {
        "a flipped ciphertext bit": flip(a, 6 + hlen + 4 + 10),
        "a flipped header bit": flip(a, 6 + 5),
        "header of one, body of another, first signature": splice(a, b, a),
        "header of one, body of another, second signature": splice(a, b, b),
        "signed by a key that is not the author's": resigned(flip(a, 6 + hlen + 4 + 10), Ed25519PrivateKey.generate()),
        "truncated": a[: len(a) // 2],
    }
    bid = node_id(br1)
    hostile.run(hostile.relay.inject(bid, list(made_up.values())))
    hostile.run(hostile.relay.inject(bid, held_entries(br1, node_id(ho))))  # a replay of everything HO wrote
    hostile.run(hostile.relay.offer(bid, old_policy.encode()))  # and the policy before the newest

    marker = receipt(ho, "40.00", "genuine, after the attack")  # sent after the lies on the same link
    wait_until(lambda: marker in voucher_numbers(br1), "HO's next voucher to reach BR1 through the relay")
    numbers, _, held = books(br1)
    assert numbers == before[0] | {marker}, "nothing but the genuine voucher was added"
    assert all(held.get(doc, {}).get(author, 0) >= seq for doc, authors in before[2].items()
               for author, seq in authors.items())
    assert policy(br1)["version"] == version, "the older policy was refused"
    reasons = quarantined(br1)
    print("quarantined:", reasons)
    assert len(reasons) == len(made_up), "each lie is quarantined once; the replay is a harmless duplicate"
    assert sum("signature does not verify" in r for r in reasons) >= 4
    assert not any("equivocation" in r for r in reasons), "the relay's forgeries are not blamed on the author"
    wait_converged(ho, br1)
    assert here(ho, "report", "trial-balance", "--json") == here(br1, "report", "trial-balance", "--json")
    assert status(br1)["node"]["running"]


def test_an_entry_the_relay_withholds_is_noticed_and_fetched_by_another_path(
        site: tuple[dict[str, Path], RelayThread], fleet: Fleet) -> None:
    homes, hostile = site
    ho, br1 = homes["HO"], homes["BR1"]
    head = fleet.start(ho)
    branch = fleet.start(br1)
    receipt(ho, "1.00", "before the attack")
    wait_converged(ho, br1)
    doc = "vouchers/HO/2026-04"
    hid = node_id(ho)
    held = vectors(ho)[doc][hid]
    hostile.relay.withheld.add((doc, hid, held + 2))  # the second of the next three entries
    posted = [receipt(ho, f"{n}.00", f"during the attack {n}") for n in (2, 3, 4)]
    wait_until(lambda: vectors(br1)[doc][hid] == held + 1 and status(br1)["waiting_entries"] >= 1,
               "BR1 to hold the entry before the gap and park the one after it")
    assert posted[0] in voucher_numbers(br1)
    assert not {posted[1], posted[2]} & voucher_numbers(br1), "nothing after the gap is applied"
    assert status(br1)["waiting_entries"] >= 1, "status shows entries waiting"
    assert not converged(ho, br1)

    branch.stop()  # another path: a direct link with the head office
    fleet.start(br1, peers=(head.url,))
    wait_converged(ho, br1)
    assert set(posted) <= voucher_numbers(br1)
    assert status(br1)["waiting_entries"] == 0
    assert not quarantined(br1)
    assert here(ho, "report", "trial-balance", "--json") == here(br1, "report", "trial-balance", "--json")

