"""The sync conversation (`protocol.sync.SyncConnection`) fed any sequence of frames, in any state.

Refused input raises `ProtocolError` only; every event it yields holds only values of the types it
declares, text that can be stored and sent again, and batch ids it can acknowledge."""

from __future__ import annotations

from fuzz.common import frames, join_frames, world
from p2psync.protocol.sync import (
    Ack,
    EnrollForward,
    EnrollReply,
    Entries,
    Hello,
    PolicyOffer,
    ProtocolError,
    Refused,
    SyncConnection,
)


def check(data: bytes) -> None:
    conn = SyncConnection()
    if data[:1] == b"\x01":  # start mid-conversation: a batch of ours awaits its acknowledgement
        conn.receive(conn.hello("peer", "org", "branch", 1, {}))
        conn.entries([b"x"])
    for frame in frames(data[1:]):
        try:
            event = conn.receive(frame)
        except ProtocolError as exc:
            assert str(exc)
            return
        _check_event(event, conn)


def _check_event(event: object, conn: SyncConnection) -> None:
    if isinstance(event, Hello):
        assert conn.peer is event
        for text in (event.node, event.org, event.role):
            assert isinstance(text, str) and len(text) <= 128
            text.encode()
        _check_vectors(event.vectors)
    elif isinstance(event, Entries):
        assert all(isinstance(blob, bytes) for blob in event.blobs) and 0 <= event.batch < 2**32
    elif isinstance(event, Ack):
        assert event.batch not in conn.in_flight
        _check_vectors(event.vectors)
    elif isinstance(event, Refused):
        assert len(event.reason) <= 500
        event.reason.encode()
    elif isinstance(event, (EnrollForward, EnrollReply)):
        assert event.ticket >= 0
    elif isinstance(event, PolicyOffer):
        assert isinstance(event.blob, bytes)


def _check_vectors(vectors: dict[str, dict[str, int]]) -> None:
    for doc, vector in vectors.items():
        doc.encode()
        for author, seq in vector.items():
            author.encode()
            assert type(seq) is int and seq > 0


def seeds() -> list[bytes]:
    w = world()
    us = SyncConnection()
    hello = us.hello(w.head.trust.node_id, w.org, "head", 3, w.head.vectors())
    batch = us.entries(list(w.entries[:3]))
    talk = [hello, us.policy(w.policy), batch, us.ack(1, {"masters": {"ab": 2}}), us.caught_up(),
            us.enroll_forward(1, w.enroll_request), us.enroll_reply(1, w.enroll_reply), us.refuse("bye")]
    return [b"\x00" + join_frames(talk), b"\x01" + join_frames(talk[1:]), b"\x00" + join_frames([batch, hello])]
