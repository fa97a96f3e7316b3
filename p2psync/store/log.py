"""The entry log: append-only, the source of truth from which every other table can be rebuilt.

Its statements run on every post and every received entry, so they go straight to the session's
SQLite connection (inside the session's transaction): through SQLAlchemy each cost some 130 µs of
Python against a few µs for SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlmodel import Session

from p2psync.books.change import Change
from p2psync.canonical import utc_now
from p2psync.chain import entry_hash
from p2psync.chain import link as link_chain
from p2psync.deps import Deps, decode_deps, encode_deps
from p2psync.sqlite import raw_connection

#: The update logged for an entry this office carries unread (it holds no key of its read scope): the
#: entry is kept, acknowledged, chained and passed on, but never applied. An applied entry's update is
#: never empty (a change that changes nothing makes no entry).
CARRIED = b""
#: SQL: the entry row is one this office applied (not one it carries unread).
APPLIED = 'length("update") > 0'


def append(session: Session, change: Change, *, local: bool, envelope: bytes | None = None, clock: int = -1,
           policy: int = 0, vouchers: int = 0) -> int:
    """Log a change; returns its entry id (the log position). `vouchers`: the voucher revisions it
    carries, kept because an entry's clear header does not tell."""
    connection = raw_connection(session)
    chain = None
    if envelope is not None:
        previous = connection.execute("SELECT chain FROM entry WHERE doc = ? AND author = ? AND seq = ?",
                                      (change.doc, change.author, change.seq - 1)).fetchone()
        chain = link_chain(previous[0] if previous else None, envelope)
    cursor = connection.execute(
        'INSERT INTO entry (doc, author, seq, deps, "update", envelope, local, received_at, clock, policy, chain, '
        "vouchers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (change.doc, change.author, change.seq, encode_deps(change.deps), change.update, envelope, local, utc_now(),
         clock, policy, chain, vouchers))
    return cursor.lastrowid or 0


def heads(session: Session, docs: list[str]) -> dict[str, dict[str, tuple[int, bytes]]]:
    """Per document among `docs`, each author's highest sequence held and its chain head."""
    out: dict[str, dict[str, tuple[int, bytes]]] = {}
    connection = raw_connection(session)
    for doc in docs:
        rows = connection.execute("SELECT author, seq, chain FROM entry e WHERE doc = ? AND chain IS NOT NULL AND "
                                  "seq = (SELECT max(seq) FROM entry WHERE doc = e.doc AND author = e.author)", (doc,))
        vector = {author: (seq, chain) for author, seq, chain in rows}
        if vector:
            out[doc] = vector
    return out


def chain_at(session: Session, doc: str, author: str, seq: int) -> bytes | None:
    row = raw_connection(session).execute("SELECT chain FROM entry WHERE doc = ? AND author = ? AND seq = ?",
                                          (doc, author, seq)).fetchone()
    return row[0] if row else None


def entry_hashes(session: Session, doc: str, author: str, upto: int) -> list[bytes]:
    """SHA-256 of each of an author's sealed entries in a document, sequence 1 to `upto`: where two
    chains part is the first position where these differ."""
    return [entry_hash(envelope) for (envelope,) in raw_connection(session).execute(
        "SELECT envelope FROM entry WHERE doc = ? AND author = ? AND seq <= ? AND envelope IS NOT NULL ORDER BY seq",
        (doc, author, upto))]


def link(session: Session, doc: str, author: str, seq: int) -> tuple[int, int] | None:
    """(author's clock after it, cited policy version) of a held entry; None if none is held."""
    return raw_connection(session).execute(
        "SELECT clock, policy FROM entry WHERE doc = ? AND author = ? AND seq = ?", (doc, author, seq)).fetchone()


def set_link(session: Session, entry_id: int, clock: int, policy: int, chain: bytes | None) -> None:
    """Fill in an entry's clock, policy and chain (an upgraded home replaying its log)."""
    raw_connection(session).execute("UPDATE entry SET clock = ?, policy = ?, chain = ? WHERE id = ?",
                                    (clock, policy, chain, entry_id))


def unlinked(session: Session) -> list[str]:
    """Documents with entries whose clock an older version did not record."""
    return [doc for (doc,) in raw_connection(session).execute("SELECT DISTINCT doc FROM entry WHERE clock < 0")]


def replay(session: Session, doc: str) -> Iterator[tuple[int, str, bytes, bytes | None]]:
    """(id, author, update, envelope) of every entry of a document, in the order they were applied."""
    yield from raw_connection(session).execute(
        f'SELECT id, author, "update", envelope FROM entry WHERE doc = ? AND {APPLIED} ORDER BY id', (doc,))


def last_seq(session: Session, doc: str, author: str) -> int:
    (value,) = raw_connection(session).execute(_LAST_SEQ, (doc, author)).fetchone()
    return value or 0


def has(session: Session, doc: str, author: str, seq: int) -> bool:
    return raw_connection(session).execute(
        "SELECT 1 FROM entry WHERE doc = ? AND author = ? AND seq = ?", (doc, author, seq)).fetchone() is not None


def envelope(session: Session, doc: str, author: str, seq: int) -> bytes | None:
    """The sealed entry held for (doc, author, seq); None if none is held (or it was never sealed)."""
    row = raw_connection(session).execute(
        "SELECT envelope FROM entry WHERE doc = ? AND author = ? AND seq = ?", (doc, author, seq)).fetchone()
    return row[0] if row else None


