"""The sync conversation, without I/O: the same between two nodes and between a node and a relay.

Each side opens with ``hello`` (who it is, its policy version and, per document, the highest sequence
it holds from each author). Then each streams what the other lacks, oldest first, in numbered
batches that the receiver acknowledges once they are durable; at most `window` batches are in flight
(backpressure). After its backlog a side says ``caught-up`` and from then on pushes new entries as
they appear. Duplicates are harmless (entries are idempotent), so a conversation can be cut at any
point and simply started again.

Frames: control messages are JSON text frames; entry batches are binary frames::

    0x01 | u32 batch id | (u32 length | entry)*
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from p2psync.canonical import dumps, loads
from p2psync.deps import Deps, check_deps
from p2psync.errors import P2PSyncError
from p2psync.trust.keys import b64, unb64

VERSION = 1
BATCH_FRAME = 0x01
MAX_FRAME = 16 * 1024 * 1024
MAX_ENTRIES_PER_BATCH = 10_000
DEFAULT_WINDOW = 4


class ProtocolError(P2PSyncError):
    """The peer broke the conversation; the link is closed with this reason."""


#: Per document, per author: (highest sequence held, chain head there).
Heads = dict[str, dict[str, tuple[int, bytes]]]
#: The most entry hashes one `fork` message carries.
MAX_FORK_HASHES = 200_000


@dataclass(frozen=True)
class Hello:
    node: str
    org: str
    role: str
    policy_version: int
    vectors: Deps
    #: Chain heads (absent from peers of older versions, and from relays).
    heads: Heads = field(default_factory=dict)


@dataclass(frozen=True)
class Fork:
    """The peer's chain of one author in one document differs from ours: its entries' SHA-256, from
    sequence 1 on, to find where the two part. `reply` when it answers ours (not to be answered)."""

    doc: str
    author: str
    hashes: list[bytes]
    reply: bool = False


@dataclass(frozen=True)
class PolicyOffer:
    blob: bytes


@dataclass(frozen=True)
class Entries:
    batch: int
    blobs: list[bytes]


@dataclass(frozen=True)
class Ack:
    batch: int
    vectors: Deps
    #: How many entries the acknowledged batch held (what the peer now holds durably).
    entries: int = 0


@dataclass(frozen=True)
class CaughtUp:
    pass


@dataclass(frozen=True)
class Refused:
    reason: str
    #: The signed policy that explains a refusal (the one that revokes the refused node), so that a
    #: node turned away learns why even when it never gets to a conversation.
    policy: bytes | None = None


@dataclass(frozen=True)
class EnrollForward:
    """A relay passes a branch's enrollment request to its head office."""

    ticket: int
    request: bytes


@dataclass(frozen=True)
class EnrollReply:
    """The head office's answer to a forwarded enrollment request."""

    ticket: int
    reply: bytes


Event = Hello | PolicyOffer | Entries | Ack | CaughtUp | Refused | EnrollForward | EnrollReply | Fork


