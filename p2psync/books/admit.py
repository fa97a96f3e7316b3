"""Whether a change received from another node keeps the books valid.

Run after the change was applied to the in-memory document and before anything is written; a
refusal raises `RuleViolation` and the caller drops the document and writes nothing.
"""

from __future__ import annotations

from pycrdt import Doc

from p2psync.books import schema
from p2psync.books.model import (
    Action,
    decode_group,
    decode_ledger,
    decode_office,
    decode_opening,
    decode_revision,
)
from p2psync.books.rules import Chart, validate_voucher
from p2psync.errors import P2PSyncError, RuleViolation

#: Maps whose values may be replaced after they were first written.
_REWRITABLE = {schema.OPENINGS, schema.OFFICES}


def check_change(doc_name: str, doc: Doc, changed: dict[str, dict[str, str]], chart: Chart) -> None:
    """Refuse deletions, rewrites of write-once records and invalid records."""
    name = schema.parse_doc_name(doc_name)
    for map_name, keys in changed.items():
        for key, action in keys.items():
            if action == "delete" or (action == "update" and map_name not in _REWRITABLE):
                raise RuleViolation(f"{doc_name}: {action} of {map_name}/{key[:60]} is not allowed; "
                                    "records are never deleted or overwritten")
            try:
                value = schema.root(doc, map_name)[key]
                if name.is_masters:
                    _check_master(map_name, key, value)
                else:
                    _check_revision(name, key, value, chart)
            except RuleViolation:
                raise
            except P2PSyncError as exc:
                raise RuleViolation(f"{doc_name}: {exc}") from None


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


def _check_revision(name: schema.DocName, key: str, value: object, chart: Chart) -> None:
    rev = decode_revision(value)
    if rev.id != key:
        raise RuleViolation(f"revision {key[:40]!r} carries id {rev.id[:40]!r}")
    if rev.office != name.office or not rev.number.startswith(f"{rev.office}/"):
        raise RuleViolation(f"voucher {rev.number[:40]} of office {rev.office} filed in {name.name}")
    if rev.action is Action.POST and (rev.parents or rev.content.date.strftime("%Y-%m") != name.month):
        raise RuleViolation(f"voucher {rev.number} is not filed in its own month's document")
    if rev.action is not Action.POST and not rev.parents:
        raise RuleViolation(f"{rev.action.value} of voucher {rev.number} names no revision it replaces")
    if rev.action is Action.CANCEL and not rev.reason.strip():
        raise RuleViolation(f"cancellation of voucher {rev.number} gives no reason")
    validate_voucher(rev.content, chart)
