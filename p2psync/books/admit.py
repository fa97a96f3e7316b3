"""Whether a change received from another node keeps the books valid.

Run after the change was applied to the in-memory document and before anything is written; a
refusal raises `RuleViolation` and the caller drops the document and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from p2psync.books import schema
from p2psync.books.model import (
    Action,
    Revision,
    decode_group,
    decode_ledger,
    decode_office,
    decode_opening,
    decode_revision,
    number_series,
)
from p2psync.books.rules import Chart, check_balanced
from p2psync.errors import P2PSyncError, RuleViolation

#: Maps whose values may be replaced after they were first written.
_REWRITABLE = {schema.OPENINGS, schema.OFFICES}


@dataclass(frozen=True)
class Author:
    """Who made a change, as their certificate says."""

    office: str
    is_head: bool
    series: int = 1


def check_change(doc_name: str, changed: dict[str, dict[str, str]], values: dict[str, dict[str, object]],
                 chart: Chart, author: Author, sync_after: dt.date | None = None) -> dict[str, Revision]:
    """Refuse writes outside the author's office, deletions, rewrites of write-once records,
    unbalanced vouchers or ones naming unknown ledgers, and vouchers dated before the sync-after date.
    `changed` holds the action of each key the change touched per root map, `values` the values it
    left at those it added or updated. Returns the voucher revisions it decoded, by key, so that
    materializing them decodes none again.

    Every check gives the same answer on every replica, whatever else it has received: otherwise one
    replica would apply what another refuses and the books would diverge. That is why the voucher
    type's rule (which depends on ledger groups, and concurrent ledger definitions may resolve
    differently until both arrive) is checked when posting, not here, and why `sync_after` is the
    date in force under the policy version the author cites."""
    name = schema.parse_doc_name(doc_name)
    if name.local:
        raise RuleViolation(f"{doc_name} is a local book and is never shared")
    if not name.is_masters and name.office != author.office and not author.is_head:
        raise RuleViolation(f"office {author.office} may not write office {name.office}'s books ({doc_name})")
    revisions: dict[str, Revision] = {}
    for map_name, keys in changed.items():
        new_values = values[map_name]
        for key, action in keys.items():
            _check_scope(map_name, key, author)
            if action == "delete" or (action == "update" and map_name not in _REWRITABLE):
                raise RuleViolation(f"{doc_name}: {action} of {map_name}/{key[:60]} is not allowed; "
                                    "records are never deleted or overwritten")
            try:
                value = new_values[key]
                if name.is_masters:
                    _check_master(map_name, key, value)
                else:
                    revisions[key] = _check_revision(name, key, value, chart, sync_after, author)
            except RuleViolation:
                raise
            except P2PSyncError as exc:
                raise RuleViolation(f"{doc_name}: {exc}") from None
    return revisions


def _check_master(map_name: str, key: str, value: object) -> None:
    if map_name == schema.OFFICES:
        office = decode_office(value)
        if office.code != key:
            raise RuleViolation(f"office record {key!r} names office {office.code!r}")
        return
    decoder = {schema.LEDGERS: decode_ledger, schema.GROUPS: decode_group, schema.OPENINGS: decode_opening}[map_name]
    record = decoder(value)
    name = getattr(record, "name", None) or getattr(record, "ledger")
    if schema.record_key(name, record.office) != key:
        raise RuleViolation(f"{map_name} record {key[:60]!r} is filed under the wrong key")


def _check_scope(map_name: str, key: str, author: Author) -> None:
    if author.is_head or map_name == schema.REVISIONS:
        return
    if map_name == schema.OFFICES:
        raise RuleViolation(f"only the head office may change the offices (office {author.office} tried)")
    owner = key.rpartition("@")[2]
    if owner != author.office:
        raise RuleViolation(f"office {author.office} may not write {map_name} records of office {owner}")


def _check_revision(name: schema.DocName, key: str, value: object, chart: Chart, sync_after: dt.date | None,
                    author: Author) -> Revision:
    rev = decode_revision(value)
    if rev.action is Action.POST and number_series(rev.number)[0] != author.series:
        raise RuleViolation(f"voucher {rev.number[:40]} is not in its author's number series {author.series}")
    if sync_after is not None and rev.content.date < sync_after:
        raise RuleViolation(f"voucher {rev.number} is dated {rev.content.date}, before the sync-after date {sync_after}")
    if rev.id != key:
        raise RuleViolation(f"revision {key[:40]!r} carries id {rev.id[:40]!r}")
    if rev.office != name.office or not rev.number.startswith(f"{rev.office}/"):
        raise RuleViolation(f"voucher {rev.number[:40]} of office {rev.office} filed in {name.name}")
    date = rev.content.date
    if rev.action is Action.POST and (rev.parents or f"{date.year:04d}-{date.month:02d}" != name.month):
        raise RuleViolation(f"voucher {rev.number} is not filed in its own month's document")
    if rev.action is not Action.POST and not rev.parents:
        raise RuleViolation(f"{rev.action.value} of voucher {rev.number} names no revision it replaces")
    if rev.action is Action.CANCEL and not rev.reason.strip():
        raise RuleViolation(f"cancellation of voucher {rev.number} gives no reason")
    check_balanced(rev.content, chart)
    return rev
