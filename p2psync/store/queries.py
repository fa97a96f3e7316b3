"""Read queries over the materialized tables, shaped for the reports and listings.

Plain SQL on the `sqlite3` connection, given either a session (inside a command or the running node,
its own connection and transaction) or a connection alone (`store.reading`, for a read-only command
that never imports SQLAlchemy): one statement per question, whichever way the database was opened.
Rows come back as named tuples whose fields are the tables' columns.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace
from typing import TYPE_CHECKING, Any, NamedTuple

from p2psync.books.model import Revision
from p2psync.books.reports import LedgerBalance, Posting
from p2psync.sqlite import raw_connection

if TYPE_CHECKING:
    from sqlmodel import Session

    from p2psync.store import materialize

class Office(NamedTuple):
    code: str
    name: str
    role: str


class Group(NamedTuple):
    key: str
    name: str
    parent: str | None
    nature: str
    primary: str
    direct: bool
    predefined: bool


class Ledger(NamedTuple):
    key: str
    name: str
    group_key: str
    office: str  # where it was first created
    created_at: str


class Voucher(NamedTuple):
    number: str
    doc: str
    office: str
    type: str
    date: str
    narration: str
    amount: int  # total of the debit side, paise
    cancelled: bool
    reason: str
    current: str
    revisions: int
    revision_refs: str
    conflicts: int
    series: int
    seq: int


class Conflict(NamedTuple):
    id: int
    kind: str
    subject: str
    winner: str
    loser: str
    detail: str


def _columns(record: type[NamedTuple], alias: str = "") -> str:
    """The select list of a record's columns (quoted: one is named ``primary``)."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f'{prefix}"{name}"' for name in record._fields)


_GROUP = _columns(Group)
_VOUCHER = _columns(Voucher)
_CANCELLED = Voucher._fields.index("cancelled")


def _db(source: Session | sqlite3.Connection) -> sqlite3.Connection:
    return source if isinstance(source, sqlite3.Connection) else raw_connection(source)


def _group(row: tuple[Any, ...]) -> Group:
    key, name, parent, nature, primary, direct, predefined = row
    return Group(key, name, parent, nature, primary, bool(direct), bool(predefined))


def _voucher(row: tuple[Any, ...]) -> Voucher:
    return Voucher(*row[:_CANCELLED], bool(row[_CANCELLED]), *row[_CANCELLED + 1:])


def next_in_series(source: Session | sqlite3.Connection, office: str, kind: str, series: int = 1) -> int:
    """The next number's position in the series (asked on every post)."""
    (top,) = _db(source).execute(
        "SELECT max(seq) FROM voucherrow WHERE office = ? AND type = ? AND series = ?",
        (office, kind, series)).fetchone()
    return (top or 0) + 1


def voucher(source: Session | sqlite3.Connection, number: str) -> Voucher | None:
    row = _db(source).execute(f"SELECT {_VOUCHER} FROM voucherrow WHERE number = ?", (number,)).fetchone()
    return None if row is None else _voucher(row)


def revisions(source: Session | sqlite3.Connection, number: str, stored: materialize.Stored) -> list[Revision]:
    """Every revision of voucher `number`, none if there is no such voucher, read from the documents
    by `stored` (the voucher's row says where they are)."""
    from p2psync.store import materialize  # the write path's module: not for read-only commands

    row = _db(source).execute("SELECT revision_refs FROM voucherrow WHERE number = ?", (number,)).fetchone()
    return materialize.revisions_at(materialize.read_refs(row[0]), stored) if row is not None else []


def offices(source: Session | sqlite3.Connection) -> list[Office]:
    return [Office(*row) for row in _db(source).execute("SELECT code, name, role FROM officerow ORDER BY code")]


def groups(source: Session | sqlite3.Connection) -> dict[str, Group]:
    return {row[0]: _group(row) for row in _db(source).execute(f"SELECT {_GROUP} FROM grouprow")}


def ledgers(source: Session | sqlite3.Connection) -> list[tuple[Ledger, Group]]:
    query = (f"SELECT {_columns(Ledger, 'l')}, {_columns(Group, 'g')} FROM ledgerrow AS l "
             "JOIN grouprow AS g ON g.key = l.group_key ORDER BY l.name")
    width = len(Ledger._fields)
    return [(Ledger(*row[:width]), _group(row[width:])) for row in _db(source).execute(query)]


