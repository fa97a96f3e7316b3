"""One sync conversation over one websocket: the asyncio driver of `protocol.sync.SyncConnection`.

The node's side is reached through `Local`, whose methods run the blocking work (SQLite, pycrdt)
off the event loop. The same driver serves node-to-node links and links to a relay.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed, WebSocketException

from p2psync.canonical import utc_now
from p2psync.deps import Deps
from p2psync.errors import P2PSyncError, StoreError
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError
from p2psync.protocol.sync import (
    Ack,
    CaughtUp,
    EnrollForward,
    Entries,
    Fork,
    Heads,
    Hello,
    PolicyOffer,
    ProtocolError,
    Refused,
    SyncConnection,
    batches,
)

logger = logging.getLogger(__name__)

HELLO_TIMEOUT = 15.0
#: A peer that acknowledges nothing for this long is stalled; the link is dropped and retried.
ACK_TIMEOUT = 60.0
#: Websocket close codes (RFC 6455, section 7.4.1): the peer broke the conversation; refused by
#: policy (revoked); try again later (this side cannot store now).
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_POLICY = 1008
CLOSE_TRY_LATER = 1013
#: The conversation is to be started again (RFC 6455's "service restart"): after an equivocation settled.
CLOSE_RESTART = 1012
#: How long a refusal may wait to be written to a peer that reads nothing (a dead link) before the
#: link is closed without it.
REFUSAL_TIMEOUT = 2.0


class Local(Protocol):
    """What a link needs from the node it serves (all awaitables run off the event loop)."""

    node_id: str
    org: str
    role: str

    def policy_version(self) -> int: ...
    def vectors(self, docs: list[str] | None = None) -> Awaitable[Deps]: ...
    def policy_blob(self) -> Awaitable[bytes]: ...
    def entries_since(self, after_id: int) -> Awaitable[list[tuple[int, str, str, int, int, bytes]]]:
        """(id, doc, author, seq, voucher revisions, sealed entry) logged after `after_id`."""
    def receive(self, blobs: list[bytes], docs: list[str]) -> Awaitable[tuple[int, int, Deps]]:
        """Apply entries; (how many were applied, the voucher revisions in them, the vectors of
        `docs` after them) for the ack and the counts."""
    def progressed(self, stats: LinkStats) -> None:
        """Entries arrived on the link whose `stats` these are (to show how far a first sync is)."""
    def adopt_policy(self, blob: bytes) -> Awaitable[bool]: ...
    def cut_off(self, node: str) -> bool:
        """Whether `node` may no longer be sent anything (the policy held here revokes it)."""
    def wait_for_change(self, seen_id: int, seen_policy: int) -> Awaitable[None]: ...
    def enroll(self, request: bytes) -> Awaitable[bytes]: ...
    def heads(self) -> Awaitable[Heads]: ...
    def parted(self, heads: Heads) -> Awaitable[list[tuple[str, str, list[bytes]]]]:
        """The chains where the peer's heads differ from ours: (doc, author, our entry hashes)."""
    def settle(self, doc: str, author: str, hashes: list[bytes]) -> Awaitable[tuple[list[bytes], bool]]:
        """Our entry hashes of that chain, and whether we dropped our side of an equivocation."""


