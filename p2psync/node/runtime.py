"""A running node: serves links, dials peers and relays, pushes live, reconciles, reports status.

All database and document work runs on one worker thread, so the event loop never blocks on
SQLite or pycrdt and the node's state is touched by one thread only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import random
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import select
from websockets.asyncio.client import connect
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import WebSocketException

from p2psync.books.drafts import Draft
from p2psync.books.model import Revision
from p2psync.canonical import utc_now
from p2psync.deps import Deps
from p2psync.errors import P2PSyncError, StoreError
from p2psync.net import discovery, ending, tls, wire
from p2psync.net.link import LinkStats, converse, turn_away
from p2psync.node import forks, recovery, registrar
from p2psync.node.home import KEYS_DIR
from p2psync.node.membership import revoked_notice
from p2psync.node.office import CATCHING_UP_NOTICE, Node
from p2psync.protocol import relay_auth
from p2psync.protocol.sync import MAX_FRAME, Heads, Hello, ProtocolError
from p2psync.store import queries
from p2psync.store.db import get_setting
from p2psync.store.tables import PeerRow, Pending, SyncLogRow
from p2psync.trust.certs import CertificateError, Member
from p2psync.trust.enroll import MAX_MESSAGE, refusal
from p2psync.trust.keys import unb64
from p2psync.trust.policy import claimed_version

logger = logging.getLogger(__name__)
T = TypeVar("T")

POLL_SECONDS = 0.5
#: How often the node looks for entries and a policy that another process on its home wrote, in case
#: that process's notice (`local_written`) was lost; ``P2PSYNC_LOCAL_POLL_SECONDS`` overrides it.
LOCAL_POLL_SECONDS = 2.0
LOCAL_POLL_ENV = "P2PSYNC_LOCAL_POLL_SECONDS"
#: How long a held link may take to answer a ping before a reconnecting peer replaces it.
STALE_CHECK_SECONDS = 3.0
#: Websocket settings of every link: bounded frames, keepalive, and a short close handshake so a
#: vanished peer cannot delay shutdown; compression is `net.wire`'s, per side.
LINK_OPTIONS: dict[str, Any] = {"max_size": MAX_FRAME, "ping_interval": 20, "ping_timeout": 20, "close_timeout": 2}
SAVE_EVERY_POLLS = 20
BACKOFF_START, BACKOFF_MAX = 1.0, 60.0
#: Between dials once this node is revoked: every peer refuses it, so retrying at full speed only
#: burns their time and the user's network; a restart (or a new LAN advert) still dials at once.
REVOKED_RETRY_SECONDS = 3600.0
ONE_SHOT_TIMEOUT = 120.0
#: A first sync's progress goes to the log each time it passes another step of this many percent.
PROGRESS_LOG_STEP = 10
#: The most posts one group commit holds (see `NodeRuntime.post`): bounds how long the worker is
#: busy with one call, and so how long a receive waits behind it.
MAX_GROUP_COMMIT = 256


@dataclass
class PeerState:
    key: str
    kind: str
    address: str = ""
    office: str = ""
    online: bool = False
    stats: LinkStats = field(default_factory=LinkStats)
    last_error: str = ""  # in plain words ("" when the link is healthy or ended on purpose)
    last_error_detail: str = ""  # the technical reason, for --json and the log
    #: (sent, received, sent vouchers, received vouchers) of `stats` already written to the database.
    recorded: tuple[int, int, int, int] = (0, 0, 0, 0)
    link: Connection | None = field(default=None, repr=False)  # the open websocket while online
    #: The link was closed for the periodic full reconcile: its dialer reconnects at once.
    reconciled: bool = False
    logged_percent: int = field(default=-1, repr=False)  # the progress step last written to the log

    def failed(self, exc: BaseException) -> None:
        """Record why the link ended or could not start: plain words for people, detail for the log."""
        self.last_error = ending.plain(exc, self.address)
        self.last_error_detail = ending.detail(exc)

    def counts(self) -> tuple[int, int, int, int]:
        return (self.stats.sent, self.stats.received, self.stats.sent_vouchers, self.stats.received_vouchers)

    @property
    def last_sync(self) -> str:
        return self.stats.synced_at


class NodeRuntime:
    """The node as a long-running service (and the engine of one-shot ``p2psync sync``)."""

    def __init__(self, node: Node, *, host: str = "0.0.0.0", port: int = 8470, peers: tuple[str, ...] = (),
                 mdns: bool = True) -> None:
        self.node = node
        self.host, self.port = host, port
        self.static_peers = list(peers)
        self.mdns = mdns
        self.node_id = node.identity.node_id
        self.org = node.trust.org
        self.role = node.identity.role
        self.worker = ThreadPoolExecutor(1, thread_name_prefix="p2psync-node")
        self.peers: dict[str, PeerState] = {}
        self.server: Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dialers: list[asyncio.Task[None]] = []
        #: Per member advertised on the LAN, one dialer per address advertised for it, for as long as
        #: that advert lasts (a spoofed advert gets a dialer of its own, which TLS refuses, and never
        #: replaces the genuine one).
        self._lan_dialers: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._dialed: dict[str, str] = {}  # peer address -> node id its certificate showed
        self._closing: set[asyncio.Task[None]] = set()  # links to revoked nodes being closed
        self._changed = asyncio.Condition()
        self._seen = (0, 0)
        self._told = asyncio.Event()  # another process on this home wrote to the books
        self.local_poll = _local_poll_seconds()
        self._keys_dir = node.home / KEYS_DIR
        with node.db.read() as session:
            self._root_der = unb64(get_setting(session, "root_cert") or "")
            self._cert_der = unb64(get_setting(session, "cert") or "")
        self.started_at = utc_now()
        #: Posts waiting for the next group commit, and the task committing them (see `post`).
        self._queued_posts: list[tuple[Draft, asyncio.Future[Revision]]] = []
        self._poster: asyncio.Task[None] | None = None
        #: Called with a peer's state as entries arrive from it (``p2psync sync`` shows a progress bar).
        self.on_progress: Callable[[PeerState], None] | None = None

    # ------------------------------------------------------------ link.Local

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.worker, fn, *args)

    async def post(self, draft: Draft) -> Revision:
        """Post one voucher; returns once it is durable (and wakes the links). Posts that arrive while
        a commit is going to disk wait for the next one and share it (group commit): each is still a
        voucher and an entry of its own, refused alone, and none returns before its commit."""
        done: asyncio.Future[Revision] = asyncio.get_running_loop().create_future()
        self._queued_posts.append((draft, done))
        if self._poster is None or self._poster.done():
            self._poster = asyncio.create_task(self._post_queued())
        return await done

    async def _post_queued(self) -> None:
        """Commit the queued posts, at most `MAX_GROUP_COMMIT` to a commit, until none is left."""
        while self._queued_posts:
            group = self._queued_posts[:MAX_GROUP_COMMIT]
            del self._queued_posts[:MAX_GROUP_COMMIT]
            try:
                results: list[Revision | BaseException] = list(
                    await self.call(self.node.post_group, [draft for draft, _ in group]))
            except Exception as exc:  # noqa: BLE001 - the disk or the node: every post of the group fails
                results = [exc] * len(group)
            else:
                await self.notify()
            for (_, done), result in zip(group, results, strict=True):
                if done.done():  # the caller went away
                    continue
                if isinstance(result, BaseException):
                    done.set_exception(result)
                else:
                    done.set_result(result)

    def policy_version(self) -> int:
        return self.node.trust.policy.version

    def cut_off(self, node: str) -> bool:
        return node in self.node.trust.policy.revoked

    async def vectors(self, docs: list[str] | None = None) -> Deps:
        return await self.call(self.node.vectors, docs)

    async def policy_blob(self) -> bytes:
        return await self.call(self.node.policy_blob)

    async def entries_since(self, after_id: int) -> list[tuple[int, str, str, int, int, bytes]]:
        """What a link sends next: from memory when this process logged it all (a live post or
        receive, without a hop to the worker), else from the log."""
        rows = self.node.store.sealed_after(after_id, self._seen[0])
        if rows is None:
            rows = await self.call(self.node.entries_since, after_id)
        return rows

    async def receive(self, blobs: list[bytes], docs: list[str]) -> tuple[int, int, Deps]:
        applied, vouchers, vectors, last = await self.call(self._receive, blobs, docs)
        if last:
            await self._announce(last)
        return applied, vouchers, vectors

    def _receive(self, blobs: list[bytes], docs: list[str]) -> tuple[int, int, Deps, int]:
        """Receiving, the vectors for the ack and the newest entry to announce (one applied or carried
        unread: both go on to the other links), in one worker call: each hop between the event loop
        and the worker adds to every live voucher's latency."""
        result = self.node.receive(blobs, docs)
        logged = result.applied + result.carried
        return result.applied, result.vouchers, result.vectors, self.node.store.last_sealed if logged else 0

    def progressed(self, stats: LinkStats) -> None:
        """Entries arrived: a long first sync says how far it is, in the log every few percent and to
        ``p2psync sync``'s progress bar."""
        state = next((s for s in self.peers.values() if s.stats is stats), None)
        if state is None:
            return
        if self.on_progress is not None:
            self.on_progress(state)
        step = stats.percent // PROGRESS_LOG_STEP * PROGRESS_LOG_STEP
        if stats.received < stats.expected and step > state.logged_percent:  # a sync of one batch says nothing
            state.logged_percent = step
            logger.info("receiving from %s: %d vouchers so far, %d%% of %d entries", state.office or state.key[:16],
                        stats.received_vouchers, stats.percent, stats.expected)

    async def adopt_policy(self, blob: bytes) -> bool:
        relays = self.node.trust.policy.relays
        try:
            adopted = await self.call(self.node.adopt_policy, blob)
        except P2PSyncError as exc:
            logger.warning("refused a policy: %s", exc)
            return False
        if adopted and self.node.trust.policy.relays != relays and self.server is not None and not self.manual:
            # the head office changed the relays: dial the new ones (in a task of its own, since this
            # may run inside a link that the restart cancels)
            self._tasks.append(asyncio.create_task(self._restart_dialers()))
        if adopted:
            await self.notify()  # first: every live link passes the policy on (and stops sending to
            self._cut_off_revoked(blob)  # revoked nodes at once), then those links are closed, behind
        return adopted

    def _cut_off_revoked(self, blob: bytes) -> None:
        """Close every link to a node the policy revokes, each in a task of its own: closing a dead link
        waits for its close timeout, and the policy must not wait for that to reach the other links
        (until it does, they seal under the old epoch key, which the revoked node holds). The revoked
        node is handed the policy first, so it learns that it is revoked."""
        for key in self.node.trust.policy.revoked:
            state = self.peers.get(key)
            if state is not None and state.link is not None:
                task = asyncio.create_task(turn_away(state.link, "revoked by the head office", blob))
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)

    async def heads(self) -> Heads:
        return await self.call(forks.heads, self.node)

    async def parted(self, heads: Heads) -> list[tuple[str, str, list[bytes]]]:
        return await self.call(forks.parted, self.node, heads) if heads else []

    async def settle(self, doc: str, author: str, hashes: list[bytes]) -> tuple[list[bytes], bool]:
        mine, dropped = await self.call(forks.settle, self.node, doc, author, hashes)
        if dropped:
            await self.notify()
        return mine, dropped

    async def enroll(self, request: bytes) -> bytes:
        """Answer an enrollment request (passed on by a relay): only the head office can."""
        if not self.node.identity.is_head:
            return refusal("this node is not the head office; enroll with the head office")
        return await self.call(registrar.handle_enroll, self.node, request)

    async def wait_for_change(self, seen_id: int, seen_policy: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._seen[0] > seen_id or self._seen[1] > seen_policy)

    @property
    def position(self) -> tuple[int, int]:
        """The newest shared entry and policy version the links know of: changes when books or policy do."""
        return self._seen

    async def notify(self) -> None:
        """Wake the links after a change. One this process committed is known without asking the
        database (a hop to the worker less on every live post); otherwise (another process on this
        home, a policy) the database says how far the log goes."""
        last = self.node.store.last_sealed
        if last <= self._seen[0]:
            last = await self.call(self.node.last_entry_id)
        await self._announce(last)

    async def _announce(self, last: int) -> None:
        """Wake the links' writers: entries up to `last` are logged here."""
        async with self._changed:
            self._seen = (max(last, self._seen[0]), self.policy_version())
            self._changed.notify_all()

    # ------------------------------------------------------------ lifecycle

    @property
    def manual(self) -> bool:
        return self.node.settings()["mode"] == "manual"

    @property
    def interval(self) -> float:
        return float(self.node.settings()["interval"] or 5) * 60

    async def start(self) -> None:
        self.node.store.defer_snapshots = True  # snapshots and checkpoints are done by `_poll` when
        self.node.db.defer_checkpoints()  # idle, not inside a user's commit
        await self._move_to_scopes()  # before any link: the policy the links send first is the new one
        await self.notify()
        try:
            self.server = await serve(self._accept, self.host, self.port,
                                      ssl=tls.server_context(self._keys_dir, self._root_der), **LINK_OPTIONS,
                                      **wire.server_options())
        except OSError as exc:
            reason = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise P2PSyncError(f"cannot listen on {self.host}:{self.port}: {reason}") from None
        self.port = self.server.sockets[0].getsockname()[1]
        self._tasks.append(asyncio.create_task(self._poll()))
        self._tasks.append(asyncio.create_task(self._watch_local_writes()))
        if self.mdns:
            self._tasks.append(asyncio.create_task(self._discover()))
        if not self.manual:
            self._start_dialers()

    def _start_dialers(self) -> None:
        for url in self.static_peers:
            self._dialers.append(asyncio.create_task(self._dial_forever(url, relay=False)))
        for url in self.node.trust.policy.relays:
            self._dialers.append(asyncio.create_task(self._dial_forever(url, relay=True)))

    async def _stop_dialers(self) -> None:
        for task in self._dialers:
            task.cancel()
        await asyncio.gather(*self._dialers, return_exceptions=True)
        self._dialers.clear()

    async def stop(self) -> None:
        await self._stop_dialers()
        lan = [task for dialers in self._lan_dialers.values() for task in dialers.values()]
        self._lan_dialers.clear()
        for task in lan:
            task.cancel()
        await asyncio.gather(*lan, return_exceptions=True)
        for task in [*self._tasks, *self._closing]:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._closing, return_exceptions=True)
        self._tasks.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        await self.call(self._save_peers)
        self.worker.shutdown(wait=True)

    async def restart_links(self) -> None:
        """Drop every link and dial again at once: what ``p2psync restart`` does. LAN discovery keeps
        running and links again to the members it sees."""
        await self._close_links(list(self.peers), 1012, "restarting")
        await self._stop_dialers()
        if not self.manual:
            self._start_dialers()

    async def settings_changed(self, before: dict[str, Any]) -> None:
        """This process changed the settings (`before` is what they were): a new mode or new relays
        take effect at once, and a new policy goes out on every link."""
        now = {"mode": self.node.settings()["mode"], "relays": self.node.trust.policy.relays}
        if now != {"mode": before["mode"], "relays": tuple(before["relays"])}:
            await self.restart_links()
        await self.notify()

    async def _restart_dialers(self) -> None:
        await self._stop_dialers()
        self._start_dialers()

    async def _close_links(self, keys: Iterable[str], code: int, reason: str) -> None:
        links = [state.link for key in keys if (state := self.peers.get(key)) is not None and state.link is not None]
        await asyncio.gather(*(link.close(code, reason) for link in links))

    async def _discover(self) -> None:
        """Advertise on the LAN and link to members found there. Both sides see each other, so only
        the one with the smaller node id dials: one link per pair."""
        interfaces = [self.host] if self.host not in ("0.0.0.0", "") else discovery.InterfaceChoice.All
        addresses = [self.host] if self.host not in ("0.0.0.0", "") else None
        async with discovery.Advertiser(self.org, self.node_id, self.port, addresses=addresses,
                                        interfaces=interfaces), \
                discovery.Browser(self.org, self.node_id, interfaces=interfaces) as browser:
            while True:
                node = (await browser.events.get()).peer.node_id
                dial = not self.manual and self.node_id < node
                self._follow_adverts(node, {f"wss://{p.addresses[0]}:{p.port}" for p in browser.claims(node)
                                            if dial and p.addresses})

    def _follow_adverts(self, node: str, urls: set[str]) -> None:
        """Dial every address now advertised for `node`, and stop dialing the others unless a link
        through them is up. A member that moved is found at its new address; an advert spoofing its
        node id (or drowning its records on the LAN) gets a dialer of its own, which TLS refuses, and
        can never take away a link that works."""
        dialers = self._lan_dialers.setdefault(node, {})
        for url in set(dialers) - urls:
            state = self.peers.get(node)
            if not (state is not None and state.online and state.address == url):
                dialers.pop(url).cancel()
        for url in urls - set(dialers):
            dialers[url] = asyncio.create_task(self._dial_forever(url, relay=False))
        if not dialers:
            del self._lan_dialers[node]

    def local_written(self) -> None:
        """Another process on this home (a command: a post, an import, a new policy) committed to the
        books and says so (`p2psync.node.local_writes`): pick it up now, not at the next poll."""
        self._told.set()

    async def _watch_local_writes(self) -> None:
        """Pick up what other processes on this home wrote: at once when told, and every
        `local_poll` seconds in case a notice was lost (a process killed after its commit, a script
        that does not tell)."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._told.wait(), self.local_poll)
            self._told.clear()  # before reading: a notice arriving meanwhile brings another round
            await self.pick_up_local_writes()

    async def pick_up_local_writes(self) -> None:
        """Adopt a newer policy and wake the links for entries that another process wrote."""
        last, blob = await self.call(self._db_position)
        if blob and self.node.trust.policy.version < claimed_version(blob):
            await self.adopt_policy(blob)
        if last != self._seen[0]:
            await self.notify()

    async def _poll(self) -> None:
        """Write link statistics to the sync log now and then, check whether a restored office has
        caught up, and write due snapshots and the WAL checkpoint when idle."""
        previous = -1
        for tick in itertools.count(1):
            await asyncio.sleep(POLL_SECONDS)
            if tick % SAVE_EVERY_POLLS == 0:
                await self.call(self._save_peers)
            if self.node.catching_up:
                for state in list(self.peers.values()):
                    await self._check_caught_up(state)
            last = self._seen[0]
            if last == previous or tick % SAVE_EVERY_POLLS == 0:  # idle for a poll, or a while busy
                await self.call(self._housekeeping)
            previous = last

    async def _check_caught_up(self, state: PeerState) -> None:
        """A restored office may write again once one complete exchange showed that the peer held
        none of its own entries beyond those it holds now (`recovery.finish_catching_up`)."""
        vectors = state.stats.peer_vectors
        if (self.node.catching_up and state.stats.synced_at and vectors is not None
                and await self.call(recovery.finish_catching_up, self.node, vectors, state.office or state.key[:16])):
            await self._move_to_scopes()  # what a head office could not sign while catching up

    async def _move_to_scopes(self) -> None:
        """At a head office that may sign: bring read scopes into an organisation made before them
        (`registrar.move_to_scopes`), and pass the policy on."""
        if await self.call(registrar.move_to_scopes, self.node) is not None:
            await self.notify()

    def _housekeeping(self) -> None:
        """Caches and the WAL, off the commit path; a failure (a full disk, say) is left for the next
        poll, since nothing here is needed for durability."""
        try:
            self.node.store.write_due_snapshots()
            self.node.db.checkpoint()
        except (P2PSyncError, sqlite3.Error, SQLAlchemyError) as exc:
            logger.warning("snapshots or checkpoint postponed: %s", exc)

    def _db_position(self) -> tuple[int, bytes]:
        return self.node.last_entry_id(), self.node.policy_blob()

    # ------------------------------------------------------------ links

    async def _accept(self, ws: ServerConnection) -> None:
        ssl_object = ws.transport.get_extra_info("ssl_object")
        if ssl_object is not None and not ssl_object.getpeercert(binary_form=True):
            await self._enrollment(ws)
            return
        try:
            member = tls.peer_member(ssl_object, self.node.trust)
        except tls.RevokedPeer as exc:
            await turn_away(ws, str(exc), await self.policy_blob())  # so it learns it is revoked
            return
        except CertificateError as exc:
            await ws.close(1008, str(exc)[:120])
            return
        if self.manual:
            await ws.close(1013, "this node syncs only when asked (manual mode)")
            return
        if not await self._free_to_link(member.node_id):
            await ws.close(1013, "already linked")
            return
        address = "{}:{}".format(*ws.remote_address[:2]) if ws.remote_address else ""
        await self._run_link(ws, member.node_id, "node", address, member.office, expect=member.node_id)

    async def _free_to_link(self, node_id: str) -> bool:
        """Whether a new link with `node_id` may start: there is none, or the one we hold is dead
        (the peer saw it drop before we did, and is reconnecting), which is then closed."""
        state = self.peers.get(node_id)
        if state is None or not state.online or state.link is None:
            return True
        try:
            await asyncio.wait_for(await state.link.ping(), STALE_CHECK_SECONDS)
            return False
        except (TimeoutError, WebSocketException, OSError):
            state.link.transport.abort()
        for _ in range(int(STALE_CHECK_SECONDS / 0.05)):
            if not state.online:
                return True
            await asyncio.sleep(0.05)
        return not state.online

    async def _enrollment(self, ws: ServerConnection) -> None:
        """A client without a certificate may only enroll, and only at the head office."""
        try:
            raw = await asyncio.wait_for(ws.recv(), 15)
        except (TimeoutError, WebSocketException):
            return
        if len(raw) > MAX_MESSAGE:
            await ws.close(1009, "too large")
            return
        data = raw.encode() if isinstance(raw, str) else raw
        if self.node.identity.is_head:
            reply = await self.call(registrar.handle_enroll, self.node, data)
        else:
            reply = refusal("this node is not the head office; enroll with the head office")
        with contextlib.suppress(WebSocketException):
            await ws.send(reply)

    async def _run_link(self, ws: Any, key: str, kind: str, address: str, office: str, *, expect: str | None,
                        once: bool = False, reconcile_after: float | None = None) -> PeerState:
        """One conversation on an open websocket. `reconcile_after`: seconds after which this (dialing)
        side closes the link normally for the periodic full reconcile, and its dialer reconnects."""
        state = self.peers.setdefault(key, PeerState(key, kind))
        state.address, state.office, state.online, state.link = address, office, True, ws
        state.stats, state.recorded, state.reconciled, state.logged_percent = LinkStats(), (0, 0, 0, 0), False, -1
        timer = None if reconcile_after is None else asyncio.get_running_loop().call_later(
            reconcile_after, self._reconcile, state, ws)

        def check(hello: Hello) -> None:
            if expect is not None and hello.node != expect:
                raise ProtocolError("peer's hello does not match its certificate")

        try:
            await converse(ws, self, state.stats, until_caught_up=once, check_peer=check)
            state.last_error = state.last_error_detail = ""
        except (ProtocolError, WebSocketException, OSError, TimeoutError, P2PSyncError) as exc:
            self._link_ended(state, exc)
            if once:
                raise
        finally:
            if timer is not None:
                timer.cancel()
            state.online, state.link = False, None
            await self.call(self._record_quietly, state)
        return state

    def _link_ended(self, state: PeerState, exc: BaseException) -> None:
        """A link closed on purpose by either side (a reconcile, a restart, a shutdown) leaves no error."""
        if ending.is_clean(exc):
            state.last_error = state.last_error_detail = ""
            logger.info("link with %s closed: %s", state.key[:16], ending.detail(exc))
            return
        state.failed(exc)
        logger.info("link with %s ended: %s (%s)", state.key[:16], state.last_error, state.last_error_detail)

    def _reconcile(self, state: PeerState, ws: Connection) -> None:
        """The periodic full reconcile: close the link normally (1000), so neither side records an
        error; the dialer then connects again and both sides compare everything they hold."""
        state.reconciled = True
        logger.info("periodic full reconcile with %s", state.office or state.key[:16])
        task = asyncio.create_task(ws.close(1000, ending.RECONCILE_REASON))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _dial_forever(self, url: str, *, relay: bool) -> None:
        """Keep a link to `url`: reconnect at once after a periodic full reconcile, back off after failures."""
        delay = BACKOFF_START
        while True:
            try:
                state = await self.dial(url, relay=relay, reconcile_after=self.interval)
            except (P2PSyncError, WebSocketException, OSError, TimeoutError) as exc:
                state = self._dial_failed(url, relay, exc)
                logger.info("cannot sync with %s: %s (%s)", url, state.last_error, state.last_error_detail)
            else:
                if state.reconciled:
                    delay = BACKOFF_START
                    continue
                if state.stats.synced_at:  # a link that was refused or broke before syncing backs off
                    delay = BACKOFF_START
            await asyncio.sleep(REVOKED_RETRY_SECONDS if self.node.trust.revoked else delay * (0.5 + random.random()))
            delay = min(delay * 2, BACKOFF_MAX)

    async def dial(self, url: str, *, relay: bool, once: bool = False,
                   reconcile_after: float | None = None) -> PeerState:
        """One conversation with the peer or relay at `url`."""
        if relay:
            async with connect(url, open_timeout=15, **LINK_OPTIONS, **wire.client_options()) as ws, _going_away(ws):
                challenge = await asyncio.wait_for(ws.recv(), 15)
                await ws.send(relay_auth.answer(challenge, self._root_der, self._cert_der, self.node.trust.keys.signing))
                return await self._run_link(ws, url, "relay", url, "relay", expect=None, once=once,
                                            reconcile_after=reconcile_after)
        context = tls.client_context(self._keys_dir, self._root_der)
        async with connect(url.replace("ws://", "wss://", 1), ssl=context, open_timeout=15, **LINK_OPTIONS,
                           **wire.client_options()) as ws, _going_away(ws):
            member = await self._dialed_member(ws)
            await self._learn_address(url, member.node_id)
            if not await self._free_to_link(member.node_id):
                raise P2PSyncError(f"already linked with {member.office}")
            return await self._run_link(ws, member.node_id, "node", url, member.office, expect=member.node_id,
                                        once=once, reconcile_after=reconcile_after)

    async def _dialed_member(self, ws: Connection) -> Member:
        """Who answered a dial; a revoked node is handed the policy that revokes it before it is
        refused, so that it learns it is revoked."""
        try:
            return tls.peer_member(ws.transport.get_extra_info("ssl_object"), self.node.trust)
        except tls.RevokedPeer as exc:
            await turn_away(ws, str(exc), await self.policy_blob())
            raise

    async def _learn_address(self, url: str, node_id: str) -> None:
        """From now on failures to reach `url` are shown on its node's entry, not on one of their own."""
        known = self._dialed.get(url)
        self._dialed[url] = node_id
        if known is None:
            self.peers.pop(url, None)
            await self.call(self._forget_peer, url)

    def _dial_failed(self, url: str, relay: bool, exc: BaseException) -> PeerState:
        key = self._dialed.get(url, url)
        state = self.peers.setdefault(key, PeerState(key, "relay" if relay else "node", url))
        state.failed(exc)
        return state

    async def sync_once(self, timeout: float = ONE_SHOT_TIMEOUT) -> list[PeerState]:
        """``p2psync sync``: one full exchange with every reachable peer and relay, then stop."""
        await self._move_to_scopes()  # the exchange then carries the new policy
        targets = [(url, False) for url in self.static_peers] + [(url, True) for url in self.node.trust.policy.relays]
        results = []
        for url, relay in targets:
            try:
                results.append(await asyncio.wait_for(self.dial(url, relay=relay, once=True), timeout))
                await self._check_caught_up(results[-1])
            except (P2PSyncError, WebSocketException, OSError, TimeoutError) as exc:
                state = self._dial_failed(url, relay, exc)
                await self.call(self._record, state)
                results.append(state)
        return results

    # ------------------------------------------------------------ status

    def _record(self, state: PeerState) -> None:
        with self.node.db.write() as session:
            row = session.get(PeerRow, state.key) or PeerRow(key=state.key, kind=state.kind)
            row.office, row.address, row.last_seen = state.office, state.address, utc_now()
            row.last_sync = state.last_sync or row.last_sync
            sent, received, sent_vouchers, received_vouchers = _unrecorded(state)
            row.sent += sent
            row.received += received
            row.sent_vouchers += sent_vouchers
            row.received_vouchers += received_vouchers
            row.last_error, row.last_error_detail = state.last_error, state.last_error_detail
            session.add(row)
            for direction, count, vouchers in (("sent", sent, sent_vouchers), ("received", received, received_vouchers)):
                if count:
                    session.add(SyncLogRow(at=utc_now(), peer=state.key, office=state.office, direction=direction,
                                           entries=count, vouchers=vouchers))
        state.recorded = state.counts()

    def _record_quietly(self, state: PeerState) -> None:
        """Statistics are not worth failing over: on a full disk they wait for the next save."""
        try:
            self._record(state)
        except StoreError as exc:
            logger.warning("link statistics not recorded: %s", exc)

    def _forget_peer(self, key: str) -> None:
        with self.node.db.write() as session:
            row = session.get(PeerRow, key)
            if row is not None:
                session.delete(row)

    def _save_peers(self) -> None:
        for state in self.peers.values():
            self._record_quietly(state)

    async def status(self) -> dict[str, Any]:
        data = await self.call(status_from_db, self.node)
        live = dict(self.peers)
        for peer in data["peers"]:
            state = live.pop(peer["peer"], None)
            if state is not None:
                _add_live(peer, state)
        data["peers"] += [_add_live({"peer": k, "kind": s.kind, "office": s.office, "address": s.address, "sent": 0,
                                     "received": 0, "sent_vouchers": 0, "received_vouchers": 0, "last_sync": ""}, s)
                          for k, s in live.items()]
        data["node"].update(running=True, started_at=self.started_at, listening=f"{self.host}:{self.port}")
        return data


