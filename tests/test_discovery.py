"""LAN discovery: advert validation without sockets, then real zeroconf on the loopback interface.

Multicast on loopback: Linux delivers multicast sent on ``lo`` back to every socket that joined the
group on ``lo``, although ``lo`` has no MULTICAST flag. Opening zeroconf with
``interfaces=["127.0.0.1"]`` makes it join 224.0.0.251 on loopback and send from it (IPv4 only), so
several zeroconf instances in one process, or in parallel test workers, see each other's adverts
without any packet leaving the machine. No other setting is needed. Every test uses fresh random
organisation and node ids, so adverts from tests running in parallel are filtered out by the org
tag like any foreign organisation's.

Absence is asserted only after the browser has logged why it ignored the advert in question, so no
test relies on a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable

import pytest
from zeroconf import ServiceInfo
from zeroconf.asyncio import AsyncZeroconf

from p2psync.net.discovery import (
    SERVICE_TYPE,
    Advertiser,
    AdvertRejected,
    Browser,
    Peer,
    PeerEvent,
    blinded_tag,
    instance_name,
    parse_advert,
)

Props = dict[str, str | bytes | None]  # TXT properties as zeroconf takes them

LOOPBACK: list[str | int] = ["127.0.0.1"]
LOGGER = "p2psync.net.discovery"
DEADLINE = 10.0  # generous bound; each wait normally ends well under two seconds


def new_org() -> str:
    return secrets.token_hex(32)


def new_node() -> str:
    return secrets.token_hex(16)


def new_port() -> int:
    return 20000 + secrets.randbelow(40000)


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def ignored(caplog: pytest.LogCaptureFixture, name: str, reason: str) -> bool:
    return any(name in r.getMessage() and reason in r.getMessage() for r in caplog.records)


def raw_info(
    props: Props,
    *,
    port: int = 4000,
    addresses: list[str] | None = None,
    name: str | None = None,
) -> ServiceInfo:
    label = name or f"raw-{secrets.token_hex(6)}"
    return ServiceInfo(
        SERVICE_TYPE,
        f"{label}.{SERVICE_TYPE}",
        port=port,
        properties=props,
        server=f"{label}.local.",
        parsed_addresses=["127.0.0.1"] if addresses is None else addresses,
    )


def good_props(org: str, node: str, port: int) -> Props:
    return {"v": "1", "org": blinded_tag(org), "node": node, "port": str(port)}


# --- without sockets ----------------------------------------------------------------------------


def test_blinded_tag_is_keyed_by_the_org_id_and_hides_it() -> None:
    org = new_org()
    tag = blinded_tag(org)
    assert tag == hmac.new(bytes.fromhex(org), b"p2psync-mdns-v1", hashlib.sha256).hexdigest()[:16]
    assert tag == blinded_tag(org) != blinded_tag(new_org())
    assert tag not in org
    with pytest.raises(ValueError):
        blinded_tag("not hex")


def test_a_valid_advert_becomes_a_peer() -> None:
    org, node = new_org(), new_node()
    info = raw_info(good_props(org, node, 4000), addresses=["127.0.0.2", "127.0.0.1"])
    assert parse_advert(info, blinded_tag(org)) == Peer(node, ["127.0.0.1", "127.0.0.2"], 4000)


BAD_ADVERTS: dict[str, Callable[[Props], object]] = {
    "missing node": lambda p: p.pop("node"),
    "node without value": lambda p: p.update(node=None),
    "node not hex": lambda p: p.update(node="z" * 32),
    "node upper case": lambda p: p.update(node=str(p["node"]).upper()),
    "node too short": lambda p: p.update(node="ab" * 8),
    "node not ascii": lambda p: p.update(node=b"\xff" * 32),
    "port zero": lambda p: p.update(port="0"),
    "port too big": lambda p: p.update(port="70000"),
    "port negative": lambda p: p.update(port="-1"),
    "port not a number": lambda p: p.update(port="http"),
    "port disagrees with SRV": lambda p: p.update(port="4001"),
    "unsupported version": lambda p: p.update(v="2"),
    "missing version": lambda p: p.pop("v"),
    "other organisation": lambda p: p.update(org=blinded_tag(new_org())),
    "oversized org": lambda p: p.update(org="a" * 200),
}


@pytest.mark.parametrize("case", sorted(BAD_ADVERTS))
def test_malformed_adverts_are_rejected(case: str) -> None:
    org = new_org()
    props = good_props(org, new_node(), 4000)
    BAD_ADVERTS[case](props)
    with pytest.raises(AdvertRejected):
        parse_advert(raw_info(props, port=4000), blinded_tag(org))


def test_an_advert_without_a_usable_address_is_rejected() -> None:
    org = new_org()
    info = raw_info(good_props(org, new_node(), 4000), addresses=["0.0.0.0", "224.0.0.1"])
    with pytest.raises(AdvertRejected):
        parse_advert(info, blinded_tag(org))


def test_instance_name_comes_from_the_node_id() -> None:
    node = new_node()
    assert instance_name(node) == f"p2psync-{node[:12]}.{SERVICE_TYPE}"
    with pytest.raises(ValueError):
        instance_name("Head Office Mumbai")


# --- real zeroconf on loopback ------------------------------------------------------------------


def test_browser_finds_only_the_same_org_peer(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    org, other_org = new_org(), new_org()
    me, peer, stranger = new_node(), new_node(), new_node()
    port, my_port, stranger_port = new_port(), new_port(), new_port()

    async def scenario() -> None:
        async with AsyncZeroconf(interfaces=LOOPBACK) as shared:
            ours = Advertiser(org, me, my_port, addresses=["127.0.0.1"], zeroconf=shared)
            theirs = Advertiser(org, peer, port, interfaces=LOOPBACK)  # default address: the interface's
            foreign = Advertiser(other_org, stranger, stranger_port, addresses=["127.0.0.1"], interfaces=LOOPBACK)
            async with Browser(org, me, zeroconf=shared) as browser, contextlib.AsyncExitStack() as stack:
                # entered together: each advertiser spends about a second probing for its name
                await asyncio.gather(*(stack.enter_async_context(a) for a in (ours, theirs, foreign)))
                assert ours.info is not None and foreign.info is not None and theirs.info is not None
                own_name, foreign_name = ours.info.name, foreign.info.name
                await wait_until(lambda: peer in browser.peers, "the same-org peer")
                await wait_until(
                    lambda: (
                        ignored(caplog, own_name, "our own") and ignored(caplog, foreign_name, "another organisation")
                    ),
                    "our own and the foreign advert to be ignored",
                )
                assert browser.peers == {peer: Peer(peer, ["127.0.0.1"], port)}
                assert browser.events.get_nowait() == PeerEvent("added", Peer(peer, ["127.0.0.1"], port))
                assert browser.events.empty()

                # the advert names nothing and hides the org id
                info = theirs.info
                assert info.name == f"p2psync-{peer[:12]}.{SERVICE_TYPE}"
                assert info.server == f"p2psync-{peer[:12]}.local."
                assert info.decoded_properties == {"v": "1", "org": blinded_tag(org), "node": peer, "port": str(port)}

    asyncio.run(scenario())


def test_a_peer_that_stops_advertising_is_reported_removed() -> None:
    org, me, peer, port = new_org(), new_node(), new_node(), new_port()
    seen: list[PeerEvent] = []

    async def record(event: PeerEvent) -> None:
        seen.append(event)

    async def scenario() -> None:
        async with Browser(org, me, record, interfaces=LOOPBACK) as browser:
            advertiser = Advertiser(org, peer, port, addresses=["127.0.0.1"], interfaces=LOOPBACK)
            await advertiser.start()
            try:
                await wait_until(lambda: peer in browser.peers, "the peer")
            finally:
                await advertiser.stop()
            await wait_until(lambda: peer not in browser.peers, "the peer to go away")
            await wait_until(lambda: len(seen) == 2, "the removal event")
        expected = Peer(peer, ["127.0.0.1"], port)
        assert seen == [PeerEvent("added", expected), PeerEvent("removed", expected)]

    asyncio.run(scenario())


def test_a_changed_advert_is_reported_updated() -> None:
    org, me, peer = new_org(), new_node(), new_node()
    port, new = new_port(), new_port()

    async def scenario() -> None:
        async with AsyncZeroconf(interfaces=LOOPBACK) as raw, Browser(org, me, interfaces=LOOPBACK) as browser:
            info = raw_info(good_props(org, peer, port), port=port)
            await raw.async_register_service(info)
            assert await asyncio.wait_for(browser.events.get(), DEADLINE) == PeerEvent(
                "added", Peer(peer, ["127.0.0.1"], port)
            )
            moved = raw_info(good_props(org, peer, new), port=new, name=info.name.split(".")[0])
            await raw.async_update_service(moved)
            assert await asyncio.wait_for(browser.events.get(), DEADLINE) == PeerEvent(
                "updated", Peer(peer, ["127.0.0.1"], new)
            )

    asyncio.run(scenario())


def test_malformed_adverts_on_the_lan_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    org, me, good = new_org(), new_node(), new_node()
    port = new_port()
    bad: dict[str, Props] = {
        "missing": {"v": "1", "org": blinded_tag(org), "port": str(port)},
        "not hex": {**good_props(org, new_node(), port), "node": "g" * 32},
        "absurd port": {**good_props(org, new_node(), port), "port": "99999"},
        "oversized": {**good_props(org, new_node(), port), "node": "a" * 200},
        "version": {**good_props(org, new_node(), port), "v": "999"},
    }
    reasons = {
        "missing": "missing",
        "not hex": "hex",
        "absurd port": "absurd",
        "oversized": "oversized",
        "version": "version",
    }
    infos = {case: raw_info(props, port=port) for case, props in bad.items()}

    async def scenario() -> None:
        async with AsyncZeroconf(interfaces=LOOPBACK) as raw, Browser(org, me, interfaces=LOOPBACK) as browser:
            advertiser = Advertiser(org, good, port, addresses=["127.0.0.1"], interfaces=LOOPBACK)
            await asyncio.gather(advertiser.start(), *(raw.async_register_service(info) for info in infos.values()))
            async with advertiser:
                await wait_until(
                    lambda: all(ignored(caplog, infos[c].name, reasons[c]) for c in bad),
                    "every malformed advert to be ignored",
                )
                await wait_until(lambda: good in browser.peers, "the well-formed peer")
                assert browser.peers == {good: Peer(good, ["127.0.0.1"], port)}
                assert browser.events.qsize() == 1

    asyncio.run(scenario())