#: Which offices a query covers: one (its code), several (a set of codes: the consolidated books an
#: office may read), or all (None).
Offices = str | frozenset[str] | None


def _office_in(column: str, office: Offices) -> tuple[list[str], list[str]]:
    """The condition (and its parameters) narrowing `column` to `office`: none for all offices."""
    if office is None or office == "":
        return [], []
    codes = [office] if isinstance(office, str) else sorted(office)
    return [f"{column} IN ({','.join('?' * len(codes))})" if codes else "0"], codes


def vouchers(source: Session | sqlite3.Connection, office: Offices = None, start: dt.date | None = None,
             end: dt.date | None = None, include_cancelled: bool = True) -> list[Voucher]:
    where, params = _voucher_filter(office, start, end)
    if not include_cancelled:
        where.append("cancelled = 0")
    query = f"SELECT {_VOUCHER} FROM voucherrow{_where(where)} ORDER BY date, number"
    return [_voucher(row) for row in _db(source).execute(query, params)]


def lines_of(source: Session | sqlite3.Connection, numbers: list[str]) -> dict[str, list[tuple[str, int]]]:
    """Ledger name and signed amount of each current line, by voucher number (a voucher's lines are
    found through its row: they share its office, date and number, which one index of lines holds)."""
    out: dict[str, list[tuple[str, int]]] = {n: [] for n in numbers}
    connection = _db(source)
    for start in range(0, len(numbers), 500):
        chunk = numbers[start:start + 500]
        query = ("SELECT v.number, l.name, li.paise FROM voucherrow AS v "
                 "JOIN linerow AS li ON li.office = v.office AND li.date = v.date AND li.number = v.number "
                 "LEFT OUTER JOIN ledgerrow AS l ON l.key = li.ledger_key "
                 f"WHERE v.number IN ({','.join('?' * len(chunk))}) ORDER BY v.number, li.idx")
        for number, name, paise in connection.execute(query, chunk):
            out[number].append((name or "?", paise))
    return out


#: How an office's books classify a ledger where that differs from the default: group, primary
#: group, nature and whether direct (`OfficeLedgerRow`).
_Class = tuple[str, str, str, bool]


def balances(source: Session | sqlite3.Connection, office: Offices = None, start: dt.date | None = None,
             end: dt.date | None = None) -> list[LedgerBalance]:
    """Per ledger: opening (recorded openings plus movements before `start`), debits and credits
    within the period, each office's part classified as that office's books classify it (a ledger
    two offices recorded differently is shown once under each classification in a consolidated
    report, never one office's amounts under another office's group)."""
    connection = _db(source)
    result = _balances(connection, office, start, end)
    classes = _office_classes(connection, office)
    return _reclassified(connection, result, classes, office, start, end) if classes else result


def _office_classes(connection: sqlite3.Connection, office: Offices) -> dict[tuple[str, str], _Class]:
    where, params = _office_in("office", office)
    rows = connection.execute('SELECT office, ledger_key, "group", "primary", nature, direct FROM officeledgerrow'
                              f"{_where(where)}", params)
    return {(o, key): (group, primary, nature, bool(direct)) for o, key, group, primary, nature, direct in rows}


def _reclassified(connection: sqlite3.Connection, result: list[LedgerBalance], classes: dict[tuple[str, str], _Class],
                  office: Offices, start: dt.date | None, end: dt.date | None) -> list[LedgerBalance]:
    """`result` with the parts of the offices in `classes` moved under their own classification."""
    one = isinstance(office, str)
    by_key = {bal.key: bal for bal in result}
    parts: dict[tuple[str, _Class], LedgerBalance] = {}
    for owner in sorted({o for o, _key in classes}):
        amounts = by_key if one else {bal.key: bal for bal in _balances(connection, owner, start, end)}
        for (o, key), klass in classes.items():
            if o != owner or key not in by_key:
                continue
            part, whole = amounts[key], by_key[key]
            if not one:
                by_key[key] = replace(whole, opening=whole.opening - part.opening, debit=whole.debit - part.debit,
                                      credit=whole.credit - part.credit)
            else:
                del by_key[key]
            held = parts.get((key, klass))
            group, primary, nature, direct = klass
            parts[(key, klass)] = replace(
                part, group=group, primary=primary, nature=nature, direct=direct,
                opening=part.opening + (held.opening if held else 0), debit=part.debit + (held.debit if held else 0),
                credit=part.credit + (held.credit if held else 0))
    return [*by_key.values(), *parts.values()]