def _local_poll_seconds() -> float:
    """The safety-net poll's interval: `LOCAL_POLL_SECONDS`, or the environment's (tests set it
    long, to show that a command's notice alone brings its entries to the links)."""
    try:
        return max(0.05, float(os.environ.get(LOCAL_POLL_ENV, LOCAL_POLL_SECONDS)))
    except ValueError:
        return LOCAL_POLL_SECONDS


@contextlib.asynccontextmanager
async def _going_away(ws: Connection) -> AsyncIterator[None]:
    """A dialed link cancelled (the node stopping, a one-shot sync's time limit) closes with 1001,
    "going away", rather than websockets' 1011 "internal error", which the other office would show
    as an error."""
    try:
        yield
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await asyncio.shield(ws.close(1001, "going away"))
        raise


def _unrecorded(state: PeerState) -> tuple[int, int, int, int]:
    """(sent, received, sent vouchers, received vouchers) of a link not yet written to the database."""
    return tuple(now - done for now, done in zip(state.counts(), state.recorded, strict=True))  # type: ignore[return-value]


def _add_live(peer: dict[str, Any], state: PeerState) -> dict[str, Any]:
    """A peer's recorded status brought up to date with its link: state, counts not yet recorded, and
    while the peer has not sent all it had, the progress (in entries, beside vouchers received)."""
    for name, count in zip(("sent", "received", "sent_vouchers", "received_vouchers"), _unrecorded(state), strict=True):
        peer[name] += count
    peer.update(online=state.online, backlog=state.stats.backlog, last_error=state.last_error,
                last_error_detail=state.last_error_detail)
    stats = state.stats
    receiving = state.online and stats.peer and not stats.peer_caught_up and stats.expected > 0
    peer["progress"] = {"percent": stats.percent, "entries": stats.received, "expected": stats.expected,
                        "vouchers": stats.received_vouchers} if receiving else None
    if state.last_sync:
        peer["last_sync"] = state.last_sync
    return peer


