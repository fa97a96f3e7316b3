"""The relay, end to end on loopback: real nodes (head office and enrolled branches) talk to a real
relay through a minimal node-side client written here (websocket + relay_auth + SyncConnection).

Each test attacks or exercises one promise: entries reach a branch through the relay alone; the relay
holds and sees no names; organisations are isolated; revoked, tampered, forged, replayed, equivocating,
garbage and flooding traffic is refused without disturbing other members; a restarted relay keeps
what it stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import begin_books
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from p2psync.books import reports
from p2psync.books.change import Change
from p2psync.books.drafts import make_draft
from p2psync.cli.main import cli as cli_group
from p2psync.deps import Deps
from p2psync.net import wire
from p2psync.node import registrar
from p2psync.node.office import Node
from p2psync.protocol import entry, relay_auth
from p2psync.protocol.sync import (
    MAX_FRAME,
    Ack,
    CaughtUp,
    EnrollForward,
    Entries,
    Hello,
    PolicyOffer,
    Refused,
    SyncConnection,
    batches,
)
from p2psync.relay.allowed import AllowedOrgs, parse_org
from p2psync.relay.metrics import serve_metrics
from p2psync.relay.server import Limits, Relay, address, start
from p2psync.relay.store import open_store
from p2psync.store import queries
from p2psync.store.db import get_setting
from p2psync.trust import enroll
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import NodeKeys, registration_id, unb64

WAIT = 20.0  # the bound on every wait in these tests
COMPANY = "Kestrel Canary Traders"
CANARIES = (b"Kestrel", b"Quokka", b"zebra-narration")


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 120))


async def until(predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Wait (bounded) until `predicate` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# ---------------------------------------------------------------- nodes


def build_org(base: Path, branches: tuple[str, ...] = ("BR1",)) -> tuple[Node, list[Node]]:
    """A head office with canary names in its books, and enrolled branches that hold nothing yet. Every
    office reads every office's books (open books), so that a branch applies all the relay brings it."""
    head = begin_books(Node.create_head(base / "HO", COMPANY, "HO", "Kestrel Head Office", open_books=True))
    for code in branches:
        head.add_office(code, f"Kestrel {code} Office")
    head.add_ledger("Quokka Cash", "Cash-in-Hand")
    head.add_ledger("Quokka Sales", "Sales Accounts")
    post(head)
    return head, [begin_books(registrar.enroll_here(head, base / code, code)) for code in branches]


def post(node: Node, count: int = 1, amount: str = "1234.56") -> None:
    for i in range(count):
        node.post(make_draft("Sales", "2024-05-01", [f"Quokka Cash={amount}"], [f"Quokka Sales={amount}"],
                             f"zebra-narration {node.identity.office} {i}"))


def books(node: Node) -> tuple[Any, Any]:
    with node.db.read() as session:
        vouchers = queries.vouchers(session)
        lines = queries.lines_of(session, [v.number for v in vouchers])
        return (reports.trial_balance(queries.balances(session), "consolidated"),
                reports.day_book(vouchers, lines, "consolidated"))


def take(node: Node, client: Client) -> int:
    """Give `node` what it received through the relay (policies first); returns entries applied."""
    for blob in client.policies:
        node.adopt_policy(blob)
    result = node.receive(client.received)
    assert not result.quarantined, result.quarantined
    return result.applied


@dataclass(frozen=True)
class Creds:
    node_id: str
    org: str
    role: str
    root_cert: bytes
    cert: bytes
    signing: Ed25519PrivateKey
    policy: bytes
    policy_version: int


def creds(node: Node) -> Creds:
    with node.db.read() as session:
        root_cert, cert = get_setting(session, "root_cert"), get_setting(session, "cert")
    assert root_cert and cert
    return Creds(node.identity.node_id, node.trust.org, node.identity.role, unb64(root_cert), unb64(cert),
                 node.trust.keys.signing, node.policy_blob(), node.trust.policy.version)


# ---------------------------------------------------------------- a minimal node-side client