@dataclass
class SyncConnection:
    """One side of one conversation: parses what arrives, frames what leaves, tracks the window."""

    window: int = DEFAULT_WINDOW
    peer: Hello | None = None
    in_flight: set[int] = field(default_factory=set)
    #: Entries the peer acknowledged as durably held, over the whole conversation.
    acknowledged: int = 0
    _next_batch: int = 1
    _sizes: dict[int, int] = field(default_factory=dict)  # entries of each batch in flight
    #: What the peer knows we hold: our hello, the entries it sent us or we sent it, our acks.
    _told: Deps = field(default_factory=dict)
    #: The chains (document, author) whose hashes we sent and whose answer is not settled yet: an
    #: exchange that ended before then would not know which side of an equivocation is kept.
    forks_asked: set[tuple[str, str]] = field(default_factory=set)

    # ------------------------------------------------------------ outgoing

    def hello(self, node: str, org: str, role: str, policy_version: int, vectors: Deps,
              heads: Heads | None = None) -> str:
        self._told = {doc: dict(vector) for doc, vector in vectors.items()}
        message: dict[str, Any] = {"type": "hello", "v": VERSION, "node": node, "org": org, "role": role,
                                   "policy": policy_version, "vectors": vectors}
        if heads:
            message["heads"] = {doc: {author: [seq, b64(head)] for author, (seq, head) in vector.items()}
                                for doc, vector in heads.items()}
        return dumps(message)

    def fork(self, doc: str, author: str, hashes: list[bytes], *, reply: bool = False) -> str:
        if not reply:
            self.forks_asked.add((doc, author))
        return dumps({"type": "fork", "doc": doc, "author": author, "hashes": [b64(h) for h in hashes],
                      "reply": reply})

    def policy(self, blob: bytes) -> str:
        return dumps({"type": "policy", "blob": blob.decode()})

    @property
    def can_send(self) -> bool:
        return len(self.in_flight) < self.window

    def entries(self, blobs: list[bytes]) -> bytes:
        if not self.can_send:
            raise ProtocolError("window full: wait for an acknowledgement")
        batch = self._next_batch
        self._next_batch += 1
        self.in_flight.add(batch)
        self._sizes[batch] = len(blobs)
        parts = [struct.pack(">BI", BATCH_FRAME, batch)]
        for blob in blobs:
            parts.append(struct.pack(">I", len(blob)))
            parts.append(blob)
        return b"".join(parts)

    def ack(self, batch: int, vectors: Deps, *, new_only: bool = False) -> str:
        """Acknowledge a batch with `vectors`; with `new_only`, only the part the peer does not know
        we hold (on a live link usually nothing: it knows we hold what it just sent)."""
        news: Deps = {}
        for doc, vector in vectors.items():
            told = self._told.get(doc, {}) if new_only else {}
            fresh = {author: seq for author, seq in vector.items() if seq > told.get(author, 0)}
            if fresh:
                news[doc] = fresh
                _raise(self._told, doc, fresh)
        return dumps({"type": "ack", "batch": batch, "vectors": news})

    def caught_up(self) -> str:
        return dumps({"type": "caught-up"})

    def enroll_forward(self, ticket: int, request: bytes) -> str:
        return dumps({"type": "enroll-forward", "ticket": ticket, "request": request.decode()})

    def enroll_reply(self, ticket: int, reply: bytes) -> str:
        return dumps({"type": "enroll-reply", "ticket": ticket, "reply": reply.decode()})

    def refuse(self, reason: str, policy: bytes | None = None) -> str:
        """Refuse the conversation; `policy` (a signed policy) is the proof when it is the reason."""
        message: dict[str, Any] = {"type": "refused", "reason": reason[:500]}
        if policy:
            message["policy"] = policy.decode()
        return dumps(message)

    def fork_settled(self, doc: str, author: str) -> None:
        """The peer's answer to our hashes of this chain was settled here."""
        self.forks_asked.discard((doc, author))

    @property
    def unacknowledged(self) -> int:
        """Entries sent that the peer has not yet acknowledged as durably held."""
        return sum(self._sizes.values())

    def peer_lacks(self, doc: str, author: str, seq: int) -> bool:
        return self.peer is None or self.peer.vectors.get(doc, {}).get(author, 0) < seq

    def note_peer_has(self, doc: str, author: str, seq: int) -> None:
        """Record that the peer holds an entry sent to it or received from it (so it also knows that
        we hold it)."""
        if self.peer is not None:
            _raise(self.peer.vectors, doc, {author: seq})
        _raise(self._told, doc, {author: seq})

    # ------------------------------------------------------------ incoming

    def receive(self, frame: str | bytes) -> Event:
        """Parse one frame; raises `ProtocolError` if it is malformed or out of turn."""
        if isinstance(frame, (bytes, bytearray)):
            if len(frame) > MAX_FRAME:
                raise ProtocolError("frame too large")
            if self.peer is None:
                raise ProtocolError("entries before hello")
            return self._batch(bytes(frame))
        if len(frame) > MAX_FRAME:
            raise ProtocolError("frame too large")
        try:
            data = loads(frame)
        except ValueError:
            raise ProtocolError("control frame is not JSON") from None
        if not isinstance(data, dict):
            raise ProtocolError("control frame is not an object")
        kind = data.get("type")
        if kind == "refused":
            return _refused(data)
        if self.peer is None and kind != "hello":
            raise ProtocolError(f"expected hello, got {str(kind)[:20]!r}")
        try:
            return self._control(kind, data)
        except ProtocolError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, P2PSyncError):
            raise ProtocolError(f"malformed {str(kind)[:20]} frame") from None

    def _control(self, kind: Any, data: dict[str, Any]) -> Event:
        if kind == "hello":
            if self.peer is not None:
                raise ProtocolError("second hello")
            if data["v"] != VERSION:
                raise ProtocolError(f"unsupported protocol version {data['v']!r}")
            hello = Hello(_short(data["node"]), _short(data["org"]), _short(data["role"]),
                          _count(data["policy"]), _vectors(data["vectors"]), _heads(data.get("heads", {})))
            self.peer = hello
            return hello
        if kind == "policy":
            return PolicyOffer(str(data["blob"]).encode())
        if kind == "ack":
            batch = _count(data["batch"])
            if batch not in self.in_flight:
                raise ProtocolError(f"acknowledgement of unknown batch {batch}")
            self.in_flight.discard(batch)
            count = self._sizes.pop(batch, 0)
            self.acknowledged += count
            vectors = _vectors(data["vectors"])
            if self.peer is not None:
                for doc, vector in vectors.items():
                    _raise(self.peer.vectors, doc, vector)
            return Ack(batch, vectors, count)
        if kind == "caught-up":
            return CaughtUp()
        if kind == "fork":
            hashes = data["hashes"]
            if not isinstance(hashes, list) or len(hashes) > MAX_FORK_HASHES:
                raise TypeError("expected a list of hashes")
            return Fork(_short(data["doc"]), _short(data["author"]), [_digest(h) for h in hashes],
                        data.get("reply") is True)
        if kind == "enroll-forward":
            return EnrollForward(_count(data["ticket"]), _message(data["request"]))
        if kind == "enroll-reply":
            return EnrollReply(_count(data["ticket"]), _message(data["reply"]))
        raise ProtocolError(f"unknown frame type {str(kind)[:20]!r}")

    def _batch(self, frame: bytes) -> Entries:
        if len(frame) < 5 or frame[0] != BATCH_FRAME:
            raise ProtocolError("unknown binary frame")
        (batch,) = struct.unpack_from(">I", frame, 1)
        blobs = []
        at = 5
        while at < len(frame):
            if at + 4 > len(frame):
                raise ProtocolError("truncated entry batch")
            (length,) = struct.unpack_from(">I", frame, at)
            at += 4
            if at + length > len(frame):
                raise ProtocolError("truncated entry batch")
            blobs.append(frame[at:at + length])
            at += length
            if len(blobs) > MAX_ENTRIES_PER_BATCH:
                raise ProtocolError("too many entries in one batch")
        return Entries(batch, blobs)


