"""Keys: the organisation's root (Ed25519) and each node's signing (Ed25519) and sealing (X25519) keys.

Identifiers are hashes of public keys, so nobody can claim an id without holding the key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from p2psync.errors import P2PSyncError


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def org_id(root_public: Ed25519PublicKey) -> str:
    """The organisation's id: SHA-256 of the root public key, hex."""
    return hashlib.sha256(b"p2psync-org" + raw_public(root_public)).hexdigest()


def registration_id(org: str) -> str:
    """The Registration ID shown to people: 80 bits of the organisation id in base32, grouped.

    Short enough to read over the phone, long enough that no two organisations share one."""
    text = base64.b32encode(bytes.fromhex(org)[:10]).decode()
    return "-".join(text[i:i + 4] for i in range(0, 16, 4))


def node_id(signing_public: Ed25519PublicKey) -> str:
    """A node's id: the first 128 bits of SHA-256 of its signing key, hex."""
    return hashlib.sha256(b"p2psync-node" + raw_public(signing_public)).hexdigest()[:32]


@dataclass(frozen=True)
class NodeKeys:
    signing: Ed25519PrivateKey
    sealing: X25519PrivateKey

    @classmethod
    def generate(cls) -> NodeKeys:
        return cls(Ed25519PrivateKey.generate(), X25519PrivateKey.generate())

    @property
    def node_id(self) -> str:
        return node_id(self.signing.public_key())

    def save(self, directory: Path) -> None:
        write_private(directory / "node-signing.pem", self.signing)
        write_private(directory / "node-sealing.pem", self.sealing)

    @classmethod
    def load(cls, directory: Path) -> NodeKeys:
        signing = read_private(directory / "node-signing.pem")
        sealing = read_private(directory / "node-sealing.pem")
        if not isinstance(signing, Ed25519PrivateKey) or not isinstance(sealing, X25519PrivateKey):
            raise P2PSyncError(f"node keys in {directory} are of the wrong type")
        return cls(signing, sealing)


def write_private(path: Path, key: Ed25519PrivateKey | X25519PrivateKey) -> None:
    """Write a private key readable by its owner only, atomically (never a half-written key)."""
    write_private_file(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))


def write_private_file(path: Path, data: bytes) -> None:
    """Write `data` for its owner's eyes only (mode 0600 where POSIX modes apply; elsewhere the folder's
    access list, see docs/security.md), atomically: a reader sees the old file or the whole new one."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def read_private(path: Path) -> Ed25519PrivateKey | X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise P2PSyncError(f"key file {path.name} is missing from {path.parent}") from None
    except (ValueError, TypeError):
        raise P2PSyncError(f"key file {path} is damaged") from None
    if not isinstance(key, (Ed25519PrivateKey, X25519PrivateKey)):
        raise P2PSyncError(f"key file {path} holds an unexpected key type")
    return key


def load_root(path: Path) -> Ed25519PrivateKey:
    key = read_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise P2PSyncError(f"{path} is not an organisation root key")
    return key


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    if not isinstance(text, str):
        raise ValueError("expected base64 text")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