@dataclass
class Client:
    """Answers the challenge, says hello, offers its policy if the relay's is older, records every
    frame both ways, and acknowledges received batches (unless told to hold them)."""

    ws: ClientConnection
    who: Creds
    auto_ack: bool = True
    conn: SyncConnection = field(default_factory=SyncConnection)
    frames: list[str | bytes] = field(default_factory=list)
    relay: Hello | None = None
    received: list[bytes] = field(default_factory=list)
    policies: list[bytes] = field(default_factory=list)
    acks: dict[int, Ack] = field(default_factory=dict)
    unacked: list[int] = field(default_factory=list)
    caught_up: bool = False
    refused: str | None = None
    #: The signed policy the relay sent with its refusal, if any.
    refusal_policy: bytes | None = None
    #: Enrollment requests the relay passed to this (head office) client; each is answered with a refusal.
    enrollments: list[bytes] = field(default_factory=list)
    closed: bool = False
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, url: str, who: Creds, vectors: Deps | None = None, auto_ack: bool = True,
                   org: str | None = None, compress: bool = False) -> Client:
        options = wire.client_options() if compress else {"compression": None}
        ws = await connect(url, max_size=MAX_FRAME, proxy=None, open_timeout=WAIT, **options)
        client = cls(ws, who, auto_ack)
        challenge = await asyncio.wait_for(ws.recv(), WAIT)
        client.frames.append(challenge)
        await client.send(relay_auth.answer(challenge, who.root_cert, who.cert, who.signing))
        client.reader = asyncio.create_task(client._read())
        with contextlib.suppress(ConnectionClosed):  # a refused node may be cut off at any point
            await client.send(client.conn.hello(who.node_id, org or who.org, who.role, who.policy_version,
                                                vectors or {}))
            await until(lambda: client.relay is not None or client.closed, "the relay's hello")
            if client.relay is not None and client.relay.policy_version < who.policy_version:
                await client.send(client.conn.policy(who.policy))
        return client

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(frame)
        await self.ws.send(frame)

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                await self._on(self.conn.receive(frame))
        except ConnectionClosed:
            pass
        finally:
            self.closed = True

    async def _on(self, event: Any) -> None:
        if isinstance(event, Hello):
            self.relay = event
        elif isinstance(event, Entries):
            self.received.extend(event.blobs)
            if self.auto_ack:
                await self._reply(self.conn.ack(event.batch, {}))
            else:
                self.unacked.append(event.batch)
        elif isinstance(event, PolicyOffer):
            self.policies.append(event.blob)
        elif isinstance(event, CaughtUp):
            self.caught_up = True
        elif isinstance(event, Ack):
            self.acks[event.batch] = event
        elif isinstance(event, Refused):
            self.refused, self.refusal_policy = event.reason, event.policy
        elif isinstance(event, EnrollForward):
            self.enrollments.append(event.request)
            await self._reply(self.conn.enroll_reply(event.ticket, enroll.refusal("no such invite")))

    async def _reply(self, frame: str | bytes) -> None:
        """Answer a frame, unless the relay has closed meanwhile: the frames it sent before closing (its
        refusal among them) are still read, so a failed answer must not stop the reading."""
        with contextlib.suppress(ConnectionClosed):
            await self.send(frame)

    async def push(self, blobs: Iterable[bytes]) -> list[Ack]:
        """Send entries in batches, waiting for each acknowledgement."""
        acks = []
        for chunk in batches(blobs):
            frame = self.conn.entries(chunk)
            (batch,) = struct.unpack_from(">I", frame, 1)
            await self.send(frame)
            await until(lambda batch=batch: batch in self.acks or self.closed, f"acknowledgement of batch {batch}")
            assert batch in self.acks, f"closed before acknowledging: {self.refused}"
            acks.append(self.acks[batch])
        return acks

    async def push_node(self, node: Node) -> list[Ack]:
        """Everything `node` holds that the relay's hello said it lacks."""
        assert self.relay is not None
        return await self.push(node.entries(self.relay.vectors))

    async def ack_held(self) -> None:
        held, self.unacked, self.auto_ack = self.unacked, [], True
        for batch in held:
            await self.send(self.conn.ack(batch, {}))

    async def wait_caught_up(self) -> None:
        await until(lambda: self.caught_up or self.closed, "caught-up")
        assert self.caught_up, f"closed before catching up: {self.refused}"

    async def wait_refused(self) -> str:
        await until(lambda: self.closed, "the relay to close the connection")
        assert self.refused is not None
        return self.refused

    async def close(self) -> None:
        await self.ws.close()
        if self.reader is not None:
            await asyncio.wait_for(self.reader, WAIT)


@asynccontextmanager
async def relay_at(db: Path | str, limits: Limits | None = None) -> AsyncIterator[tuple[Relay, str]]:
    """A relay in this process on a free loopback port, on a SQLite file or a postgresql:// URL."""
    store = open_store(db)
    relay = Relay(store, limits)
    server = await start(relay, "127.0.0.1", 0)
    try:
        yield relay, address(server, "127.0.0.1")
    finally:
        server.close()
        await server.wait_closed()
        relay.close()
        store.close()


# ---------------------------------------------------------------- delivery


@pytest.fixture(params=["sqlite", "postgresql"])
def relay_db(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The relay's database: a SQLite file, or a fresh database on the test PostgreSQL server."""
    return tmp_path / "relay.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def test_entries_reach_a_branch_through_the_relay_alone(tmp_path: Path, relay_db: Path | str) -> None:
    head, (branch,) = build_org(tmp_path)

    async def scenario() -> None:
        async with relay_at(relay_db) as (relay, url):
            ho = await Client.open(url, creds(head))
            assert ho.relay is not None and ho.relay.vectors == {} and ho.relay.role == "relay"
            await ho.push_node(head)
            br = await Client.open(url, creds(branch), branch.vectors())
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries())
            assert books(branch) == books(head)

            # live, both ways: the head office posts, then the branch posts on the books it received
            post(head, 2)
            before = len(br.received)
            await ho.push(head.entries(branch.vectors()))
            await until(lambda: len(br.received) == before + 2, "live entries at the branch")
            br.received = br.received[before:]
            assert take(branch, br) == 2
            post(branch, 1, "10.00")
            await br.push(branch.entries(head.vectors()))
            await until(lambda: len(ho.received) == 1, "the branch's entry at the head office")
            assert take(head, ho) == 1
            assert books(branch) == books(head)
            assert relay.stats.dropped == 0 and relay.stats.stored == len(head.entries())
            await ho.close()
            await br.close()

    run(scenario())


