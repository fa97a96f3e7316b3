"""Canonical JSON and timestamps, shared by every layer (like `errors`, it sits below them all)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any


def dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no spaces, no ASCII escaping, so equal values encode to equal
    strings (what signatures, MACs and CRDT values need)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def utc_now() -> str:
    """A sortable UTC timestamp with microseconds."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
