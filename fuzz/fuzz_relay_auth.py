"""A member's proof to a relay (`protocol.relay_auth`): the relay's `verify` and the member's
`answer` to a challenge. Refused input raises `AuthError` or `CertificateError` only, and a proof
verifies only when it really is a member's signature over this connection's nonce."""

from __future__ import annotations

import json

from fuzz.common import world
from p2psync.canonical import dumps
from p2psync.protocol import relay_auth
from p2psync.protocol.relay_auth import AuthError
from p2psync.trust.certs import CertificateError
from p2psync.trust.keys import b64, org_id, unb64

NONCE = bytes(range(32))


def check(data: bytes) -> None:
    w = world()
    try:
        auth = relay_auth.verify(data, NONCE)
    except (AuthError, CertificateError) as exc:
        assert str(exc)
    else:  # a real proof, of this organisation or another: its certificate chains to the root it sent
        assert auth.org == org_id(auth.root) == auth.member.org
        auth.member.signing.verify(unb64(json.loads(data)["sig"]), relay_auth.CONTEXT + NONCE)
    try:
        reply = relay_auth.answer(data, w.root_cert, w.head_cert, w.head.trust.keys.signing)
    except AuthError as exc:
        assert str(exc)
    else:
        assert reply.startswith('{"cert":')


def seeds() -> list[bytes]:
    w = world()
    proof = relay_auth.answer(dumps({"type": "challenge", "nonce": b64(NONCE)}), w.root_cert, w.head_cert,
                              w.head.trust.keys.signing)
    return [proof.encode(), relay_auth.challenge()[0].encode(), b'{"type":"refused","reason":"full"}']
