"""The relay: an untrusted websocket server that stores and forwards sealed entries for any number of
organisations, with no per-organisation setup.

A connection goes: challenge -> the member proves it holds a certificate chained to its
organisation's root (`protocol.relay_auth`; the root certificate *is* the organisation) -> if the
operator gave an allow list (`Limits.allowed_orgs`), a member of any other organisation is refused
here, before anything of it is read or stored -> the same
sync conversation nodes hold with each other (`protocol.sync`): both say hello with their version
vectors, the relay streams what the member lacks in arrival order, says caught-up, then forwards
entries live as other members store them.

The relay checks what it can without keys: an entry must name the member's organisation and carry a
valid signature by a certified, unrevoked author (`entry.check_signature`); a policy must verify
against the organisation's root and be newer. It never decrypts anything, and every node checks
everything again itself. One slow or hostile member cannot hold up the others: forwarding goes through
a bounded per-connection queue (on overflow the member is fed from the store instead), and each
connection has a rate limit, a bound on unacknowledged batches, and its organisation a storage quota
and a retention time (how long entries wait for a member that stays away).

Several relay processes can share one store (`RelayStore.shared`, PostgreSQL): then every member is
fed from the store, woken by the store's notice of new entries from any process, so that what one
process stores reaches members connected to another, in arrival order.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from websockets.asyncio.server import Server, serve
from websockets.exceptions import ConnectionClosed

from p2psync import chain
from p2psync.errors import P2PSyncError, StoreError
from p2psync.net import wire
from p2psync.protocol import entry, relay_auth
from p2psync.protocol.entry import EntryError, Header
from p2psync.protocol.relay_auth import Authenticated
from p2psync.protocol.sync import (
    MAX_FRAME,
    Ack,
    CaughtUp,
    EnrollReply,
    Entries,
    Event,
    Fork,
    Hello,
    PolicyOffer,
    ProtocolError,
    Refused,
    SyncConnection,
    batches,
)
from p2psync.relay.allowed import AllowedOrgs
from p2psync.relay.metrics import serve_metrics
from p2psync.relay.store import RelayStore, StoredEntry, open_store
from p2psync.trust import enroll
from p2psync.trust.certs import Member
from p2psync.trust.keys import registration_id
from p2psync.trust.policy import Policy, PolicyError
from p2psync.trust.policy import verify as verify_policy

logger = logging.getLogger(__name__)

#: How long a branch enrolling through the relay waits for its head office's answer.
ENROLL_TIMEOUT = 20.0

T = TypeVar("T")
RELAY_NODE = "relay"
MIB = 1024 * 1024
DAY = 86_400.0

# Close codes (RFC 6455): refused by policy, broken protocol, overloaded, our bug.
CLOSE_POLICY = 1008
CLOSE_PROTOCOL = 1002
CLOSE_TRY_LATER = 1013
CLOSE_ERROR = 1011
CLOSE_RESTART = 1012  # start the conversation again (an equivocation was settled)


@dataclass(frozen=True)
class Limits:
    """What one relay allows. Defaults suit a small public relay; tests shrink them."""

    max_frame: int = MAX_FRAME
    auth_timeout: float = 15.0
    hello_timeout: float = 30.0
    #: Enough for an organisation with hundreds of branches; each one's links are bounded below.
    max_connections_per_org: int = 1024
    #: A node has one link with the relay (a few while a dropped one times out): more is hoarding
    #: the organisation's connections, or the websocket handshakes, at the others' expense.
    max_connections_per_node: int = 4
    quota_bytes: int = 1024 * MIB  # stored per organisation
    entries_per_second: float = 2_000.0
    entries_burst: float = 20_000.0
    bytes_per_second: float = 8 * MIB
    bytes_burst: float = 64 * MIB
    #: A member whose sending is this far ahead of its rate is flooding, not merely busy.
    max_debt_seconds: float = 30.0
    #: Batches received but not yet stored and acknowledged; a windowed sender stays far below.
    max_pending_batches: int = 16
    #: Enrollment requests passed to one organisation's head office: enough for a day of new
    #: branches, too few for anyone without a code to keep the head office busy answering.
    enrollments_per_minute: float = 12.0
    enrollments_burst: float = 30.0
    live_queue_entries: int = 10_000
    live_queue_bytes: int = 32 * MIB
    page_entries: int = 500
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    store_threads: int = 4
    #: Organisations (by id) whose quota differs from `quota_bytes`.
    org_quota_bytes: Mapping[str, int] = field(default_factory=dict)
    #: How long an entry waits at the relay for members that have not fetched it; None: until deleted.
    retention_seconds: float | None = None
    #: Organisations whose retention differs from `retention_seconds` (None there: keep for ever).
    org_retention_seconds: Mapping[str, float | None] = field(default_factory=dict)
    #: How often expired entries are dropped.
    expire_interval: float = 600.0
    #: The organisations served (`--allow-org`); None: every organisation whose members reach the relay.
    allowed_orgs: AllowedOrgs | None = None

    def quota_for(self, org: str) -> int:
        return self.org_quota_bytes.get(org, self.quota_bytes)


@dataclass
class RelayStats:
    """Counters since start, for logs, tests and the metrics endpoint (`relay.metrics`)."""

    connections: int = 0  # open now
    accepted: int = 0  # members admitted since start
    refused: int = 0
    #: Refusals by kind (quota, rate, auth, revoked, ...), for operators.
    refusals: dict[str, int] = field(default_factory=dict)
    stored: int = 0
    stored_bytes: int = 0
    forwarded: int = 0
    forwarded_bytes: int = 0
    duplicates: int = 0
    dropped: int = 0
    equivocations: int = 0
    gaps: int = 0
    expired: int = 0
    policies: int = 0
    overflows: int = 0

    def refuse(self, kind: str) -> None:
        self.refused += 1
        self.refusals[kind] = self.refusals.get(kind, 0) + 1


class Refusal(P2PSyncError):
    """The relay turns this member away; the reason is sent to it before closing, `kind` counted."""

    def __init__(self, reason: str, code: int = CLOSE_POLICY, kind: str = "policy",
                 policy: bytes | None = None) -> None:
        super().__init__(reason)
        self.code = code
        self.kind = kind
        self.policy = policy  # the signed policy behind the refusal (a revocation), sent with it


def size(count: int) -> str:
    """A byte count as a person reads it in a refusal."""
    for unit, scale in (("GiB", 1024 * MIB), ("MiB", MIB), ("KiB", 1024)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


class Transport(Protocol):
    """What a session needs of a websocket (the `websockets` server connection fits)."""

    async def send(self, message: str | bytes) -> None: ...

    async def recv(self) -> str | bytes: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...


# ---------------------------------------------------------------- rate limits


class Bucket:
    """A token bucket that may go into debt; `charge` returns how long until the debt is paid."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = burst
        self.stamp = clock()

    def charge(self, amount: float) -> float:
        self._refill()
        self.tokens -= amount
        return max(0.0, -self.tokens / self.rate)

    def take(self, amount: float = 1.0) -> bool:
        """Spend `amount` if the bucket holds it; never goes into debt."""
        self._refill()
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now


