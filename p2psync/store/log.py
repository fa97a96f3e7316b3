"""The entry log: append-only, the source of truth from which every other table can be rebuilt."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import func
from sqlmodel import Session, select

from p2psync.books.change import Change, encode_deps
from p2psync.canonical import utc_now
from p2psync.store.tables import Entry


def append(session: Session, change: Change, *, local: bool, envelope: bytes | None = None) -> Entry:
    row = Entry(
        doc=change.doc,
        author=change.author,
        seq=change.seq,
        deps=encode_deps(change.deps),
        update=change.update,
        envelope=envelope,
        local=local,
        received_at=utc_now(),
    )
    session.add(row)
    session.flush()
    return row


def last_seq(session: Session, doc: str, author: str) -> int:
    value = session.exec(
        select(func.max(Entry.seq)).where(Entry.doc == doc, Entry.author == author)
    ).one()
    return value or 0


def has(session: Session, doc: str, author: str, seq: int) -> bool:
    return session.exec(
        select(Entry.id).where(Entry.doc == doc, Entry.author == author, Entry.seq == seq)
    ).first() is not None


def vector(session: Session, doc: str) -> dict[str, int]:
    """The document's version vector: each author's highest applied sequence."""
    rows = session.exec(
        select(Entry.author, func.max(Entry.seq)).where(Entry.doc == doc).group_by(Entry.author)
    ).all()
    return {author: seq for author, seq in rows}


def after(session: Session, doc: str, entry_id: int) -> Iterator[Entry]:
    """The document's entries after `entry_id`, in the order they were applied."""
    yield from session.exec(
        select(Entry).where(Entry.doc == doc, Entry.id > entry_id).order_by(Entry.id)
    )


def documents(session: Session) -> list[str]:
    return list(session.exec(select(Entry.doc).distinct().order_by(Entry.doc)))
