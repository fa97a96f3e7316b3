"""(1) The limit: raw pycrdt, no network, no crypto, no database.

The same vouchers, encoded as p2psync encodes them (one canonical JSON string per revision in the
`revisions` map of a per-(office, month) document), written at one document in one transaction per
document (as `Node.post_many` does), the update taken with `get_update(state before)` and applied to a
second document; done when the second document's maps hold every voucher.
"""

from __future__ import annotations

import time
from typing import Any

from pycrdt import Doc, Map

from p2psync.books.schema import REVISIONS


def bulk(values: dict[str, list[tuple[str, str]]], rounds: int = 3) -> dict[str, Any]:
    """Best of `rounds` (the limit is what the library can do, so noise is taken out)."""
    count = sum(len(v) for v in values.values())
    best: dict[str, Any] | None = None
    for _ in range(rounds):
        source = {name: Doc() for name in values}
        target = {name: Doc() for name in values}
        for doc in (*source.values(), *target.values()):
            doc.get(REVISIONS, type=Map)
        started = time.perf_counter()
        update_bytes = 0
        apply_seconds = 0.0
        for name, pairs in values.items():
            doc = source[name]
            before = doc.get_state()
            revisions = doc.get(REVISIONS, type=Map)
            with doc.transaction():
                for key, value in pairs:
                    revisions[key] = value
            update = doc.get_update(before)
            update_bytes += len(update)
            t = time.perf_counter()
            target[name].apply_update(update)
            apply_seconds += time.perf_counter() - t
        held = sum(len(doc.get(REVISIONS, type=Map)) for doc in target.values())
        elapsed = time.perf_counter() - started
        assert held == count, (held, count)
        result = {"vouchers": count, "docs": len(values), "seconds": elapsed,
                  "vouchers_per_s": count / elapsed, "apply_only_vouchers_per_s": count / apply_seconds,
                  "update_bytes": update_bytes, "update_bytes_per_voucher": update_bytes / count}
        if best is None or elapsed < best["seconds"]:
            best = result
    assert best is not None
    return best


def single_updates(values: dict[str, list[tuple[str, str]]], limit: int) -> dict[str, Any]:
    """One voucher per transaction (the live case): update size and speed per voucher."""
    pairs = [(name, kv) for name, kvs in values.items() for kv in kvs][:limit]
    source: dict[str, Doc] = {}
    target: dict[str, Doc] = {}
    sizes = []
    started = time.perf_counter()
    for name, (key, value) in pairs:
        if name not in source:
            source[name], target[name] = Doc(), Doc()
        doc = source[name]
        before = doc.get_state()
        with doc.transaction():
            doc.get(REVISIONS, type=Map)[key] = value
        update = doc.get_update(before)
        sizes.append(len(update))
        target[name].apply_update(update)
    elapsed = time.perf_counter() - started
    return {"vouchers": len(pairs), "vouchers_per_s": len(pairs) / elapsed,
            "update_bytes_per_voucher": sum(sizes) / len(sizes)}
