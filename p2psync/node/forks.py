"""Equivocation: an author that signed two different entries for one position of its chain.

Yjs cannot hold both (they write the same client's same clocks), so every office keeps the same one:
the entry of lower SHA-256. An office that applied the other drops it, and what its author built on
it, into the quarantine, rebuilds its books from the log, and applies the one kept. Links find forks
by comparing chain heads (`p2psync.store.log.heads`), so two offices holding different entries learn
it as soon as they meet, directly or through a relay.
"""

from __future__ import annotations

import hashlib
import logging
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from p2psync.canonical import utc_now
from p2psync.errors import P2PSyncError
from p2psync.sqlite import raw_connection
from p2psync.store.tables import Equivocation

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)

LOST = "equivocation: its author signed another entry {seq} for this document; every office keeps the one of lower hash"


def wins(candidate: bytes, held: bytes) -> bool:
    """Whether `candidate` is the entry every office keeps of the two (the lower SHA-256)."""
    return hashlib.sha256(candidate).digest() < hashlib.sha256(held).digest()


def record(session: Session, doc: str, author: str, seq: int, one: bytes, other: bytes) -> None:
    """Keep both entries as the proof, once per position."""
    if session.get(Equivocation, (doc, author, seq)) is not None:
        return
    kept, lost = (one, other) if wins(one, other) else (other, one)
    logger.warning("author %s signed two different entries %s/%d: equivocation", author[:16], doc, seq)
    session.add(Equivocation(doc=doc, author=author, seq=seq, found_at=utc_now(), kept=kept, lost=lost))
    session.flush()


def drop_from(session: Session, doc: str, author: str, seq: int) -> list[tuple[int, bytes]]:
    """Take the author's entries at and after `seq` out of the log; returns (seq, entry) of each, for
    the quarantine. The books must then be rebuilt from the log."""
    connection = raw_connection(session)
    rows = connection.execute("SELECT seq, envelope FROM entry WHERE doc = ? AND author = ? AND seq >= ? "
                              "ORDER BY seq", (doc, author, seq)).fetchall()
    connection.execute("DELETE FROM entry WHERE doc = ? AND author = ? AND seq >= ?", (doc, author, seq))
    return [(s, envelope) for s, envelope in rows if envelope is not None]


def found(node: Node) -> list[dict[str, object]]:
    """The equivocations this office has seen, for `status`: who, where, and when it was found."""
    with node.db.read() as session:
        rows = session.exec(select(Equivocation).order_by(Equivocation.found_at)).all()
    out = []
    for row in rows:
        try:
            office = node.trust.author(row.author).office
        except P2PSyncError:  # an author the policy does not name is still shown by its id
            office = "?"
        out.append({"author": row.author, "office": office, "document": row.doc, "seq": row.seq,
                    "found_at": row.found_at})
    return out
