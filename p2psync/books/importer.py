"""Reading vouchers from CSV or JSON files. A file is accepted whole or not at all, and every error
names the row (CSV) or item (JSON) it comes from."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2psync.books.drafts import Draft, parse_type
from p2psync.books.model import Line, Side
from p2psync.books.money import parse_amount
from p2psync.books.rules import parse_date
from p2psync.canonical import loads
from p2psync.errors import InvalidInput, P2PSyncError

MAX_FILE_BYTES = 200 * 1024 * 1024


@dataclass(frozen=True)
class ImportedDraft:
    where: str  # "rows 4-6" or "item 3", for error messages
    draft: Draft


def read_file(path: Path) -> list[ImportedDraft]:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise InvalidInput(f"{path.name} is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path.name} is not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".json" or (suffix != ".csv" and text.lstrip()[:1] in "[{"):
        drafts = parse_json(text)
    else:
        drafts = parse_csv(text)
    if not drafts:
        raise InvalidInput(f"{path.name} holds no vouchers")
    return drafts


def parse_csv(text: str) -> list[ImportedDraft]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        return _csv_vouchers(reader)
    except csv.Error as exc:  # e.g. a field longer than the csv module's limit
        raise InvalidInput(f"row {reader.line_num + 1}: {exc}") from None  # line_num: rows read whole


def _csv_vouchers(reader: csv.DictReader[str]) -> list[ImportedDraft]:
    header = [h.strip().lower() for h in (reader.fieldnames or [])]
    missing = [c for c in ("voucher", "type", "date", "ledger") if c not in header]
    if missing or not ({"dr", "cr"} & set(header)):
        raise InvalidInput(
            "CSV header must have the columns voucher,type,date,ledger,dr,cr[,narration]; "
            f"missing {', '.join(missing or ['dr/cr'])}"
        )
    _refuse_placement(header, "CSV header")
    reader.fieldnames = header
    groups: dict[str, list[tuple[int, dict[str, str]]]] = {}
    for row in reader:
        row_no = reader.line_num  # the file's line, counting blank lines the reader skips
        if None in row:
            raise InvalidInput(f"row {row_no}: more fields than the header has")
        values = {k: (v or "").strip() for k, v in row.items()}
        if not any(values.values()):
            continue
        ref = values.get("voucher", "")
        if not ref:
            raise InvalidInput(f"row {row_no}: the voucher column is empty")
        groups.setdefault(ref, []).append((row_no, values))
    return [_csv_voucher(ref, rows) for ref, rows in groups.items()]


def _csv_voucher(ref: str, rows: list[tuple[int, dict[str, str]]]) -> ImportedDraft:
    first_no, first = rows[0]
    where = f"row {first_no}" if len(rows) == 1 else f"rows {first_no}-{rows[-1][0]} (voucher {ref})"
    lines = []
    for row_no, values in rows:
        for column in ("type", "date", "narration"):
            if values.get(column) and values[column] != first.get(column):
                raise InvalidInput(f"row {row_no}: {column} differs from the voucher's first row {first_no}")
        lines.append(_located(f"row {row_no}", lambda v=values: _line(v)))
    draft = _located(where, lambda: Draft(
        parse_type(first["type"]), parse_date(first["date"]), tuple(lines), first.get("narration", "")
    ))
    return ImportedDraft(where, draft)


def parse_json(text: str) -> list[ImportedDraft]:
    try:
        data = loads(text, parse_float=str, parse_int=str)
    except ValueError as exc:
        raise InvalidInput(f"not valid JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("vouchers")
    if not isinstance(data, list):
        raise InvalidInput('JSON must be a list of vouchers or {"vouchers": [...]}')
    return [ImportedDraft(f"item {i}", _located(f"item {i}", lambda v=item: _json_voucher(v)))
            for i, item in enumerate(data, start=1)]


def _json_voucher(item: Any) -> Draft:
    if not isinstance(item, dict):
        raise InvalidInput("a voucher must be an object with type, date and lines")
    _refuse_placement(item, "voucher")
    lines_in = item.get("lines")
    if not isinstance(lines_in, list):
        raise InvalidInput("lines must be a list of {ledger, dr} or {ledger, cr}")
    lines = []
    for n, line in enumerate(lines_in, start=1):
        if not isinstance(line, dict):
            raise InvalidInput(f"line {n} must be an object")
        lines.append(_located(f"line {n}", lambda v=line: _line({k: str(x) for k, x in v.items()})))
    narration = item.get("narration", "")
    return Draft(parse_type(str(item.get("type", ""))), parse_date(str(item.get("date", ""))),
                 tuple(lines), str(narration).strip())


#: Fields a file might use to say where a voucher goes or what it is numbered. They cannot be honoured
#: (a node posts only in its own office, numbering from its own series), so they are refused rather
#: than ignored: ignoring them would post into this office what the file meant for another.
PLACEMENT_FIELDS = ("office", "branch", "number")


def _refuse_placement(fields: Iterable[str], where: str) -> None:
    named = [f for f in fields if f.strip().lower() in PLACEMENT_FIELDS]
    if named:
        raise InvalidInput(f"{where} has {named[0]!r}: vouchers are always posted in this node's own office and "
                           "numbered from its series; remove that field")


def _line(values: dict[str, str]) -> Line:
    ledger = " ".join(values.get("ledger", "").split())
    dr, cr = values.get("dr", "").strip(), values.get("cr", "").strip()
    if not ledger:
        raise InvalidInput("ledger is empty")
    if bool(dr) == bool(cr):
        raise InvalidInput("give exactly one of dr or cr")
    return Line(ledger, Side.DR if dr else Side.CR, parse_amount(dr or cr))


def _located(where: str, build: Any) -> Any:
    try:
        return build()
    except P2PSyncError as exc:
        raise InvalidInput(f"{where}: {exc}") from None
