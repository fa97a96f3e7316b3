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
from dataclasses import dataclass, field
from typing import Any

from p2psync.books.model import MAX_NARRATION, Revision, _load_object, _str, number_series
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