class Throttle:
    """Per connection: entries/s and bytes/s. Within its debt limit a busy member is slowed down
    (its batches wait, so do its acknowledgements); beyond it, it is flooding and is refused."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.entries = Bucket(limits.entries_per_second, limits.entries_burst, clock)
        self.bytes = Bucket(limits.bytes_per_second, limits.bytes_burst, clock)

    def charge(self, entries: int, size: int) -> float:
        """Seconds to hold this frame back; raises `Refusal` if the member is flooding."""
        wait = max(self.entries.charge(entries), self.bytes.charge(size))
        if wait > self.limits.max_debt_seconds:
            raise Refusal(f"rate limit exceeded: this relay takes about {self.limits.entries_per_second:g} "
                          f"entries and {self.limits.bytes_per_second / MIB:g} MiB per second per connection",
                          CLOSE_TRY_LATER, "rate")
        return wait


# ---------------------------------------------------------------- organisations


class Org:
    """One organisation's live state: its newest verified policy and its connected members."""

    def __init__(self, org_id: str, root: Ed25519PublicKey, policy: Policy | None, blob: bytes | None,
                 limits: Limits) -> None:
        self.id = org_id
        self.root = root
        self.policy = policy
        self.policy_blob = blob
        self.sessions: set[Session] = set()
        #: Held while storing and publishing, so that members see this organisation's entries in
        #: arrival order (the order of their ids), which the per-connection cursor relies on.
        self.store_lock = asyncio.Lock()
        #: Enrollment requests from non-members, passed to this organisation's head office.
        self.enrollments = Bucket(limits.enrollments_per_minute / 60, limits.enrollments_burst)
        self._members: dict[str, Member] = {}

    @property
    def version(self) -> int:
        return self.policy.version if self.policy else 0

    def adopt(self, policy: Policy, blob: bytes) -> None:
        self.policy, self.policy_blob = policy, blob
        self._members = {}

    def is_revoked(self, node: str) -> bool:
        return self.policy is not None and node in self.policy.revoked

    def member(self, node: str) -> Member:
        """A member listed in the policy, its certificate verified once."""
        if self.policy is None:
            raise EntryError(f"unknown author {node[:16]}: the relay holds no policy of this organisation yet")
        member = self._members.get(node)
        if member is None:
            member = self.policy.member(node, self.root)
            self._members[node] = member
        return member


