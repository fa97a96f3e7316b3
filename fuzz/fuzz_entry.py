"""Entries: framing, the clear JSON header, signature and decryption (`protocol.entry`).

Refused input raises `EntryError` only. An entry that opens must be one the organisation really
sealed: nobody without a member's key gets a change through. Inputs starting with ``H`` are a header
put into a real entry and signed again with the head office's key, so that the checks after the
signature (author, revocation, epoch key, AEAD) are fuzzed too."""

from __future__ import annotations

import json

from fuzz.common import resign_entry, world
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError


def check(data: bytes) -> None:
    w = world()
    blob = resign_entry(w.entries[-1], data[1:], w.head.trust.keys.signing) if data[:1] == b"H" else data
    try:
        header = entry.peek(blob)
        assert entry.check_signature(blob, w.head.trust) == header
        change = entry.open_entry(blob, w.head.trust)
    except EntryError as exc:
        assert str(exc), "an entry refusal needs a reason"
        return
    assert blob in w.entries, "an entry nobody sealed was opened"
    assert (change.doc, change.author, change.seq) == (header.doc, header.author, header.seq)
    assert entry.Header.encode(header) in blob  # the header parsed is the one signed


def seeds() -> list[bytes]:
    w = world()
    header = json.loads(entry.peek(w.entries[-1]).encode())
    variants = [{**header, "seq": 2**40}, {**header, "epoch": 9}, {**header, "author": "0" * 32},
                {**header, "doc": "vouchers/HO/2026-13"}, {**header, "z": 1}, {**header, "deps": {"masters": {}}}]
    return [*w.entries[:6], *(b"H" + json.dumps(v).encode() for v in variants)]
