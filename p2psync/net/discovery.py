"""Finding peers of the same organisation on the office LAN by mDNS/zeroconf (DNS-SD).

An advert is a *hint*, never an identity: anyone on the LAN can publish or copy one. It only tells a
node where to try a connection; TLS with mutual certificates chained to the organisation's root then
decides who the peer is. So adverts carry nothing secret and nothing that names the business:

- service type ``_p2psync._tcp.local.``, instance ``p2psync-<first 12 hex of the node id>``, host
  name derived the same way (never the machine's host name, which often names the office);
- TXT ``v`` (protocol version), ``org`` (a tag blinded from the organisation id, see
  `blinded_tag`), ``node`` (the node id) and ``port``.

Everything received is validated and anything odd is dropped with a debug log: the LAN is hostile.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Self

import ifaddr  # zeroconf's own dependency; it is what zeroconf uses to enumerate interfaces
from zeroconf import InterfaceChoice, ServiceInfo, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

__all__ = [
    "PROTOCOL_VERSION",
    "SERVICE_TYPE",
    "AdvertRejected",
    "Advertiser",
    "Browser",
    "Interfaces",
    "Peer",
    "PeerChange",
    "PeerEvent",
    "blinded_tag",
    "instance_name",
    "parse_advert",
]

logger = logging.getLogger(__name__)

SERVICE_TYPE = "_p2psync._tcp.local."
PROTOCOL_VERSION = "1"
SUPPORTED_VERSIONS = frozenset({PROTOCOL_VERSION})
TAG_CONTEXT = b"p2psync-mdns-v1"

#: What zeroconf accepts for ``interfaces``: an `InterfaceChoice` or a list of addresses.
Interfaces = InterfaceChoice | list[str | int]

RESOLVE_TIMEOUT_MS = 3000
#: TTL of every advert record. Shorter than mDNS's 75-minute default for service records, so a node
#: that dies without a goodbye drops out of peers' views within minutes; refreshes cost little.
ADVERT_TTL = 120
#: Bounds on what a hostile LAN can make us hold: per-value size, addresses per advert, adverts kept.
MAX_VALUE_BYTES = 64
MAX_ADDRESSES = 16
MAX_ADVERTS = 256
MAX_QUEUED_EVENTS = 1024

_NODE_ID = re.compile(r"[0-9a-f]{32}")
_PORT = re.compile(r"[0-9]{1,5}")


def blinded_tag(org_id: str) -> str:
    """The organisation tag put in adverts: 16 hex of HMAC-SHA256(org id, "p2psync-mdns-v1").

    Members compute it from the org id they hold; a LAN observer cannot turn it back into the
    organisation (or Registration) id, nor link it to one without already knowing that id.
    """
    try:
        key = bytes.fromhex(org_id)
    except ValueError:
        raise ValueError("organisation id must be hex") from None
    if not key:
        raise ValueError("organisation id must not be empty")
    return hmac.new(key, TAG_CONTEXT, hashlib.sha256).hexdigest()[:16]


def instance_name(node_id: str) -> str:
    """The DNS-SD instance name for a node: from its id, so it never names the office or company."""
    return f"p2psync-{_checked_node_id(node_id)[:12]}.{SERVICE_TYPE}"


@dataclass(frozen=True)
class Peer:
    """Where a node of our organisation says it can be reached. A hint, not an identity."""

    node_id: str
    addresses: list[str]
    port: int


PeerChange = Literal["added", "updated", "removed"]


@dataclass(frozen=True)
class PeerEvent:
    """A peer appeared, changed its addresses or port, or withdrew (``peer`` is then its last state)."""

    change: PeerChange
    peer: Peer


class AdvertRejected(ValueError):
    """An advert that is not a usable peer of our organisation; the message says why."""


def parse_advert(info: ServiceInfo, tag: str | None) -> Peer:
    """Validate a resolved advert against our organisation tag (None: any organisation, for a
    branch that has not joined yet) and turn it into a `Peer`.

    Pure (no I/O) so it can be tested with hand-made records. Raises `AdvertRejected`.
    """
    props = info.properties
    org = _text(props, "org")
    if tag is not None and not hmac.compare_digest(org, tag):
        raise AdvertRejected("another organisation")
    version = _text(props, "v")
    if version not in SUPPORTED_VERSIONS:
        raise AdvertRejected(f"unsupported protocol version {version!r}")
    node = _text(props, "node")
    if not _NODE_ID.fullmatch(node):
        raise AdvertRejected("node id is not 32 lowercase hex characters")
    port_text = _text(props, "port")
    port = int(port_text) if _PORT.fullmatch(port_text) else 0
    if not 1 <= port <= 65535:
        raise AdvertRejected(f"absurd port {port_text!r}")
    if info.port != port:
        raise AdvertRejected(f"TXT port {port} disagrees with SRV port {info.port}")
    addresses = _usable_addresses(info.parsed_scoped_addresses())
    if not addresses:
        raise AdvertRejected("no usable address")
    return Peer(node, addresses, port)


def _text(props: dict[bytes, bytes | None], key: str) -> str:
    value = props.get(key.encode())
    if not isinstance(value, bytes):
        raise AdvertRejected(f"TXT {key} missing or empty")
    if len(value) > MAX_VALUE_BYTES:
        raise AdvertRejected(f"TXT {key} oversized ({len(value)} bytes)")
    try:
        return value.decode("ascii")
    except UnicodeDecodeError:
        raise AdvertRejected(f"TXT {key} is not ASCII") from None


def _usable_addresses(raw: Sequence[str]) -> list[str]:
    """Unicast addresses only, IPv4 first, in a stable order so that re-resolving is not an update."""
    found: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
    for text in raw:
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            continue
        if not (addr.is_unspecified or addr.is_multicast):
            found.add(addr)
    ordered = sorted(found, key=lambda a: (a.version, a.packed, str(a)))
    return [str(a) for a in ordered[:MAX_ADDRESSES]]


def _checked_node_id(node_id: str) -> str:
    if not _NODE_ID.fullmatch(node_id):
        raise ValueError("node id must be 32 lowercase hex characters")
    return node_id


def _default_addresses(interfaces: Interfaces) -> list[str]:
    """The IPv4 addresses zeroconf will use: the listed ones, else every interface's, loopback last
    resort. Loopback is skipped otherwise because a peer on the LAN cannot reach it."""
    if isinstance(interfaces, list):
        listed = [str(i) for i in interfaces if isinstance(i, str) and ipaddress.ip_address(i).version == 4]
        if listed:
            return listed
    everything = [str(ip.ip) for adapter in ifaddr.get_adapters() for ip in adapter.ips if ip.is_IPv4]
    usable = [a for a in everything if not ipaddress.ip_address(a).is_loopback]
    return sorted(set(usable or everything))


class Advertiser:
    """Announces this node on the LAN until stopped; an async context manager.

    Pass ``zeroconf`` to share one responder with a `Browser` (the caller then closes it); otherwise
    one is opened on ``interfaces`` and closed on stop. If another responder already holds our
    instance name, zeroconf picks a new one rather than letting a LAN squatter silence us.
    """

    def __init__(
        self,
        org_id: str,
        node_id: str,
        port: int,
        *,
        addresses: Sequence[str] | None = None,
        interfaces: Interfaces = InterfaceChoice.All,
        zeroconf: AsyncZeroconf | None = None,
    ) -> None:
        if not 1 <= port <= 65535:
            raise ValueError(f"port out of range: {port}")
        for address in addresses or ():
            ipaddress.ip_address(address)  # raises ValueError on a bad address
        self._tag = blinded_tag(org_id)
        self._node_id = _checked_node_id(node_id)
        self._port = port
        self._addresses = list(addresses) if addresses else None
        self._interfaces = interfaces
        self._shared = zeroconf
        self._zc: AsyncZeroconf | None = None
        self._announcing: asyncio.Future[object] | None = None
        self.info: ServiceInfo | None = None

    async def start(self) -> None:
        """Probe for the name and register; announcements continue in the background."""
        if self.info is not None:
            return
        zc = self._shared if self._shared is not None else AsyncZeroconf(interfaces=self._interfaces)
        host = f"p2psync-{self._node_id[:12]}.local."
        info = ServiceInfo(
            SERVICE_TYPE,
            instance_name(self._node_id),
            port=self._port,
            properties={"v": PROTOCOL_VERSION, "org": self._tag, "node": self._node_id, "port": str(self._port)},
            server=host,
            parsed_addresses=self._addresses or _default_addresses(self._interfaces),
            host_ttl=ADVERT_TTL,
            other_ttl=ADVERT_TTL,
        )
        try:
            announcing = await zc.async_register_service(info, allow_name_change=True)
        except BaseException:
            if self._shared is None:
                await zc.async_close()
            raise
        self._zc, self.info, self._announcing = zc, info, asyncio.ensure_future(announcing)

    async def stop(self) -> None:
        """Withdraw the advert (a goodbye, so peers drop us at once rather than at TTL expiry)."""
        zc, info, self._zc, self.info = self._zc, self.info, None, None
        if zc is None or info is None:
            return
        if self._announcing is not None:
            # an announcement sent after the goodbye would resurrect us in peers' caches
            self._announcing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcing
            self._announcing = None
        try:
            await (await zc.async_unregister_service(info))
        finally:
            if self._shared is None:
                await zc.async_close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


class Browser:
    """Reports peers of our organisation seen on the LAN; an async context manager.

    Keeps adverts whose ``org`` tag is ours and whose ``v`` we speak, skips our own node id, and
    drops malformed ones with a debug log. Events go to ``on_event`` (awaited one at a time, in
    order; its errors are logged) or, without one, to the ``events`` queue.

    Adverts are only hints: anyone on the LAN can claim any node id and address. Authentication
    (TLS with certificates chained to the organisation's root) decides who a peer is; connect to the
    addresses given and believe only the certificate.
    """

    def __init__(
        self,
        org_id: str | None,
        node_id: str,
        on_event: Callable[[PeerEvent], Awaitable[None]] | None = None,
        *,
        interfaces: Interfaces = InterfaceChoice.All,
        zeroconf: AsyncZeroconf | None = None,
    ) -> None:
        self._tag = blinded_tag(org_id) if org_id is not None else None
        self._node_id = _checked_node_id(node_id)
        self._on_event = on_event
        self._interfaces = interfaces
        self._shared = zeroconf
        self._zc: AsyncZeroconf | None = None
        self._browser: AsyncServiceBrowser | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._resolving: dict[str, asyncio.Task[None]] = {}
        self._adverts: dict[str, Peer] = {}  # instance name -> what it says, latest last
        self._peers: dict[str, Peer] = {}  # node id -> what we last reported
        self.events: asyncio.Queue[PeerEvent] = asyncio.Queue(MAX_QUEUED_EVENTS)

    @property
    def peers(self) -> dict[str, Peer]:
        """The peers currently advertised, by node id."""
        return dict(self._peers)

    def claims(self, node_id: str) -> list[Peer]:
        """Every advert now claiming `node_id`, latest last. More than one is a restart under a new
        name or a spoof; which is genuine only connecting to each (and TLS) can tell."""
        return [p for p in self._adverts.values() if p.node_id == node_id]

    async def start(self) -> None:
        if self._browser is not None:
            return
        self._zc = self._shared if self._shared is not None else AsyncZeroconf(interfaces=self._interfaces)
        if self._on_event is not None:
            self._dispatcher = asyncio.create_task(self._dispatch())
        self._browser = AsyncServiceBrowser(self._zc.zeroconf, SERVICE_TYPE, handlers=[self._on_state_change])

    async def stop(self) -> None:
        browser, zc, self._browser, self._zc = self._browser, self._zc, None, None
        if browser is not None:
            await browser.async_cancel()  # first, so that no new resolution starts
        tasks = [*self._resolving.values(), *([self._dispatcher] if self._dispatcher else [])]
        self._resolving.clear()
        self._dispatcher = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if zc is not None and self._shared is None:
            await zc.async_close()
        self._adverts.clear()
        self._peers.clear()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_state_change(
        self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        """Zeroconf's handler (runs in the event loop, must not block): resolve or withdraw."""
        pending = self._resolving.pop(name, None)
        if pending is not None:
            pending.cancel()  # a newer state supersedes it; a late answer must not resurrect a peer
        if state_change is ServiceStateChange.Removed:
            self._apply(name, None)
        else:
            self._resolving[name] = asyncio.create_task(self._resolve(name))

    async def _resolve(self, name: str) -> None:
        try:
            zc = self._zc
            if zc is None:
                return
            info = AsyncServiceInfo(SERVICE_TYPE, name)
            if not await info.async_request(zc.zeroconf, RESOLVE_TIMEOUT_MS):
                logger.debug("mDNS advert %r: did not resolve", name)
                return
            try:
                peer = parse_advert(info, self._tag)
            except AdvertRejected as why:
                logger.debug("mDNS advert %r ignored: %s", name, why)
                self._apply(name, None)
                return
            if peer.node_id == self._node_id:
                logger.debug("mDNS advert %r ignored: our own node id", name)
                self._apply(name, None)
            elif name not in self._adverts and len(self._adverts) >= MAX_ADVERTS:
                logger.debug("mDNS advert %r ignored: already tracking %d adverts", name, MAX_ADVERTS)
            else:
                self._apply(name, peer)
        finally:
            if self._resolving.get(name) is asyncio.current_task():
                del self._resolving[name]

    def _apply(self, name: str, advert: Peer | None) -> None:
        """Record what one instance now says and report how that changed each node's view.

        Several instances may claim one node id (a restart under a new name, or a spoof); the view
        of a node is its latest advert, and it is removed only when no instance claims it.
        """
        old = self._adverts.pop(name, None)
        if advert is not None:
            self._adverts[name] = advert
        for node in {p.node_id for p in (old, advert) if p is not None}:
            claims = [p for p in self._adverts.values() if p.node_id == node]
            before, after = self._peers.get(node), (claims[-1] if claims else None)
            if after is None and before is not None:
                del self._peers[node]
                self._emit(PeerEvent("removed", before))
            elif after is not None and after != before:
                self._peers[node] = after
                self._emit(PeerEvent("added" if before is None else "updated", after))

    def _emit(self, event: PeerEvent) -> None:
        try:
            self.events.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("peer events are not being consumed; dropped %s of %s", event.change, event.peer.node_id)

    async def _dispatch(self) -> None:
        assert self._on_event is not None
        while True:
            event = await self.events.get()
            try:
                await self._on_event(event)
            except Exception:
                logger.exception("peer event handler failed on %s of %s", event.change, event.peer.node_id)


async def find_any(seconds: float, interfaces: Interfaces = InterfaceChoice.All) -> list[str]:
    """Addresses (``wss://HOST:PORT``) of every p2psync node advertised on the LAN within `seconds`,
    whatever its organisation: what a branch that has not joined yet can look for."""
    found: dict[str, str] = {}
    async with Browser(None, "0" * 32, interfaces=interfaces) as browser:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            try:
                event = await asyncio.wait_for(browser.events.get(), left)
            except TimeoutError:
                break
            if event.change != "removed" and event.peer.addresses:
                found[event.peer.node_id] = f"wss://{event.peer.addresses[0]}:{event.peer.port}"
    return list(found.values())
