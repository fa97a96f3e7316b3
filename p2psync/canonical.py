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


def loads(raw: str | bytes | bytearray, **options: Any) -> Any:
    """`json.loads` for text from outside, whose every failure is a `ValueError`.

    Plain `json.loads` lets three kinds of hostile input through as something else: nesting deep
    enough to exhaust the stack (a `RecursionError`), ``NaN``/``Infinity`` (floats that later break
    `int()`), and ``\\ud800``-style escapes of lone surrogates (text that cannot be stored in SQLite
    or sent again as UTF-8)."""
    try:
        if options or not isinstance(raw, str) or raw.startswith("\ufeff"):
            value = json.loads(raw, parse_constant=_no_constant, **options)
        else:
            value = _decode_text(raw)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
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
