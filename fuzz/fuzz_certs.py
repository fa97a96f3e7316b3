"""Certificates (`trust.certs`): node certificates checked against the organisation's root, and a
root certificate read from a stranger. Refused input raises `CertificateError` only; a certificate
accepted must be signed by the root, so it can only be one the head office issued."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fuzz.common import world
from p2psync.trust.certs import CertificateError, root_public_from_cert, verify_node_cert
from p2psync.trust.keys import raw_public, unb64


def check(data: bytes) -> None:
    w = world()
    root = w.root.public_key()
    try:
        member = verify_node_cert(data, root)
    except CertificateError as exc:
        assert str(exc)
    else:
        assert member.node_id in w.head.trust.policy.members and member.org == w.org
        assert unb64(w.head.trust.policy.members[member.node_id]) == data
    try:
        key = root_public_from_cert(data)
    except CertificateError as exc:
        assert str(exc)
    else:
        assert isinstance(key, Ed25519PublicKey) and len(raw_public(key)) == 32


def seeds() -> list[bytes]:
    w = world()
    return [w.head_cert, w.root_cert, *(unb64(der) for der in w.head.trust.policy.members.values())]