def _balances(connection: sqlite3.Connection, office: Offices, start: dt.date | None,
              end: dt.date | None) -> list[LedgerBalance]:
    """`balances` with every ledger as the organisation's default classifies it."""
    where, offices = _office_in("office", office)
    openings = {key: int(paise or 0) for key, paise in connection.execute(
        f"SELECT ledger_key, sum(paise) FROM openingrow{_where(where)} GROUP BY ledger_key", offices)}
    moves = _movements(connection, office, start, end)
    result = []
    for ledger, group in ledgers(connection):
        earlier, debit, credit = moves.get(ledger.key, (0, 0, 0))
        result.append(LedgerBalance(
            key=ledger.key, name=ledger.name, group=group.name, primary=group.primary,
            nature=group.nature, direct=group.direct,
            opening=openings.get(ledger.key, 0) + earlier, debit=debit, credit=credit,
        ))
    return result


def _movements(connection: sqlite3.Connection, office: Offices, start: dt.date | None,
               end: dt.date | None) -> dict[str, tuple[int, int, int]]:
    """Per ledger key: the net of its lines before `start`, and their debits and credits from `start`
    to `end` (either open). Whole months are read from `LedgerMonthRow`; only the months of `start`
    and `end` line by line, so the cost does not grow with the books."""
    where, offices = _office_in("office", office)
    edges = sorted({day.isoformat()[:7] for day in (start, end) if day})
    first = [start.isoformat()[:7]] * 3 if start else []
    before, in_period = ("month < ?", "month >= ?") if start else ("0", "1")
    months = [*where, *([f"month NOT IN ({','.join('?' * len(edges))})"] if edges else []),
              *(["month <= ?"] if end else [])]
    query = (f"SELECT ledger_key, sum(CASE WHEN {before} THEN debit - credit ELSE 0 END), "
             f"sum(CASE WHEN {in_period} THEN debit ELSE 0 END), sum(CASE WHEN {in_period} THEN credit ELSE 0 END) "
             f"FROM ledgermonthrow{_where(months)} GROUP BY ledger_key")
    params = [*first, *offices, *edges, *([end.isoformat()[:7]] if end else [])]
    totals = {key: [int(b or 0), int(d or 0), int(c or 0)] for key, b, d, c in connection.execute(query, params)}
    for month in edges:
        for key, b, d, c in _edge_movements(connection, where, offices, month, start, end):
            total = totals.setdefault(key, [0, 0, 0])
            total[0] += int(b or 0)
            total[1] += int(d or 0)
            total[2] += int(c or 0)
    return {key: (b, d, c) for key, (b, d, c) in totals.items()}


def _edge_movements(connection: sqlite3.Connection, where: list[str], offices: list[str], month: str,
                    start: dt.date | None, end: dt.date | None) -> sqlite3.Cursor:
    """`_movements` of the lines of one month ("YYYY-MM") that a period starts or ends in. The ledger
    keys are listed so that SQLite seeks the ledger index by key and date, not scans it whole."""
    before, in_period = ("date < ?", "date >= ?") if start else ("0", "1")
    dates = [start.isoformat()] * 3 if start else []
    lines = ["ledger_key IN (SELECT DISTINCT ledger_key FROM ledgermonthrow)", "date >= ?", "date <= ?", *where,
             *(["date <= ?"] if end else [])]
    query = (f"SELECT ledger_key, sum(CASE WHEN {before} THEN paise ELSE 0 END), "
             f"sum(CASE WHEN paise > 0 AND {in_period} THEN paise ELSE 0 END), "
             f"sum(CASE WHEN paise < 0 AND {in_period} THEN -paise ELSE 0 END) "
             f"FROM linerow{_where(lines)} GROUP BY ledger_key")
    return connection.execute(query, [*dates, f"{month}-01", f"{month}-31", *offices,
                                      *([end.isoformat()] if end else [])])