def test_the_relay_holds_and_sees_no_names(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)
    db = tmp_path / "relay.db"
    frames: list[str | bytes] = []

    async def scenario() -> None:
        async with relay_at(db) as (_relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            assert take(branch, br) > 0
            frames.extend(ho.frames + br.frames)
            await ho.close()
            await br.close()

    run(scenario())
    with head.db.read() as session:  # the canaries are there to be found, in the head office's books
        assert any(CANARIES[1].decode() in row.name for row, _group in queries.ledgers(session))
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("relay.db*"))
    assert head.identity.node_id.encode() in stored  # clear headers are stored...
    wire = b"".join(f if isinstance(f, bytes) else f.encode() for f in frames)
    for canary in CANARIES:  # ...but no company, office, ledger name or narration
        assert canary not in stored, canary
        assert canary not in wire, canary


def test_another_organisation_can_neither_read_nor_write_the_first(tmp_path: Path) -> None:
    head, _ = build_org(tmp_path / "a", ())
    other = Node.create_head(tmp_path / "b" / "HO", "Other Co")

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            first = relay.store.vectors(head.trust.org)

            intruder = await Client.open(url, creds(other))
            assert intruder.relay is not None and intruder.relay.org == other.trust.org
            await intruder.wait_caught_up()
            assert intruder.relay.vectors == {} and intruder.received == []
            acks = await intruder.push(head.entries())  # replaying the first organisation's entries
            assert all(a.vectors == {} for a in acks)
            await intruder.push_node(other)
            assert relay.store.vectors(head.trust.org) == first
            assert relay.store.vectors(other.trust.org) == other.vectors()
            assert relay.stats.dropped == len(head.entries())

            posing = await Client.open(url, creds(other), org=head.trust.org)  # a hello naming the first org
            assert "another organisation" in await posing.wait_refused()
            for client in (ho, intruder):
                await client.close()

    run(scenario())


# ---------------------------------------------------------------- refusals


