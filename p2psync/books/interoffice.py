"""Between offices: counterparts, disputes and the reconciliation of inter-office accounts.

A voucher at office A that touches ``@B`` (A's account with B) is a *counterpart* for B to take into
its own books. Nothing new is shared for it: B reads A's vouchers like every office does. B answers
in its own books only, never A's:

* **accepting** is posting a *mirror*: a voucher of B's own that touches ``@A`` and whose narration
  ends with the tag ``[inter-office A/PMT/00001]`` naming A's voucher;
* **disputing** is a dispute record in the masters' ``disputes`` map, keyed ``<number>@B``, which only
  B may write.

Everything here is computed from vouchers and records every reader holds, never from what arrived
when, so every office that holds the same entries shows the same reconciliation.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from p2psync.books.model import MAX_NARRATION, Line, Revision, Side, _load_object, _str, number_series
from p2psync.books.money import to_decimal
from p2psync.books.rules import inter_office_code, inter_office_name
from p2psync.canonical import dumps
from p2psync.errors import InvalidInput, RuleViolation

_TAG = re.compile(r"\[inter-office ([^\]\s]{1,60})\]\s*$")


def tag(number: str) -> str:
    """The narration tag that makes a voucher the mirror of voucher `number` of another office."""
    return f"[inter-office {number}]"


def tagged(narration: str) -> str | None:
    """The voucher number a mirror's narration names, None if it is no mirror."""
    match = _TAG.search(narration)
    return match.group(1) if match else None


def office_of(number: str) -> str:
    """The office whose series a voucher number is in (``HO/PMT/00001`` -> ``HO``)."""
    return number.partition("/")[0]


def linked_offices(revisions: Iterable[Revision], earlier: Callable[[str], Revision | None]) -> tuple[str, ...]:
    """The offices, other than their own, that must read these revisions: those whose inter-office
    accounts they or any revision they replace (`earlier` reads one by id) touch. So an office that
    was once a voucher's counterpart sees every later revision of it, and picks the same current one
    as the voucher's readers."""
    found: set[str] = set()
    seen: set[str] = set()
    stack = list(revisions)
    while stack:
        rev = stack.pop()
        if rev.id in seen:
            continue
        seen.add(rev.id)
        for line in rev.content.lines:
            code = inter_office_code(line.ledger)
            if code is not None and code != rev.office and line.ledger == inter_office_name(code):
                found.add(code)
        stack.extend(parent for parent_id in rev.parents if (parent := earlier(parent_id)) is not None)
    return tuple(sorted(found))


def check_mirror(rev: Revision) -> None:
    """A receiver's rule for a mirror, judged from the revision alone (so the same everywhere): it
    names a voucher of another office, and touches its own account with that office. Whether the
    amounts agree is the reconciliation's business: the other side may be amended later."""
    ref = tagged(rev.content.narration)
    if ref is None or rev.cancelled:
        return
    other = office_of(ref)
    if number_series(ref) == (0, 0) or other == rev.office:
        raise RuleViolation(f"voucher {rev.number[:40]} names {ref[:60]!r}, which is not another office's voucher")
    if not any(inter_office_code(ln.ledger) == other for ln in rev.content.lines):
        raise RuleViolation(f"voucher {rev.number[:40]} mirrors {ref[:60]} but does not touch "
                            f"{inter_office_name(other)}")


@dataclass(frozen=True)
class Dispute:
    """Office `office` says voucher `ref` of another office is not its business as it stands."""

    ref: str
    office: str
    reason: str
    author: str
    at: str

    @property
    def key(self) -> str:
        return dispute_key(self.ref, self.office)


def dispute_key(ref: str, office: str) -> str:
    return f"{ref}@{office}"


def encode_dispute(dispute: Dispute) -> str:
    return dumps({"ref": dispute.ref, "office": dispute.office, "reason": dispute.reason,
                  "author": dispute.author, "at": dispute.at})


