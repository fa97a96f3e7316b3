"""Inter-office work at one office: its pending counterparts, accepting one (a mirror voucher in its
own books) or disputing it (a dispute record of its own), and the reconciliation of every pair of
offices. Nothing here writes another office's books; what it shows is derived from vouchers and
disputes every office holds (`books.interoffice`), so every office shows the same."""

from __future__ import annotations

import datetime as dt
from typing import Any

from p2psync.books import schema
from p2psync.books.drafts import Draft, parse_line, parse_type
from p2psync.books.groups import CASH_AND_BANK
from p2psync.books.interoffice import (
    DISPUTED,
    IN_TRANSIT,
    MATCHED,
    MISMATCHED,
    Dispute,
    Pair,
    Touch,
    office_of,
    reconcile,
    suggested_lines,
    tag,
    tagged,
)
from p2psync.books.model import MAX_NARRATION, Line, Revision, Side, VoucherType
from p2psync.books.money import to_decimal
from p2psync.books.resolve import resolve
from p2psync.books.rules import BRANCH_DIVISIONS, Chart, inter_office_code, inter_office_name, parse_date
from p2psync.errors import InvalidInput, NotFound, RuleViolation
from p2psync.node import linked
from p2psync.node.office import Node
from p2psync.sqlite import raw_connection
from p2psync.store import queries

Data = dict[str, Any]
PENDING = "pending"


#: Lines of inter-office accounts: their keys (``@br1``) sort between these, so the ledger index finds them.
_AT = queries.INTER_OFFICE_LINES


def touches(node: Node) -> list[Touch]:
    """Every voucher touching an inter-office account, as its current revision has it (cancelled
    ones too, where they count: a cancelled mirror, or a cancelled voucher a mirror names)."""
    found: dict[str, Touch] = {}
    with node.db.read() as session:
        db = raw_connection(session)
        rows = db.execute(
            "SELECT l.number, l.office, l.date, l.ledger_key, sum(l.paise), v.narration FROM linerow l "
            f"JOIN voucherrow v ON v.number = l.number WHERE l.{_AT} "
            "GROUP BY l.number, l.ledger_key ORDER BY l.number").fetchall()
        cancelled = db.execute("SELECT number, narration FROM voucherrow WHERE cancelled").fetchall()
        through_links = linked.by_number(session)
    for number, office, date, key, paise, narration in rows:
        touch = found.get(number)
        if touch is None:
            touch = found[number] = Touch(number, office, dt.date.fromisoformat(date), False, narration, {})
        touch.amounts[key[1:].upper()] = int(paise)
    named = {ref for _n, narration in [*((r[0], r[5]) for r in rows), *cancelled] if (ref := tagged(narration))}
    for number, narration in cancelled:
        if number in named or tagged(narration):
            touch = _touch(resolve(node.store.revisions(number)).current)
            if touch is not None:
                found[number] = touch
    for number, noted in through_links.items():  # other offices' vouchers sealed for this one through links
        touch = _touch(resolve(_merged(node.store.revisions(number), noted)).current)
        if touch is not None:
            found[number] = touch
    return list(found.values())


def _revisions(node: Node, number: str) -> list[Revision]:
    """Every revision of voucher `number`: from the books this office reads, and as links brought them."""
    with node.db.read() as session:
        noted = linked.revisions(session, number)
    return _merged(node.store.revisions(number), noted)


def _merged(held: list[Revision], noted: list[Revision]) -> list[Revision]:
    """A voucher's revisions from its books (read while this office could) and from links since."""
    return list({rev.id: rev for rev in [*held, *noted]}.values())


def _touch(rev: Revision) -> Touch | None:
    amounts: dict[str, int] = {}
    for line in rev.content.lines:
        code = inter_office_code(line.ledger)
        if code is not None and line.ledger == inter_office_name(code):
            amounts[code] = amounts.get(code, 0) + line.signed
    if not amounts:
        return None
    return Touch(rev.number, rev.office, rev.content.date, rev.cancelled, rev.content.narration, amounts)


def disputes(node: Node) -> list[Dispute]:
    return schema.read_disputes(node.store.read_doc(schema.MASTERS))


def pairs(node: Node) -> dict[tuple[str, str], Pair]:
    return reconcile(touches(node), disputes(node))


# ---------------------------------------------------------------- counterparts