def postings(source: Session | sqlite3.Connection, ledger_key: str, office: Offices = None,
             end: dt.date | None = None) -> list[Posting]:
    """Every current line of one ledger, oldest first, with its voucher's details."""
    where, offices = _office_in("li.office", office)
    where = ["li.ledger_key = ?", *where, *(["li.date <= ?"] if end else [])]
    params = [ledger_key, *offices, *([end.isoformat()] if end else [])]
    query = ("SELECT li.date, li.number, v.type, v.narration, li.paise, li.office FROM linerow AS li "
             f"JOIN voucherrow AS v ON v.number = li.number{_where(where)} ORDER BY li.date, li.number, li.idx")
    return [Posting(dt.date.fromisoformat(d), n, t, narr, p, o)
            for d, n, t, narr, p, o in _db(source).execute(query, params)]


def opening_of(source: Session | sqlite3.Connection, ledger_key: str, office: Offices = None) -> int:
    where, offices = _office_in("office", office)
    (total,) = _db(source).execute(f"SELECT sum(paise) FROM openingrow{_where(['ledger_key = ?', *where])}",
                                   [ledger_key, *offices]).fetchone()
    return int(total or 0)


def conflicts(source: Session | sqlite3.Connection) -> list[Conflict]:
    query = f"SELECT {_columns(Conflict)} FROM conflictrow ORDER BY kind, subject"
    return [Conflict(*row) for row in _db(source).execute(query)]


def lowest_balances(source: Session | sqlite3.Connection, office: str, ledger_keys: list[str],
                    since: dt.date) -> dict[str, tuple[dt.date, int]]:
    """Per ledger, its lowest day-end balance at `office` on or after `since` and that day (debit
    positive): a voucher dated in the past changes every later day's balance, not only its own."""
    out: dict[str, tuple[dt.date, int]] = {}
    connection = _db(source)
    for key in ledger_keys:
        opening = opening_of(connection, key, office)
        days = connection.execute(
            "SELECT date, sum(paise) FROM linerow WHERE ledger_key = ? AND office = ? GROUP BY date ORDER BY date",
            (key, office)).fetchall()
        balance, lowest = opening, None
        for day, paise in days:
            balance += int(paise)
            if day >= since.isoformat() and (lowest is None or balance < lowest[1]):
                lowest = (dt.date.fromisoformat(day), balance)
        if lowest is not None:
            out[key] = lowest
    return out


def local_only(source: Session | sqlite3.Connection, office: Offices = None, start: dt.date | None = None,
               end: dt.date | None = None) -> int:
    """How many vouchers (of `office`, in the period) sit in local books: dated before the sync-after
    date when posted, they never leave their office."""
    where, params = _voucher_filter(office, start, end)
    query = f"SELECT count(*) FROM voucherrow{_where(['substr(doc, 1, 6) = ?', *where])}"
    (count,) = _db(source).execute(query, ["local/", *params]).fetchone()
    return int(count)


#: The lines of inter-office accounts (`@CODE`), whose ledger keys start with "@".
INTER_OFFICE_LINES = "ledger_key >= '@' AND ledger_key < 'A'"


def has_inter_office_lines(source: Session | sqlite3.Connection) -> bool:
    """Whether any voucher line is on an inter-office account (else consolidation eliminates nothing)."""
    return _db(source).execute(f"SELECT 1 FROM linerow WHERE {INTER_OFFICE_LINES} LIMIT 1").fetchone() is not None


def amended_docs(source: Session | sqlite3.Connection) -> list[str]:
    """The documents holding a voucher with more than one revision."""
    return [doc for (doc,) in _db(source).execute("SELECT DISTINCT doc FROM voucherrow WHERE revisions > 1")]


def _voucher_filter(office: Offices, start: dt.date | None, end: dt.date | None) -> tuple[list[str], list[str]]:
    """Conditions (and their parameters) narrowing voucher rows to offices and a period (each optional)."""
    where, params = _office_in("office", office)
    for condition, value in (("date >= ?", start and start.isoformat()), ("date <= ?", end and end.isoformat())):
        if value:
            where.append(condition)
            params.append(value)
    return where, params


def _where(conditions: list[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""
