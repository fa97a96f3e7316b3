"""Read queries over the materialized tables, shaped for the reports and listings."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

from sqlalchemy import case, func
from sqlmodel import Session, select

from p2psync.books.model import Revision
from p2psync.books.reports import LedgerBalance, Posting
from p2psync.sqlite import raw_connection
from p2psync.store import materialize
from p2psync.store.tables import (
    ConflictRow,
    GroupRow,
    LedgerRow,
    LineRow,
    OfficeLedgerRow,
    OfficeRow,
    OpeningRow,
    VoucherRow,
)


def next_in_series(session: Session, office: str, kind: str, series: int = 1) -> int:
    """The next number's position in the series (asked on every post: a plain statement)."""
    (top,) = raw_connection(session).execute(
        "SELECT max(seq) FROM voucherrow WHERE office = ? AND type = ? AND series = ?",
        (office, kind, series)).fetchone()
    return (top or 0) + 1


def voucher(session: Session, number: str) -> VoucherRow | None:
    return session.get(VoucherRow, number)


def revisions(session: Session, number: str, stored: materialize.Stored) -> list[Revision]:
    """Every revision of voucher `number`, none if there is no such voucher, read from the documents
    by `stored` (the voucher's row says where they are)."""
    refs = session.exec(select(VoucherRow.revision_refs).where(VoucherRow.number == number)).first()
    return materialize.revisions_at(materialize.read_refs(refs), stored) if refs is not None else []


def offices(session: Session) -> list[OfficeRow]:
    return list(session.exec(select(OfficeRow).order_by(OfficeRow.code)))


def groups(session: Session) -> dict[str, GroupRow]:
    return {row.key: row for row in session.exec(select(GroupRow))}


def ledgers(session: Session) -> list[tuple[LedgerRow, GroupRow]]:
    query = select(LedgerRow, GroupRow).join(GroupRow, GroupRow.key == LedgerRow.group_key).order_by(LedgerRow.name)
    return list(session.exec(query))


#: Which offices a query covers: one (its code), several (a set of codes: the consolidated books an
#: office may read), or all (None).
Offices = str | frozenset[str] | None


def _of(column: Any, office: str | frozenset[str]) -> Any:
    return column == office if isinstance(office, str) else column.in_(sorted(office))


def vouchers(session: Session, office: Offices = None, start: dt.date | None = None,
             end: dt.date | None = None, include_cancelled: bool = True) -> list[VoucherRow]:
    query = _voucher_filter(select(VoucherRow), office, start, end)
    if not include_cancelled:
        query = query.where(VoucherRow.cancelled == False)  # noqa: E712
    return list(session.exec(query.order_by(VoucherRow.date, VoucherRow.number)))


