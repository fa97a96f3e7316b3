"""Loading documents: the latest snapshot plus the log entries after it; a damaged snapshot is
rebuilt from the log rather than trusted."""

from __future__ import annotations

import hashlib
import logging

from pycrdt import Doc
from sqlalchemy.exc import DatabaseError
from sqlmodel import Session

from p2psync.books.schema import new_doc
from p2psync.sqlite import raw_connection
from p2psync.store import log
from p2psync.store.tables import Snapshot

logger = logging.getLogger(__name__)

#: Write a new snapshot once this many entries have been logged since the last one.
SNAPSHOT_EVERY = 64


class LoadedDoc:
    """A document in memory and the log position it reflects."""

    def __init__(self, name: str, doc: Doc, upto: int, entries: int, snapshot_entries: int) -> None:
        self.name = name
        self.doc = doc
        self.upto = upto
        self.entries = entries
        self.snapshot_entries = snapshot_entries


def checksum(state: bytes) -> str:
    return hashlib.sha256(state).hexdigest()


def load(session: Session, name: str, client_id: int | None) -> LoadedDoc:
    doc = new_doc(name, client_id)
    upto, in_snapshot = _apply_snapshot(session, name, doc)
    if upto < 0:  # damaged snapshot: start again from an empty document and the whole log
        doc = new_doc(name, client_id)
        upto, in_snapshot = 0, 0
    applied = in_snapshot
    for entry_id, update in log.after(session, name, upto):
        doc.apply_update(update)
        upto = entry_id
        applied += 1
    return LoadedDoc(name, doc, upto, applied, in_snapshot)


def _apply_snapshot(session: Session, name: str, doc: Doc) -> tuple[int, int]:
    """Apply the stored snapshot; (-1, 0) when it is damaged, (0, 0) when there is none."""
    try:
        snap = session.get(Snapshot, name)
    except DatabaseError:  # a torn page in the snapshot's value
        logger.warning("snapshot of %s cannot be read; rebuilding it from the log", name)
        return -1, 0
    if snap is None:
        return 0, 0
    if checksum(snap.state) != snap.checksum:
        logger.warning("snapshot of %s fails its checksum; rebuilding it from the log", name)
        return -1, 0
    try:
        doc.apply_update(snap.state)
    except Exception:  # pycrdt raises bare exceptions for undecodable updates
        logger.warning("snapshot of %s cannot be decoded; rebuilding it from the log", name)
        return -1, 0
    return snap.upto, snap.entries


def save_snapshot(session: Session, loaded: LoadedDoc) -> None:
    """Replace the document's snapshot without reading the old one, which may be the damaged row
    that made this document load from the log (reading its text would fail the whole write)."""
    state = loaded.doc.get_update()
    raw_connection(session).execute(
        "INSERT OR REPLACE INTO snapshot (doc, state, upto, entries, checksum) VALUES (?, ?, ?, ?, ?)",
        (loaded.name, state, loaded.upto, loaded.entries, checksum(state)))
    loaded.snapshot_entries = loaded.entries


def snapshot_due(loaded: LoadedDoc) -> bool:
    return loaded.entries - loaded.snapshot_entries >= SNAPSHOT_EVERY
