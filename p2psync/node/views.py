"""What a node shows and changes on request, as plain data: the one source of what ``--json`` prints
and of what the dashboard's JSON API answers, so the command line and the web page can never
disagree. Amounts are two-place `Decimal`; dates are ISO text.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from p2psync.books import reports
from p2psync.books.groups import group_key
from p2psync.books.model import Revision
from p2psync.books.money import to_decimal
from p2psync.books.resolve import resolve
from p2psync.books.rules import parse_date
from p2psync.errors import InvalidInput, NotFound
from p2psync.localtime import check_date_format
from p2psync.node import registrar
from p2psync.node.office import Node
from p2psync.store import queries

Data = dict[str, Any]
REPORTS = ("trial-balance", "ledger", "day-book", "profit-loss", "balance-sheet")


def optional_date(text: str | None) -> dt.date | None:
    return parse_date(text) if text else None


def _office(office: str | None) -> str | None:
    return office.strip().upper() if office and office.strip() else None


def scope(office: str | None) -> str:
    return _office(office) or "consolidated"


# ---------------------------------------------------------------- registration and settings


def identity(node: Node) -> Data:
    ident = node.identity
    return {"company": ident.company, "office": ident.office, "role": ident.role, "node_id": ident.node_id,
            "registration_id": node.registration_id,
            "file_type": "Head Office" if ident.is_head else "Branch Office"}


def offices(node: Node) -> list[Data]:
    with node.db.read() as session:
        return [{"code": o.code, "name": o.name, "role": o.role} for o in queries.offices(session)]


def settings(node: Node) -> Data:
    policy = node.trust.policy
    return {"office": node.identity.office,
            "file_type": "Head Office" if node.identity.is_head else "Branch Office",
            "registration_id": node.registration_id, **node.settings(), "sync_after": policy.sync_after,
            "relays": list(policy.relays), "policy_version": policy.version, "key_epoch": policy.epoch}


def change_settings(node: Node, mode: str | None = None, interval: int | None = None,
                    sync_after: str | None = None, relays: list[str] | None = None,
                    date_format: str | None = None) -> Data:
    """Apply what is given (None leaves a setting as it is); the head office alone signs a new policy
    for the sync-after date and the relays. ``sync_after`` 'none' or '' clears the date. The date
    format is this office's own, like the mode."""
    if mode is not None and mode not in ("auto", "manual"):
        raise InvalidInput(f"mode {mode!r} must be auto or manual")
    if interval is not None and not 1 <= interval <= 1440:
        raise InvalidInput(f"interval {interval} must be between 1 and 1440 minutes")
    for url in relays or ():
        if not url.startswith(("ws://", "wss://")):
            raise InvalidInput(f"relay address {url!r} must start with ws:// or wss://")
    new_date = None
    if sync_after is not None and sync_after.strip().lower() not in ("", "none"):
        new_date = parse_date(sync_after)
    shown = check_date_format(date_format) if date_format is not None else None
    local = {k: v for k, v in (("mode", mode), ("interval", str(interval) if interval else None),
                               ("date_format", shown)) if v}
    if local:
        node.set_local(**local)
    current = settings(node)
    if sync_after is not None and (new_date.isoformat() if new_date else None) != current["sync_after"]:
        registrar.set_sync_after(node, new_date)
    if relays is not None and list(relays) != current["relays"]:
        registrar.set_relays(node, list(relays))
    return settings(node)


def quarantine(node: Node) -> list[Data]:
    return [{"received_at": q["at"], **{k: v for k, v in q.items() if k != "at"}} for q in node.quarantined()]


def conflicts(node: Node) -> list[Data]:
    with node.db.read() as session:
        return [{"kind": c.kind, "subject": c.subject, "winner": c.winner, "loser": c.loser}
                for c in queries.conflicts(session)]


# ---------------------------------------------------------------- masters and vouchers


