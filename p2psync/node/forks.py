"""Equivocation: an author that signed two different entries for one position of its chain.

Yjs cannot hold both (they write the same client's same clocks), so every office must keep the same
one. Which one is settled at the first position where two offices' chains of that author part: the
entry of lower SHA-256 there is kept, and an office that applied the other drops it, with what its
author built on it, into the quarantine, rebuilds its books from its log, and receives the kept
one. Links find where chains part by comparing chain heads (`p2psync.store.log.heads`) in their
hello and then the entries' hashes, so two offices holding different entries learn it as soon as
they meet.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlmodel import Session, select

from p2psync import chain
from p2psync.books import schema
from p2psync.canonical import utc_now
from p2psync.errors import P2PSyncError
from p2psync.node import quarantine
from p2psync.protocol.sync import Heads
from p2psync.store import log
from p2psync.store.tables import Equivocation

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)

HELD = ("equivocation: its author signed another entry {seq} for this document, held here; which one every office "
        "keeps is settled when offices compare chains")
LOST = ("equivocation: its author signed another entry {seq} for this document; every office keeps the one of "
        "lower hash")
#: The longest chain whose entry hashes a link exchanges to find where two chains part.
MAX_CHAIN = 200_000


def record(session: Session, doc: str, author: str, seq: int, held: bytes | None, other: bytes | None,
           other_hash: bytes | None = None) -> None:
    """Keep what proves the equivocation (both entries where this office has them), once per position."""
    if session.get(Equivocation, (doc, author, seq)) is not None:
        return
    logger.warning("author %s signed two different entries %s/%d: equivocation", author[:16], doc, seq)
    session.add(Equivocation(doc=doc, author=author, seq=seq, found_at=utc_now(), held=held, other=other,
                             other_hash=other_hash or (chain.entry_hash(other) if other else None)))
    session.flush()


def heads(node: Node) -> Heads:
    """This office's chain heads, for its hello."""
    with node.db.read() as session:
        names = [doc for doc in log.documents(session) if not schema.parse_doc_name(doc).local]
        return log.heads(session, names)


def parted(node: Node, theirs: Heads) -> list[tuple[str, str, list[bytes]]]:
    """The chains where the peer's head differs from this office's at the peer's position: (document,
    author, this office's entry hashes up to that position), to send it."""
    out = []
    with node.db.read() as session:
        for doc, vector in theirs.items():
            for author, (seq, head) in vector.items():
                mine = log.chain_at(session, doc, author, seq)
                if mine is not None and mine != head:
                    out.append((doc, author, log.entry_hashes(session, doc, author, min(seq, MAX_CHAIN))))
    return out


def settle(node: Node, doc: str, author: str, theirs: list[bytes]) -> tuple[list[bytes], bool]:
    """Given the peer's entry hashes of one chain: this office's (up to as many), and whether this
    office dropped its side (its entry where the chains part lost). Nothing happens if the chains do
    not part where both hold entries."""
    with node.db.write() as session:
        mine = log.entry_hashes(session, doc, author, min(len(theirs), MAX_CHAIN))
        at = chain.parting(mine, theirs)
        if at is None:
            return mine, False
        held = log.envelope(session, doc, author, at)
        record(session, doc, author, at, held, None, theirs[at - 1])
        if chain.kept(mine[at - 1], theirs[at - 1]):
            return mine, False
        for seq, envelope in log.drop_from(session, doc, author, at):
            quarantine.keep(session, envelope, doc, author, seq, LOST.format(seq=at))
    logger.warning("dropped the entries of %s from %s/%d on: the other side of its equivocation is kept",
                   author[:16], doc, at)
    node.store.rebuild()
    return mine, True


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
