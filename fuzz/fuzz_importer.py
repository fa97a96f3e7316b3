"""Voucher files (`books.importer`): CSV and JSON text. Refused input raises `InvalidInput` only,
naming where in the file the problem is; a file accepted yields complete drafts."""

from __future__ import annotations

from p2psync.books.drafts import Draft
from p2psync.books.importer import parse_csv, parse_json
from p2psync.errors import InvalidInput

CSV = """voucher,type,date,ledger,dr,cr,narration
1,payment,2026-04-01,Rent,"1,250.50",,April rent
1,payment,2026-04-01,Cash,,1250.50,
2,sales,02/05/2026,Debtors,99.99,,Invoice 7
2,sales,02/05/2026,Sales,,99.99,
"""
JSON = """{"vouchers": [{"type": "journal", "date": "2026-04-03", "narration": "accrual",
 "lines": [{"ledger": "Rent", "dr": 10}, {"ledger": "Creditors", "cr": "10.00"}]}]}"""


def check(data: bytes) -> None:
    text = data[1:].decode("utf-8", "replace")
    parse = parse_json if data[:1] == b"J" else parse_csv
    try:
        drafts = parse(text)
    except InvalidInput as exc:
        assert str(exc)
        return
    for item in drafts:
        assert isinstance(item.draft, Draft) and item.where and len(item.draft.lines) >= 1


def seeds() -> list[bytes]:
    return [b"C" + CSV.encode(), b"J" + JSON.encode(), b"J[]", b"Cvoucher,type,date,ledger,dr\n"]
