"""The quarantine: received entries that were refused, each kept once with its reason.

Bounded per author, so that no member can fill a disk by signing entries that are refused: past
`MAX_ROWS` rows or `MAX_BYTES` of entries, further refusals are only counted, in one summary row.
"""

from __future__ import annotations

import hashlib
import logging

from sqlmodel import Session

from p2psync.canonical import utc_now
from p2psync.sqlite import raw_connection
from p2psync.store.tables import Quarantine

logger = logging.getLogger(__name__)

#: What the quarantine keeps of one author (by the author its header names, "?" for unreadable
#: entries): past either bound, refused entries are only counted, in one summary row per author.
MAX_ROWS = 1000
MAX_BYTES = 16 * 1024 * 1024


def keep(session: Session, blob: bytes, doc: str, author: str, seq: int, reason: str,
         retryable: bool = False) -> None:
    """Keep a refused entry with its reason: once, however often it is sent again, and within the
    author's bounds."""
    digest = hashlib.sha256(blob).hexdigest()
    connection = raw_connection(session)
    if connection.execute("SELECT 1 FROM quarantine WHERE digest = ?", (digest,)).fetchone():
        return
    logger.warning("quarantined entry %s/%s/%s: %s", doc, author[:16], seq, reason)
    author = author[:64]
    rows, size = connection.execute("SELECT count(*), coalesce(sum(length(envelope)), 0) FROM quarantine "
                                    "WHERE author = ? AND seq > 0", (author,)).fetchone()
    if rows >= MAX_ROWS or size + len(blob) > MAX_BYTES:
        _count_dropped(session, author)
        return
    session.add(Quarantine(received_at=utc_now(), doc=doc[:200], author=author, seq=seq, reason=reason[:500],
                           envelope=blob, retryable=retryable, digest=digest))
    session.flush()


def _count_dropped(session: Session, author: str) -> None:
    """One summary row per author counts the refused entries past its bounds (kept without envelope)."""
    connection = raw_connection(session)
    updated = connection.execute("UPDATE quarantine SET count = count + 1, received_at = ? WHERE author = ? AND "
                                 "seq = 0 AND digest IS NULL", (utc_now(), author)).rowcount
    if not updated:
        session.add(Quarantine(received_at=utc_now(), doc="*", author=author, seq=0, envelope=b"",
                               reason="further refused entries of this author not kept: its quarantine is full"))
        session.flush()
