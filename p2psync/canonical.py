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
        value = json.loads(raw, parse_constant=_no_constant, **options)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("JSON holds text that is not valid Unicode (a lone surrogate)") from None
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


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
