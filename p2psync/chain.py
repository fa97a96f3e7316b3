"""Hash chains of one author's entries in one document, as every holder (office or relay) keeps them.

``H(s) = SHA-256(H(s-1) ‖ SHA-256(entry s))`` with nothing before the first entry: equal heads at one
position mean equal entries up to it, so two holders compare one hash per chain to know that they
hold the same entries, and the entries' own hashes to find where two chains part. Below every layer:
nodes and relays both use it.
"""

from __future__ import annotations

import hashlib


def entry_hash(entry: bytes) -> bytes:
    return hashlib.sha256(entry).digest()


def link(previous: bytes | None, entry: bytes) -> bytes:
    """The chain head after `entry`, given the head before it (None before the first entry)."""
    return hashlib.sha256((previous or b"") + entry_hash(entry)).digest()


def parting(mine: list[bytes], theirs: list[bytes]) -> int | None:
    """The first sequence (from 1) at which two lists of entry hashes differ, where both have one."""
    return next((n for n, (a, b) in enumerate(zip(mine, theirs, strict=False), start=1) if a != b), None)


def kept(mine: bytes, theirs: bytes) -> bool:
    """Of two entries for one position, whether ours (by its hash) is the one every holder keeps: the
    lower SHA-256."""
    return mine < theirs
