"""Materialized tables: the one mechanism that turns document changes, local or received, into the
rows the reports query."""

from __future__ import annotations

import functools
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pycrdt import Doc
from sqlmodel import Session

from p2psync.books import schema
from p2psync.books.groups import group_key
from p2psync.books.model import GroupDef, LedgerDef, Revision, Side, number_series
from p2psync.books.resolve import resolve
from p2psync.books.rules import BRANCH_DIVISIONS, Chart, inter_office_name
from p2psync.canonical import dumps
from p2psync.sqlite import raw_connection
from p2psync.store.tables import (
    ConflictRow,
    GroupRow,
    LedgerMonthRow,
    LedgerRow,
    LineRow,
    OfficeLedgerRow,
    OfficeRow,
    OpeningRow,
    VoucherRow,
)

_CHUNK = 500
_VOUCHER_COLUMNS = ("number", "doc", "office", "type", "date", "narration", "amount", "cancelled", "reason",
                    "current", "revisions", "conflicts", "revision_refs", "series", "seq")
_CONFLICT_COLUMNS = ("kind", "subject", "winner", "loser", "detail")


def masters(session: Session, doc: Doc) -> None:
    """Rebuild the masters tables from the masters document (small, and rarely changed)."""
    db = raw_connection(session)
    for table in (OfficeRow, GroupRow, LedgerRow, OfficeLedgerRow, OpeningRow):
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
    ] + _inter_office_ledgers(chart))
    _insert(db, OfficeLedgerRow, ("office", "ledger_key", "group", "primary", "nature", "direct"),
            _office_classes(doc, chart))
    _insert(db, OpeningRow, ("ledger_key", "office", "paise"),
            [(group_key(o.ledger), o.office, o.paise) for o in schema.read_openings(doc)])
    conflicts = []
    for kind, defs in (("ledger", schema.read_ledger_defs(doc)), ("group", schema.read_group_defs(doc))):
        for key, records in schema.effective(defs, schema.head_offices(doc)).items():
            winner = records[0]
            for loser in records[1:]:
                differs = (getattr(loser, "group", None), getattr(loser, "parent", None)) != (
                    getattr(winner, "group", None), getattr(winner, "parent", None))
                if differs:
                    conflicts.append((kind, key, f"{winner.name}@{winner.office}", f"{loser.name}@{loser.office}",
                                      dumps({"winner": vars(winner), "loser": vars(loser)})))
    _insert(db, ConflictRow, _CONFLICT_COLUMNS, conflicts)


def _inter_office_ledgers(chart: Chart) -> list[tuple[str, str, str, str, str]]:
    """A ledger row for each office's inter-office account `@CODE` (no record makes them: the office
    list implies them). In one office's report it is that office's account with CODE; summed over
    offices, every office's account with CODE."""
    rows = []
    for code in sorted(chart.offices):
        name = inter_office_name(code)
        rows.append((group_key(name), name, group_key(BRANCH_DIVISIONS), "", ""))
    return rows


def _class_of(chart: Chart, ledger: str) -> tuple[str, str, str, bool]:
    tree, group = chart.groups, chart.groups.get(chart.group_of(ledger))
    if group is None:  # an orphan can only come from forged data (see `schema._nature_of`)
        return (chart.group_of(ledger), "", "liability", False)
    return (group.name, (tree.primary(group.name) or group).name, group.nature.value, tree.is_direct(group.name))


def _office_classes(doc: Doc, chart: Chart) -> list[tuple[Any, ...]]:
    """(office, ledger key, classification) wherever an office's books classify a ledger otherwise
    than `chart`, the organisation's default: only where offices recorded one name differently."""
    ledger_defs, group_defs = schema.read_ledger_defs(doc), schema.read_group_defs(doc)
    if not _has_duplicates(ledger_defs) and not _has_duplicates(group_defs):
        return []
    heads = schema.head_offices(doc)
    rows = []
    for office in sorted({r.office for r in [*ledger_defs, *group_defs]} - heads):
        own = schema.chart_of(group_defs, ledger_defs, heads, office)
        for key, ledger in own.ledgers.items():
            mine = _class_of(own, ledger.name)
            if mine != _class_of(chart, ledger.name):
                rows.append((office, key, *mine))
    return rows


