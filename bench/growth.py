"""CPU of a first sync's receive as the head office grows: does a voucher cost the same at 100,000
as at 10,000? In one process, without the network: a head office built as `firstsync.py` builds it
(batches of 100 in date order, one entry per batch and month touched), a fresh branch receiving its
entries in the batches a link sends (`protocol.sync.batches`), then its consolidated trial balance.

    python bench/growth.py build --base DIR --vouchers N       # once per size (minutes at 100,000)
    python bench/growth.py receive --base DIR [--rounds R] [--profile FILE]
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

from common import count_vouchers, head_office_year

from p2psync.books import reports
from p2psync.node.office import Node
from p2psync.protocol.sync import batches
from p2psync.store import queries


def _profiler() -> Any:
    """cProfile, imported past this directory's `profile.py`, which shadows the module it needs."""
    import sys
    here = str(Path(__file__).resolve().parent)
    kept, shadow = list(sys.path), sys.modules.pop("profile", None)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(here)]
    try:
        import cProfile
    finally:
        sys.path[:] = kept
        if shadow is not None:
            sys.modules["profile"] = shadow
    return cProfile.Profile()


def build(base: Path, vouchers: int, batch: int = 100) -> dict[str, Any]:
    """The head office's year and a fresh enrolled branch (its policy adopted, nothing received)."""
    began = time.process_time()
    head_office_year(base, vouchers, batch).close()
    return {"vouchers": vouchers, "build_cpu_s": time.process_time() - began}


def receive(base: Path, rounds: int = 1, profile: Path | None = None) -> dict[str, Any]:
    """CPU seconds of the branch receiving everything (best of `rounds`, each on a fresh copy), and of
    its trial balance after."""
    head = Node.open(base / "HO")
    try:
        blobs = head.entries()
    finally:
        head.close()
    chunks = list(batches(blobs))
    results = []
    for n in range(rounds):
        copy = base / f"BR1-copy{n}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(base / "BR1", copy)
        node = Node.open(copy)
        profiler = _profiler() if profile else None
        began = time.process_time()
        if profiler:
            profiler.enable()
        for chunk in chunks:
            node.receive(chunk)
        received = time.process_time() - began
        with node.db.read() as session:
            report = reports.trial_balance(queries.balances(session), "consolidated")
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)  # type: ignore[arg-type]
        total = time.process_time() - began
        node.close()
        vouchers = count_vouchers(copy)
        shutil.rmtree(copy, ignore_errors=True)
        results.append({"receive_cpu_s": received, "with_report_cpu_s": total, "vouchers": vouchers,
                        "rows": len(report["rows"])})
    best = min(results, key=lambda r: r["receive_cpu_s"])
    return {"entries": len(blobs), "batches": len(chunks), **best,
            "receive_cpu_us_per_voucher": best["receive_cpu_s"] / best["vouchers"] * 1e6,
            "all_receive_cpu_s": [r["receive_cpu_s"] for r in results]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("build", "receive"))
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--vouchers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", type=Path)
    args = parser.parse_args()
    if args.command == "build":
        print(json.dumps(build(args.base, args.vouchers)))
    else:
        print(json.dumps(receive(args.base, args.rounds, args.profile)))


if __name__ == "__main__":
    main()
