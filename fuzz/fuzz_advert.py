"""LAN adverts (`net.discovery.parse_advert`): a zeroconf record's raw TXT bytes and SRV port from
anyone on the LAN. Refused input raises `AdvertRejected` only; an advert accepted names a node id,
a port and at least one usable address, and only for our organisation's tag."""

from __future__ import annotations

from zeroconf import ServiceInfo

from p2psync.net.discovery import SERVICE_TYPE, AdvertRejected, Peer, blinded_tag, parse_advert

ORG = "ab" * 32
TAG = blinded_tag(ORG)


def check(data: bytes) -> None:
    port = int.from_bytes(data[:2], "big")
    info = ServiceInfo(SERVICE_TYPE, f"fuzz.{SERVICE_TYPE}", port=port, properties=data[2:], server="fuzz.local.",
                       parsed_addresses=["127.0.0.1", "::1"])
    try:
        peer = parse_advert(info, TAG)
    except AdvertRejected as exc:
        assert str(exc)
        return
    assert isinstance(peer, Peer) and peer.port == port and peer.addresses and len(peer.node_id) == 32
    assert info.properties[b"org"] == TAG.encode()


def _txt(**values: str) -> bytes:
    return b"".join(bytes([len(item)]) + item for item in (f"{k}={v}".encode() for k, v in values.items()))


def seeds() -> list[bytes]:
    node = "0123456789abcdef" * 2
    return [(4000).to_bytes(2, "big") + _txt(v="1", org=TAG, node=node, port="4000"),
            (8470).to_bytes(2, "big") + _txt(v="1", org="0" * 16, node=node, port="8470"),
            (1).to_bytes(2, "big") + _txt(v="9", org=TAG, node=node.upper(), port="65536")]