def test_a_revoked_node_is_cut_off_and_refused_at_connect(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()

            registrar.revoke(head, "BR1")
            await ho.send(ho.conn.policy(head.policy_blob()))
            assert "revoked" in await br.wait_refused()
            stored = relay.store.policy(head.trust.org)
            assert stored is not None and stored.version == head.trust.policy.version

            again = await Client.open(url, creds(branch))
            assert "revoked" in await again.wait_refused()
            assert again.received == []
            await ho.close()

    run(scenario())


def test_a_revoked_node_is_handed_the_policy_that_revokes_it_when_cut_off_and_at_connect(tmp_path: Path) -> None:
    """So that the revoked node learns it is revoked, even when it only ever reaches the relay."""
    head, (branch,) = build_org(tmp_path)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (_relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()

            registrar.revoke(head, "BR1")
            revoking = head.policy_blob()
            await ho.send(ho.conn.policy(revoking))
            assert "revoked" in await br.wait_refused()
            assert br.refusal_policy == revoking

            again = await Client.open(url, creds(branch))
            assert "revoked" in await again.wait_refused()
            assert again.refusal_policy == revoking
            assert branch.adopt_policy(again.refusal_policy) and branch.trust.revoked
            await ho.close()

    run(scenario())


def test_tampered_and_forged_entries_are_not_stored(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)
    genuine = head.entries()
    first = genuine[0]
    tampered = bytearray(first)
    tampered[-entry.SIGNATURE_BYTES - 1] ^= 0x01  # the last ciphertext byte
    forged = first[:-entry.SIGNATURE_BYTES] + Ed25519PrivateKey.generate().sign(first[:-entry.SIGNATURE_BYTES])
    stranger = NodeKeys.generate()
    unknown = entry.seal(Change("masters", stranger.node_id, 1, b"update", {}), head.trust.org, 1,
                         head.trust.scope_key("masters", 1), stranger.signing, head.trust.policy.version, "masters")
    bad = [bytes(tampered), forged, unknown, b"not an entry at all"]

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            ho = await Client.open(url, creds(head))
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            (ack,) = await ho.push(bad)
            assert ack.vectors == {}
            assert relay.store.vectors(head.trust.org) == {}
            assert relay.stats.dropped == len(bad) and relay.stats.stored == 0
            await ho.push(genuine)
            await until(lambda: len(br.received) == len(genuine), "the genuine entries at the branch")
            assert br.received == genuine
            assert relay.store.vectors(head.trust.org) == head.vectors()
            for client in (ho, br):
                await client.close()

    run(scenario())


def test_duplicates_and_replays_are_idempotent(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)
    genuine = head.entries()

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            ho = await Client.open(url, creds(head))
            await ho.push(genuine)
            await ho.push(genuine)  # the same again
            await ho.close()
            replay = await Client.open(url, creds(head))  # and replayed on a new connection, reversed
            await replay.push(list(reversed(genuine)))
            await until(lambda: relay.stats.duplicates == 2 * len(genuine), "the duplicates to be counted")
            assert relay.stats.stored == len(genuine)
            page = relay.store.entries_after(head.trust.org, 0, 1000)
            assert [e.blob for e in page.entries] == genuine
            await replay.close()
            assert br.received == genuine  # forwarded once each
            assert take(branch, br) == len(genuine)
            await br.close()

    run(scenario())


def test_an_equivocating_entry_is_refused(tmp_path: Path) -> None:
    head, _ = build_org(tmp_path, ())
    genuine = head.entries()
    header = entry.peek(genuine[0])
    other = head.trust.seal(Change(header.doc, header.author, header.seq, b"another update", {}))
    assert entry.check_signature(other, head.trust) and other != genuine[0]  # validly signed, different

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push(genuine)
            (ack,) = await ho.push([other])
            assert ack.vectors == {header.doc: {header.author: head.vectors()[header.doc][header.author]}}
            assert relay.stats.equivocations == 1
            assert relay.store.entries_after(head.trust.org, 0, 1).entries[0].blob == genuine[0]
            await ho.close()

    run(scenario())


def test_a_garbage_frame_closes_only_its_own_connection(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            ho = await Client.open(url, creds(head))
            raw = await connect(url, compression=None, proxy=None, open_timeout=WAIT)  # garbage instead of auth
            await raw.recv()
            await raw.send(b"\xff\x00 garbage")
            assert "authentication failed" in str(await asyncio.wait_for(raw.recv(), WAIT))
            member = await Client.open(url, creds(branch))  # garbage after a proper hello
            await member.send(b"\x07 not a batch")
            assert "unknown binary frame" in await member.wait_refused()

            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries())
            assert relay.stats.refused == 2
            for client in (ho, br):
                await client.close()

    run(scenario())


def test_links_to_the_relay_are_compressed_and_an_inflating_frame_is_refused(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            bomb = await connect(url, proxy=None, open_timeout=WAIT, **wire.client_options())
            assert bomb.response.headers.get("Sec-WebSocket-Extensions", "").startswith("permessage-deflate")
            await bomb.recv()  # the challenge; the answer is 16 MiB of zeros sent as some 16 KiB
            await bomb.send(bytes(MAX_FRAME + 1))
            with pytest.raises(ConnectionClosed) as closed:
                await asyncio.wait_for(bomb.recv(), WAIT)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

            ho = await Client.open(url, creds(head), compress=True)
            await ho.push_node(head)
            br = await Client.open(url, creds(branch), compress=True)
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries())
            for client in (ho, br):
                await client.close()

    run(scenario())


def test_silent_and_malformed_peers_are_refused(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)
    limits = Limits(auth_timeout=0.2, hello_timeout=0.2)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", limits) as (relay, url):
            silent = await connect(url, compression=None, proxy=None, open_timeout=WAIT)
            await silent.recv()  # the challenge, left unanswered
            assert "no authentication" in str(await asyncio.wait_for(silent.recv(), WAIT))
            who = creds(branch)
            mute = await connect(url, compression=None, proxy=None, open_timeout=WAIT)
            await mute.send(relay_auth.answer(await mute.recv(), who.root_cert, who.cert, who.signing))
            await mute.recv()  # the relay's hello; ours never comes
            assert "no hello" in str(await asyncio.wait_for(mute.recv(), WAIT))
            odd = await connect(url, compression=None, proxy=None, open_timeout=WAIT)
            await odd.send(relay_auth.answer(await odd.recv(), who.root_cert, who.cert, who.signing))
            await odd.recv()
            await odd.send(json.dumps({"type": "hello", "v": 1, "node": who.node_id, "org": who.org, "role": "branch",
                                       "policy": 1, "vectors": {"masters": {"x": 0}}}))
            assert "malformed" in str(await asyncio.wait_for(odd.recv(), WAIT))

            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            assert relay.stats.refused == 3 and relay.stats.stored == len(head.entries())
            await ho.close()

    run(scenario())


def test_enrollment_requests_to_one_organisation_are_rate_limited(tmp_path: Path) -> None:
    """Anyone may send an enrollment request without a code; past the organisation's budget the relay
    answers for its head office, which never sees the excess."""
    head, _ = build_org(tmp_path, ())
    head.add_office("BR9", "Kestrel BR9 Office")
    code = InviteCode.parse(registrar.invite(head, "BR9")[0])  # its pin; the test client refuses every request

    async def enrolling(url: str) -> dict[str, Any]:
        async with connect(url, compression=None, proxy=None, open_timeout=WAIT) as ws:
            await ws.recv()  # the challenge
            await ws.send(enroll.request(code, NodeKeys.generate()))
            return json.loads(await asyncio.wait_for(ws.recv(), WAIT))

    async def scenario() -> None:
        limits = Limits(enrollments_per_minute=0.5, enrollments_burst=3)
        async with relay_at(tmp_path / "relay.db", limits) as (relay, url):
            ho = await Client.open(url, creds(head))
            replies = [await enrolling(url) for _ in range(6)]
            assert [r["reason"] for r in replies[:3]] == ["no such invite"] * 3
            assert all("too many enrollment requests" in r["reason"] for r in replies[3:])
            assert len(ho.enrollments) == 3, "the head office saw only the requests within the budget"
            assert relay.stats.refusals.get("enroll-rate") == 3
            await ho.close()

    run(scenario())


async def enrolling(url: str, code: InviteCode) -> tuple[dict[str, Any], int | None]:
    """A branch's enrollment request through the relay: the relay's answer and its close code."""
    async with connect(url, compression=None, proxy=None, open_timeout=WAIT) as ws:
        await ws.recv()  # the challenge
        await ws.send(enroll.request(code, NodeKeys.generate()))
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT))
        with contextlib.suppress(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), WAIT)
        return reply, ws.close_code


