"""The node's receive path (`Node.receive`, `node.inbox`) fed batches of entries: real ones, mutated
ones and garbage. It never raises, applies nothing it cannot verify, and leaves the books exactly as
they were: every entry it does not hold already is refused into the quarantine with a reason."""

from __future__ import annotations

from fuzz.common import FRAME_SEPARATOR, world


def check(data: bytes) -> None:
    w = world()
    blobs = [part for part in data.split(FRAME_SEPARATOR) if part]
    before = w.fingerprint()
    result = w.head.receive(blobs)
    assert result.applied == 0 and result.waiting == 0, "an entry nobody sealed was taken"
    assert result.duplicates + len(result.quarantined) == len(blobs)
    assert all(result.quarantined)
    assert w.fingerprint() == before


def seeds() -> list[bytes]:
    w = world()
    return [FRAME_SEPARATOR.join(w.entries[:3]), w.entries[-1], FRAME_SEPARATOR.join([w.entries[0], b"P2E1"])]
