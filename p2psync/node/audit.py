"""The audit trail: every revision of every voucher and every masters record, with who made it (office
and node), when (the author's stamp, and when this office logged it) and what changed.

It is read from the entry log, which is append-only and the source of truth (`store.history`), not
from the report tables: nothing in the trail can be removed without removing the change itself, and
there is no setting that turns it off (India's Companies (Accounts) Rules require, since 1 April 2023,
an edit log of every change that cannot be disabled).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from p2psync.books import schema
from p2psync.books.interoffice import decode_dispute
from p2psync.books.model import (
    Revision,
    VoucherContent,
    decode_group,
    decode_ledger,
    decode_office,
    decode_opening,
    decode_revision,
)
from p2psync.books.money import format_indian, to_decimal
from p2psync.books.resolve import resolve
from p2psync.books.rules import parse_date
from p2psync.errors import InvalidInput, NotFound, P2PSyncError
from p2psync.node.office import Node
from p2psync.store import history, log, queries

Data = dict[str, Any]


@dataclass(frozen=True)
class Scope:
    """Which part of the trail to show. Vouchers are chosen by their date (a revision shows when its
    own date or the date it replaced is in the period), masters records by the date they were made
    (offices have no time: always shown)."""

    office: str | None = None
    start: dt.date | None = None
    end: dt.date | None = None
    voucher: str | None = None

    def __post_init__(self) -> None:
        if self.start and self.end and self.start > self.end:
            raise InvalidInput(f"the period starts ({self.start}) after it ends ({self.end})")

    def wants_doc(self, doc: str) -> bool:
        name = schema.parse_doc_name(doc)
        if name.is_masters:
            return self.voucher is None
        if self.office and name.office != self.office:
            return False
        # an amendment stays in its voucher's first document, whatever date it moves to: months
        # before the period may hold revisions dated inside it, so only later months are skipped
        return not (self.end and name.month and name.month > f"{self.end:%Y-%m}")

    def in_period(self, *days: dt.date | None) -> bool:
        return any(day is not None and (self.start is None or day >= self.start)
                   and (self.end is None or day <= self.end) for day in days)


def trail(node: Node, scope: Scope) -> list[Data]:
    """The audit trail of `scope`, oldest change first (by the author's time stamp)."""
    rows: list[Data] = []
    with node.db.read() as session:
        if scope.office and scope.office not in {o.code for o in queries.offices(session)}:
            raise NotFound(f"unknown office {scope.office}; see 'p2psync branch list'")
        docs = [doc for doc in log.documents(session) if scope.wants_doc(doc)]
        if scope.voucher:
            row = queries.voucher(session, scope.voucher)
            if row is None:
                raise NotFound(f"no voucher numbered {scope.voucher}")
            docs = [row.doc]
        for doc in docs:
            rows.extend(_rows(node, history.replay(session, doc), scope))
    return sorted(rows, key=lambda r: r["at"])


def report(node: Node, office: str | None = None, start: str | None = None, end: str | None = None,
           voucher: str | None = None) -> Data:
    """The trail as ``--json`` prints it and the dashboard shows it, from what was typed."""
    scope = Scope(office.strip().upper() if office and office.strip() else None, _date(start), _date(end),
                  voucher.strip().upper() if voucher and voucher.strip() else None)
    rows = trail(node, scope)
    return {"report": "audit-trail", "rows": rows, "summary": summary(rows)}


def _date(text: str | None) -> dt.date | None:
    return parse_date(text) if text else None


def summary(rows: list[Data]) -> Data:
    """How many changes of each kind the rows hold (printed under the table, and in exports)."""
    return dict(sorted(Counter(f"{r['record']} {r['action']}" for r in rows).items()))


def _rows(node: Node, entries: Iterable[history.EntryWrites], scope: Scope) -> list[Data]:
    revisions: dict[str, Revision] = {}
    rows = []
    for entry in entries:
        who = _who(node, entry)
        for written in entry.writes:
            if written.map == schema.REVISIONS:
                row = _revision_row(decode_revision(written.after), revisions, scope)
            else:
                row = _masters_row(written, scope)
            if row is not None:
                rows.append({**who, **row, "at": row.get("at") or entry.logged_at})
    return rows


def _who(node: Node, entry: history.EntryWrites) -> Data:
    try:
        office = node.trust.author(entry.author).office
    except P2PSyncError:
        office = "?"  # every logged author was a member; a certificate gone from the policy is a bug
    return {"office": office, "node": entry.author[:16], "document": entry.doc, "seq": entry.seq,
            "logged_at": entry.logged_at, "origin": "made here" if entry.own else "received"}


# ---------------------------------------------------------------- vouchers


def _revision_row(rev: Revision, revisions: dict[str, Revision], scope: Scope) -> Data | None:
    revisions[rev.id] = rev
    parents = [revisions[p] for p in rev.parents if p in revisions]
    before = resolve(parents).current.content if parents else None
    if scope.voucher and rev.number != scope.voucher or scope.office and rev.office != scope.office:
        return None
    if (scope.start or scope.end) and not scope.in_period(rev.content.date, before.date if before else None):
        return None
    changes = _voucher_changes(before, rev.content) if rev.action.value == "amend" else []
    return {"record": "voucher", "action": rev.action.value, "subject": rev.number, "revision": rev.id,
            "voucher_office": rev.office, "at": rev.at, "before": _content(before) if before else None,
            "after": _content(rev.content), "reason": rev.reason, "changes": changes,
            "summary": _voucher_summary(rev, changes)}


def _content(content: VoucherContent) -> Data:
    return {"type": content.type.value, "date": content.date.isoformat(), "narration": content.narration,
            "lines": [{"ledger": ln.ledger, "side": ln.side.value, "amount": to_decimal(ln.paise)}
                      for ln in content.lines]}


def _line_text(side: str, ledger: str, paise: int) -> str:
    return f"{side} {ledger} {format_indian(paise)}"


def _voucher_changes(before: VoucherContent | None, after: VoucherContent) -> list[str]:
    """What an amendment changed against the revision it replaced, in words."""
    if before is None:
        return []
    changes = []
    if before.date != after.date:
        changes.append(f"date {before.date} -> {after.date}")
    if before.narration != after.narration:
        changes.append(f"narration {before.narration!r} -> {after.narration!r}")
    old = Counter((ln.side.value, ln.ledger, ln.paise) for ln in before.lines)
    new = Counter((ln.side.value, ln.ledger, ln.paise) for ln in after.lines)
    removed, added = sorted((old - new).elements()), sorted((new - old).elements())
    for side, ledger, paise in list(removed):  # one amount of a line changed: say it as one change
        twins = [line for line in added if line[:2] == (side, ledger)]
        if len(twins) == 1 and sum(1 for line in removed if line[:2] == (side, ledger)) == 1:
            changes.append(f"{side} {ledger} {format_indian(paise)} -> {format_indian(twins[0][2])}")
            removed.remove((side, ledger, paise))
            added.remove(twins[0])
    changes += [f"line removed: {_line_text(*line)}" for line in removed]
    changes += [f"line added: {_line_text(*line)}" for line in added]
    return changes or ["no change to date, narration or lines"]


def _voucher_summary(rev: Revision, changes: list[str]) -> str:
    if rev.action.value == "cancel":
        return f"cancelled: {rev.reason}"
    if rev.action.value == "amend":
        return "; ".join(changes)
    lines = ", ".join(_line_text(ln.side.value, ln.ledger, ln.paise) for ln in rev.content.lines)
    narration = f" ({rev.content.narration})" if rev.content.narration else ""
    return f"{rev.content.type.label} dated {rev.content.date}: {lines}{narration}"


# ---------------------------------------------------------------- masters


def _masters_row(written: history.Written, scope: Scope) -> Data | None:
    row = _MASTERS[written.map](written)
    owner = row.pop("record_office")
    if scope.office and owner != scope.office:
        return None
    stamped = row.get("at")
    if (scope.start or scope.end) and stamped and not scope.in_period(dt.date.fromisoformat(stamped[:10])):
        return None
    return {"action": "change" if written.before is not None else "create", "reason": "", "changes": [], **row}


def _ledger_row(written: history.Written) -> Data:
    rec = decode_ledger(written.after)
    return {"record": "ledger", "subject": rec.name, "record_office": rec.office, "at": rec.at, "before": None,
            "after": {"name": rec.name, "group": rec.group, "office": rec.office},
            "summary": f"ledger {rec.name} under {rec.group} for {rec.office}"}


def _group_row(written: history.Written) -> Data:
    rec = decode_group(written.after)
    return {"record": "group", "subject": rec.name, "record_office": rec.office, "at": rec.at, "before": None,
            "after": {"name": rec.name, "parent": rec.parent, "office": rec.office},
            "summary": f"group {rec.name} under {rec.parent} for {rec.office}"}


def _opening_row(written: history.Written) -> Data:
    rec = decode_opening(written.after)
    old = decode_opening(written.before) if written.before is not None else None
    before = _balance(old.paise) if old else None
    return {"record": "opening", "subject": f"{rec.ledger} at {rec.office}", "record_office": rec.office,
            "at": rec.at, "before": before, "after": _balance(rec.paise),
            "summary": f"opening balance {before['text'] if before else 'none'} -> {_balance(rec.paise)['text']}"}


def _balance(paise: int) -> Data:
    side = "Dr" if paise >= 0 else "Cr"
    return {"amount": to_decimal(abs(paise)), "side": side, "text": f"{format_indian(abs(paise))} {side}"}


def _office_row(written: history.Written) -> Data:
    rec = decode_office(written.after)
    old = decode_office(written.before) if written.before is not None else None

    def data(o: Any) -> Data:
        return {"code": o.code, "name": o.name, "role": o.role}
    text = f"office {rec.code} ({rec.name}, {rec.role})"
    return {"record": "office", "subject": rec.code, "record_office": rec.code, "at": None,
            "before": data(old) if old else None, "after": data(rec),
            "summary": f"{text}, was {old.name}" if old else text}


def _dispute_row(written: history.Written) -> Data:
    rec = decode_dispute(written.after)
    return {"record": "dispute", "subject": rec.ref, "record_office": rec.office, "at": rec.at, "before": None,
            "after": {"ref": rec.ref, "office": rec.office, "reason": rec.reason},
            "summary": f"{rec.office} disputes {rec.ref}: {rec.reason}"}


_MASTERS = {schema.LEDGERS: _ledger_row, schema.GROUPS: _group_row, schema.OPENINGS: _opening_row,
            schema.OFFICES: _office_row, schema.DISPUTES: _dispute_row}