def status_from_db(node: Node) -> dict[str, Any]:
    """Status as the database records it (all a stopped node can tell)."""
    settings = node.settings()
    with node.db.read() as session:
        peers = [{"peer": p.key, "kind": p.kind, "office": p.office, "address": p.address, "online": False,
                  "last_sync": p.last_sync, "sent": p.sent, "received": p.received, "sent_vouchers": p.sent_vouchers,
                  "received_vouchers": p.received_vouchers, "backlog": 0, "last_error": p.last_error,
                  "last_error_detail": p.last_error_detail, "progress": None}
                 for p in session.exec(select(PeerRow).order_by(PeerRow.key))]
        waiting = len(session.exec(select(Pending.id)).all())
        local_only = queries.local_only(session)
        log = [{"at": r.at, "peer": r.peer, "office": r.office, "direction": r.direction, "entries": r.entries,
                "vouchers": r.vouchers}
               for r in session.exec(select(SyncLogRow).order_by(SyncLogRow.id.desc()).limit(20))]  # type: ignore[union-attr]
    policy = node.trust.policy
    return {
        "node": {"office": node.identity.office, "role": node.identity.role, "node_id": node.identity.node_id,
                 "company": node.identity.company, "registration_id": node.registration_id,
                 "mode": settings["mode"], "interval_minutes": int(settings["interval"] or 5), "running": False,
                 "date_format": settings["date_format"],
                 "policy_version": policy.version, "key_epoch": policy.epoch, "sync_after": policy.sync_after,
                 "lock_until": policy.lock_until, "revoked": node.trust.revoked, "catching_up": node.catching_up,
                 # the page shows the node's own words, as `status` prints them
                 "revoked_notice": revoked_notice(node.identity.office) if node.trust.revoked else "",
                 "catching_up_notice": CATCHING_UP_NOTICE if node.catching_up else ""},
        "peers": peers,
        "waiting_entries": waiting,
        #: Vouchers dated before the sync-after date: in this office's books, never sent.
        "local_only": local_only,
        "quarantined": node.quarantined(),
        "equivocations": forks.found(node),
        "sync_log": log,
    }