def counterparts(node: Node, today: dt.date | None = None) -> list[Data]:
    """What needs this office's attention: other offices' vouchers against it not yet accepted
    (pending), disputed, or out of step with its mirror, and its own vouchers out of step with theirs."""
    me, today = node.identity.office, today or dt.date.today()
    out = []
    for pair in pairs(node).values():
        for item in pair.items:
            mine = item.other == me and item.status != MATCHED
            if mine or (item.office == me and item.status == MISMATCHED):
                data = item.data(today)
                data["status"] = {IN_TRANSIT: PENDING, MISMATCHED: "out of step"}.get(item.status, item.status)
                if item.status == IN_TRANSIT and item.counterpart is None and item.other == me:
                    data["suggested"] = _suggestion(node, item.number)
                out.append(data)
    return sorted(out, key=lambda d: (d["date"], d["ref"]))


def _suggestion(node: Node, ref: str) -> list[Data]:
    revs = _revisions(node, ref)
    lines = suggested_lines(resolve(revs).current, node.identity.office) if revs else ()
    return [{"ledger": ln.ledger, "side": ln.side.value, "amount": to_decimal(ln.paise)} for ln in lines]


def _origin(node: Node, ref: str) -> tuple[Revision, int]:
    """Another office's voucher `ref` that touches this office's account, and its signed amount there."""
    me = node.identity.office
    ref = ref.strip().upper()
    if office_of(ref) == me:
        raise InvalidInput(f"{ref} is this office's own voucher; its counterpart is for office "
                           "its @ line names to accept")
    revs = _revisions(node, ref)
    if not revs:
        raise NotFound(f"unknown voucher {ref}; 'p2psync inter-office list' shows the counterparts here")
    current = resolve(revs).current
    if current.cancelled:
        raise RuleViolation(f"voucher {ref} is cancelled at {current.office}")
    paise = sum(ln.signed for ln in current.content.lines if ln.ledger == inter_office_name(me))
    if not paise:
        raise InvalidInput(f"voucher {ref} does not touch {current.office}'s account with {me} "
                           f"({inter_office_name(me)})")
    return current, paise


def _mirror_of(node: Node, ref: str) -> str | None:
    me = node.identity.office
    for pair in pairs(node).values():
        for item in pair.items:
            if item.number == ref and item.other == me and item.counterpart and not item.counterpart.cancelled:
                return item.counterpart.number
    return None


def accept(node: Node, ref: str, debits: list[str] = (), credits: list[str] = (),  # type: ignore[assignment]
           kind: str | None = None, date: str | None = None, narration: str | None = None) -> Revision:
    """Post the mirror of another office's voucher `ref` into this office's own books, with this
    office's own number: its account with that office on the opposite side for the same amount, and
    the lines given (else the suggested ones: the origin's other lines on the opposite sides)."""
    origin, paise = _origin(node, ref)
    ref = origin.number
    held = _mirror_of(node, ref)
    if held is not None:
        raise InvalidInput(f"{ref} is already accepted here as {held}")
    account = inter_office_name(origin.office)
    side = Side.CR if paise > 0 else Side.DR
    if debits or credits:
        lines = tuple(_line(text, Side.DR, abs(paise)) for text in debits) + tuple(
            _line(text, Side.CR, abs(paise)) for text in credits)
        if not any(inter_office_code(ln.ledger) == origin.office for ln in lines):
            lines = (Line(account, side, abs(paise)), *lines) if side is Side.DR else (*lines, Line(account, side, abs(paise)))
    else:
        lines = suggested_lines(origin, node.identity.office)
        if not lines:
            raise InvalidInput(f"{ref} touches a third office's account: give this office's lines with --dr/--cr")
    chart = node.chart(office=node.identity.office)
    text = (narration if narration is not None else origin.content.narration).strip()
    label = tag(ref)
    text = f"{text[:MAX_NARRATION - len(label) - 1]} {label}".strip()
    voucher_type = parse_type(kind) if kind else _type_of(lines, chart)
    return node.post(Draft(voucher_type, parse_date(date) if date else origin.content.date, lines, text))


def _line(text: str, side: Side, whole: int) -> Line:
    """``LEDGER=AMOUNT``, or just ``LEDGER`` for the whole amount of the counterpart."""
    if "=" in text:
        return parse_line(text, side)
    if not text.strip():
        raise InvalidInput(f"a {side.value.lower()} line needs a ledger")
    return Line(" ".join(text.split()), side, whole)


def _type_of(lines: tuple[Line, ...], chart: Chart) -> VoucherType:
    """Receipt when money comes into cash or bank, Payment when it goes out, else Journal."""
    def money(line: Line) -> bool:
        ledger = chart.ledger(line.ledger)
        return ledger is not None and chart.groups.is_under(ledger.group, CASH_AND_BANK)
    if any(money(ln) for ln in lines if ln.side is Side.DR):
        return VoucherType.RECEIPT
    if any(money(ln) for ln in lines if ln.side is Side.CR):
        return VoucherType.PAYMENT
    return VoucherType.JOURNAL


