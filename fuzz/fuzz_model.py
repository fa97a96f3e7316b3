"""Book records as stored in the CRDT documents (`books.model`): revisions, ledgers, groups, offices
and opening balances, which arrive inside other offices' entries. Refused input raises `InvalidInput`
only; a record accepted encodes back to one that decodes to the same record."""

from __future__ import annotations

import datetime as dt

from p2psync.books import model
from p2psync.books.model import (
    Action,
    GroupDef,
    LedgerDef,
    Line,
    Office,
    Opening,
    Revision,
    Side,
    VoucherContent,
    VoucherType,
)
from p2psync.errors import InvalidInput

CODECS = [
    (model.decode_revision, model.encode_revision),
    (model.decode_ledger, model.encode_ledger),
    (model.decode_group, model.encode_group),
    (model.decode_office, model.encode_office),
    (model.decode_opening, model.encode_opening),
]


def check(data: bytes) -> None:
    decode, encode = CODECS[data[0] % len(CODECS)] if data else CODECS[0]
    try:
        record = decode(data[1:].decode("utf-8", "replace"))
    except InvalidInput as exc:
        assert str(exc)
        return
    assert decode(encode(record)) == record


def seeds() -> list[bytes]:
    content = VoucherContent(VoucherType.PAYMENT, dt.date(2026, 4, 1),
                             (Line("Rent", Side.DR, 125050), Line("Cash", Side.CR, 125050)), "April rent")
    records = [
        model.encode_revision(Revision("a1" * 12, "HO/PMT/00001", "HO", content, Action.AMEND, ("b2" * 12,), 2,
                                       "c3" * 16, "2026-04-01T10:00:00.000000Z", "")),
        model.encode_ledger(LedgerDef("Cash", "Cash-in-Hand", "HO", "c3" * 16, "2026-04-01T10:00:00Z")),
        model.encode_group(GroupDef("Shop Rent", "Indirect Expenses", "HO", "c3" * 16, "2026-04-01T10:00:00Z")),
        model.encode_office(Office("BR1", "Branch One", "branch")),
        model.encode_opening(Opening("cash", "HO", -500, "c3" * 16, "2026-04-01T10:00:00Z")),
    ]
    return [bytes([kind]) + text.encode() for kind, text in enumerate(records)]
