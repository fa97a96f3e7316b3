"""Materialized tables: the one mechanism that turns document changes, local or received, into the
rows the reports query."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pycrdt import Doc
from sqlalchemy import delete, insert
from sqlmodel import Session, select

from p2psync.books import schema
from p2psync.books.groups import group_key
from p2psync.books.model import Revision, decode_revision, number_series
from p2psync.books.resolve import resolve
from p2psync.canonical import dumps
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


def masters(session: Session, doc: Doc) -> None:
    """Rebuild the masters tables from the masters document (small, and rarely changed)."""
    conn = session.connection()
    for table in (OfficeRow, GroupRow, LedgerRow, OpeningRow):
        conn.execute(delete(table))
    conn.execute(delete(ConflictRow).where(ConflictRow.kind.in_(("ledger", "group"))))  # type: ignore[attr-defined]
    _insert(session, OfficeRow, [
        {"code": o.code, "name": o.name, "role": o.role} for o in schema.read_offices(doc).values()
    ])
    chart = schema.read_chart(doc)
    tree = chart.groups
    _insert(session, GroupRow, [
        {"key": g.key, "name": g.name, "parent": g.parent, "nature": g.nature.value,
         "primary": (tree.primary(g.name) or g).name, "direct": tree.is_direct(g.name),
         "predefined": g.predefined}
        for g in tree.all()
    ])
    _insert(session, LedgerRow, [
        {"key": key, "name": led.name, "group_key": group_key(led.group), "office": led.office,
         "created_at": led.at}
        for key, led in chart.ledgers.items()
    ])
    _insert(session, OpeningRow, [
        {"ledger_key": group_key(o.ledger), "office": o.office, "paise": o.paise}
        for o in schema.read_openings(doc)
    ])
    conflicts = []
    for kind, defs in (("ledger", schema.read_ledger_defs(doc)), ("group", schema.read_group_defs(doc))):
        for key, records in schema.effective(defs).items():
            winner = records[0]
            for loser in records[1:]:
                differs = (getattr(loser, "group", None), getattr(loser, "parent", None)) != (
                    getattr(winner, "group", None), getattr(winner, "parent", None))
                if differs:
                    conflicts.append({
                        "kind": kind, "subject": key, "winner": f"{winner.name}@{winner.office}",
                        "loser": f"{loser.name}@{loser.office}",
                        "detail": dumps({"winner": vars(winner), "loser": vars(loser)}),
                    })
    _insert(session, ConflictRow, conflicts)


def vouchers(session: Session, doc_name: str, doc: Doc, rev_ids: Iterable[str]) -> None:
    """Record new revisions and re-resolve every voucher they touch."""
    new = [schema.read_revision(doc, rev_id) for rev_id in rev_ids]
    if not new:
        return
    known = _existing_ids(session, [rev.id for rev in new])
    fresh = [rev for rev in new if rev.id not in known]
    _insert(session, RevisionRow, [
        {"id": rev.id, "number": rev.number, "doc": doc_name, "body": schema.root(doc, schema.REVISIONS)[rev.id]}
        for rev in fresh
    ])
    numbers = sorted({rev.number for rev in fresh})
    seen = _existing_numbers(session, numbers)
    by_number: dict[str, list[Revision]] = defaultdict(list)
    for rev in fresh:  # a number seen for the first time: its revisions are exactly these
        if rev.number not in seen:
            by_number[rev.number].append(rev)
    for chunk in _chunks(sorted(seen)):
        for row in session.exec(select(RevisionRow).where(RevisionRow.number.in_(chunk))):  # type: ignore[attr-defined]
            by_number[row.number].append(decode_revision(row.body))
    _write_vouchers(session, doc_name, by_number, replacing=seen)


def _write_vouchers(session: Session, doc_name: str, by_number: dict[str, list[Revision]],
                    replacing: set[str]) -> None:
    """Write the rows of each voucher, first removing the old rows of those in `replacing`."""
    numbers = sorted(by_number)
    conn = session.connection()
    for chunk in _chunks(sorted(replacing)):
        conn.execute(delete(LineRow).where(LineRow.number.in_(chunk)))  # type: ignore[attr-defined]
        conn.execute(delete(VoucherRow).where(VoucherRow.number.in_(chunk)))  # type: ignore[attr-defined]
        conn.execute(delete(ConflictRow).where(
            ConflictRow.kind == "voucher", ConflictRow.subject.in_(chunk)))  # type: ignore[attr-defined]
    voucher_rows, line_rows, conflict_rows = [], [], []
    for number in numbers:
        state = resolve(by_number[number])
        cur = state.current
        content = cur.content
        voucher_rows.append({
            "number": number, "doc": doc_name, "office": cur.office, "type": content.type.value,
            "date": content.date.isoformat(), "narration": content.narration,
            "amount": sum(ln.paise for ln in content.lines if ln.side.value == "Dr"),
            "cancelled": cur.cancelled, "reason": cur.reason, "current": cur.id,
            "revisions": len(state.revisions), "conflicts": len(state.conflicts),
            "series": number_series(number)[0], "seq": number_series(number)[1],
        })
        if not cur.cancelled:
            line_rows.extend(
                {"number": number, "idx": i, "office": cur.office, "date": content.date.isoformat(),
                 "ledger_key": group_key(ln.ledger), "paise": ln.signed}
                for i, ln in enumerate(content.lines)
            )
        conflict_rows.extend(
            {"kind": "voucher", "subject": number, "winner": cur.id, "loser": lost.id,
             "detail": dumps({"winner_at": cur.at, "loser_at": lost.at, "loser_action": lost.action.value,
                              "loser_author": lost.author})}
            for lost in state.conflicts
        )
    _insert(session, VoucherRow, voucher_rows)
    _insert(session, LineRow, line_rows)
    _insert(session, ConflictRow, conflict_rows)


#: The report tables: derived from the documents, so they can be dropped and rebuilt at any time.
TABLES = (OfficeRow, GroupRow, LedgerRow, OpeningRow, RevisionRow, VoucherRow, LineRow, ConflictRow)


def _existing_numbers(session: Session, numbers: list[str]) -> set[str]:
    """Numbers already materialized: vouchers an amendment or a late revision re-resolves."""
    found: set[str] = set()
    for chunk in _chunks(numbers):
        found.update(session.exec(select(VoucherRow.number).where(VoucherRow.number.in_(chunk))))  # type: ignore[attr-defined]
    return found


def _existing_ids(session: Session, ids: list[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(ids):
        found.update(session.exec(select(RevisionRow.id).where(RevisionRow.id.in_(chunk))))  # type: ignore[attr-defined]
    return found


def _insert(session: Session, table: type, rows: list[dict]) -> None:
    if rows:
        session.connection().execute(insert(table), rows)


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start:start + _CHUNK]
