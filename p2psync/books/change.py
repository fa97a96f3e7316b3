"""A change: one author's update to one document, the unit that is logged, sealed and synced.

Its dependencies are version vectors (`p2psync.deps`), which live below every layer so that the relay
can speak them without importing the books."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from p2psync.deps import Deps


@dataclass(frozen=True)
class Change:
    doc: str
    author: str
    seq: int
    update: bytes
    deps: Deps = field(default_factory=dict)
    #: The offices other than its own that must read it (its vouchers touch their inter-office
    #: accounts): a scoped entry is sealed for them too. None for an entry sealed under an
    #: organisation-wide key, which every office reads.
    to: tuple[str, ...] | None = None

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.doc, self.author, self.seq)


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
