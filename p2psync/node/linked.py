"""Vouchers of other offices read through a link: what this office may see of books it does not read.

A voucher of office A that touches this office's inter-office account (``@B`` at A, this office
being B) is sealed for B too (`protocol.entry`, ``to``), though B may not read A's books. B cannot
apply such an entry to A's document (it lacks the rest of it), so it carries the entry like any it
cannot read, and notes here the voucher revisions the entry's update writes: what B's inter-office
work (its counterparts, accepting, disputing, the reconciliation) reads of A's side.

What B notes is its author's signed claim, checked as far as B can: the update is decoded like any
(`books.yupdate`), every value is written under the author's own client id as a new key of the
document's revisions map, and every revision is well formed, of the document's office and numbered
in its series, by the entry's author. The rules that need A's books (the sequence of A's chain, the
masters A had seen, the period lock...) are the readers' of A's books; an entry they refuse is
still noted here. So B's view of A's side is what A signed for B, and the head office, which reads
both, shows where A's books differ from it (docs/security.md, "Links between offices").
"""

from __future__ import annotations

import logging
import sqlite3
from collections import defaultdict

from sqlmodel import Session

from p2psync.books import schema, yupdate
from p2psync.books.change import Change
from p2psync.books.interoffice import office_of
from p2psync.books.model import Revision, decode_revision
from p2psync.errors import P2PSyncError
from p2psync.sqlite import raw_connection

logger = logging.getLogger(__name__)

_TABLE = """CREATE TABLE IF NOT EXISTS linkedrevision (
    id TEXT PRIMARY KEY, number TEXT NOT NULL, doc TEXT NOT NULL, author TEXT NOT NULL, seq INTEGER NOT NULL,
    value TEXT NOT NULL)"""
_INDEX = "CREATE INDEX IF NOT EXISTS ix_linkedrevision_number ON linkedrevision (number)"


class NotLinkable(P2PSyncError):
    """A linked entry's update writes something other than its author's own new voucher revisions."""


def note(session: Session, change: Change, client: int) -> int:
    """Note the voucher revisions a linked entry writes; how many. Nothing is noted, and a warning
    logged, when the update holds anything else (`client`: its author's Yjs client id)."""
    try:
        revisions = read(change, client)
    except P2PSyncError as exc:
        logger.warning("%s seq %d of %s is sealed for this office but not noted: %s", change.doc, change.seq,
                       change.author[:16], exc)
        return 0
    db = raw_connection(session)
    db.execute(_TABLE)
    db.execute(_INDEX)
    db.executemany("INSERT OR IGNORE INTO linkedrevision (id, number, doc, author, seq, value) VALUES (?, ?, ?, ?, ?, ?)",
                   [(rev.id, rev.number, change.doc, change.author, change.seq, value) for rev, value in revisions])
    return len(revisions)


def read(change: Change, client: int) -> list[tuple[Revision, str]]:
    """The revisions a linked entry's update writes, each with its value as written."""
    office = schema.parse_doc_name(change.doc).office
    try:
        update = yupdate.decode_update(change.update)
    except yupdate.UpdateError as exc:
        raise NotLinkable(str(exc)) from None
    found = []
    for item in update.items:
        if item.client != client or item.origin is not None or item.parent != schema.REVISIONS or item.key is None:
            raise NotLinkable("the update writes outside its author's new voucher revisions")
        if item.kind != yupdate.ANY or len(item.values) != 1 or not isinstance(item.values[0], str):
            raise NotLinkable("a value of the books is one JSON string")
        rev = decode_revision(item.values[0])
        if rev.id != item.key or rev.office != office or office_of(rev.number) != office or rev.author != change.author:
            raise NotLinkable(f"revision {item.key[:30]} is not its author's, in its office's series, under its id")
        found.append((rev, item.values[0]))
    if update.deletes:
        raise NotLinkable("the update deletes items")
    return found


def revisions(session: Session, number: str) -> list[Revision]:
    """Every revision noted of another office's voucher `number` (none if no link brought one)."""
    return [decode_revision(value) for (value,) in _select(session, "SELECT value FROM linkedrevision WHERE number = ?",
                                                           (number,))]


def by_number(session: Session) -> dict[str, list[Revision]]:
    """Every noted revision, by voucher number (an office that read a voucher's books before a grant
    was taken back holds its earlier revisions in its books too: the caller merges them)."""
    found: dict[str, list[Revision]] = defaultdict(list)
    for number, value in _select(session, "SELECT number, value FROM linkedrevision"):
        found[number].append(decode_revision(value))
    return dict(found)


def _select(session: Session, sql: str, params: tuple = ()) -> list[tuple]:
    try:
        return raw_connection(session).execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # no link has brought anything yet
        raise