def _refused(data: dict[str, Any]) -> Refused:
    """A refusal is read even before hello; a policy it carries that is not text is left out (the
    receiver verifies any policy before believing it)."""
    policy = data.get("policy")
    blob = policy.encode() if isinstance(policy, str) and len(policy) <= MAX_FRAME else None
    return Refused(str(data.get("reason", ""))[:500], blob)


def _raise(vectors: Deps, doc: str, vector: dict[str, int]) -> None:
    """Merge `vector` into `vectors[doc]`, keeping each author's highest sequence."""
    held = vectors.setdefault(doc, {})
    for author, seq in vector.items():
        if held.get(author, 0) < seq:
            held[author] = seq


def _short(value: Any) -> str:
    if not isinstance(value, str) or len(value) > 128:
        raise TypeError("expected short text")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise TypeError("expected a non-negative integer")
    return value


def _message(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > 1024 * 1024:
        raise TypeError("expected an enrollment message")
    return value.encode()


def _digest(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > 64:
        raise TypeError("expected a hash")
    digest = unb64(value)
    if len(digest) != 32:
        raise TypeError("expected a SHA-256")
    return digest


def _heads(value: Any) -> Heads:
    """Chain heads as the hello carries them: {document: {author: [sequence, b64 head]}}."""
    if not isinstance(value, dict) or len(value) > 1_000_000:
        raise TypeError("expected heads")
    heads: Heads = {}
    for doc, vector in value.items():
        if not isinstance(doc, str) or not isinstance(vector, dict):
            raise TypeError("expected heads")
        heads[doc] = {}
        for author, pair in vector.items():
            if not isinstance(author, str) or not isinstance(pair, list) or len(pair) != 2:
                raise TypeError("expected heads")
            heads[doc][author] = (_count(pair[0]), _digest(pair[1]))
    return heads


def _vectors(value: Any) -> Deps:
    if not isinstance(value, dict) or len(value) > 1_000_000:
        raise TypeError("expected vectors")
    return check_deps(value) if value else {}


def batches(blobs: Iterable[bytes], max_entries: int = 500, max_bytes: int = 1024 * 1024) -> Iterable[list[bytes]]:
    """Group entries into batches small enough to keep frames and acknowledgements flowing."""
    batch: list[bytes] = []
    size = 0
    for blob in blobs:
        if batch and (len(batch) >= max_entries or size + len(blob) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(blob)
        size += len(blob)
    if batch:
        yield batch
