"""Entries: a change sealed for the organisation and signed by its author.

Layout (all integers big-endian)::

    "P2E1" | u16 header length | header | u32 ciphertext length | ciphertext | Ed25519 signature (64)

The header is canonical JSON: ``org, doc, author, seq, epoch, deps, nonce, z, pv`` and, for an entry
sealed under the key of its read scope, ``scope`` (the masters, or the books of the document's office;
without it the key is the epoch's organisation-wide one). The ciphertext is ChaCha20-Poly1305
(RFC 8439) under that key, with the header as associated data, of the pycrdt update
(zlib-compressed when ``z`` is 1). The signature covers everything before it, so authorship
is checked without decrypting and a relay can neither read nor alter an entry undetected.

An entry that other offices must read too (its vouchers touch their inter-office accounts) names
them in ``to``. Its content key is then a one-off key, wrapped (ChaCha20-Poly1305, the header's nonce,
the scope's name as associated data) under its own scope's key and under the key of the link to each
office named (``wrap``: scope -> wrapped key), and committed to in ``kc`` (SHA-256 of the key): every
reader, whichever wrap it opens, decrypts the same ciphertext with the same key, so an author cannot
show one office other content than another (ChaCha20-Poly1305 alone does not commit to its key).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
import zlib
from dataclasses import dataclass, field
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
from p2psync.trust.scopes import link_scope, scope_of

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


class LinkedOnly(Unreadable):
    """This node reads the entry only through a link (its vouchers touch this office's inter-office
    account): it carries the entry, whose document it cannot apply, and may read the `change`."""

    def __init__(self, reason: str, change: Change) -> None:
        super().__init__(reason)
        self.change = change


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
    #: The other offices that read it through a link, each with its wrap of the content key.
    to: tuple[str, ...] = ()
    wraps: dict[str, bytes] = field(default_factory=dict)
    commitment: bytes = b""

    def encode(self) -> bytes:
        links = {"to": list(self.to), "wrap": {s: b64(w) for s, w in self.wraps.items()},
                 "kc": b64(self.commitment)} if self.to else {}
        return dumps({"org": self.org, "doc": self.doc, "author": self.author, "seq": self.seq,
                      "epoch": self.epoch, "deps": self.deps, "nonce": b64(self.nonce),
                      "z": int(self.compressed), "pv": self.policy,
                      **({"scope": self.scope} if self.scope is not None else {}), **links}).encode()

    @property
    def link_scopes(self) -> list[str]:
        return _link_scopes(self.doc, self.to)


def _link_scopes(doc: str, to: tuple[str, ...]) -> list[str]:
    """The scopes of the links from the document's office to the offices in `to`."""
    source = doc.split("/")[1] if "/" in doc else ""
    return [link_scope(source, target) for target in to]


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
         scope: str | None = None, links: dict[str, bytes] | None = None) -> bytes:
    """`scope`: the read scope whose key `key` is (None for an epoch's organisation-wide key);
    `links`: the key of the link to each office in `change.to` (by link scope), for a scoped entry."""
    packed = zlib.compress(change.update, COMPRESSION)
    compressed = len(packed) < len(change.update)
    nonce = os.urandom(12)
    to = tuple(change.to or ()) if scope is not None else ()
    content_key, wraps, commitment = key, {}, b""
    if to:
        content_key = ChaCha20Poly1305.generate_key()
        keys = {scope: key, **{name: (links or {})[name] for name in _link_scopes(change.doc, to)}}
        wraps = {name: _wrap(wrap_key, nonce, name, content_key) for name, wrap_key in keys.items()}
        commitment = _commit(content_key)
    header = Header(org, change.doc, change.author, change.seq, epoch, change.deps, nonce, compressed,
                    policy, scope, to, wraps, commitment)
    header_bytes = header.encode()
    ciphertext = ChaCha20Poly1305(content_key).encrypt(nonce, packed if compressed else change.update, header_bytes)
    body = MAGIC + struct.pack(">H", len(header_bytes)) + header_bytes + struct.pack(">I", len(ciphertext)) + ciphertext
    return body + signer.sign(body)


def _wrap(key: bytes, nonce: bytes, scope: str, content_key: bytes) -> bytes:
    return ChaCha20Poly1305(key).encrypt(nonce, content_key, _WRAP_CONTEXT + scope.encode())


