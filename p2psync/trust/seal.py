"""Sealing small secrets to one member: HPKE base mode (RFC 9180) with DHKEM(X25519, HKDF-SHA256),
HKDF-SHA256 and ChaCha20-Poly1305."""

from __future__ import annotations

from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from p2psync.errors import P2PSyncError

_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)


class SealError(P2PSyncError):
    """A sealed box cannot be opened: not for this key, or tampered with."""


def seal(plaintext: bytes, recipient: X25519PublicKey, info: bytes) -> bytes:
    return _SUITE.encrypt(plaintext, recipient, info=info)


def open_sealed(box: bytes, recipient: X25519PrivateKey, info: bytes) -> bytes:
    try:
        return _SUITE.decrypt(box, recipient, info=info)
    except Exception:  # the binding raises several types for bad input; all mean the same here
        raise SealError("sealed key cannot be opened: not sealed to this node, or tampered with") from None
