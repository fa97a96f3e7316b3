"""Figures for the foundation and trust work, measured in one run on this machine.

    python bench/bench_foundation.py [--vouchers 10000]

1. Batch import: N vouchers posted through one `voucher import`-style batch (vouchers/second).
2. Sealing and verifying entries: cost per entry for one-voucher entries and for entries that batch
   100 vouchers, i.e. how batching amortizes the signature and the AEAD.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from p2psync.books.drafts import make_draft
from p2psync.books.importer import ImportedDraft
from p2psync.node import Node, registrar


def _drafts(count: int, start: int = 0) -> list[ImportedDraft]:
    return [ImportedDraft(f"item {i}", make_draft("receipt", f"2026-04-{i % 28 + 1:02d}", [f"Cash={i + 1}.50"],
                                                  [f"Sales={i + 1}.50"], f"cash sale {i}"))
            for i in range(start, start + count)]


def _org(base: Path) -> tuple[Node, Node]:
    head = Node.create_head(base / "ho", "Bench Traders", open_books=True)  # the branch applies what it receives
    head.add_office("BR1", "Branch")
    head.add_ledger("Cash", "Cash-in-Hand")
    head.add_ledger("Sales", "Sales Accounts")
    branch = registrar.enroll_here(head, base / "br1", "BR1")
    branch.receive(head.entries(branch.vectors()))
    return head, branch


def bench_import(base: Path, count: int) -> dict[str, float]:
    head, _branch = _org(base)
    drafts = _drafts(count)
    started = time.perf_counter()
    head.post_many(drafts)
    elapsed = time.perf_counter() - started
    return {"vouchers": count, "seconds": round(elapsed, 3), "vouchers_per_second": round(count / elapsed)}


def bench_entries(base: Path, rounds: int = 300) -> dict[str, float]:
    head, branch = _org(base)
    singles, batched = [], []
    for i in range(rounds):
        head.post_many(_drafts(1, i))
    singles = head.entries(branch.vectors())[-rounds:]
    for i in range(rounds // 10):
        head.post_many(_drafts(100, 10_000 + i * 100))
    batched = head.entries(branch.vectors())[-(rounds // 10):]
    trust = branch.trust
    out: dict[str, float] = {}
    for label, blobs, per in (("1 voucher/entry", singles, 1), ("100 vouchers/entry", batched, 100)):
        started = time.perf_counter()
        for blob in blobs:
            trust.open(blob)
        verify = (time.perf_counter() - started) / len(blobs)
        changes = [trust.open(b)[0] for b in blobs]
        started = time.perf_counter()
        for change in changes:
            head.trust.seal(change)
        seal = (time.perf_counter() - started) / len(blobs)
        out[f"seal_us_per_entry [{label}]"] = round(seal * 1e6, 1)
        out[f"verify_us_per_entry [{label}]"] = round(verify * 1e6, 1)
        out[f"seal_us_per_voucher [{label}]"] = round(seal * 1e6 / per, 2)
        out[f"verify_us_per_voucher [{label}]"] = round(verify * 1e6 / per, 2)
        out[f"bytes_per_voucher [{label}]"] = round(sum(len(b) for b in blobs) / len(blobs) / per, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vouchers", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        results = {"import": bench_import(Path(tmp) / "import", args.vouchers),
                   "entries": bench_entries(Path(tmp) / "entries")}
    width = max(len(k) for section in results.values() for k in section)
    for name, section in results.items():
        print(f"\n{name}")
        for key, value in section.items():
            print(f"  {key:<{width}}  {value}")
    print("\n" + json.dumps(results))


if __name__ == "__main__":
    main()