def groups(node: Node) -> list[Data]:
    """Every account group, predefined and user-made, with its nature."""
    with node.db.read() as session:
        rows = sorted(queries.groups(session).values(), key=lambda g: (g.primary, g.name))
    return [{"name": g.name, "parent": g.parent, "nature": g.nature, "primary": g.primary,
             "predefined": g.predefined} for g in rows]


def ledgers(node: Node) -> list[Data]:
    with node.db.read() as session:
        return [{"name": led.name, "group": grp.name, "nature": grp.nature, "created_at_office": led.office}
                for led, grp in queries.ledgers(session)]


def revision_data(rev: Revision) -> Data:
    c = rev.content
    return {
        "number": rev.number, "revision": rev.id, "action": rev.action.value, "office": rev.office,
        "type": c.type.value, "date": c.date.isoformat(), "narration": c.narration, "reason": rev.reason,
        "lines": [{"ledger": ln.ledger, "side": ln.side.value, "amount": to_decimal(ln.paise)} for ln in c.lines],
        "parents": list(rev.parents), "at": rev.at,
    }


def vouchers(node: Node, office: str | None = None, start: str | None = None, end: str | None = None) -> list[Data]:
    with node.db.read() as session:
        rows = queries.vouchers(session, _office(office), optional_date(start), optional_date(end))
    return [{"number": v.number, "date": v.date, "type": v.type, "office": v.office, "narration": v.narration,
             "amount": to_decimal(v.amount), "cancelled": v.cancelled, "revisions": v.revisions,
             "conflicts": v.conflicts} for v in rows]


def voucher(node: Node, number: str) -> Data:
    """One voucher: its current revision, every revision, and the ones that lost a conflict."""
    revs = node.store.revisions(number.strip().upper())
    if not revs:
        raise NotFound(f"no voucher numbered {number}")
    state = resolve(revs)
    return {"current": revision_data(state.current), "cancelled": state.current.cancelled,
            "history": [revision_data(r) for r in state.revisions],
            "conflicts": [revision_data(r) for r in state.conflicts]}


def voucher_type(node: Node, number: str) -> str:
    """The type of voucher `number`: an amendment keeps it unless told otherwise."""
    with node.db.read() as session:
        row = queries.voucher(session, number.strip().upper())
    if row is None:
        raise NotFound(f"no voucher numbered {number}")
    return row.type


# ---------------------------------------------------------------- reports


def report(node: Node, kind: str, office: str | None = None, start: str | None = None, end: str | None = None,
           ledger: str | None = None) -> Data:
    """Any report by name, per office or consolidated."""
    if kind not in REPORTS:
        raise InvalidInput(f"unknown report {kind!r}; use one of {', '.join(REPORTS)}")
    code, first, last = _office(office), optional_date(start), optional_date(end)
    with node.db.read() as session:
        if kind == "trial-balance":
            return reports.trial_balance(queries.balances(session, code, end=last), scope(office))
        if kind == "balance-sheet":
            return reports.balance_sheet(queries.balances(session, code, end=last), scope(office))
        if kind == "profit-loss":
            balances = queries.balances(session, code, first, last)
            if first:  # movements of the period only
                balances = [b.__class__(**{**vars(b), "opening": 0}) for b in balances]
            return reports.profit_and_loss(balances, scope(office))
        if kind == "day-book":
            rows = queries.vouchers(session, code, first, last)
            return reports.day_book(rows, queries.lines_of(session, [v.number for v in rows]), scope(office))
        if not ledger or not ledger.strip():
            raise InvalidInput("name the ledger whose statement you want")
        key = group_key(ledger)
        found = next((led for led, _g in queries.ledgers(session) if led.key == key), None)
        if found is None:
            raise NotFound(f"unknown ledger {ledger!r}")
        return reports.ledger_statement(found.name, queries.opening_of(session, key, code),
                                        queries.postings(session, key, code, last), scope(office), first)
