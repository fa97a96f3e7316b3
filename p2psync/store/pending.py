"""Received entries that wait for what they depend on (the `pending` table).

Asked about on every received entry, so the statements go straight to the session's SQLite
connection, inside its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from p2psync.books.change import Change
from p2psync.canonical import utc_now
from p2psync.deps import decode_deps, encode_deps
from p2psync.sqlite import raw_connection


@dataclass(frozen=True)
class Parked:
    id: int
    change: Change
    envelope: bytes
    policy: int


def is_parked(session: Session, doc: str, author: str, seq: int) -> bool:
    return raw_connection(session).execute(
        "SELECT 1 FROM pending WHERE doc = ? AND author = ? AND seq = ?", (doc, author, seq)).fetchone() is not None


def parked(session: Session) -> list[Parked]:
    rows = raw_connection(session).execute(
        'SELECT id, doc, author, seq, "update", deps, envelope, policy FROM pending')
    return [Parked(row_id, Change(doc, author, seq, update, decode_deps(deps)), envelope or b"", policy)
            for row_id, doc, author, seq, update, deps, envelope, policy in rows]


def park(session: Session, change: Change, envelope: bytes, policy: int) -> None:
    raw_connection(session).execute(
        'INSERT INTO pending (doc, author, seq, deps, "update", envelope, policy, received_at) '
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (change.doc, change.author, change.seq, encode_deps(change.deps), change.update, envelope, policy, utc_now()))


def unpark(session: Session, row_id: int) -> None:
    raw_connection(session).execute("DELETE FROM pending WHERE id = ?", (row_id,))


def count(session: Session) -> int:
    (value,) = raw_connection(session).execute("SELECT count(*) FROM pending").fetchone()
    return int(value)