def invite_code(head: Node, office: str) -> InviteCode:
    head.add_office(office, f"Office {office}")
    return InviteCode.parse(registrar.invite(head, office)[0])


def holds_nothing_of(relay: Relay, org: str) -> bool:
    return (relay.store.vectors(org) == {} and relay.store.policy(org) is None
            and relay.store.usage_bytes(org) == 0 and org not in relay.store.usage())


def test_a_relay_with_an_allow_list_serves_only_those_organisations(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """Admitted by the Registration ID people read; every other organisation is refused at
    authentication with the reason, members and enrollments alike, and nothing of it is kept."""
    head, (branch,) = build_org(tmp_path / "a")
    other, (other_branch,) = build_org(tmp_path / "b")
    ours, theirs = invite_code(head, "BR8"), invite_code(other, "BR9")
    allowed = AllowedOrgs.of([parse_org(registration_id(head.trust.org).lower())])

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", Limits(allowed_orgs=allowed)) as (relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries()) and books(branch) == books(head)

            refusal = f"this relay does not serve organisation {registration_id(other.trust.org)}"
            for node in (other, other_branch):
                outsider = await Client.open(url, creds(node), node.vectors())
                assert (await outsider.wait_refused()).startswith(refusal)
                assert outsider.relay is None and outsider.received == []
                assert outsider.ws.close_code == 1008 and outsider.ws.close_reason.startswith(refusal)
            reply, code = await enrolling(url, theirs)
            assert reply["type"] == "refused" and "does not serve the organisation this invite code is for" \
                in reply["reason"] and code == 1008
            reply, _ = await enrolling(url, ours)  # an admitted organisation's branch still gets through
            assert reply["reason"] == "no such invite" and len(ho.enrollments) == 1

            assert holds_nothing_of(relay, other.trust.org) and not holds_nothing_of(relay, head.trust.org)
            assert relay.stats.refusals == {"org": 3}
            for client in (ho, br):
                await client.close()

    with caplog.at_level(logging.WARNING, logger="p2psync.relay.server"):
        run(scenario())
    logged = [r.getMessage() for r in caplog.records if "does not serve" in r.getMessage()]
    assert len(logged) == 3 and registration_id(other.trust.org) in logged[0]
    assert other.identity.node_id[:12] in logged[0]


def test_a_flooding_member_is_refused_while_another_still_syncs(tmp_path: Path) -> None:
    head, (branch, second) = build_org(tmp_path, ("BR1", "BR2"))
    limits = Limits(entries_per_second=50, entries_burst=50, max_debt_seconds=1.0, max_pending_batches=1000)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", limits) as (relay, url):
            flood = await Client.open(url, creds(branch))
            flood.conn.window = 1000
            junk = [b"junk entry %d" % i for i in range(50)]
            with contextlib.suppress(ConnectionClosed):
                for _ in range(100):  # without waiting for acknowledgements
                    await flood.send(flood.conn.entries(junk))
            assert "rate limit" in await flood.wait_refused()
            assert relay.stats.refused == 1

            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            other = await Client.open(url, creds(second))
            await other.wait_caught_up()
            assert take(second, other) == len(head.entries())
            for client in (ho, other):
                await client.close()

    run(scenario())


def test_one_member_cannot_hoard_its_organisations_connections(tmp_path: Path) -> None:
    head, (branch,) = build_org(tmp_path)
    limits = Limits(max_connections_per_org=4, max_connections_per_node=2)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", limits) as (_relay, url):
            hoard = [await Client.open(url, creds(branch)) for _ in range(2)]
            extra = await Client.open(url, creds(branch))
            assert "already has 2 connections" in await extra.wait_refused()
            assert not any(client.closed for client in hoard)
            ho = await Client.open(url, creds(head))  # the organisation still has room for the others
            await ho.push_node(head)
            await until(lambda: all(len(c.received) == len(head.entries()) for c in hoard), "the branch's links")
            for client in (*hoard, ho):
                await client.close()

    run(scenario())


def test_an_organisation_over_its_quota_is_refused(tmp_path: Path) -> None:
    head, _ = build_org(tmp_path, ())
    genuine = head.entries()
    limits = Limits(quota_bytes=len(genuine[0]) + 1)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", limits) as (relay, url):
            ho = await Client.open(url, creds(head))
            await ho.push(genuine[:1])
            await ho.send(ho.conn.entries(genuine[1:]))
            assert "quota" in await ho.wait_refused()
            assert relay.store.usage_bytes(head.trust.org) == len(genuine[0])

    run(scenario())


def test_a_quota_of_one_organisation_refuses_precisely_and_loses_nothing_acknowledged(tmp_path: Path,
                                                                                      relay_db: Path | str) -> None:
    head, (branch,) = build_org(tmp_path / "small")
    other, _ = build_org(tmp_path / "other", ())
    genuine = head.entries()
    first = sum(len(blob) for blob in genuine[:2])
    limits = Limits(org_quota_bytes={head.trust.org: first + 1})

    async def scenario() -> None:
        async with relay_at(relay_db, limits) as (relay, url):
            ho = await Client.open(url, creds(head))
            acked = await ho.push(genuine[:2])
            await ho.send(ho.conn.entries(genuine[2:]))
            reason = await ho.wait_refused()
            assert reason.startswith(f"quota full: this organisation holds {first} bytes of its {first + 1} bytes")
            assert "nothing of it was stored" in reason and relay.stats.refusals == {"quota": 1}
            assert acked and relay.store.usage_bytes(head.trust.org) == first
            br = await Client.open(url, creds(branch))  # what was acknowledged is there for the others
            await br.wait_caught_up()
            assert br.received == genuine[:2]
            elsewhere = await Client.open(url, creds(other))  # another organisation keeps the default quota
            await elsewhere.push_node(other)
            assert relay.store.usage_bytes(other.trust.org) == sum(len(b) for b in other.entries())
            for client in (br, elsewhere):
                await client.close()
        async with relay_at(relay_db) as (relay, url):  # the operator raises the quota: the rest goes in
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch), branch.vectors())
            await br.wait_caught_up()
            assert take(branch, br) == len(genuine) and books(branch) == books(head)
            for client in (ho, br):
                await client.close()

    run(scenario())