def lines_of(session: Session, numbers: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Ledger name and signed amount of each current line, by voucher number (a voucher's lines are
    found through its row: they share its office, date and number, which one index of lines holds)."""
    out: dict[str, list[tuple[str, int]]] = {n: [] for n in numbers}
    same_voucher = (LineRow.office == VoucherRow.office) & (LineRow.date == VoucherRow.date) & (
        LineRow.number == VoucherRow.number)
    for start in range(0, len(numbers), 500):
        chunk = numbers[start:start + 500]
        query = (
            select(VoucherRow.number, LedgerRow.name, LineRow.paise)
            .join(LineRow, same_voucher)
            .join(LedgerRow, LedgerRow.key == LineRow.ledger_key, isouter=True)
            .where(VoucherRow.number.in_(chunk))  # type: ignore[attr-defined]
            .order_by(VoucherRow.number, LineRow.idx)
        )
        for number, name, paise in session.exec(query):
            out[number].append((name or "?", paise))
    return out


def balances(session: Session, office: Offices = None, start: dt.date | None = None,
             end: dt.date | None = None) -> list[LedgerBalance]:
    """Per ledger: opening (recorded openings plus movements before `start`), debits and credits
    within the period, each office's part classified as that office's books classify it (a ledger
    two offices recorded differently is shown once under each classification in a consolidated
    report, never one office's amounts under another office's group)."""
    result = _balances(session, office, start, end)
    classes = _office_classes(session, office)
    return _reclassified(session, result, classes, office, start, end) if classes else result


def _office_classes(session: Session, office: Offices) -> dict[tuple[str, str], tuple[str, str, str, bool]]:
    query = select(OfficeLedgerRow)
    if office:
        query = query.where(_of(OfficeLedgerRow.office, office))
    return {(row.office, row.ledger_key): (row.group, row.primary, row.nature, row.direct)
            for row in session.exec(query)}


def _reclassified(session: Session, result: list[LedgerBalance], classes: dict[tuple[str, str], tuple[str, str, str, bool]],
                  office: Offices, start: dt.date | None, end: dt.date | None) -> list[LedgerBalance]:
    """`result` with the parts of the offices in `classes` moved under their own classification."""
    one = isinstance(office, str)
    by_key = {bal.key: bal for bal in result}
    parts: dict[tuple[str, tuple[str, str, str, bool]], LedgerBalance] = {}
    for owner in sorted({o for o, _key in classes}):
        amounts = by_key if one else {bal.key: bal for bal in _balances(session, owner, start, end)}
        for (o, key), (group, primary, nature, direct) in classes.items():
            if o != owner or key not in by_key:
                continue
            part, whole = amounts[key], by_key[key]
            if not one:
                by_key[key] = replace(whole, opening=whole.opening - part.opening, debit=whole.debit - part.debit,
                                      credit=whole.credit - part.credit)
            else:
                del by_key[key]
            held = parts.get((key, (group, primary, nature, direct)))
            parts[(key, (group, primary, nature, direct))] = replace(
                part, group=group, primary=primary, nature=nature, direct=direct,
                opening=part.opening + (held.opening if held else 0), debit=part.debit + (held.debit if held else 0),
                credit=part.credit + (held.credit if held else 0))
    return [*by_key.values(), *parts.values()]


def _balances(session: Session, office: Offices, start: dt.date | None,
              end: dt.date | None) -> list[LedgerBalance]:
    """`balances` with every ledger as the organisation's default classifies it."""
    openings: dict[str, int] = {}
    query = select(OpeningRow.ledger_key, func.sum(OpeningRow.paise)).group_by(OpeningRow.ledger_key)
    if office:
        query = query.where(_of(OpeningRow.office, office))
    for key, paise in session.exec(query):
        openings[key] = int(paise or 0)
    in_period = LineRow.date >= start.isoformat() if start else True
    before = LineRow.date < start.isoformat() if start else False
    movement = (
        select(
            LineRow.ledger_key,
            func.sum(case((before, LineRow.paise), else_=0)),
            func.sum(case(((LineRow.paise > 0) & in_period, LineRow.paise), else_=0)),
            func.sum(case(((LineRow.paise < 0) & in_period, -LineRow.paise), else_=0)),
        )
        .group_by(LineRow.ledger_key)
    )
    if office:
        movement = movement.where(_of(LineRow.office, office))
    if end:
        movement = movement.where(LineRow.date <= end.isoformat())
    moves = {key: (int(b or 0), int(d or 0), int(c or 0)) for key, b, d, c in session.exec(movement)}
    result = []
    for ledger, group in ledgers(session):
        earlier, debit, credit = moves.get(ledger.key, (0, 0, 0))
        result.append(LedgerBalance(
            key=ledger.key, name=ledger.name, group=group.name, primary=group.primary,
            nature=group.nature, direct=group.direct,
            opening=openings.get(ledger.key, 0) + earlier, debit=debit, credit=credit,
        ))
    return result


def postings(session: Session, ledger_key: str, office: Offices = None,
             end: dt.date | None = None) -> list[Posting]:
    """Every current line of one ledger, oldest first, with its voucher's details."""
    query = (
        select(LineRow.date, LineRow.number, VoucherRow.type, VoucherRow.narration, LineRow.paise, LineRow.office)
        .join(VoucherRow, VoucherRow.number == LineRow.number)
        .where(LineRow.ledger_key == ledger_key)
    )
    if office:
        query = query.where(_of(LineRow.office, office))
    if end:
        query = query.where(LineRow.date <= end.isoformat())
    query = query.order_by(LineRow.date, LineRow.number, LineRow.idx)
    return [Posting(dt.date.fromisoformat(d), n, t, narr, p, o) for d, n, t, narr, p, o in session.exec(query)]


def opening_of(session: Session, ledger_key: str, office: Offices = None) -> int:
    query = select(func.sum(OpeningRow.paise)).where(OpeningRow.ledger_key == ledger_key)
    if office:
        query = query.where(_of(OpeningRow.office, office))
    return int(session.exec(query).one() or 0)


def conflicts(session: Session) -> list[ConflictRow]:
    return list(session.exec(select(ConflictRow).order_by(ConflictRow.kind, ConflictRow.subject)))


def lowest_balances(session: Session, office: str, ledger_keys: list[str], since: dt.date) -> dict[str, tuple[dt.date, int]]:
    """Per ledger, its lowest day-end balance at `office` on or after `since` and that day (debit
    positive): a voucher dated in the past changes every later day's balance, not only its own."""
    out: dict[str, tuple[dt.date, int]] = {}
    for key in ledger_keys:
        (opening,) = raw_connection(session).execute(
            "SELECT coalesce(sum(paise), 0) FROM openingrow WHERE ledger_key = ? AND office = ?", (key, office)
        ).fetchone()
        days = raw_connection(session).execute(
            "SELECT date, sum(paise) FROM linerow WHERE ledger_key = ? AND office = ? GROUP BY date ORDER BY date",
            (key, office)).fetchall()
        balance, lowest = int(opening), None
        for day, paise in days:
            balance += int(paise)
            if day >= since.isoformat() and (lowest is None or balance < lowest[1]):
                lowest = (dt.date.fromisoformat(day), balance)
        if lowest is not None:
            out[key] = lowest
    return out


def local_only(session: Session, office: Offices = None, start: dt.date | None = None,
               end: dt.date | None = None) -> int:
    """How many vouchers (of `office`, in the period) sit in local books: dated before the sync-after
    date when posted, they never leave their office."""
    query = select(func.count()).select_from(VoucherRow).where(VoucherRow.doc.startswith("local/"))  # type: ignore[attr-defined]
    return int(session.exec(_voucher_filter(query, office, start, end)).one())


def _voucher_filter(query: Any, office: Offices, start: dt.date | None, end: dt.date | None) -> Any:
    """`query` of voucher rows narrowed to offices and a period (each optional)."""
    if office:
        query = query.where(_of(VoucherRow.office, office))
    if start:
        query = query.where(VoucherRow.date >= start.isoformat())
    if end:
        query = query.where(VoucherRow.date <= end.isoformat())
    return query