def _has_duplicates(records: Sequence[LedgerDef | GroupDef]) -> bool:
    return len({r.key for r in records}) < len(records)


#: Reads revisions of a voucher already materialized from a document: (document name, revision ids).
Stored = Callable[[str, list[str]], list[Revision]]


def vouchers(session: Session, doc_name: str, revisions: list[Revision], stored: Stored) -> None:
    """Record new revisions, already decoded by the caller, and re-resolve every voucher they touch.

    Rows go straight through the session's SQLite connection (same transaction): this is the hot
    path of every post, receive and first sync, where building SQLAlchemy statements per call cost
    more than the inserts themselves. A voucher's row keeps where its revisions are, not the
    revisions: a revision of a voucher already held (an amendment, a cancellation) has the others
    read back from their documents with `stored`."""
    if not revisions:
        return
    db = raw_connection(session)
    by_number: dict[str, list[Revision]] = defaultdict(list)
    for rev in revisions:
        by_number[rev.number].append(rev)
    held = _held(db, sorted(by_number))
    refs: dict[str, str] = {}
    for number, text in held.items():
        known = read_refs(text)
        ids = {rev_id for _doc, rev_id in known}
        new = [rev for rev in by_number[number] if rev.id not in ids]
        if new:
            by_number[number] = new + revisions_at(known, stored)
            refs[number] = refs_text(sorted([*known, *((doc_name, rev.id) for rev in new)]))
        else:  # every one already recorded: the voucher is as it was
            del by_number[number]
    _write_vouchers(db, doc_name, by_number, refs, replacing={number for number in held if number in by_number})


def refs_text(refs: list[tuple[str, str]]) -> str:
    """(document, revision id) pairs as `VoucherRow.revision_refs` holds them (its callers sort them,
    so that every replica writes the same row): for each, the document's name (which has no space),
    a space, the length of the id, a colon and the id (which may hold any character). Cheaper to
    write than JSON, which would cost a received voucher some 2 µs."""
    return "".join([_ref(doc_name, rev_id) for doc_name, rev_id in refs])


def _ref(doc_name: str, rev_id: str) -> str:
    return f"{doc_name} {len(rev_id)}:{rev_id}"


def read_refs(text: str) -> list[tuple[str, str]]:
    """The (document, revision id) pairs of a `refs_text`."""
    refs, at = [], 0
    while at < len(text):
        space = text.index(" ", at)
        colon = text.index(":", space)
        end = colon + 1 + int(text[space + 1:colon])
        refs.append((text[at:space], text[colon + 1:end]))
        at = end
    return refs


def revisions_at(refs: list[tuple[str, str]], stored: Stored) -> list[Revision]:
    """The revisions at `refs`, read from their documents, one call of `stored` per document."""
    by_doc: dict[str, list[str]] = defaultdict(list)
    for doc_name, rev_id in refs:
        by_doc[doc_name].append(rev_id)
    return [rev for doc_name, ids in by_doc.items() for rev in stored(doc_name, ids)]


