"""Materialized tables: the one mechanism that turns document changes, local or received, into the
rows the reports query."""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from pycrdt import Doc
from sqlmodel import Session

from p2psync.books import schema
from p2psync.books.groups import group_key
from p2psync.books.model import Revision, Side, decode_revision, number_series
from p2psync.books.resolve import resolve
from p2psync.books.schema import StoredRevision
from p2psync.canonical import dumps
from p2psync.store.db import raw_connection
from p2psync.store.tables import (
    ConflictRow,
    GroupRow,
    LedgerRow,
    LineRow,
    OfficeRow,
    OpeningRow,
    RevisionRow,
    VoucherRow,
)

_CHUNK = 500
_VOUCHER_COLUMNS = ("number", "doc", "office", "type", "date", "narration", "amount", "cancelled", "reason",
                    "current", "revisions", "conflicts", "series", "seq")
_CONFLICT_COLUMNS = ("kind", "subject", "winner", "loser", "detail")


def masters(session: Session, doc: Doc) -> None:
    """Rebuild the masters tables from the masters document (small, and rarely changed)."""
    db = raw_connection(session)
    for table in (OfficeRow, GroupRow, LedgerRow, OpeningRow):
        db.execute(f"DELETE FROM {_name(table)}")
    db.execute(f"DELETE FROM {_name(ConflictRow)} WHERE kind IN ('ledger', 'group')")
    _insert(db, OfficeRow, ("code", "name", "role"),
            [(o.code, o.name, o.role) for o in schema.read_offices(doc).values()])
    chart = schema.read_chart(doc)
    tree = chart.groups
    _insert(db, GroupRow, ("key", "name", "parent", "nature", "primary", "direct", "predefined"), [
        (g.key, g.name, g.parent, g.nature.value, (tree.primary(g.name) or g).name, tree.is_direct(g.name),
         g.predefined)
        for g in tree.all()
    ])
    _insert(db, LedgerRow, ("key", "name", "group_key", "office", "created_at"), [
        (key, led.name, group_key(led.group), led.office, led.at) for key, led in chart.ledgers.items()
    ])
    _insert(db, OpeningRow, ("ledger_key", "office", "paise"),
            [(group_key(o.ledger), o.office, o.paise) for o in schema.read_openings(doc)])
    conflicts = []
    for kind, defs in (("ledger", schema.read_ledger_defs(doc)), ("group", schema.read_group_defs(doc))):
        for key, records in schema.effective(defs).items():
            winner = records[0]
            for loser in records[1:]:
                differs = (getattr(loser, "group", None), getattr(loser, "parent", None)) != (
                    getattr(winner, "group", None), getattr(winner, "parent", None))
                if differs:
                    conflicts.append((kind, key, f"{winner.name}@{winner.office}", f"{loser.name}@{loser.office}",
                                      dumps({"winner": vars(winner), "loser": vars(loser)})))
    _insert(db, ConflictRow, _CONFLICT_COLUMNS, conflicts)


def vouchers(session: Session, doc_name: str, revisions: list[StoredRevision]) -> None:
    """Record new revisions, already decoded by the caller, and re-resolve every voucher they touch.

    Rows go straight through the session's SQLite connection (same transaction): this is the hot
    path of every post, receive and first sync, where building SQLAlchemy statements per call cost
    more than the inserts themselves."""
    if not revisions:
        return
    db = raw_connection(session)
    known = _existing(db, RevisionRow, "id", [rev.id for rev, _body in revisions])
    fresh = [(rev, body) for rev, body in revisions if rev.id not in known]
    _insert(db, RevisionRow, ("id", "number", "doc", "body"),
            [(rev.id, rev.number, doc_name, body) for rev, body in fresh])
    seen = _existing(db, VoucherRow, "number", sorted({rev.number for rev, _body in fresh}))
    by_number: dict[str, list[Revision]] = defaultdict(list)
    for rev, _body in fresh:  # a number seen for the first time: its revisions are exactly these
        if rev.number not in seen:
            by_number[rev.number].append(rev)
    for chunk in _chunks(sorted(seen)):
        for number, body in db.execute(f"SELECT number, body FROM {_name(RevisionRow)} WHERE number IN "
                                       f"({_marks(chunk)})", chunk):
            by_number[number].append(decode_revision(body))
    _write_vouchers(db, doc_name, by_number, replacing=seen)


def _write_vouchers(db: sqlite3.Connection, doc_name: str, by_number: dict[str, list[Revision]],
                    replacing: set[str]) -> None:
    """Write the rows of each voucher, first removing the old rows of those in `replacing`."""
    for chunk in _chunks(sorted(replacing)):
        marks = _marks(chunk)
        db.execute(f"DELETE FROM {_name(LineRow)} WHERE number IN ({marks})", chunk)
        db.execute(f"DELETE FROM {_name(VoucherRow)} WHERE number IN ({marks})", chunk)
        db.execute(f"DELETE FROM {_name(ConflictRow)} WHERE kind = 'voucher' AND subject IN ({marks})", chunk)
    voucher_rows, line_rows, conflict_rows = [], [], []
    for number in sorted(by_number):
        state = resolve(by_number[number])
        cur = state.current
        content = cur.content
        date = content.date.isoformat()
        amount = 0
        for i, ln in enumerate(content.lines):
            if ln.side is Side.DR:
                amount += ln.paise
            if not cur.cancelled:
                line_rows.append((number, i, cur.office, date, group_key(ln.ledger), ln.signed))
        series, seq = number_series(number)
        voucher_rows.append((
            number, doc_name, cur.office, content.type.value, date, content.narration, amount, cur.cancelled,
            cur.reason, cur.id, len(state.revisions), len(state.conflicts), series, seq,
        ))
        conflict_rows.extend(
            ("voucher", number, cur.id, lost.id,
             dumps({"winner_at": cur.at, "loser_at": lost.at, "loser_action": lost.action.value,
                    "loser_author": lost.author}))
            for lost in state.conflicts
        )
    _insert(db, VoucherRow, _VOUCHER_COLUMNS, voucher_rows)
    _insert(db, LineRow, ("number", "idx", "office", "date", "ledger_key", "paise"), line_rows)
    _insert(db, ConflictRow, _CONFLICT_COLUMNS, conflict_rows)


#: The report tables: derived from the documents, so they can be dropped and rebuilt at any time.
TABLES = (OfficeRow, GroupRow, LedgerRow, OpeningRow, RevisionRow, VoucherRow, LineRow, ConflictRow)


def _existing(db: sqlite3.Connection, table: type, column: str, values: list[str]) -> set[str]:
    """Which of `values` the table already holds in `column`."""
    found: set[str] = set()
    for chunk in _chunks(values):
        found.update(value for (value,) in db.execute(
            f"SELECT {column} FROM {_name(table)} WHERE {column} IN ({_marks(chunk)})", chunk))
    return found


def _insert(db: sqlite3.Connection, table: type, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    if rows:
        names = ", ".join(f'"{c}"' for c in columns)
        db.executemany(f"INSERT INTO {_name(table)} ({names}) VALUES ({_marks(columns)})", rows)


@functools.cache
def _name(table: type) -> str:
    """SQLModel computes `__tablename__` on every access (some 80 µs per post in all)."""
    return table.__tablename__  # type: ignore[attr-defined,no-any-return]


def _marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
