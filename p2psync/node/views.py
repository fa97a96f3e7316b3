"""What a node shows and changes on request, as plain data: the one source of what ``--json`` prints
and of what the dashboard's JSON API answers, so the command line and the web page can never
disagree. Amounts are two-place `Decimal`; dates are ISO text.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from p2psync.books import posting, reports
from p2psync.books.groups import group_key
from p2psync.books.model import Revision, VoucherState
from p2psync.books.money import to_decimal
from p2psync.books.resolve import resolve
from p2psync.books.rules import parse_date
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.localtime import check_date_format
from p2psync.node.home import DB_FILE
from p2psync.store import queries, reading
from p2psync.trust import scopes
from p2psync.trust.claims import claimed
from p2psync.trust.scopes import EVERY_OFFICE

if TYPE_CHECKING:  # the node (the store, the ORM, the CRDT library) is imported by what opens one
    from sqlmodel import Session

    from p2psync.node.office import Node
    from p2psync.trust.policy import Policy

Data = dict[str, Any]
REPORTS = ("trial-balance", "ledger", "day-book", "profit-loss", "balance-sheet")


def optional_date(text: str | None) -> dt.date | None:
    return parse_date(text) if text else None


def _office(office: str | None) -> str | None:
    return office.strip().upper() if office and office.strip() else None


def _checked_scope(session: Any, office: str | None, start: str | None,
                   end: str | None) -> tuple[str | None, dt.date | None, dt.date | None]:
    """The office and period asked for, refused when they could only give an empty answer that looks
    like a real one: an office not in the branch master, or a period that ends before it starts."""
    code, first, last = _office(office), optional_date(start), optional_date(end)
    if code and code not in {o.code for o in queries.offices(session)}:
        raise NotFound(f"unknown office {code}; see 'p2psync branch list'")
    if first and last and first > last:
        raise InvalidInput(f"the period starts ({first}) after it ends ({last})")
    return code, first, last


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


def read_scopes(node: Node) -> list[Data]:
    """Whose books each office reads, as the head office's policy says (every office also reads the
    masters): a head office every office's, a branch its own and those granted to it. `granted` is
    what the office itself is granted, `every_office` what every branch office is (`"*"` in either:
    every office's books, including offices added later)."""
    policy = node.trust.policy
    with node.db.read() as session:
        rows = queries.offices(session)
    codes = [o.code for o in rows]
    everyone = sorted(policy.grants.get(EVERY_OFFICE, ()))
    out = []
    for o in rows:
        head = o.role == "head"
        out.append({**_reading(policy, o.code, head, codes), "name": o.name, "role": o.role,
                    "granted": [] if head else sorted(policy.grants.get(o.code, ())),
                    "every_office": [] if head else everyone})
    return out


def _reading(policy: Policy, code: str, head: bool, codes: list[str]) -> Data:
    """Whether `code` reads every office's books, and whose it reads of `codes`."""
    reads = policy.reads(code, head)
    return {"office": code, "all": reads is None, "reads": codes if reads is None else [c for c in codes if c in reads]}


def change_scope(node: Node, office: str, grant: list[str] | None = None, revoke: list[str] | None = None) -> Data:
    """Grant or take back an office's reading of other offices' books (head office only); `"*"` as
    the office is every branch office, and among the offices every office's books."""
    from p2psync.node import registrar

    before = node.trust.policy
    policy = registrar.set_grants(node, office, grant or [], revoke or [])
    code = office.strip().upper()
    if code == EVERY_OFFICE:
        with node.db.read() as session:
            codes = [o.code for o in queries.offices(session)]
        granted = sorted(policy.grants.get(EVERY_OFFICE, ()))
        row = {"office": EVERY_OFFICE, "all": EVERY_OFFICE in granted,
               "reads": codes if EVERY_OFFICE in granted else granted, "granted": granted}
    else:
        row = next(r for r in read_scopes(node) if r["office"] == code)
    return {**row, "policy_version": policy.version, "key_epoch": policy.epoch,
            "rotated": policy.epoch != before.epoch, "changed": policy.version != before.version}


def enable_scopes(node: Node) -> Data:
    """Move the organisation to per-scope keys (head office; once)."""
    from p2psync.node import registrar

    before = node.trust.policy
    policy = registrar.use_scope_keys(node)
    return {"scoped_from": policy.scoped_from, "policy_version": policy.version, "key_epoch": policy.epoch,
            "changed": policy.version != before.version}


def settings(node: Node) -> Data:
    policy = node.trust.policy
    return {"office": node.identity.office,
            "file_type": "Head Office" if node.identity.is_head else "Branch Office",
            "registration_id": node.registration_id, **node.settings(), "sync_after": policy.sync_after,
            "lock_until": policy.lock_until, "relays": list(policy.relays), "policy_version": policy.version,
            "key_epoch": policy.epoch, "scoped_from": policy.scoped_from or None}


def policy_history(node: Node) -> list[Data]:
    """Every change of the policy's dated rules (sync-after date, period lock), oldest first: the
    version that made it, when it was issued (None for a change from before that was recorded), and
    the date it set (None: cleared, an unlock)."""
    from p2psync.trust.policy import DATED_RULES

    policy = node.trust.policy
    changes = []
    for name in DATED_RULES:
        for version, date in policy.rule(name).history.items():
            at = policy.rules_changed_at.get(version) or (policy.issued_at if int(version) == policy.version else None)
            changes.append({"version": int(version), "issued_at": at, "setting": name, "date": date})
    return sorted(changes, key=lambda c: (c["version"], c["setting"]))


def change_settings(node: Node, mode: str | None = None, interval: int | None = None,
                    sync_after: str | None = None, relays: list[str] | None = None,
                    books_begin: str | None = None, post_ahead: str | None = None,
                    negative_cash: str | None = None, date_format: str | None = None,
                    lock_until: str | None = None) -> Data:
    """Apply what is given (None leaves a setting as it is); the head office alone signs a new policy
    for the sync-after date, the period lock and the relays. ``sync_after``, ``lock_until`` or
    ``books_begin`` 'none' or '' clears the date. The posting settings (books begin, post ahead, negative cash) and the date format are
    this office's own."""
    from p2psync.node import registrar

    if mode is not None and mode not in ("auto", "manual"):
        raise InvalidInput(f"mode {mode!r} must be auto or manual")
    if interval is not None and not 1 <= interval <= 1440:
        raise InvalidInput(f"interval {interval} must be between 1 and 1440 minutes")
    for url in relays or ():
        if not url.startswith(("ws://", "wss://")):
            raise InvalidInput(f"relay address {url!r} must start with ws:// or wss://")
    new_date, new_lock = _policy_date(sync_after), _policy_date(lock_until)
    if lock_until is not None and not node.identity.is_head:
        raise RuleViolation(registrar.HEAD_ONLY_LOCK)
    shown = check_date_format(date_format) if date_format is not None else None
    dates = {name: (value.isoformat() if value else None)
             for name, given, value in (("sync_after", sync_after, new_date), ("lock_until", lock_until, new_lock))
             if given is not None}
    _check_policy_change(node, dates, relays)
    local = {k: v for k, v in (("mode", mode), ("interval", str(interval) if interval else None),
                               ("date_format", shown)) if v}
    local.update(_posting_settings(books_begin, post_ahead, negative_cash))
    if local:
        node.set_local(**local)
    current = settings(node)
    if sync_after is not None and (new_date.isoformat() if new_date else None) != current["sync_after"]:
        registrar.set_sync_after(node, new_date)
    if lock_until is not None and (new_lock.isoformat() if new_lock else None) != current["lock_until"]:
        registrar.set_lock_until(node, new_lock)
    if relays is not None and list(relays) != current["relays"]:
        registrar.set_relays(node, list(relays))
    return settings(node)


def _check_policy_change(node: Node, changes: dict[str, str | None], relays: list[str] | None) -> None:
    """Refuse a policy change the head office cannot sign now before any setting is applied, so that
    a command that fails changes nothing. `changes`: the policy's dates given (name -> ISO date or
    None to clear)."""
    from p2psync.node import registrar

    current = node.trust.policy
    if any(value != getattr(current, name) for name, value in changes.items()) or (
            relays is not None and tuple(relays) != current.relays):
        registrar.check_may_sign(node)


def _policy_date(text: str | None) -> dt.date | None:
    """A date for the policy as typed; None for no change or for 'none' or '' (which clear it)."""
    if text is None or text.strip().lower() in ("", "none"):
        return None
    return parse_date(text)


def _posting_settings(books_begin: str | None, post_ahead: str | None, negative_cash: str | None) -> dict[str, str]:
    """The posting settings given, checked; an empty books-begin clears it."""
    out = {}
    if books_begin is not None:
        cleared = books_begin.strip().lower() in ("", "none")
        out["books_begin"] = "" if cleared else parse_date(books_begin).isoformat()
    if post_ahead is not None:
        out["post_ahead"] = posting.check_post_ahead(post_ahead)
    if negative_cash is not None:
        out["negative_cash"] = posting.check_negative_cash(negative_cash)
    return out


def quarantine(node: Node) -> list[Data]:
    return [{"received_at": q["at"], **{k: v for k, v in q.items() if k != "at"}} for q in node.quarantined()]


def conflicts(node: Node) -> list[Data]:
    """Each conflict; a voucher's with every version that stands (its amounts, narration, office and
    time), which one is current and why, so that an office can settle it knowing what it keeps."""
    with node.db.read() as session:
        rows = queries.conflicts(session)
    out = []
    for c in rows:
        item: Data = {"kind": c.kind, "subject": c.subject, "winner": c.winner, "loser": c.loser}
        if c.kind == "voucher":
            state = resolve(node.store.revisions(c.subject))
            loser = next((r for r in state.conflicts if r.id == c.loser), None)
            item.update(number=c.subject, office=state.current.office,
                        versions=[{**_version(node, r, r is state.current), "settle": _settle_by(node, state, r)}
                                  for r in [state.current, *state.conflicts]],
                        why=_why(state.current, loser) if loser else "")
        out.append(item)
    return out


def _version(node: Node, rev: Revision, current: bool) -> Data:
    """One standing version of a conflicted voucher, as an accountant compares them."""
    try:
        office = node.trust.author(rev.author).office
    except P2PSyncError:
        office = "?"
    amount = sum(ln.paise for ln in rev.content.lines if ln.side.value == "Dr")
    return {"revision": rev.id, "action": rev.action.value, "made_at_office": office, "at": rev.at,
            "date": rev.content.date.isoformat(), "amount": to_decimal(amount), "narration": rev.content.narration,
            "reason": rev.reason, "current": current,
            "lines": [{"ledger": ln.ledger, "side": ln.side.value, "amount": to_decimal(ln.paise)}
                      for ln in rev.content.lines]}


def _settle_by(node: Node, state: VoucherState, rev: Revision) -> str | None:
    """How this office may settle the conflict by keeping version `rev` ('keep-cancellation' or
    'restore', as `Node.settle` takes them), or None where it would refuse: the page offers only what
    the node accepts. A cancelled voucher's amendment comes back as a new voucher in the series of
    the office that restores it, so only the voucher's own office may restore one."""
    if not node.identity.may_write(state.current.office):
        return None
    if rev.cancelled:
        return "keep-cancellation"
    if state.current.cancelled and state.current.office != node.identity.office:
        return None
    return "restore"


def _why(winner: Revision, loser: Revision) -> str:
    """Why every office picks `winner` over `loser` (`resolve`)."""
    if winner.cancelled and not loser.cancelled:
        return "a cancellation always wins over an amendment made at the same time"
    if winner.generation != loser.generation:
        return f"it follows more earlier versions ({winner.generation} against {loser.generation})"
    if winner.at != loser.at:
        return "it was made later"
    return "made at the same moment: the higher revision id wins"


def settle_conflict(node: Node, number: str, restore: str | None = None) -> Data:
    """`Node.settle`, with what was made."""
    made = node.settle(number, restore)
    return {"number": number.strip().upper(), "made": [revision_data(r) for r in made]}


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
                for led, grp in queries.ledgers(session) if led.office]  # `@CODE` accounts have no record


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
        code, first, last = _checked_scope(session, office, start, end)
        rows = queries.vouchers(session, code, first, last)
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
           ledger: str | None = None, detail: bool = False) -> Data:
    """Any report by name, per office or consolidated over the offices this office may read (labelled
    with them when they are not all); each says how many of its vouchers are held in this office's
    local books (dated before the sync-after date, never sent to other offices)."""
    matched = _matched(node, kind, office, end)
    policy = node.trust.policy
    reads = policy.reads(node.identity.office, node.identity.is_head) if policy.scoped_from else None
    with node.db.read() as session:
        return _report_from(session, policy.sync_after, kind, office, start, end, ledger, detail, matched,
                            reads, node.identity.office)


