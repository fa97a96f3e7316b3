"""What a stored signed policy claims, read without verifying it and without the cryptography
library (`trust.policy` verifies): a report read without opening the node shows the sync-after date
of the policy the node verified when it adopted it, and verifies again on every open."""

from __future__ import annotations

from p2psync.canonical import loads


def claimed_sync_after(blob: bytes) -> str | None:
    """The sync-after date `blob` claims; None if it sets none or cannot be read."""
    try:
        found = loads(loads(blob)["body"]).get("sync_after")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return found if isinstance(found, str) else None