class OrgKeys:
    """`entry.Keys` for the relay: authors from the policy, plus the connected member itself (its
    certificate was verified at connect, so its own entries verify before any policy is held)."""

    def __init__(self, org: Org, own: Member) -> None:
        self.org_state = org
        self.org = org.id
        self.own = own

    def author(self, node: str) -> Member:
        try:
            return self.org_state.member(node)
        except P2PSyncError:
            if node == self.own.node_id:
                return self.own
            raise

    def cutoff(self, node: str, doc: str) -> int | None:
        policy = self.org_state.policy
        revoked = policy.revoked.get(node) if policy else None
        return None if revoked is None else revoked.get(doc, 0)

    def epoch_key(self, epoch: int) -> bytes:
        raise EntryError("the relay holds no epoch keys")

    def scope_key(self, scope: str, epoch: int) -> bytes:
        raise EntryError("the relay holds no scope keys")


@dataclass
class Checked:
    """A batch after signature checks: what may be stored, what was dropped, the documents touched."""

    good: list[tuple[Header, bytes]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    docs: set[str] = field(default_factory=set)


def check_batch(blobs: Iterable[bytes], keys: OrgKeys) -> Checked:
    """Signature, organisation, author and revocation of each entry (no decryption: no keys here)."""
    out = Checked()
    for blob in blobs:
        try:
            header = entry.check_signature(blob, keys)
        except EntryError as exc:
            out.dropped.append(str(exc))
            with contextlib.suppress(EntryError):
                out.docs.add(entry.peek(blob).doc)
            continue
        out.good.append((header, blob))
        out.docs.add(header.doc)
    return out


# ---------------------------------------------------------------- the relay


class Relay:
    """Every organisation's state and the store behind them; `handle` serves one connection."""

    def __init__(self, store: RelayStore, limits: Limits | None = None) -> None:
        self.store = store
        self.limits = limits or Limits()
        self.orgs: dict[str, Org] = {}
        self.stats = RelayStats()
        self._pool = ThreadPoolExecutor(self.limits.store_threads, thread_name_prefix="relay-store")
        self._expiry: asyncio.Task[None] | None = None

    def begin(self) -> None:
        """Start what runs beside the connections (in the serving event loop): hearing of entries
        other relay processes store, and dropping expired entries."""
        loop = asyncio.get_running_loop()

        def on_change(org: str | None) -> None:  # called from the store's thread
            loop.call_soon_threadsafe(self.changed, org)

        self.store.watch(on_change)
        if self._expiry is None:
            self._expiry = asyncio.create_task(self._expire_forever())

    def changed(self, org_id: str | None) -> None:
        """Another process stored entries for `org_id` (None: for any): its members here read them."""
        orgs = list(self.orgs.values()) if org_id is None else [self.orgs[org_id]] if org_id in self.orgs else []
        for org in orgs:
            for session in org.sessions:
                session.refresh()

    async def call(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking store or crypto work off the event loop, so no connection waits on another's disk."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(func, *args))

    async def handle(self, ws: Transport) -> None:
        await Session(self, ws).run()

    def check_served(self, org: str) -> None:
        """Refuse a member of an organisation the operator did not admit, before anything of it is
        loaded or stored: an allow list is how a relay stops serving as anyone's free storage."""
        allowed = self.limits.allowed_orgs
        if allowed is not None and not allowed.admits(org):
            raise Refusal(f"this relay does not serve organisation {registration_id(org)} "
                          "(its operator has not admitted it)", kind="org")

    def check_enrollment_served(self, raw: bytes) -> None:
        """Refuse an enrollment request for an organisation the operator did not admit. A malformed
        request is left to `pass_enrollment`, which refuses it with its own reason."""
        allowed = self.limits.allowed_orgs
        if allowed is None:
            return
        try:
            pin = enroll.request_pin(raw)
        except P2PSyncError:
            return
        if not allowed.may_admit(pin):
            raise Refusal("this relay does not serve the organisation this invite code is for "
                          "(its operator has not admitted it)", kind="org")

    async def pass_enrollment(self, raw: bytes) -> bytes:
        """Carry a branch's enrollment request to its head office, if connected, and its reply back.
        The relay learns nothing from either: the request is public keys and MACs, the reply
        ciphertext under a key derived from the invite code."""
        try:
            pin = enroll.request_pin(raw)
        except P2PSyncError as exc:
            return enroll.refusal(str(exc))
        orgs = [org for org in self.orgs.values() if org.id.startswith(pin) and any(s.is_head for s in org.sessions)]
        reply = enroll.refusal("the head office is not connected to this relay now; try again while it is online")
        for org in orgs:
            if not org.enrollments.take():
                self.stats.refuse("enroll-rate")
                reply = enroll.refusal("too many enrollment requests for this organisation; try again in a few minutes")
                continue
            for session in [s for s in org.sessions if s.is_head]:
                reply = await session.forward_enrollment(raw)
                if b'"enrolled"' in reply:
                    return reply
        return reply

    def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        self._pool.shutdown(wait=True)

    async def _expire_forever(self) -> None:
        while True:
            try:
                await self.expire()
            except StoreError as exc:
                logger.error("cannot drop expired entries now: %s", exc)
            await asyncio.sleep(self.limits.expire_interval)

    async def expire(self, now: float | None = None) -> int:
        """Drop the entries each organisation's retention no longer keeps; returns how many."""
        now = time.time() if now is None else now
        limits, dropped = self.limits, dict[str, int]()
        for org, seconds in limits.org_retention_seconds.items():
            if seconds is not None:
                dropped |= await self.call(self.store.expire, now - seconds, [org])
        if limits.retention_seconds is not None:
            dropped |= await self.call(self.store.expire, now - limits.retention_seconds, None,
                                       list(limits.org_retention_seconds))
        for org, count in dropped.items():
            logger.info("org %s: %d entries expired (older than its retention)", org[:12], count)
        self.stats.expired += sum(dropped.values())
        return sum(dropped.values())

    # ------------------------------------------------------------ membership of sessions

    async def join(self, session: Session, auth: Authenticated) -> Org:
        """Admit an authenticated member to its organisation's live state, or refuse it."""
        org = self.orgs.get(auth.org) or await self._load(auth)
        org = self.orgs.setdefault(auth.org, org)
        if org.is_revoked(auth.member.node_id):
            raise Refusal("this node is revoked by its organisation's head office", kind="revoked",
                          policy=org.policy_blob)
        if len(org.sessions) >= self.limits.max_connections_per_org:
            raise Refusal("too many connections for this organisation; try again later", CLOSE_TRY_LATER,
                          "connections")
        if sum(s.node == auth.member.node_id for s in org.sessions) >= self.limits.max_connections_per_node:
            raise Refusal(f"this node already has {self.limits.max_connections_per_node} connections to the relay; "
                          "close them before opening more", CLOSE_TRY_LATER,
                          "connections")
        org.sessions.add(session)
        self.stats.connections += 1
        self.stats.accepted += 1
        return org

    def leave(self, session: Session, org: Org) -> None:
        org.sessions.discard(session)
        self.stats.connections -= 1
        if not org.sessions and self.orgs.get(org.id) is org:
            del self.orgs[org.id]

    async def _load(self, auth: Authenticated) -> Org:
        stored = await self.call(self.store.policy, auth.org)
        policy = None
        if stored is not None:
            try:
                policy = verify_policy(stored.blob, auth.root, auth.org)
            except PolicyError as exc:
                logger.error("stored policy of org %s no longer verifies (%s); ignoring it", auth.org[:12], exc)
        return Org(auth.org, auth.root, policy, stored.blob if policy else None, self.limits)

    # ------------------------------------------------------------ policy and entries

    async def offer_policy(self, org: Org, blob: bytes, origin: Session) -> None:
        """Keep a newer valid policy, pass it to the other members, and cut off anyone it revokes."""
        try:
            policy = verify_policy(blob, org.root, org.id)
        except PolicyError as exc:
            logger.warning("org %s: node %s offered a bad policy: %s", org.id[:12], origin.node[:12], exc)
            return
        if policy.version <= org.version:
            return
        if not await self.call(self.store.set_policy, org.id, policy.version, blob) or policy.version <= org.version:
            return
        org.adopt(policy, blob)
        self.stats.policies += 1
        logger.info("org %s: policy version %d stored", org.id[:12], policy.version)
        for session in list(org.sessions):
            if org.is_revoked(session.node):
                org.sessions.discard(session)  # forward nothing more to it
                session.kick("this node has been revoked by its organisation's head office", blob)
            elif session is not origin:
                session.push_policy(blob)

    async def store_entries(self, org: Org, checked: Checked, origin: Session) -> None:
        """Store verified entries and forward the new ones to the organisation's other members."""
        quota = self.limits.quota_for(org.id)
        async with org.store_lock:
            result = await self.call(self.store.put_entries, org.id, checked.good, quota)
            if result.over_quota:
                raise Refusal(f"quota full: this organisation holds {size(result.held_bytes)} of its "
                              f"{size(quota)} at the relay and this batch needs {size(result.needed_bytes)} more; "
                              "nothing of it was stored (the entries stay with you: send them again once "
                              "members have fetched older ones and they expired, or the operator raised the quota)",
                              CLOSE_TRY_LATER, "quota")
            for session in org.sessions:
                if session is not origin:
                    if self.store.shared:
                        session.refresh()  # in arrival order with other processes' entries, from the store
                    else:
                        session.forward(result.stored)
        self.stats.stored += len(result.stored)
        self.stats.stored_bytes += sum(len(e.blob) for e in result.stored)
        self.stats.duplicates += result.duplicates
        self.stats.equivocations += len(result.equivocations)
        self.stats.gaps += len(result.gaps)
        for doc, author, seq in result.equivocations:
            logger.warning("org %s: refused equivocating entry %s/%s/%d from node %s",
                           org.id[:12], doc, author[:12], seq, origin.node[:12])
        if result.gaps:
            logger.info("org %s: %d entries from node %s skip a sequence; not stored",
                        org.id[:12], len(result.gaps), origin.node[:12])


# ---------------------------------------------------------------- one connection


class Session:
    """One member's connection: authenticate, join its organisation, then converse until closed.

    Three tasks: the reader parses frames and queues entry batches; the processor checks, stores and
    acknowledges them (after any throttling delay); the sender streams what the member lacks and
    then forwards live entries, never more than the window allows."""

    def __init__(self, relay: Relay, ws: Transport) -> None:
        self.relay = relay
        self.limits = relay.limits
        self.ws = ws
        self.conn = SyncConnection()
        self.node = ""
        self.org: Org | None = None
        self.keys: OrgKeys | None = None
        self.throttle = Throttle(self.limits)
        #: Every entry of the organisation with an arrival id up to this one was considered for sending.
        self.cursor = 0
        self._live: deque[StoredEntry] = deque()
        self._live_bytes = 0
        #: The next wake-up reads from the store (after an overflow, or entries another process stored).
        self._from_store = False
        self._wake = asyncio.Event()
        self._acked = asyncio.Event()
        self._greeted = asyncio.Event()
        self._said_hello = False
        self._pending: asyncio.Queue[tuple[Entries, float]] = asyncio.Queue()
        self.is_head = False
        self._enrollments: dict[int, asyncio.Future[bytes]] = {}
        self._tickets = itertools.count(1)
        self._side_tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        try:
            auth = await self._authenticate()
            if isinstance(auth, bytes):  # not a member: a branch enrolling through the relay
                await self._send_quietly((await self.relay.pass_enrollment(auth)).decode())
                await self.ws.close()
                return
            self.node = auth.member.node_id
            self.is_head = auth.member.is_head
            self.relay.check_served(auth.org)
            self.org = await self.relay.join(self, auth)
            self.keys = OrgKeys(self.org, auth.member)
            logger.info("org %s: node %s connected", self.org.id[:12], self.node[:12])
            try:
                await self._converse()
            finally:
                self.relay.leave(self, self.org)
                logger.info("org %s: node %s disconnected", self.org.id[:12], self.node[:12])
        except Refusal as exc:
            await self._refuse(str(exc), exc.code, exc.kind, policy=exc.policy)
        except ProtocolError as exc:
            await self._refuse(str(exc), CLOSE_PROTOCOL, "protocol")
        except ConnectionClosed:
            pass
        except StoreError as exc:
            logger.error("relay store failed serving node %s: %s", self.node[:12] or "?", exc)
            await self._refuse("the relay cannot store right now; try again later", CLOSE_TRY_LATER, "store")
        except Exception:
            logger.exception("relay session with node %s failed", self.node[:12] or "?")
            with contextlib.suppress(Exception):
                await self.ws.close(CLOSE_ERROR, "relay error")
        finally:
            for task in self._side_tasks:
                task.cancel()

    async def _authenticate(self) -> Authenticated | bytes:
        """A member's proof, or (as bytes) the enrollment request of a branch that is not one yet."""
        frame, nonce = relay_auth.challenge()
        await self.ws.send(frame)
        try:
            answer = await asyncio.wait_for(self.ws.recv(), self.limits.auth_timeout)
        except TimeoutError:
            raise Refusal(f"no authentication within {self.limits.auth_timeout:g} s", kind="auth") from None
        raw = answer.encode() if isinstance(answer, str) else answer
        if len(raw) <= enroll.MAX_MESSAGE and b'"type":"enroll"' in raw:
            self.relay.check_enrollment_served(raw)
            return raw
        try:
            return relay_auth.verify(answer, nonce)
        except (P2PSyncError, ValueError, TypeError) as exc:
            raise Refusal(f"authentication failed: {exc}", kind="auth") from None

    async def _converse(self) -> None:
        assert self.org is not None
        vectors = await self.relay.call(self.relay.store.vectors, self.org.id)
        heads = await self.relay.call(self.relay.store.heads, self.org.id)
        await self.ws.send(self.conn.hello(RELAY_NODE, self.org.id, "relay", self.org.version, vectors, heads))
        self._said_hello = True
        tasks = [asyncio.create_task(job) for job in (self._read(), self._process(), self._send())]
        try:
            done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    # ------------------------------------------------------------ reading

    async def _read(self) -> None:
        """Parse every frame the member sends; returns when the member says it refuses us."""
        while True:
            timeout = None if self.conn.peer else self.limits.hello_timeout
            try:
                frame = await asyncio.wait_for(self.ws.recv(), timeout)
            except TimeoutError:
                raise Refusal(f"no hello within {self.limits.hello_timeout:g} s", kind="hello") from None
            event = self._parse(frame)
            wait = self.throttle.charge(len(event.blobs) if isinstance(event, Entries) else 0, len(frame))
            if isinstance(event, Refused):
                logger.info("node %s refused the relay: %s", self.node[:12], event.reason)
                await self.ws.close()
                return
            if isinstance(event, Fork):
                if await self._settle(event):
                    await self.ws.close(CLOSE_RESTART, "equivocation settled; start again")
                    return
                continue
            await self._dispatch(event, wait)

    async def _settle(self, event: Fork) -> bool:
        """The member's chain of an author differs from the relay's: where they part, the entry of lower
        hash is kept everywhere. Answers with the relay's hashes (unless this answers its own); True
        when the relay dropped its side, so the member starts again and sends the kept one."""
        assert self.org is not None
        store = self.relay.store
        mine = await self.relay.call(store.entry_hashes, self.org.id, event.doc, event.author, len(event.hashes))
        if not event.reply:  # always answered (with nothing if the relay cannot tell): the member waits for it
            await self.ws.send(self.conn.fork(event.doc, event.author, mine or [], reply=True))
        if mine is None:
            return False  # the relay does not hold that chain whole: it cannot tell
        at = chain.parting(mine, event.hashes)
        if at is None or chain.kept(mine[at - 1], event.hashes[at - 1]):
            return False
        dropped = await self.relay.call(store.drop_from, self.org.id, event.doc, event.author, at)
        self.relay.stats.equivocations += 1
        logger.warning("org %s: dropped %d entries of %s from %s/%d, the losing side of its equivocation",
                       self.org.id[:12], dropped, event.author[:12], event.doc, at)
        return True

    def _parse(self, frame: str | bytes) -> Event:
        try:
            return self.conn.receive(frame)
        except ProtocolError:
            raise
        except P2PSyncError as exc:  # e.g. vectors that check_deps refuses
            raise ProtocolError(f"malformed frame: {exc}") from None

    async def _dispatch(self, event: Event, wait: float) -> None:
        assert self.org is not None
        if isinstance(event, Hello):
            self._greet(event)
            if event.policy_version < self.org.version and self.org.policy_blob:
                await self.ws.send(self.conn.policy(self.org.policy_blob))
            self._greeted.set()
        elif isinstance(event, PolicyOffer):
            await self.relay.offer_policy(self.org, event.blob, self)
        elif isinstance(event, Entries):
            if self._pending.qsize() >= self.limits.max_pending_batches:
                raise Refusal("too many unacknowledged batches: wait for acknowledgements", CLOSE_TRY_LATER, "flow")
            self._pending.put_nowait((event, asyncio.get_running_loop().time() + wait))
        elif isinstance(event, Ack):
            self._acked.set()
        elif isinstance(event, CaughtUp):
            logger.debug("node %s is caught up with the relay", self.node[:12])
        elif isinstance(event, EnrollReply):
            waiting = self._enrollments.pop(event.ticket, None)
            if waiting is not None and not waiting.done():
                waiting.set_result(event.reply)

    def _greet(self, hello: Hello) -> None:
        assert self.org is not None
        if hello.org != self.org.id:
            raise Refusal("hello names another organisation than the certificate", kind="hello")
        if hello.node != self.node:
            raise Refusal("hello names another node than the certificate", kind="hello")

    # ------------------------------------------------------------ storing

    async def _process(self) -> None:
        """Check, store and acknowledge the member's batches in order, each after its throttle delay."""
        assert self.org is not None and self.keys is not None
        loop = asyncio.get_running_loop()
        while True:
            batch, release = await self._pending.get()
            if release > loop.time():
                await asyncio.sleep(release - loop.time())
            checked = await self.relay.call(check_batch, batch.blobs, self.keys)
            for header, _blob in checked.good:
                self.conn.note_peer_has(header.doc, header.author, header.seq)
            if checked.dropped:
                self.relay.stats.dropped += len(checked.dropped)
                logger.info("org %s: dropped %d of %d entries from node %s (%s)", self.org.id[:12],
                            len(checked.dropped), len(batch.blobs), self.node[:12], checked.dropped[0])
            if checked.good:
                await self.relay.store_entries(self.org, checked, self)
            vectors = await self.relay.call(self.relay.store.vectors, self.org.id, sorted(checked.docs)) \
                if checked.docs else {}
            await self.ws.send(self.conn.ack(batch.batch, vectors))

    # ------------------------------------------------------------ sending

    async def _send(self) -> None:
        """Stream what the member lacks, say caught-up, then forward live entries as they come."""
        await self._greeted.wait()
        await self._stream_stored()
        await self.ws.send(self.conn.caught_up())
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._from_store:
                self._from_store = False
                await self._stream_stored()
            else:
                live, self._live, self._live_bytes = list(self._live), deque(), 0
                await self._send_entries([e for e in live if e.id > self.cursor])

    async def _stream_stored(self) -> None:
        """Everything after the cursor that the member lacks, in arrival order, page by page."""
        assert self.org is not None and self.conn.peer is not None
        while True:
            held = {doc: dict(vector) for doc, vector in self.conn.peer.vectors.items()}
            page = await self.relay.call(self.relay.store.entries_after, self.org.id, self.cursor,
                                         self.limits.page_entries, held)
            if page.cursor <= self.cursor:
                return
            await self._send_entries(page.entries)
            self.cursor = max(self.cursor, page.cursor)

    async def _send_entries(self, stored: list[StoredEntry]) -> None:
        wanted = [e for e in stored if self.conn.peer_lacks(e.doc, e.author, e.seq)]
        at = 0
        for blobs in batches(e.blob for e in wanted):
            while not self.conn.can_send:
                self._acked.clear()
                await self._acked.wait()
            await self.ws.send(self.conn.entries(blobs))
            for sent in wanted[at:at + len(blobs)]:
                self.conn.note_peer_has(sent.doc, sent.author, sent.seq)
            at += len(blobs)
            self.relay.stats.forwarded += len(blobs)
            self.relay.stats.forwarded_bytes += sum(len(blob) for blob in blobs)
        if stored:
            self.cursor = max(self.cursor, stored[-1].id)

    # ------------------------------------------------------------ called by other sessions

    def forward(self, stored: list[StoredEntry]) -> None:
        """Queue entries another member stored; never blocks. On overflow the queue is dropped and
        the sender catches up from the store, so a slow member costs memory only up to the bound."""
        if not stored or self._from_store:
            return
        added = sum(len(e.blob) for e in stored)
        if (len(self._live) + len(stored) > self.limits.live_queue_entries
                or self._live_bytes + added > self.limits.live_queue_bytes):
            self._live, self._live_bytes, self._from_store = deque(), 0, True
            self.relay.stats.overflows += 1
            logger.info("node %s is slow: its live queue overflowed; feeding it from the store", self.node[:12])
        else:
            self._live.extend(stored)
            self._live_bytes += added
        self._wake.set()

    def refresh(self) -> None:
        """New entries are in the store: read them from there (after the cursor) at the next wake."""
        self._live, self._live_bytes, self._from_store = deque(), 0, True
        self._wake.set()

    def push_policy(self, blob: bytes) -> None:
        """Pass on a newer policy. Before our hello nothing may be sent; the member then gets it in
        answer to its own hello, which says which version it holds."""
        if self._said_hello:
            self._spawn(self._send_quietly(self.conn.policy(blob)))

    async def forward_enrollment(self, raw: bytes) -> bytes:
        """Ask this (head office) member to answer an enrollment request."""
        ticket = next(self._tickets)
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._enrollments[ticket] = answer
        try:
            await self.ws.send(self.conn.enroll_forward(ticket, raw))
            return await asyncio.wait_for(answer, ENROLL_TIMEOUT)
        except (TimeoutError, ConnectionClosed):
            return enroll.refusal("the head office did not answer in time; try again")
        finally:
            self._enrollments.pop(ticket, None)

    def kick(self, reason: str, policy: bytes | None = None) -> None:
        """Cut a member off; `policy` (the one that revokes it) goes with the refusal, so it learns why."""
        logger.warning("node %s: %s", self.node[:12], reason)
        # no drain: its reader is still reading
        self._spawn(self._refuse(reason, CLOSE_POLICY, "revoked", drain=False, policy=policy))

    def _spawn(self, job: Any) -> None:
        task = asyncio.create_task(job)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _send_quietly(self, frame: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(frame)

    async def _refuse(self, reason: str, code: int, kind: str, drain: bool = True,
                      policy: bytes | None = None) -> None:
        self.relay.stats.refuse(kind)
        logger.warning("refused node %s: %s", self.node[:12] or "?", reason)
        await self._send_quietly(self.conn.refuse(reason, policy))
        # Read and discard what the member still sends, so its reply to our close is not stuck behind it.
        drainer = asyncio.create_task(self._drain()) if drain else None
        try:
            with contextlib.suppress(ConnectionClosed):
                await self.ws.close(code, reason[:120])
        finally:
            if drainer is not None:
                drainer.cancel()

    async def _drain(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await self.ws.recv()


# ---------------------------------------------------------------- serving


async def start(relay: Relay, host: str, port: int) -> Server:
    """Listen for members, with `net.wire`'s compression and keepalive pings."""
    limits = relay.limits
    relay.begin()
    return await serve(relay.handle, host, port, max_size=limits.max_frame,
                       ping_interval=limits.ping_interval, ping_timeout=limits.ping_timeout,
                       max_queue=4, close_timeout=5, server_header=None, **wire.server_options())


def address(server: Server, host: str) -> str:
    """The URL members use, with the real port when port 0 was asked for."""
    port = server.sockets[0].getsockname()[1]
    return f"ws://{_shown(host)}:{port}"


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def run(db: str | Path, host: str, port: int, stop: asyncio.Event,
              on_ready: Callable[[str, str | None], None] = lambda _url, _metrics: None,
              limits: Limits | None = None, metrics: tuple[str, int] | None = None) -> None:
    """Serve from database `db` (a SQLite path or a postgresql:// URL) until `stop` is set, with the
    Prometheus metrics endpoint at `metrics` (host, port) if given. `on_ready` gets the members'
    URL and the metrics URL."""
    store = open_store(db)
    relay = Relay(store, limits)
    try:
        with serve_metrics(relay, metrics) as metrics_port:
            try:
                server = await start(relay, host, port)
            except OSError as exc:
                raise P2PSyncError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            try:
                url = address(server, host)
                metrics_url = None if metrics is None else f"http://{_shown(metrics[0])}:{metrics_port}/metrics"
                logger.info("relay listening on %s with database %s", url, store.where)
                on_ready(url, metrics_url)
                await stop.wait()
            finally:
                server.close()
                await server.wait_closed()
    finally:
        relay.close()
        store.close()