def report_at(home: Path, kind: str, office: str | None = None, start: str | None = None, end: str | None = None,
              ledger: str | None = None, detail: bool = False) -> Data:
    """`report` for a command that holds only the home: read with `sqlite3` alone when the database
    needs nothing done first (`reading.open_as_is`), which spares the command importing the ORM, the
    CRDT library and the network (most of its time on small books); else, or if SQLite cannot read
    it, through `Node.open`, which mends what it can and explains what it cannot. The offices it covers
    are those the stored policy grants (`_claimed_reads`), as the node verified it when it adopted it
    (and verifies on every open). A report that needs the node's documents (eliminating inter-office
    pairs) goes through the node too."""
    connection = reading.open_as_is(home / DB_FILE)
    if connection is not None:
        try:
            policy = (reading.setting(connection, "policy") or "").encode()
            eliminates = _office(office) is None and kind in _ELIMINATING and queries.has_inter_office_lines(connection)
            own = reading.setting(connection, "office") or ""
            reads = _claimed_reads(policy, own, reading.setting(connection, "role") == "head")
            if not eliminates and reads is not False:
                sync_after = claimed(policy, "sync_after")
                return _report_from(connection, sync_after if isinstance(sync_after, str) else None, kind, office,
                                    start, end, ledger, detail, reads=reads, own=own)
        except sqlite3.DatabaseError:
            pass
        finally:
            connection.close()
    from p2psync.node.office import Node

    node = Node.open(home)
    try:
        return report(node, kind, office, start, end, ledger, detail)
    finally:
        node.close()