def test_retention_drops_what_waited_too_long_but_not_where_it_is_kept(tmp_path: Path,
                                                                       relay_db: Path | str) -> None:
    head, (branch,) = build_org(tmp_path / "brief")
    other, (other_branch,) = build_org(tmp_path / "kept")
    limits = Limits(retention_seconds=1.0, org_retention_seconds={other.trust.org: None}, expire_interval=0.2)

    async def scenario() -> None:
        async with relay_at(relay_db, limits) as (relay, url):
            ho, kept = await Client.open(url, creds(head)), await Client.open(url, creds(other))
            await ho.push_node(head)
            await kept.push_node(other)
            await until(lambda: relay.stats.expired == len(head.entries()), "the brief organisation's entries to expire")
            assert relay.store.usage_bytes(head.trust.org) == 0
            late = await Client.open(url, creds(branch))
            await late.wait_caught_up()
            assert late.received == [] and late.relay is not None
            assert late.relay.vectors == head.vectors()  # expired entries still count as held: none is asked for again
            await ho.push(head.entries())  # sent again: taken as duplicates, not stored to wait again
            assert relay.stats.duplicates == len(head.entries()) and relay.store.usage_bytes(head.trust.org) == 0
            assert relay.stats.stored == len(head.entries()) + len(other.entries())
            other_late = await Client.open(url, creds(other_branch))
            await other_late.wait_caught_up()
            assert take(other_branch, other_late) == len(other.entries())
            for client in (ho, kept, late, other_late):
                await client.close()

    run(scenario())


