"""Canonical JSON and timestamps, shared by every layer (like `errors`, it sits below them all)."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, no ASCII escaping, so equal values encode to equal
    strings (what signatures, MACs and CRDT values need)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


#: Containers nested deeper than this are refused. Far above what any record nests (a voucher's lines
#: are three deep, a policy five), and fixed: where `json` runs out of stack depends on the Python
#: version and on the caller, and every replica must refuse exactly what the others refuse.
MAX_DEPTH = 64


def loads(raw: str | bytes | bytearray, **options: Any) -> Any:
    """`json.loads` for text from outside, whose every failure is a `ValueError`.

    Plain `json.loads` lets three kinds of hostile input through as something else: nesting deep
    enough to exhaust the stack (a `RecursionError`), ``NaN``/``Infinity`` (floats that later break
    `int()`), and ``\\ud800``-style escapes of lone surrogates (text that cannot be stored in SQLite
    or sent again as UTF-8). Nesting deeper than `MAX_DEPTH` is refused too, whatever the stack."""
    try:
        if options or not isinstance(raw, str) or raw.startswith("\ufeff"):
            value = json.loads(raw, parse_constant=_no_constant, **options)
        else:
            value = _decode_text(raw)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    if _may_nest_deeply(raw) and _deeper_than(value, MAX_DEPTH):
        raise ValueError("JSON is nested too deeply")
    if _surrogate_free(raw):
        return value
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("JSON holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    return value


def _decode_text(raw: str) -> Any:
    """`json.loads(raw, parse_constant=_no_constant)` with a decoder made once (making one costs
    half as much as reading a voucher's revision). Its own function so that, like `json.loads`, it
    parses three frames below `loads`: nesting is refused at the same depth either way."""
    return _DECODER.decode(raw)


def _may_nest_deeply(raw: str | bytes | bytearray) -> bool:
    """False when `raw` holds too few brackets to nest deeper than `MAX_DEPTH` (the common case,
    decided without walking the value). Brackets inside strings, or bytes of other characters in
    UTF-16/32, only make the count larger, never smaller."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{") > MAX_DEPTH
    return raw.count(b"[") + raw.count(b"{") > MAX_DEPTH


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether lists and objects nest more than `limit` deep in `value` (a walk without recursion:
    the value may be nested close to the interpreter's own limit)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return False


def _surrogate_free(raw: str | bytes | bytearray) -> bool:
    """Whether `raw` cannot decode to text holding a surrogate, without re-encoding what it decoded
    (that re-encoding was most of the cost of reading a voucher). A surrogate comes only from a
    ``\\u`` escape or from one already in the text: a `str` without either is free of them, and so
    are ASCII bytes without an escape or a NUL (which `json.loads` reads as UTF-8; a NUL can make it
    read UTF-16 or UTF-32, where an escape's bytes are not adjacent). False means "look closer"."""
    if isinstance(raw, str):
        if "\\u" in raw:
            return False
        if raw.isascii():
            return True
        try:
            raw.encode()
        except UnicodeEncodeError:
            return False
        return True
    return raw.isascii() and b"\\u" not in raw and b"\0" not in raw


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)


def utc_now() -> str:
    """A sortable UTC timestamp with microseconds."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def report_json(value: Any, indent: int | None = None) -> str:
    """JSON for people's scripts and the dashboard: money as two-place decimal text, dates as ISO."""
    return json.dumps(value, default=_plain, indent=indent, ensure_ascii=False)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