def _claimed_reads(policy: bytes, office: str, is_head: bool) -> frozenset[str] | None | Literal[False]:
    """The offices whose books this office reads by the stored policy's claims (None: all, as before
    read scopes); False when they cannot be read as they should be, for `Node.open` to verify."""
    if not claimed(policy, "scoped_from"):
        return None
    grants = claimed(policy, "grants") or {}
    if not isinstance(grants, dict) or not all(isinstance(g, list) and all(isinstance(o, str) for o in g)
                                               for g in grants.values()):
        return False
    return scopes.reads(grants, office, is_head)


def _matched(node: Node, kind: str, office: str | None, end: str | None) -> dict[tuple[str, str], int] | None:
    """What the consolidated statement `kind` eliminates (`interoffice.matched_by_account`); None for
    a report that eliminates nothing."""
    if _office(office) is not None or kind not in _ELIMINATING:
        return None
    from p2psync.node import interoffice  # the books' documents: read through the node

    return interoffice.matched_by_account(node, optional_date(end))


def _report_from(source: Session | sqlite3.Connection, sync_after: str | None, kind: str, office: str | None,
                 start: str | None, end: str | None, ledger: str | None, detail: bool,
                 matched: dict[tuple[str, str], int] | None = None, reads: frozenset[str] | None = None,
                 own: str = "") -> Data:
    """A report from the tables; `reads`: the offices this office may read (None: all)."""
    if kind not in REPORTS:
        raise InvalidInput(f"unknown report {kind!r}; use one of {', '.join(REPORTS)}")
    code, first, last = _checked_scope(source, office, start, end)
    covered, label = _readable(source, code, reads, own)
    data = _report(source, kind, covered, label, first, last, ledger, detail,
                   matched if covered is None else None)
    if isinstance(covered, frozenset):
        data["offices"] = sorted(covered)
    data["local_only"] = queries.local_only(source, covered, first, last)
    data["sync_after"] = sync_after
    return data


