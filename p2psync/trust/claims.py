"""What a stored signed policy claims, read without verifying it and without the cryptography
library (`trust.policy` verifies): a report read without opening the node shows the sync-after date
of the policy the node verified when it adopted it, and verifies again on every open."""

from __future__ import annotations

from typing import Any

from p2psync.canonical import loads


def claimed(blob: bytes, field: str) -> Any:
    """The value of `field` in the body `blob` claims (the sync-after date, whether read scopes are
    on); None if it sets none or cannot be read."""
    try:
        return loads(loads(blob)["body"]).get(field)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