def _write_vouchers(db: sqlite3.Connection, doc_name: str, by_number: dict[str, list[Revision]],
                    refs: dict[str, str], replacing: set[str]) -> None:
    """Write the rows of each voucher, first removing the old rows of those in `replacing`. A voucher
    without `refs` is new, and its revisions are all in `doc_name`."""
    months: _Months = defaultdict(lambda: [0, 0])
    for chunk in _chunks(sorted(replacing)):
        marks = _marks(chunk)
        lines = (f"(office, date, number) IN (SELECT office, date, number FROM {_name(VoucherRow)} "
                 f"WHERE number IN ({marks}))")
        for key, month, office, debit, credit in db.execute(
                f"SELECT ledger_key, substr(date, 1, 7), office, sum(max(paise, 0)), sum(max(-paise, 0)) "
                f"FROM {_name(LineRow)} WHERE {lines} GROUP BY 1, 2, 3", chunk):
            total = months[(key, month, office)]
            total[0] -= debit
            total[1] -= credit
        db.execute(f"DELETE FROM {_name(LineRow)} WHERE {lines}", chunk)
        db.execute(f"DELETE FROM {_name(VoucherRow)} WHERE number IN ({marks})", chunk)
        db.execute(f"DELETE FROM {_name(ConflictRow)} WHERE kind = 'voucher' AND subject IN ({marks})", chunk)
    voucher_rows, line_rows, conflict_rows = [], [], []
    for number in sorted(by_number):
        revs = by_number[number]
        if len(revs) == 1:  # a new voucher, as nearly every one is: its revision is current (`resolve`)
            cur, conflicts = revs[0], []
            where = _ref(doc_name, cur.id)
        else:
            state = resolve(revs)
            cur, conflicts = state.current, state.conflicts
            where = refs.get(number) or refs_text(sorted([(doc_name, rev.id) for rev in revs]))
        content, cancelled, office = cur.content, cur.cancelled, cur.office
        date = content.date.isoformat()
        amount, month = 0, date[:7]
        for i, ln in enumerate(content.lines):
            if ln.side is Side.DR:
                amount += ln.paise
            if not cancelled:
                key = group_key(ln.ledger)
                line_rows.append((number, i, office, date, key, ln.signed))
                months[(key, month, office)][0 if ln.side is Side.DR else 1] += ln.paise
        series, seq = number_series(number)
        voucher_rows.append((number, doc_name, office, content.type.value, date, content.narration, amount,
                             cancelled, cur.reason, cur.id, len(revs), len(conflicts), where, series, seq))
        conflict_rows.extend(
            ("voucher", number, cur.id, lost.id,
             dumps({"winner_at": cur.at, "loser_at": lost.at, "loser_action": lost.action.value,
                    "loser_author": lost.author}))
            for lost in conflicts
        )
    _insert(db, VoucherRow, _VOUCHER_COLUMNS, voucher_rows)
    _insert(db, LineRow, ("number", "idx", "office", "date", "ledger_key", "paise"), line_rows)
    _add_months(db, months)
    _insert(db, ConflictRow, _CONFLICT_COLUMNS, conflict_rows)


#: Per (ledger key, month, office), debits and credits to add to `LedgerMonthRow` (negative: removed).
_Months = defaultdict[tuple[str, str, str], list[int]]


def months_from_lines(db: sqlite3.Connection) -> None:
    """Fill an empty `LedgerMonthRow` from the lines (report tables of version 5 had none)."""
    db.execute(f"INSERT INTO {_name(LedgerMonthRow)} (ledger_key, month, office, debit, credit) "
               f"SELECT ledger_key, substr(date, 1, 7), office, sum(max(paise, 0)), sum(max(-paise, 0)) "
               f"FROM {_name(LineRow)} GROUP BY 1, 2, 3")


def _add_months(db: sqlite3.Connection, months: _Months) -> None:
    """Keep `LedgerMonthRow` equal to the sums of `LineRow`, in the same transaction."""
    rows = [(*key, debit, credit) for key, (debit, credit) in months.items() if debit or credit]
    if rows:
        db.executemany(f"INSERT INTO {_name(LedgerMonthRow)} (ledger_key, month, office, debit, credit) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT (ledger_key, month, office) DO UPDATE SET "
                       "debit = debit + excluded.debit, credit = credit + excluded.credit", rows)


#: The report tables: derived from the documents, so they can be dropped and rebuilt at any time.
TABLES = (OfficeRow, GroupRow, LedgerRow, OfficeLedgerRow, OpeningRow, VoucherRow, LineRow, LedgerMonthRow,
          ConflictRow)
#: Report tables an older p2psync made, dropped when the tables are rebuilt.
OBSOLETE_TABLES = ("revisionrow",)


def _held(db: sqlite3.Connection, numbers: list[str]) -> dict[str, str]:
    """The `revision_refs` of those of `numbers` that have a voucher row."""
    found: dict[str, str] = {}
    for chunk in _chunks(numbers):
        found.update(db.execute(f"SELECT number, revision_refs FROM {_name(VoucherRow)} WHERE number IN "
                                f"({_marks(chunk)})", chunk))
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