def _readable(source: Any, code: str | None, reads: frozenset[str] | None, own: str) -> tuple[queries.Offices, str]:
    """The offices a report here covers, and its label: one office if asked for (refused if this
    office may not read its books), else every office this office reads: all of them ("consolidated"),
    or those it is granted ("HO, BR1: 2 of 5 offices")."""
    if code is not None:
        if reads is not None and code not in reads:
            raise RuleViolation(f"this office may not read {code}'s books; the head office grants that "
                                "('p2psync scope grant')")
        return code, scope(code)
    every = [o.code for o in queries.offices(source)]
    if reads is None or set(every) <= reads:
        return None, scope(None)
    covered = frozenset(o for o in every if o in reads) or frozenset({own})
    return covered, f"{', '.join(sorted(covered))}: {len(covered)} of {len(every)} offices"


#: The consolidated statements that eliminate inter-office accounts (profit and loss has none: they
#: are all under Branch / Divisions). A consolidation over only some offices (read scopes) shows the
#: inter-office accounts as they are: the pairs with offices it may not read cannot be matched.
_ELIMINATING = ("trial-balance", "balance-sheet")


def _report(session: Any, kind: str, code: queries.Offices, label: str, first: dt.date | None,
            last: dt.date | None, ledger: str | None, detail: bool,
            matched: dict[tuple[str, str], int] | None = None) -> Data:
    if kind in _ELIMINATING:
        balances, summary = queries.balances(session, code, end=last), None
        if matched is not None:
            from p2psync.node import interoffice

            balances, summary = interoffice.eliminate(session, balances, matched, last)
        if kind == "trial-balance":
            data = reports.trial_balance(balances, label)
        else:
            rows = queries.groups(session)
            parents = {g.name: rows[group_key(g.parent)].name if g.parent and group_key(g.parent) in rows else None
                       for g in rows.values()}
            data = reports.balance_sheet(balances, label, parents, detail)
        if summary is not None and any(summary.values()):  # books without inter-office traffic read as before
            data["inter_office"] = summary
        return data
    if kind == "profit-loss":
        balances = queries.balances(session, code, first, last)
        if first:  # movements of the period only
            balances = [b.__class__(**{**vars(b), "opening": 0}) for b in balances]
        return reports.profit_and_loss(balances, label)
    if kind == "day-book":
        rows = queries.vouchers(session, code, first, last)
        return reports.day_book(rows, queries.lines_of(session, [v.number for v in rows]), label)
    if not ledger or not ledger.strip():
        raise InvalidInput("name the ledger whose statement you want")
    key = group_key(ledger)
    found = next((led for led, _g in queries.ledgers(session) if led.key == key), None)
    if found is None:
        raise NotFound(f"unknown ledger {ledger!r}")
    return reports.ledger_statement(found.name, queries.opening_of(session, key, code),
                                    queries.postings(session, key, code, last), label, first)


def posted(node: Node, revs: list[Revision]) -> Data:
    """What a user must be told after posting, besides the voucher: which of them stay in this office's
    books (dated before the sync-after date, they are never sent) and which cash balances went below
    zero."""
    with node.db.read() as session:
        local = [r.number for r in revs if (row := queries.voucher(session, r.number)) is not None
                 and row.doc.startswith("local/")]
        warnings = node.cash_shortfalls(revs, session)
    sync_after = node.trust.policy.sync_after
    return {"local_only": local, "sync_after": sync_after, "warnings": warnings,
            "held_back": (f"dated before the sync-after date {sync_after}: kept in this office's books and never "
                          "sent to other offices") if local else None}


def revision_posted(node: Node, rev: Revision) -> Data:
    """A revision just made, as ``--json`` prints it and the dashboard gets it, with `posted`'s notes."""
    notes = posted(node, [rev])
    return {**revision_data(rev), "local_only": bool(notes["local_only"]), "held_back": notes["held_back"],
            "warnings": notes["warnings"]}