def deps_of(session: Session, doc: str, author: str, seq: int) -> Deps:
    """The dependencies entry (doc, author, seq) declared; none if it is not held."""
    row = raw_connection(session).execute(
        "SELECT deps FROM entry WHERE doc = ? AND author = ? AND seq = ?", (doc, author, seq)).fetchone()
    return decode_deps(row[0]) if row else {}


def vector(session: Session, doc: str) -> dict[str, int]:
    """The document's version vector: each author's highest applied sequence. Asked on every post
    and receive: `GROUP BY author` read every entry of the document (a month posted one voucher at a
    time holds thousands), so this steps from author to author along the (doc, author, seq) index,
    two lookups per author."""
    connection = raw_connection(session)
    out: dict[str, int] = {}
    author = ""
    while (author := connection.execute(_NEXT_AUTHOR, (doc, author)).fetchone()[0]) is not None:
        out[author] = connection.execute(_LAST_SEQ, (doc, author)).fetchone()[0]
    return out


_NEXT_AUTHOR = "SELECT min(author) FROM entry WHERE doc = ? AND author > ?"
_LAST_SEQ = "SELECT max(seq) FROM entry WHERE doc = ? AND author = ?"


def after(session: Session, doc: str, entry_id: int) -> Iterator[tuple[int, bytes]]:
    """(id, update) of the document's entries after `entry_id`, in the order they were applied."""
    yield from raw_connection(session).execute(
        f'SELECT id, "update" FROM entry WHERE doc = ? AND id > ? AND {APPLIED} ORDER BY id', (doc, entry_id))


def updates_of(session: Session, doc: str, author: str) -> Iterator[tuple[int, bytes]]:
    """(seq, update) of an author's entries in a document, in sequence order."""
    yield from raw_connection(session).execute(
        f'SELECT seq, "update" FROM entry WHERE doc = ? AND author = ? AND {APPLIED} ORDER BY seq', (doc, author))


def shared_links(session: Session, prefix: str) -> list[tuple[str, str, int, int]]:
    """(doc, author, seq, cited policy) of the sealed entries of documents named `prefix`..., in order."""
    return raw_connection(session).execute(
        "SELECT doc, author, seq, policy FROM entry WHERE envelope IS NOT NULL AND doc >= ? AND doc < ? "
        "ORDER BY doc, author, seq", (prefix, prefix + "\uffff")).fetchall()


def update(session: Session, doc: str, author: str, seq: int) -> bytes:
    (value,) = raw_connection(session).execute(
        'SELECT "update" FROM entry WHERE doc = ? AND author = ? AND seq = ?', (doc, author, seq)).fetchone()
    return value


def drop_from(session: Session, doc: str, author: str, seq: int) -> list[tuple[int, bytes]]:
    """Take an author's entries at and after `seq` out of a document's log (the losing side of an
    equivocation, or what a newer sync-after date refuses); returns (seq, entry) of each sealed one,
    for the quarantine. The books must then be rebuilt from the log."""
    connection = raw_connection(session)
    rows = connection.execute("SELECT seq, envelope FROM entry WHERE doc = ? AND author = ? AND seq >= ? "
                              "ORDER BY seq", (doc, author, seq)).fetchall()
    connection.execute("DELETE FROM entry WHERE doc = ? AND author = ? AND seq >= ?", (doc, author, seq))
    return [(s, envelope) for s, envelope in rows if envelope is not None]


def is_carried(session: Session, doc: str, author: str, seq: int) -> bool:
    """Whether (doc, author, seq) is held unread (`CARRIED`)."""
    return raw_connection(session).execute(
        f'SELECT 1 FROM entry WHERE doc = ? AND author = ? AND seq = ? AND NOT {APPLIED}',
        (doc, author, seq)).fetchone() is not None


def carried(session: Session) -> list[tuple[str, str, int, bytes]]:
    """(doc, author, first sequence, its entry) of each chain tail held unread: everything of an
    author in a document after an entry carried unread is carried too."""
    return raw_connection(session).execute(
        f"SELECT doc, author, min(seq), envelope FROM entry WHERE NOT {APPLIED} AND envelope IS NOT NULL "
        "GROUP BY doc, author ORDER BY doc, author").fetchall()


def carried_docs(session: Session) -> list[str]:
    """Documents of which this office holds entries unread."""
    return [doc for (doc,) in raw_connection(session).execute(
        f"SELECT DISTINCT doc FROM entry WHERE NOT {APPLIED} ORDER BY doc")]


def documents(session: Session) -> list[str]:
    return [doc for (doc,) in raw_connection(session).execute("SELECT DISTINCT doc FROM entry ORDER BY doc")]


def shared_after(session: Session, entry_id: int, limit: int) -> list[tuple[int, str, str, int, int, bytes]]:
    """Sealed entries logged after `entry_id`, oldest first: (id, doc, author, seq, vouchers, entry)."""
    return raw_connection(session).execute(
        "SELECT id, doc, author, seq, vouchers, envelope FROM entry WHERE id > ? AND envelope IS NOT NULL "
        "ORDER BY id LIMIT ?", (entry_id, limit)).fetchall()


def last_shared(session: Session) -> int:
    """The newest logged entry that is sealed (local books are never sealed, never leave the node)."""
    (value,) = raw_connection(session).execute("SELECT max(id) FROM entry WHERE envelope IS NOT NULL").fetchone()
    return value or 0
