"""How a member proves itself to a relay that knows no organisation in advance.

    relay -> node   {"type": "challenge", "nonce": b64(32 random bytes)}
    node -> relay   {"type": "auth", "root_cert": b64 DER, "cert": b64 DER, "sig": b64 Ed25519(context | nonce)}

The relay derives the organisation from the self-signed root certificate, checks that the node's
certificate chains to it, and that the signature over its fresh nonce is by the certificate's key.
No per-organisation setup: the root certificate is the organisation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from p2psync.canonical import dumps, loads
from p2psync.errors import P2PSyncError
from p2psync.trust.certs import Member, root_public_from_cert, verify_node_cert
from p2psync.trust.keys import b64, org_id, unb64

CONTEXT = b"p2psync-relay-auth-v1\x00"
MAX_AUTH_FRAME = 64 * 1024


class AuthError(P2PSyncError):
    """The node could not prove membership of the organisation it claims."""


@dataclass(frozen=True)
class Authenticated:
    org: str
    root: Ed25519PublicKey
    member: Member


def challenge() -> tuple[str, bytes]:
    nonce = os.urandom(32)
    return dumps({"type": "challenge", "nonce": b64(nonce)}), nonce


def answer(frame: str | bytes, root_cert: bytes, cert: bytes, signing: Ed25519PrivateKey) -> str:
    try:
        data = loads(frame)
        if data.get("type") == "refused":
            raise AuthError(f"the relay refused: {str(data.get('reason'))[:300]}")
        nonce = unb64(data["nonce"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AuthError("the relay sent no valid challenge") from None
    if len(nonce) != 32:
        raise AuthError("the relay sent no valid challenge")
    return dumps({"type": "auth", "root_cert": b64(root_cert), "cert": b64(cert),
                  "sig": b64(signing.sign(CONTEXT + nonce))})


def verify(frame: str | bytes, nonce: bytes) -> Authenticated:
    if len(frame) > MAX_AUTH_FRAME:
        raise AuthError("authentication frame too large")
    try:
        data = loads(frame)
        root_der, cert_der, sig = unb64(data["root_cert"]), unb64(data["cert"]), unb64(data["sig"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise AuthError("malformed authentication frame") from None
    root = root_public_from_cert(root_der)
    member = verify_node_cert(cert_der, root)
    try:
        member.signing.verify(sig, CONTEXT + nonce)
    except InvalidSignature:
        raise AuthError("signature over the challenge does not verify") from None
    return Authenticated(org_id(root), root, member)