@dataclass
class LinkStats:
    """What `status` shows of one link."""

    peer: str = ""
    sent: int = 0  # entries
    received: int = 0
    #: The same counts in vouchers (posts, amendments, cancellations), which is what people count.
    sent_vouchers: int = 0
    received_vouchers: int = 0
    #: Entries the peer held at its hello that this side lacked: what "percent done" is of.
    expected: int = 0
    caught_up: bool = False
    peer_caught_up: bool = False
    #: Entries the peer acknowledged as durably stored (or already held).
    acked: int = 0
    backlog: int = 0
    #: When both sides last held everything the other had sent (UTC, ISO); empty until then.
    synced_at: str = ""
    #: The peer's version vectors as its hello gave them: what it held when the exchange began (a
    #: restored office compares its own entries there with what it holds, to know it caught up).
    peer_vectors: Deps | None = None

    @property
    def percent(self) -> int:
        """How much of what the peer had to give at hello has arrived (100 once it said it sent all)."""
        if self.peer_caught_up or not self.expected:
            return 100 if self.peer_caught_up else 0
        return min(100, self.received * 100 // self.expected)


class PeerRefused(ProtocolError):
    """The other side refused the conversation (revoked, wrong organisation, limits)."""


class PeerCutOff(ProtocolError):
    """The policy held here now revokes the peer: it is told so, with the policy, and dropped."""


class ForkSettled(ProtocolError):
    """This side dropped its side of an equivocation: the conversation starts again, so that each
    side tells the other what it now holds."""


class ExchangeCut(P2PSyncError):
    """A one-shot exchange ended before the peer had acknowledged everything sent to it and sent
    everything it holds: the sync did not happen, whatever was sent."""


async def converse(ws: Connection, local: Local, stats: LinkStats, *, until_caught_up: bool = False,
                   check_peer: Callable[[Hello], None] | None = None) -> None:
    """Run the conversation until the link closes (or, for a one-shot sync, both sides caught up).
    A peer that breaks the protocol is told why: the link closes with code 1002 and the reason; one
    this node can no longer store for is told to try later (1013); a revoked one gets the policy
    that revokes it (1008). A one-shot sync that ends any other way than complete raises `ExchangeCut`."""
    conn = SyncConnection()
    try:
        await _converse(ws, conn, local, stats, until_caught_up, check_peer)
    except PeerRefused:
        raise
    except ForkSettled as exc:
        await ws.close(CLOSE_RESTART, str(exc)[:120])
        raise
    except PeerCutOff as exc:
        await turn_away(ws, str(exc), await local.policy_blob())
        raise
    except ProtocolError as exc:
        await ws.close(CLOSE_PROTOCOL_ERROR, str(exc).encode()[:120].decode(errors="ignore"))
        raise
    except StoreError as exc:
        await turn_away(ws, f"cannot store here now ({exc}); try again later", code=CLOSE_TRY_LATER)
        raise
    except WebSocketException as exc:
        if until_caught_up:
            raise _cut_short(ws, conn) from exc
        raise


async def turn_away(ws: Connection, reason: str, policy: bytes | None = None, *, code: int = CLOSE_POLICY) -> None:
    """Refuse the conversation and close: `refused` (with `policy`, the proof, if given) goes first,
    so the peer learns why even if it never sees the close reason. A peer that reads nothing does
    not hold this up for more than `REFUSAL_TIMEOUT` plus the close timeout."""
    try:
        async with asyncio.timeout(REFUSAL_TIMEOUT):
            await ws.send(SyncConnection().refuse(reason, policy))
    except (TimeoutError, ConnectionClosed):
        pass
    await ws.close(code, reason.encode()[:120].decode(errors="ignore"))


def _cut_short(ws: Connection, conn: SyncConnection) -> ExchangeCut:
    """Why a one-shot exchange is not complete, in one line."""
    closed = ws.protocol.close_rcvd
    if closed is None:
        how = "the connection dropped"
    else:
        how = f"the peer closed the link (code {closed.code}{', ' + closed.reason if closed.reason else ''})"
    missing = conn.unacknowledged
    what = f": {missing} entries sent were not acknowledged as stored" if missing else ""
    return ExchangeCut(f"{how} before the exchange was complete{what}")


async def _adopt(local: Local, blob: bytes) -> None:
    """Adopt a policy even if this link ends meanwhile: a link that closes right after a policy (a
    refusal of a revoked node) must not lose it."""
    await asyncio.shield(local.adopt_policy(blob))


async def _converse(ws: Connection, conn: SyncConnection, local: Local, stats: LinkStats, until_caught_up: bool,
                    check_peer: Callable[[Hello], None] | None) -> None:
    try:
        ours = await local.vectors()
        await ws.send(conn.hello(local.node_id, local.org, local.role, local.policy_version(), ours,
                                 await local.heads()))
    except ConnectionClosed:
        pass  # the peer may have refused us before our hello: its refusal (and policy) is still read
    first = await asyncio.wait_for(ws.recv(), HELLO_TIMEOUT)
    hello = conn.receive(first)
    if isinstance(hello, Refused):
        await _refused(local, hello)
    assert isinstance(hello, Hello)
    if hello.org != local.org:
        await ws.send(conn.refuse("different organisation"))
        raise ProtocolError("peer belongs to a different organisation")
    if check_peer is not None:
        check_peer(hello)
    stats.peer = hello.node
    stats.peer_vectors = hello.vectors
    stats.expected = lacking(hello.vectors, ours)
    for doc, author, hashes in await local.parted(hello.heads):
        await ws.send(conn.fork(doc, author, hashes))
    acked = asyncio.Event()
    done = asyncio.Event()
    reader = asyncio.create_task(_read(ws, conn, local, stats, acked, done, until_caught_up))
    writer = asyncio.create_task(_write(ws, conn, local, stats, acked, done, until_caught_up))
    finished_sync = asyncio.create_task(done.wait())
    try:
        finished, _pending = await asyncio.wait({reader, writer, finished_sync}, return_when=asyncio.FIRST_COMPLETED)
        if until_caught_up and done.is_set():
            return  # complete: whatever else ended at the same moment does not matter
        for task in finished:
            task.result()  # re-raises what ended a reader or writer
    finally:
        for task in (reader, writer, finished_sync):
            task.cancel()
        await asyncio.gather(reader, writer, finished_sync, return_exceptions=True)
    if until_caught_up and not done.is_set():  # the peer closed the link cleanly, but too soon
        raise _cut_short(ws, conn)


async def _refused(local: Local, event: Refused) -> None:
    """The peer refused us: take the policy it gave as the reason (if it verifies), then end."""
    if event.policy:
        await _adopt(local, event.policy)
    raise PeerRefused(f"peer refused: {event.reason}")


async def _read(ws: Connection, conn: SyncConnection, local: Local, stats: LinkStats, acked: asyncio.Event,
                done: asyncio.Event, until_caught_up: bool) -> None:
    async for frame in ws:
        event = conn.receive(frame)
        if isinstance(event, Entries):
            applied, vouchers, vectors = await local.receive(event.blobs, _note_received(conn, event.blobs))
            stats.received += applied
            stats.received_vouchers += vouchers
            local.progressed(stats)
            await ws.send(conn.ack(event.batch, vectors, new_only=True))
        elif isinstance(event, PolicyOffer):
            await _adopt(local, event.blob)
        elif isinstance(event, Ack):
            stats.acked += event.entries
            acked.set()
        elif isinstance(event, CaughtUp):
            stats.peer_caught_up = True
        elif isinstance(event, EnrollForward):
            await ws.send(conn.enroll_reply(event.ticket, await local.enroll(event.request)))
        elif isinstance(event, Refused):
            await _refused(local, event)
        elif isinstance(event, Fork):
            await _settle(ws, conn, local, event)
        elif isinstance(event, Hello):
            raise ProtocolError("second hello")
        _check_done(conn, stats, done, until_caught_up)


async def _settle(ws: Connection, conn: SyncConnection, local: Local, event: Fork) -> None:
    """The peer's chain of an author differs from ours: settle which side every office keeps, tell the
    peer our hashes (unless this answers ours), and start again if we dropped our side."""
    mine, dropped = await local.settle(event.doc, event.author, event.hashes)
    if event.reply:
        conn.fork_settled(event.doc, event.author)
    else:
        await ws.send(conn.fork(event.doc, event.author, mine, reply=True))
    if dropped:
        raise ForkSettled(f"equivocation by {event.author[:16]} in {event.doc} settled; starting again")


def lacking(theirs: Deps, ours: Deps) -> int:
    """How many entries the holder of `theirs` has that the holder of `ours` lacks."""
    return sum(max(0, seq - ours.get(doc, {}).get(author, 0)) for doc, vector in theirs.items()
               for author, seq in vector.items())


def _note_received(conn: SyncConnection, blobs: list[bytes]) -> list[str]:
    docs = set()
    for blob in blobs:
        try:
            header = entry.peek(blob)
        except EntryError:
            continue
        conn.note_peer_has(header.doc, header.author, header.seq)
        docs.add(header.doc)
    return sorted(docs)


def _check_done(conn: SyncConnection, stats: LinkStats, done: asyncio.Event, until_caught_up: bool) -> None:
    """Synced once both sides sent all they hold, every batch is acknowledged, and every chain whose
    hashes we sent is settled: the peer's answer may make this side drop entries and start again,
    and caught-up from both sides can arrive before it."""
    if stats.caught_up and stats.peer_caught_up and not conn.in_flight and not conn.forks_asked:
        stats.synced_at = utc_now()
        if until_caught_up:
            done.set()


async def _write(ws: Connection, conn: SyncConnection, local: Local, stats: LinkStats, acked: asyncio.Event,
                 done: asyncio.Event, until_caught_up: bool) -> None:
    assert conn.peer is not None
    seen_policy = conn.peer.policy_version
    seen_id = 0
    while True:
        _check_member(conn, local)
        if local.policy_version() > seen_policy:
            await ws.send(conn.policy(await local.policy_blob()))
            seen_policy = local.policy_version()
        seen_id = await _send_new(ws, conn, local, stats, acked, seen_id)
        if not stats.caught_up:
            await _drain(conn, acked)
            await ws.send(conn.caught_up())
            stats.caught_up = True
        _check_done(conn, stats, done, until_caught_up)
        if until_caught_up and done.is_set():
            return
        waits = [asyncio.create_task(local.wait_for_change(seen_id, seen_policy)), asyncio.create_task(acked.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        acked.clear()


async def _send_new(ws: Connection, conn: SyncConnection, local: Local, stats: LinkStats, acked: asyncio.Event,
                    seen_id: int) -> int:
    """Send every logged entry after `seen_id` that the peer lacks; returns the new position."""
    while True:
        rows = await local.entries_since(seen_id)
        if not rows:
            return seen_id
        seen_id = rows[-1][0]
        wanted = [(doc, author, seq, vouchers, blob) for _id, doc, author, seq, vouchers, blob in rows
                  if conn.peer_lacks(doc, author, seq)]
        stats.backlog = len(wanted)
        counts = iter([vouchers for *_key, vouchers, _blob in wanted])
        for batch in batches(blob for *_key, blob in wanted):
            while not conn.can_send:
                acked.clear()
                await asyncio.wait_for(acked.wait(), ACK_TIMEOUT)
            _check_member(conn, local)
            await ws.send(conn.entries(batch))
            stats.sent += len(batch)
            stats.sent_vouchers += sum(next(counts) for _blob in batch)
            stats.backlog = max(0, stats.backlog - len(batch))
        for doc, author, seq, _vouchers, _blob in wanted:
            conn.note_peer_has(doc, author, seq)


def _check_member(conn: SyncConnection, local: Local) -> None:
    """Checked right before anything is sent, with no wait in between: once the policy held here
    revokes the peer, not one more entry goes to it."""
    assert conn.peer is not None
    if local.cut_off(conn.peer.node):
        raise PeerCutOff(f"node {conn.peer.node[:16]} is revoked by the head office")


async def _drain(conn: SyncConnection, acked: asyncio.Event) -> None:
    """Wait until every batch sent was acknowledged (so 'caught up' means durable at the peer)."""
    while conn.in_flight:
        acked.clear()
        await asyncio.wait_for(acked.wait(), ACK_TIMEOUT)

