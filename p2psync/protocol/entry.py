"""Entries: a change sealed for the organisation and signed by its author.

Layout (all integers big-endian)::

    "P2E1" | u16 header length | header | u32 ciphertext length | ciphertext | Ed25519 signature (64)

The header is canonical JSON: ``org, doc, author, seq, epoch, deps, nonce, z, pv`` and, for an entry
sealed under the key of its read scope, ``scope`` (the masters, or the books of the document's office;
without it the key is the epoch's organisation-wide one). The ciphertext is ChaCha20-Poly1305
(RFC 8439) under that key, with the header as associated data, of the pycrdt update
(zlib-compressed when ``z`` is 1). The signature covers everything before it, so authorship
is checked without decrypting and a relay can neither read nor alter an entry undetected.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2psync.books.change import Change
from p2psync.books.schema import parse_doc_name
from p2psync.canonical import dumps, loads
from p2psync.deps import check_deps
from p2psync.errors import P2PSyncError
from p2psync.trust.certs import Member, UnknownMember
from p2psync.trust.keys import b64, unb64
from p2psync.trust.scopes import scope_of

MAGIC = b"P2E1"
MAX_HEADER = 16 * 1024
MAX_CIPHERTEXT = 32 * 1024 * 1024
MAX_UPDATE = 64 * 1024 * 1024
SIGNATURE_BYTES = 64


class EntryError(P2PSyncError):
    """An entry is refused; the message is the reason recorded in the quarantine. `retryable` when a
    newer policy may cure it (an author or an epoch key this node has not heard of yet)."""

    def __init__(self, reason: str, *, retryable: bool = False) -> None:
        super().__init__(reason)
        self.retryable = retryable


class Unreadable(EntryError):
    """This node holds no key of the entry's read scope: it may carry the entry (check, store and
    pass it on) but not open it."""


@dataclass(frozen=True)
class Header:
    org: str
    doc: str
    author: str
    seq: int
    epoch: int
    deps: dict[str, dict[str, int]]
    nonce: bytes
    compressed: bool
    #: The policy version the author held: its sync-after date is the one this entry is judged by.
    policy: int
    #: The read scope whose key sealed the entry (`scope_of(doc)`); None: the epoch's organisation-wide key.
    scope: str | None = None

    def encode(self) -> bytes:
        return dumps({"org": self.org, "doc": self.doc, "author": self.author, "seq": self.seq,
                      "epoch": self.epoch, "deps": self.deps, "nonce": b64(self.nonce),
                      "z": int(self.compressed), "pv": self.policy,
                      **({"scope": self.scope} if self.scope is not None else {})}).encode()


class Keys(Protocol):
    """What opening an entry needs to know: members, revocations and epoch keys."""

    org: str

    def author(self, node: str) -> Member: ...

    def cutoff(self, node: str, doc: str) -> int | None: ...

    def epoch_key(self, epoch: int) -> bytes: ...

    def scope_key(self, scope: str, epoch: int) -> bytes: ...


#: An entry cut into header (parsed), signed body, ciphertext and signature: a receiver that read the
#: header (to deduplicate) opens this instead of the bytes, without parsing the header again.
Framed = tuple[Header, bytes, bytes, bytes]


#: zlib's fastest family of levels (1-3): a month of vouchers packs to 15% of its update instead of 13%
#: at level 6, in under half the time, which every voucher posted paid.
COMPRESSION = 3


def seal(change: Change, org: str, epoch: int, key: bytes, signer: Ed25519PrivateKey, policy: int = 1,
         scope: str | None = None) -> bytes:
    """`scope`: the read scope whose key `key` is (None for an epoch's organisation-wide key)."""
    packed = zlib.compress(change.update, COMPRESSION)
    compressed = len(packed) < len(change.update)
    header = Header(org, change.doc, change.author, change.seq, epoch, change.deps, os.urandom(12), compressed,
                    policy, scope)
    header_bytes = header.encode()
    ciphertext = ChaCha20Poly1305(key).encrypt(header.nonce, packed if compressed else change.update, header_bytes)
    body = MAGIC + struct.pack(">H", len(header_bytes)) + header_bytes + struct.pack(">I", len(ciphertext)) + ciphertext
    return body + signer.sign(body)


def peek(blob: bytes) -> Header:
    """Parse the clear header (no checks of signature or ciphertext): for routing and sync vectors."""
    header, _body, _ct, _sig = frame(blob)
    return header


def check_signature(blob: bytes | Framed, keys: Keys) -> Header:
    """Everything but decryption: organisation, author's certificate, signature, revocation.
    What a relay, which holds no epoch key, checks before storing an entry."""
    return _checked(blob if isinstance(blob, tuple) else frame(blob), keys)[0]


def _checked(parts: Framed, keys: Keys) -> Framed:
    header, body, _ciphertext, signature = parts
    if header.org != keys.org:
        raise EntryError("entry belongs to another organisation")
    try:
        author = keys.author(header.author)
    except UnknownMember as exc:
        raise EntryError(str(exc), retryable=True) from None
    except P2PSyncError as exc:
        raise EntryError(str(exc)) from None
    try:
        author.signing.verify(signature, body)
    except InvalidSignature:
        raise EntryError("signature does not verify against the author's certificate") from None
    cutoff = keys.cutoff(header.author, header.doc)
    if cutoff is not None and header.seq > cutoff:
        raise EntryError(f"author {header.author[:16]} is revoked; entries after sequence {cutoff} are refused")
    return parts


def open_entry(blob: bytes | Framed, keys: Keys) -> Change:
    """Verify an entry (as sent, or as `frame` cut it) and return its change; raises `EntryError`
    with the precise reason."""
    header, body, ciphertext, _signature = _checked(blob if isinstance(blob, tuple) else frame(blob), keys)
    try:
        key = keys.epoch_key(header.epoch) if header.scope is None else keys.scope_key(header.scope, header.epoch)
    except EntryError:
        raise
    except P2PSyncError as exc:
        raise EntryError(str(exc)) from None
    try:
        plain = ChaCha20Poly1305(key).decrypt(header.nonce, ciphertext, _header_bytes(body))
    except InvalidTag:
        raise EntryError("ciphertext fails authentication (tampered, or sealed with another key)") from None
    if header.compressed:
        plain = _inflate(plain)
    return Change(header.doc, header.author, header.seq, plain, header.deps)


def _inflate(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_UPDATE)
    except zlib.error:
        raise EntryError("compressed update is corrupt") from None
    if inflater.unconsumed_tail:
        raise EntryError("update is larger than allowed")
    return out


def _header_bytes(body: bytes) -> bytes:
    (length,) = struct.unpack_from(">H", body, len(MAGIC))
    return body[len(MAGIC) + 2: len(MAGIC) + 2 + length]


def frame(blob: bytes) -> Framed:
    """Check an entry's framing and parse its header (no signature or ciphertext checks)."""
    if not isinstance(blob, (bytes, bytearray)) or len(blob) < len(MAGIC) + 6 + SIGNATURE_BYTES:
        raise EntryError("entry is truncated")
    blob = bytes(blob)
    if blob[:4] != MAGIC:
        raise EntryError("not a p2psync entry (bad magic)")
    (header_len,) = struct.unpack_from(">H", blob, 4)
    if header_len > MAX_HEADER:
        raise EntryError("entry header is too large")
    at = 6 + header_len
    if len(blob) < at + 4 + SIGNATURE_BYTES:
        raise EntryError("entry is truncated")
    (ct_len,) = struct.unpack_from(">I", blob, at)
    if ct_len > MAX_CIPHERTEXT:
        raise EntryError("entry ciphertext is too large")
    end = at + 4 + ct_len
    if len(blob) != end + SIGNATURE_BYTES:
        raise EntryError("entry length does not match its framing")
    header = _parse_header(blob[6:at])
    return header, blob[:end], blob[at + 4:end], blob[end:]


def _parse_header(raw: bytes) -> Header:
    try:
        data = loads(raw)
        header = Header(
            org=_text(data["org"]), doc=_text(data["doc"]), author=_text(data["author"]),
            seq=_positive(data["seq"]), epoch=_positive(data["epoch"]),
            deps=check_deps(data["deps"]), nonce=unb64(_text(data["nonce"])),
            compressed=data["z"] in (1, True), policy=_positive(data["pv"]),
            scope=None if "scope" not in data else _text(data["scope"]),
        )
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise EntryError("entry header is malformed") from None
    except P2PSyncError as exc:
        raise EntryError(f"entry header is malformed: {exc}") from None
    if len(header.nonce) != 12:
        raise EntryError("entry nonce has the wrong length")
    try:
        parse_doc_name(header.doc)
    except P2PSyncError as exc:
        raise EntryError(str(exc)) from None
    if header.scope is not None and header.scope != scope_of(header.doc):
        raise EntryError(f"entry of {header.doc} names the key of scope {header.scope[:40]!r}, not its own")
    return header


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise TypeError("expected short text")
    return value


def _positive(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise TypeError("expected a positive integer")
    return value