def scrape(port: int) -> dict[str, float]:
    """The relay's metrics endpoint as {'name{label="value"}': number} (counters without '_total')."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=WAIT) as response:
        body = response.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


def test_the_metrics_endpoint_counts_what_happened(tmp_path: Path) -> None:
    head, (branch, revoked) = build_org(tmp_path, ("BR1", "BR2"))
    banned = creds(revoked)
    registrar.revoke(head, "BR2")
    genuine = head.entries()
    org = head.trust.org

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db") as (relay, url):
            with serve_metrics(relay, ("127.0.0.1", 0)) as port:
                assert port is not None
                before = scrape(port)
                assert before["p2psync_relay_entries_stored_total"] == 0
                ho = await Client.open(url, creds(head))
                await ho.push_node(head)
                br = await Client.open(url, creds(branch))
                await br.wait_caught_up()
                assert len(br.received) == len(genuine)
                refused = await Client.open(url, banned)
                assert "revoked" in await refused.wait_refused()
                seen = scrape(port)
                size = sum(len(blob) for blob in genuine)
                assert seen["p2psync_relay_connections_open"] == 2
                assert seen["p2psync_relay_connections_total"] == 2
                assert seen["p2psync_relay_entries_stored_total"] == len(genuine)
                assert seen["p2psync_relay_bytes_stored_total"] == size
                assert seen["p2psync_relay_entries_forwarded_total"] == len(genuine)
                assert seen["p2psync_relay_bytes_forwarded_total"] == size
                assert seen['p2psync_relay_refusals_total{kind="revoked"}'] == 1
                assert seen[f'p2psync_relay_org_bytes{{org="{org}"}}'] == size
                assert seen[f'p2psync_relay_org_entries{{org="{org}"}}'] == len(genuine)
                assert seen[f'p2psync_relay_org_quota_bytes{{org="{org}"}}'] == Limits().quota_bytes
                for client in (ho, br):
                    await client.close()
                await until(lambda: scrape(port)["p2psync_relay_connections_open"] == 0, "connections to close")

    run(scenario())


def test_a_slow_member_overflows_without_holding_up_the_others(tmp_path: Path) -> None:
    head, (branch, second) = build_org(tmp_path, ("BR1", "BR2"))
    limits = Limits(live_queue_entries=2)

    async def scenario() -> None:
        async with relay_at(tmp_path / "relay.db", limits) as (relay, url):
            slow = await Client.open(url, creds(branch), auto_ack=False)
            fast = await Client.open(url, creds(second))
            ho = await Client.open(url, creds(head))
            for blob in head.entries():
                await ho.push([blob])
            for _ in range(8):
                post(head)
                await ho.push(head.entries(relay.store.vectors(head.trust.org)))
            total = len(head.entries())
            await until(lambda: len(fast.received) == total, "everything at the fast member")
            assert relay.stats.overflows >= 1 and len(slow.received) < total
            await slow.ack_held()  # the slow member catches up from the store
            await until(lambda: len(slow.received) == total, "everything at the slow member")
            assert take(branch, slow) == total
            for client in (slow, fast, ho):
                await client.close()

    run(scenario())


# ---------------------------------------------------------------- a real relay process


def _relay_command() -> list[str]:
    return [sys.executable, "-m", "p2psync", "relay"]


@asynccontextmanager
async def relay_process(db: Path, home: Path, *options: str) -> AsyncIterator[str]:
    env = {**os.environ, "P2PSYNC_HOME": str(home)}
    proc = await asyncio.create_subprocess_exec(
        *_relay_command(), "--host", "127.0.0.1", "--port", "0", "--db", str(db), *options,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), WAIT)).decode()  # type: ignore[union-attr]
        assert line.startswith("relay listening on ws://127.0.0.1:"), line
        yield line.split()[-1]
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), WAIT) == 0


@pytest.mark.slow
def test_a_restarted_relay_process_keeps_what_it_stored(tmp_path: Path) -> None:
    head, (branch, second) = build_org(tmp_path, ("BR1", "BR2"))
    db, home = tmp_path / "relay" / "relay.db", tmp_path / "relay-home"
    home.mkdir()

    async def scenario() -> None:
        async with relay_process(db, home) as url:
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries())
            post(branch)
            await br.push(branch.entries(head.vectors()))
            for client in (ho, br):
                await client.close()
        async with relay_process(db, home) as url:
            late = await Client.open(url, creds(second))
            assert late.relay is not None and late.relay.policy_version == head.trust.policy.version
            await late.wait_caught_up()
            assert take(second, late) == len(head.entries()) + 1
            ho = await Client.open(url, creds(head), head.vectors())
            await ho.wait_caught_up()
            assert take(head, ho) == 1
            assert books(second) == books(head) == books(branch)
            for client in (late, ho):
                await client.close()

    run(scenario())


@pytest.mark.slow
def test_the_relay_command_applies_an_organisation_quota_and_expires_at_start(tmp_path: Path) -> None:
    head, _ = build_org(tmp_path, ())
    genuine = head.entries()
    org, home = head.trust.org, tmp_path / "relay-home"
    home.mkdir()
    quota_mib = (len(genuine[0]) + 1) / (1024 * 1024)

    async def scenario() -> None:
        async with relay_process(tmp_path / "relay.db", home, "--org-quota", f"{org}={quota_mib!r}",
                                 "--org-retention", f"{'f' * 64}=1", "--retention", "30") as url:
            ho = await Client.open(url, creds(head))
            await ho.push(genuine[:1])
            await ho.send(ho.conn.entries(genuine[1:]))
            assert (await ho.wait_refused()).startswith(f"quota full: this organisation holds {len(genuine[0])} bytes")
        await asyncio.sleep(2.1)  # the stored entry is now older than 0.00001 days, counted in whole seconds
        async with relay_process(tmp_path / "relay.db", home, "--retention", "0.00001") as url:
            await until(lambda: held() == 0, "the relay to drop the expired entry as it starts")
            again = await Client.open(url, creds(head))  # says it holds nothing: the relay has nothing to send
            await again.wait_caught_up()
            assert again.received == [] and again.relay is not None
            assert again.relay.vectors == {genuine_doc: {head.identity.node_id: 1}}
            await again.close()

    def held() -> int:
        with contextlib.closing(sqlite3.connect(tmp_path / "relay.db")) as db:
            return int(db.execute("SELECT count(*) FROM relay_entry").fetchone()[0])

    genuine_doc = entry.peek(genuine[0]).doc
    run(scenario())


@pytest.mark.slow
def test_the_relay_command_serves_only_the_organisations_it_is_told(tmp_path: Path) -> None:
    """`--allow-org` with a Registration ID and `--allow-orgs-file` with ids and comments: the admitted
    organisation syncs through the relay process; another is refused, logged, and absent from its database."""
    head, (branch,) = build_org(tmp_path / "a")
    other, _ = build_org(tmp_path / "b")
    home, db = tmp_path / "relay-home", tmp_path / "relay.db"
    home.mkdir()
    listed = tmp_path / "clients.txt"
    listed.write_text(f"# clients of this relay\n\n{'e' * 64}   # Some Other Co\n{head.trust.org}\n")
    refusal = f"this relay does not serve organisation {registration_id(other.trust.org)}"

    async def scenario() -> None:
        async with relay_process(db, home, "--allow-org", registration_id(head.trust.org),
                                 "--allow-orgs-file", str(listed)) as url:
            ho = await Client.open(url, creds(head))
            await ho.push_node(head)
            br = await Client.open(url, creds(branch))
            await br.wait_caught_up()
            assert take(branch, br) == len(head.entries()) and books(branch) == books(head)
            outsider = await Client.open(url, creds(other))
            assert (await outsider.wait_refused()).startswith(refusal)
            assert outsider.ws.close_code == 1008
            with contextlib.suppress(ConnectionClosed):
                await outsider.push(other.entries())
            for client in (ho, br):
                await client.close()

    run(scenario())
    with contextlib.closing(sqlite3.connect(db)) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        held = {table: {org for (org,) in conn.execute(f"SELECT DISTINCT org FROM {table}")}
                for table in tables if "org" in [c[1] for c in conn.execute(f"PRAGMA table_info({table})")]}
    assert held["relay_entry"] == held["relay_policy"] == {head.trust.org}
    assert all(other.trust.org not in orgs for orgs in held.values()), held
    assert refusal in (home / "p2psync.log").read_text()


@pytest.mark.parametrize(("options", "message"), [
    (["--allow-org", "acme"], "--allow-org: 'acme' is not an organisation: give its Registration ID"),
    (["--allow-org", "ABCD-EFGH-IJKL-MNO1"], "--allow-org: 'ABCD-EFGH-IJKL-MNO1' is not an organisation"),
    (["--allow-org", "a" * 63], "is not an organisation"),
    (["--allow-orgs-file", "{tmp}/clients.txt"], "clients.txt line 3: 'ACME-TRADERS' is not an organisation"),
    (["--allow-orgs-file", "{tmp}/empty.txt"], "empty.txt lists no organisation; the relay would serve nobody"),
    (["--allow-orgs-file", "{tmp}/missing.txt"], "missing.txt' does not exist"),
])
def test_a_bad_allow_list_is_a_one_line_usage_error(tmp_path: Path, options: list[str], message: str) -> None:
    (tmp_path / "clients.txt").write_text(f"# clients\n{'a' * 64}\nACME-TRADERS  # not an id\n")
    (tmp_path / "empty.txt").write_text("# nobody yet\n\n")
    result = subprocess.run([sys.executable, "-m", "p2psync", "--home", str(tmp_path), "relay", "--port", "0",
                             *[o.format(tmp=tmp_path) for o in options]], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 2 and result.stdout == "", result
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(("options", "message"), [
    (["--org-quota", "acme=5"], "the organisation must be its 64-character hex id"),
    (["--org-retention", f"{'a' * 64}=soon"], "give ORG=NUMBER"),
    (["--org-quota", f"{'a' * 64}=0"], "the number must be above 0"),
    (["--metrics", "9471"], "give HOST:PORT"),
    (["--quota", "0"], "--quota"),
])
def test_bad_relay_options_get_a_precise_error(tmp_path: Path, options: list[str], message: str) -> None:
    result = CliRunner().invoke(cli_group, ["--home", str(tmp_path), "relay", "--port", "0", *options])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_unknown_relay_database_is_a_precise_error(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "p2psync", "--home", str(tmp_path), "relay", "--port", "0",
                             "--db", "mysql://db.internal/relay"], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 1 and "unknown relay database mysql://" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
