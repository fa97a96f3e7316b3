"""The node's receive path (`Node.receive`, `node.inbox`) fed batches of entries: real ones, mutated
ones and garbage. It never raises, applies nothing it cannot verify, and leaves the books exactly as
they were: every entry it does not hold already is refused into the quarantine with a reason.
A part starting with ``H`` is a header put into a real entry signed again by the head office's key,
so that what happens after the signature check (and before it: the clear header) is fuzzed too."""

from __future__ import annotations

from fuzz.common import FRAME_SEPARATOR, resign_entry, world
from p2psync.protocol import entry


def check(data: bytes) -> None:
    w = world()
    signing = w.head.trust.keys.signing
    blobs = [resign_entry(w.entries[-1], part[1:], signing) if part[:1] == b"H" else part
             for part in data.split(FRAME_SEPARATOR) if part]
    before = w.fingerprint()
    result = w.head.receive(blobs)
    assert result.applied == 0 and result.waiting == 0, "an entry nobody sealed was taken"
    assert result.duplicates + len(result.quarantined) == len(blobs)
    assert all(result.quarantined)
    assert w.fingerprint() == before


def seeds() -> list[bytes]:
    w = world()
    header = entry.peek(w.entries[-1]).encode()
    return [FRAME_SEPARATOR.join(w.entries[:3]), w.entries[-1], FRAME_SEPARATOR.join([w.entries[0], b"P2E1"]),
            b"H" + header, b"H" + header.replace(b'"seq":', b'"seq":1')]