def _commit(content_key: bytes) -> bytes:
    return hashlib.sha256(_COMMIT_CONTEXT + content_key).digest()


_WRAP_CONTEXT = b"p2psync-entry-key-wrap\x00"
_COMMIT_CONTEXT = b"p2psync-entry-key-commit\x00"


def peek(blob: bytes) -> Header:
    """Parse the clear header (no checks of signature or ciphertext): for routing and sync vectors."""
    header, _body, _ct, _sig = frame(blob)
    return header


def declared_links(blob: bytes) -> tuple[str, ...] | None:
    """The offices an entry is sealed for beyond its scope's readers, as `Change.to` holds them."""
    header = peek(blob)
    return header.to if header.scope is not None else None


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
    with the precise reason, `Unreadable` when this node holds no key of it, and `LinkedOnly` (with
    the change) when it reads it only through a link."""
    header, body, ciphertext, _signature = _checked(blob if isinstance(blob, tuple) else frame(blob), keys)
    linked = False
    try:
        key = keys.epoch_key(header.epoch) if header.scope is None else keys.scope_key(header.scope, header.epoch)
        if header.to:
            key = _unwrap(header, header.scope or "", key)
    except Unreadable as exc:
        key = _linked_key(header, keys)
        if key is None:
            raise exc from None
        linked = True
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
    change = Change(header.doc, header.author, header.seq, plain, header.deps,
                    header.to if header.scope is not None else None)
    if linked:
        raise LinkedOnly(f"{header.doc} is read here only through a link: carried, its vouchers noted", change)
    return change


def _linked_key(header: Header, keys: Keys) -> bytes | None:
    """The content key through the first link this node holds the key of and that opens; None if
    none does. A wrap that fails is never a reason to refuse: the entry's readers cannot check the
    wraps for other offices, so they and this office must not judge it by them; it is carried."""
    for scope in header.link_scopes:
        try:
            return _unwrap(header, scope, keys.scope_key(scope, header.epoch))
        except EntryError:
            continue
    return None


def _unwrap(header: Header, scope: str, key: bytes) -> bytes:
    try:
        content_key = ChaCha20Poly1305(key).decrypt(header.nonce, header.wraps[scope], _WRAP_CONTEXT + scope.encode())
    except InvalidTag:
        raise EntryError(f"the content key wrapped for {scope[:40]} fails authentication") from None
    if not hmac.compare_digest(_commit(content_key), header.commitment):
        raise EntryError(f"the content key wrapped for {scope[:40]} is not the one the entry commits to")
    return content_key


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
            **_links(data),
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
    if header.to:
        _check_links(header)
    return header


def _links(data: dict) -> dict:
    """The link fields of a header, typed (`_check_links` judges them against the document)."""
    if "to" not in data:
        return {}
    wraps = data["wrap"]
    if not isinstance(data["to"], list) or not isinstance(wraps, dict) or len(wraps) > _MAX_LINKS + 1:
        raise TypeError("links are malformed")
    return {"to": tuple(_text(office) for office in data["to"]),
            "wraps": {_text(scope): unb64(_text(wrap)) for scope, wrap in wraps.items()},
            "commitment": unb64(_text(data["kc"]))}


#: More offices than any organisation links one entry to: bounds the work a header can ask for.
_MAX_LINKS = 64


def _check_links(header: Header) -> None:
    parsed = parse_doc_name(header.doc)
    if header.scope is None or parsed.office is None:
        raise EntryError(f"entry of {header.doc} names offices to read it but is not sealed per scope")
    if list(header.to) != sorted(set(header.to)) or parsed.office in header.to or len(header.to) > _MAX_LINKS:
        raise EntryError("entry names the offices that read it out of order, twice, or its own")
    if set(header.wraps) != {header.scope, *header.link_scopes}:
        raise EntryError("entry's wrapped keys are not one for its scope and one for each office it names")
    if len(header.commitment) != 32 or any(len(w) != 48 for w in header.wraps.values()):
        raise EntryError("entry's key commitment or a wrapped key has the wrong length")


def _text(value: object) -> str:
    if not isinstance(value, str) or len(value) > 256:
        raise TypeError("expected short text")
    return value


def _positive(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**62:
        raise TypeError("expected a positive integer")
    return value