def decode_dispute(text: Any) -> Dispute:
    data = _load_object(text, "dispute")
    try:
        dispute = Dispute(_str(data["ref"]), _str(data["office"]), _str(data["reason"]), _str(data["author"]),
                          _str(data["at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed dispute: {exc}") from None
    if not dispute.reason.strip() or len(dispute.reason) > MAX_NARRATION:
        raise InvalidInput(f"dispute of {dispute.ref[:60]} needs a reason of at most {MAX_NARRATION} characters")
    if number_series(dispute.ref) == (0, 0) or office_of(dispute.ref) == dispute.office:
        raise InvalidInput(f"dispute names {dispute.ref[:60]!r}, which is not another office's voucher")
    return dispute


# ---------------------------------------------------------------- reconciliation


@dataclass(frozen=True)
class Touch:
    """A voucher's current revision as far as inter-office accounts go: its signed amount (debit
    positive) on each of its office's accounts with other offices, by the other office's code."""

    number: str
    office: str
    date: dt.date
    cancelled: bool
    narration: str
    amounts: dict[str, int]

    @property
    def ref(self) -> str | None:
        return tagged(self.narration)

    def mirrors(self, other: str) -> bool:
        """Whether this is the mirror of one of office `other`'s vouchers (not a voucher of its own)."""
        ref = self.ref
        return ref is not None and office_of(ref) == other


@dataclass
class Item:
    """One voucher of a pair of offices and where it stands: matched, in transit, disputed or
    mismatched. `office` made `number`; `counterpart` is the other office's mirror of it."""

    status: str
    office: str
    other: str
    number: str
    date: dt.date
    paise: int  # signed, on `office`'s account with `other`
    counterpart: Touch | None = None
    why: str = ""
    reason: str = ""

    def data(self, today: dt.date) -> dict[str, Any]:
        mirror = self.counterpart
        return {"status": self.status, "office": self.office, "other": self.other, "ref": self.number,
                "date": self.date.isoformat(), "amount": to_decimal(abs(self.paise)),
                "side": Side.DR.value if self.paise >= 0 else Side.CR.value,
                "counterpart": mirror.number if mirror else None,
                "counterpart_date": mirror.date.isoformat() if mirror else None,
                "counterpart_amount": to_decimal(abs(mirror.amounts.get(self.office, 0))) if mirror else None,
                "age_days": (today - self.date).days if self.status == IN_TRANSIT else None,
                "why": self.why, "reason": self.reason}


MATCHED, IN_TRANSIT, DISPUTED, MISMATCHED = "matched", "in transit", "disputed", "mismatched"


@dataclass
class Pair:
    """Two offices' accounts with each other: `first`'s ``@second`` beside `second`'s ``@first``."""

    first: str
    second: str
    items: list[Item] = field(default_factory=list)
    balances: dict[str, int] = field(default_factory=dict)  # office -> its account with the other

    @property
    def matched(self) -> int:
        """What elimination removes from each side's account (the first's signed amount)."""
        return sum(i.paise if i.office == self.first else -i.paise for i in self.items if i.status == MATCHED)


def reconcile(touches: list[Touch], disputes: list[Dispute]) -> dict[tuple[str, str], Pair]:
    """Every pair of offices with traffic between them, each voucher paired with its mirror. The same
    at every office holding the same vouchers and disputes: no arrival order, no local state."""
    pairs: dict[tuple[str, str], Pair] = {}
    mirrors: dict[tuple[str, str], list[Touch]] = defaultdict(list)  # (origin number, mirroring office)
    disputed = {(d.ref, d.office): d for d in disputes}
    origins: list[tuple[Touch, str]] = []
    for touch in sorted(touches, key=lambda t: t.number):
        for other, paise in sorted(touch.amounts.items()):
            pair = _pair(pairs, touch.office, other)
            if not touch.cancelled:
                pair.balances[touch.office] = pair.balances.get(touch.office, 0) + paise
            if touch.mirrors(other):
                mirrors[(touch.ref or "", touch.office)].append(touch)
            else:
                origins.append((touch, other))
    used: set[str] = set()
    for origin, other in origins:
        item = _judge(origin, other, mirrors.get((origin.number, other), []), disputed.get((origin.number, other)))
        if item is not None:
            _pair(pairs, origin.office, other).items.append(item)
            if item.counterpart is not None:
                used.add(item.counterpart.number)
    for (_ref, office), found in sorted(mirrors.items()):
        for mirror in found:
            other = office_of(mirror.ref or "")
            if mirror.number in used or mirror.cancelled:
                continue
            _pair(pairs, office, other).items.append(
                Item(IN_TRANSIT, office, other, mirror.number, mirror.date, mirror.amounts[other],
                     why=f"mirrors {mirror.ref}, which is not yet here or does not touch @{office}"))
    return pairs


def _pair(pairs: dict[tuple[str, str], Pair], one: str, two: str) -> Pair:
    key = (min(one, two), max(one, two))
    if key not in pairs:
        pairs[key] = Pair(*key)
    return pairs[key]


def _judge(origin: Touch, other: str, mirrors: list[Touch], dispute: Dispute | None) -> Item | None:
    """Where one office's voucher against `other` stands, by `other`'s mirrors of it (the first by
    number, a live one before a cancelled one) and its dispute. None: both sides are cancelled, or
    the voucher was cancelled before anyone took it up."""
    paise = origin.amounts[other]
    mirror = min(mirrors, key=lambda m: (m.cancelled, m.number)) if mirrors else None
    item = Item(MATCHED, origin.office, other, origin.number, origin.date, paise, mirror)
    if mirror is None:
        if origin.cancelled:
            return None
        if dispute is not None:
            item.status, item.reason = DISPUTED, dispute.reason
        else:
            item.status = IN_TRANSIT
        return item
    if origin.cancelled and mirror.cancelled:
        return None
    if origin.cancelled or mirror.cancelled:
        item.status = MISMATCHED
        item.why = f"cancelled at {origin.office if origin.cancelled else other}"
    elif mirror.amounts.get(origin.office, 0) != -paise:
        item.status, item.why = MISMATCHED, "amount"
    elif mirror.date != origin.date:
        item.status, item.why = MISMATCHED, "date"
    return item


def suggested_lines(origin: Revision, office: str) -> tuple[Line, ...]:
    """The mirror `office` is offered for `origin`: the same lines on the opposite sides, its own
    account with the origin's office in place of the origin's account with it. None fit when the
    origin touches a third office's account: the user then gives the lines."""
    lines = []
    for line in origin.content.lines:
        code = inter_office_code(line.ledger)
        if code is not None and code != office:
            return ()
        name = inter_office_name(origin.office) if code == office else line.ledger
        lines.append(Line(name, Side.CR if line.side is Side.DR else Side.DR, line.paise))
    return tuple(lines)