def dispute(node: Node, ref: str, reason: str) -> Dispute:
    """Record, in this office's own records, that it does not take voucher `ref` into its books."""
    if not reason.strip():
        raise InvalidInput("say why with --reason")
    origin, _paise = _origin(node, ref)
    held = _mirror_of(node, origin.number)
    if held is not None:
        raise InvalidInput(f"{origin.number} is already accepted here as {held}; cancel that voucher first")
    me = node.identity.office
    if any(d.ref == origin.number and d.office == me for d in disputes(node)):
        raise InvalidInput(f"{origin.number} is already disputed here")
    record = Dispute(origin.number, me, " ".join(reason.split())[:MAX_NARRATION], node.identity.node_id, node.clock())
    with node.store.transaction() as batch:
        batch.change(schema.MASTERS, lambda doc: schema.put_dispute(doc, record))
    return record


# ---------------------------------------------------------------- reconciliation


def report(node: Node, office: str | None = None, today: dt.date | None = None) -> Data:
    """Per pair of offices: each voucher matched, in transit (with its age), disputed or mismatched,
    the totals of each, and the two accounts' balances side by side."""
    today = today or dt.date.today()
    code = office.strip().upper() if office else None
    known = {o for o in schema.read_offices(node.store.read_doc(schema.MASTERS))}
    if code and code not in known:
        raise NotFound(f"unknown office {code}; see 'p2psync branch list'")
    out = []
    for (first, second), pair in sorted(pairs(node).items()):
        if code and code not in (first, second):
            continue
        totals = {status: to_decimal(sum(abs(i.paise) for i in pair.items if i.status == status))
                  for status in (MATCHED, IN_TRANSIT, DISPUTED, MISMATCHED)}
        out.append({
            "offices": [first, second],
            "balances": {first: to_decimal(pair.balances.get(first, 0)), second: to_decimal(pair.balances.get(second, 0))},
            "difference": to_decimal(pair.balances.get(first, 0) + pair.balances.get(second, 0)),
            "totals": totals,
            "items": [i.data(today) for i in sorted(pair.items, key=lambda i: (i.status != MATCHED, i.date, i.number))],
        })
    return {"report": "inter-office", "scope": code or "consolidated", "as_on": today.isoformat(), "pairs": out}




# ---------------------------------------------------------------- consolidation

#: The one line consolidated statements show for what elimination leaves of inter-office accounts.
UNRECONCILED = "Inter-office in transit / unreconciled"


def matched_by_account(node: Node, end: dt.date | None = None) -> dict[tuple[str, str], int]:
    """(office, other office) -> the signed amount of that office's account with the other that
    matched pairs make up, as on `end`: what consolidation eliminates. Under the key ("", "") the
    amount of the matched pairs themselves, each pair once."""
    out: dict[tuple[str, str], int] = {("", ""): 0}
    with node.db.read() as session:  # books without inter-office lines have nothing to eliminate
        if not queries.has_inter_office_lines(session):
            return out
    for pair in pairs(node).values():
        for item in pair.items:
            if item.status != MATCHED or item.counterpart is None or (end and item.date > end):
                continue
            out[("", "")] += abs(item.paise)
            out[(item.office, item.other)] = out.get((item.office, item.other), 0) + item.paise
            back = item.counterpart.amounts.get(item.office, 0)
            out[(item.other, item.office)] = out.get((item.other, item.office), 0) + back
    return out


def eliminate(session: Any, balances: list[Any], matched: dict[tuple[str, str], int],
              end: dt.date | None = None) -> tuple[list[Any], Data]:
    """Consolidated balances without any office's inter-office account: what matched pairs make up
    cancels out, and what is left (in transit, disputed, mismatched) is one explicit line, never
    dropped. Returns the balances and what was eliminated and left."""
    from p2psync.books.reports import LedgerBalance

    query = f"SELECT office, ledger_key, sum(paise) FROM linerow WHERE {_AT}"
    query += " AND date <= ? GROUP BY office, ledger_key" if end else " GROUP BY office, ledger_key"
    rows = raw_connection(session).execute(query, (end.isoformat(),) if end else ()).fetchall()
    debit = credit = 0
    for office, key, paise in rows:
        left = int(paise) - matched.get((office, key[1:].upper()), 0)
        debit, credit = debit + max(left, 0), credit + max(-left, 0)
    kept = [b for b in balances if not b.key.startswith("@")]
    if debit or credit:
        kept.append(LedgerBalance("@", UNRECONCILED, BRANCH_DIVISIONS, BRANCH_DIVISIONS, "liability", False,
                                  0, debit, credit))
    return kept, {"eliminated": to_decimal(matched.get(("", ""), 0)), "unreconciled_debit": to_decimal(debit),
                  "unreconciled_credit": to_decimal(credit)}
