"""A change: one author's update to one document, the unit that is logged, sealed and synced."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable

from p2psync.canonical import loads
from p2psync.errors import InvalidInput

#: Version vectors: document -> author -> highest sequence number applied.
Deps = dict[str, dict[str, int]]


@dataclass(frozen=True)
class Change:
    doc: str
    author: str
    seq: int
    update: bytes
    deps: Deps = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.doc, self.author, self.seq)


def encode_deps(deps: Deps) -> str:
    return json.dumps(deps, sort_keys=True, separators=(",", ":"))


def decode_deps(text: str) -> Deps:
    try:
        data = loads(text)
    except ValueError:
        raise InvalidInput("malformed dependencies: not JSON") from None
    return check_deps(data)


def check_deps(data: object) -> Deps:
    """`data` (parsed JSON) as dependencies, if it has their shape: {document: {author: sequence}}."""
    if not isinstance(data, dict) or not all(
        isinstance(doc, str)
        and isinstance(vec, dict)
        and all(isinstance(a, str) and isinstance(s, int) and not isinstance(s, bool) and s > 0 for a, s in vec.items())
        for doc, vec in data.items()
    ):
        raise InvalidInput("malformed dependencies: expected {document: {author: sequence}}")
    return data


def unmet(change: Change, applied: Callable[[str, str], int]) -> list[tuple[str, str, int]]:
    """What `change` still waits for, given `applied(doc, author)` -> highest applied sequence.

    Its own predecessor (same author and document, ``seq - 1``) is always a dependency: sequences
    have no gaps, so nothing is applied out of an author's order.
    """
    waiting = []
    if applied(change.doc, change.author) < change.seq - 1:
        waiting.append((change.doc, change.author, change.seq - 1))
    for doc, vector in change.deps.items():
        for author, seq in vector.items():
            if applied(doc, author) < seq:
                waiting.append((doc, author, seq))
    return waiting
