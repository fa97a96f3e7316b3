"""p2psync performance, every figure measured in one run on this machine.

    pip install -e '.[bench]'
    python bench/run.py [--quick] [--scale] [--only SECTIONS]

Prints a table and writes bench/results/latest.json (git-ignored). Sections:

  raw        (1) the limit: raw pycrdt updates between two documents, one process
  bulk       (2) p2psync: Node.post_many of N vouchers at A until B's reports show them (TLS link)
  peer       (3) pycrdt-websocket: the same documents synced by pycrdt's Provider against its server
  live       (4) p2psync: one voucher at a time, posted at A until visible in B's voucher table
  wire       (5) bytes on the wire per voucher, live and bulk, against the raw pycrdt update
  firstsync  (6) first sync of a year of vouchers to a fresh branch, each side its own process,
                 against the same first sync by the peer
  scale      (7) a head office and branches as processes through one relay, all importing at once;
                 and the head office's memory holding a bulk-built home across 50 offices

Targets are checked against the figures of this run; nothing is hard-coded.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import cpu
import firstsync
import live_cpu
import p2p
import pair
import peer
import raw
import scale

RESULTS = common.BENCH_DIR / "results"
SECTIONS = ("raw", "floors", "bulk", "per_voucher", "peer", "live", "wire", "firstsync", "scale", "cli")


def sizes(args: argparse.Namespace) -> dict[str, int]:
    quick = args.quick
    out = {
        "bulk": 2_000 if quick else 10_000,
        "per_voucher": 5_000,
        "live": 1_000,
        "cpu": 5_000 if quick else 10_000,
        "paced": 200 if quick else 400,
        "wire_live": 100 if quick else 300,
        "wire_bulk": 1_000 if quick else 5_000,
        "first_sync": 10_000 if quick else 100_000,
        "history_batch": 100,
        "branches": 5 if quick else 20,
        "per_node": 200 if quick else 1_000,
        "ho_vouchers": 1_000_000 if args.scale else (20_000 if quick else 100_000),
        "ho_offices": 50,
    }
    for key in ("bulk", "per_voucher", "live", "first_sync", "branches", "per_node", "ho_vouchers"):
        value = getattr(args, key, None)
        if value:
            out[key] = value
    return out


def _chart() -> Any:
    """The chart every benchmark organisation has (for building revisions without a node)."""
    from p2psync.node.office import Node
    with tempfile.TemporaryDirectory() as tmp:
        (home,) = common.make_org(Path(tmp), ())
        node = Node.open(home)
        try:
            return node.chart()
        finally:
            node.close()


def same_vouchers(count: int) -> dict[str, list[tuple[str, str]]]:
    """The values p2psync writes for the bulk vouchers: same drafts (seed), same encoding."""
    drafts = common.make_drafts(count, seed=2)
    revisions = common.revisions_like_p2psync(drafts, _chart(), "HO", secrets.token_hex(16))
    return common.values_by_doc(revisions)


def live_values(count: int, seed: int = 4, start: int = 1_000_000) -> list[tuple[str, str, str]]:
    """The values of `count` vouchers, one (document, key, value) each, in posting order."""
    drafts = common.make_drafts(count, seed=seed, start=start)
    revisions = common.revisions_like_p2psync(drafts, _chart(), "HO", secrets.token_hex(16))
    return [(doc, key, value) for doc, pairs in common.values_by_doc(revisions).items() for key, value in pairs]


def run(args: argparse.Namespace) -> dict[str, Any]:
    n = sizes(args)
    only = set(args.only.split(",")) if args.only else set(SECTIONS)
    work = Path(tempfile.mkdtemp(prefix="p2psync-bench-", dir=args.workdir))
    results: dict[str, Any] = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else ("scale" if args.scale else "default"),
        "machine": common.machine() | {"data_filesystem": common.filesystem_of(work)},
        "sizes": n,
    }

    def step(name: str, fn: Any) -> None:
        if name.split(".")[0] not in only:
            return
        print(f"... {name}", file=sys.stderr, flush=True)
        started = time.perf_counter()
        results[name] = fn()
        print(f"    done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    try:
        values = same_vouchers(n["bulk"])
        step("raw", lambda: {"bulk": raw.bulk(values), "single": raw.single_updates(values, min(n["live"], 1000))})
        step("live.commit_floor", lambda: common.commit_floor(work / "floor"))
        step("floors.cpu", lambda: cpu.measure(work / "cpu", n["cpu"]))
        step("live.cpu", lambda: live_cpu.paced(work / "paced", n["paced"]))
        counts = {name: n[name] if name in only else 0 for name in ("bulk", "per_voucher", "live")}
        if any(counts.values()):
            results.update(pair.run(work / "pair", counts["bulk"], counts["per_voucher"], counts["live"]))
        step("peer", lambda: peer_in_process(values, n))
        step("wire", lambda: asyncio.run(p2p.run_pair(work / "wire", n["wire_bulk"], n["wire_live"], True)))
        if "firstsync" in only:
            base = work / "firstsync"
            step("firstsync.build", lambda: firstsync.build(base, n["first_sync"], n["history_batch"]))
            step("firstsync.p2psync", lambda: firstsync.p2psync(base, n["first_sync"]))
            step("firstsync.books_only", lambda: firstsync.p2psync(base, n["first_sync"], books_only=True))
            step("firstsync.peer", lambda: firstsync.peer(base, n["first_sync"]))
            if not args.keep:
                shutil.rmtree(base, ignore_errors=True)
        step("scale.converge", lambda: scale.converge(work / "scale", n["branches"], n["per_node"]))
        step("scale.ho_memory", lambda: scale.ho_memory(work / "ho", n["ho_vouchers"], n["ho_offices"]))
        step("cli", lambda: cli_figures(work / "cli", args.quick))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    results["targets"] = targets(results)
    return results


def peer_in_process(values: dict[str, list[tuple[str, str]]], n: dict[str, int]) -> dict[str, Any]:
    """The peer with its server in a process of its own (as p2psync's two nodes are), its writer and
    reader clients in this one: bulk, one transaction per voucher back to back, and live."""
    server = common.side("peer-serve", "--seed-file", "", stdin=True)
    try:
        port = common.read_json_line(server, 120)["port"]
        return asyncio.run(peer.bulk_and_live(values, live_values(n["live"]),
                                              live_values(n["per_voucher"], seed=8, start=3_000_000), port))
    finally:
        firstsync.stop(server)


def cli_figures(base: Path, quick: bool) -> dict[str, Any]:
    """The command line's figures (`bench/cli.py`): `p2psync --version`, a trial balance of small
    books, and a voucher posted by the CLI until the linked peer holds it."""
    import cli  # type: ignore[import-not-found]  (bench/cli.py, beside this file)

    base.mkdir(parents=True, exist_ok=True)
    figures = cli.measure(base, vouchers=15 if quick else 25, runs=5 if quick else 10)
    return {**figures, "cli_version_s": figures["cli_version_s"]["median_s"],
            "cli_post_visible_at_peer_p50_ms": figures["cli_post_visible_at_peer_ms"]["p50_ms"]}


# ---------------------------------------------------------------- targets and the table

CLI_KEYS = ("cli_post_visible_at_peer_p50_ms", "cli_version_s")


#: Each target of this round: its key in `results["targets"]`, the goal, and how it is met.
GOALS: dict[str, tuple[str, Any]] = {
    "per_voucher_vs_peer": (">= 1.0", lambda v: v >= 1.0),
    "first_sync_vs_peer": ("<= 2.0", lambda v: v <= 2.0),
    "first_sync_durable_vs_peer": ("<= 1.0", lambda v: v <= 1.0),
    "receive_cpu_vs_sqlite_floor": ("<= 1.5", lambda v: v <= 1.5),
    "post_cpu_vs_sqlite_floor": ("<= 1.5", lambda v: v <= 1.5),
    "live_p50_vs_commit_floor_ms": ("<= 1.5", lambda v: v <= 1.5),
    "live_p99_vs_commit_floor_ms": ("<= 5", lambda v: v <= 5),
    "cli_post_visible_at_peer_p50_ms": ("(bench/cli.py)", None),
    "cli_version_s": ("(bench/cli.py)", None),
    "ho_1m_trial_balance_s": ("<= 1.0 at 1,000,000", lambda v: v <= 1.0),
}


def targets(r: dict[str, Any]) -> dict[str, float]:
    """The measured number of each target this run has the figures for."""
    out: dict[str, float] = {}
    if "per_voucher" in r and "peer" in r:
        out["per_voucher_vs_peer"] = r["per_voucher"]["vouchers_per_s"] / r["peer"]["stream"]["vouchers_per_s"]
    if "firstsync.p2psync" in r and "firstsync.peer" in r:
        ratio = r["firstsync.p2psync"]["seconds"] / r["firstsync.peer"]["seconds"]
        out["first_sync_vs_peer"] = ratio
        # the reports are written in the transaction that makes the books durable: one moment for both
        out["first_sync_durable_vs_peer"] = ratio
    if "floors.cpu" in r:
        out["receive_cpu_vs_sqlite_floor"] = r["floors.cpu"]["receive_cpu_vs_sqlite_floor"]
        out["post_cpu_vs_sqlite_floor"] = r["floors.cpu"]["post_cpu_vs_sqlite_floor"]
    if "live" in r and "live.commit_floor" in r:
        out["live_p50_vs_commit_floor_ms"] = r["live"]["p50_ms"] - 2 * r["live.commit_floor"]["p50_ms"]
        out["live_p99_vs_commit_floor_ms"] = r["live"]["p99_ms"] - 2 * r["live.commit_floor"]["p99_ms"]
    for key in CLI_KEYS:
        if isinstance(r.get("cli", {}).get(key), (int, float)):
            out[key] = r["cli"][key]
    if "scale.ho_memory" in r and r["scale.ho_memory"]["vouchers"] >= 1_000_000:
        out["ho_1m_trial_balance_s"] = r["scale.ho_memory"]["consolidated_warm_seconds"]
    return out


def floors(r: dict[str, Any]) -> str:
    """The floors of this run, printed beside every ratio."""
    parts = []
    if "live.commit_floor" in r:
        parts.append("durable commit p50/p99 {p50_ms:.2f}/{p99_ms:.2f} ms".format(**r["live.commit_floor"]))
    if "floors.cpu" in r:
        parts.append("sqlite3 rows {sqlite_floor_cpu_us:.1f} us/voucher, Ed25519 verify {ed25519_verify_us:.0f} us, "
                     "pycrdt apply {pycrdt_apply_us_per_voucher:.1f} us/voucher".format(**r["floors.cpu"]))
    if "live.cpu" in r:
        parts.append("the same work after {idle_ms:.0f} ms idle costs {idle_penalty:.2f}x the CPU".format(**r["live.cpu"]))
    return "; ".join(parts)


def table(r: dict[str, Any]) -> str:
    rows: list[tuple[str, str]] = []

    def add(label: str, value: Any, fmt: str = "{:,.0f}") -> None:
        rows.append((label, fmt.format(value) if isinstance(value, (int, float)) else str(value)))

    m = r["machine"]
    add("machine", f"{m['cores']} cores, {m['cpu']}, {m['memory_mb']:,} MB, Python {m['python']}, "
                   f"pycrdt {m['pycrdt']}, data on {m['data_filesystem']}")
    add("code", f"p2psync {m.get('p2psync_commit', '?')}, {m.get('p2psync_uncommitted_files', '?')} files changed in the tree")
    if "raw" in r:
        x = r["raw"]["bulk"]
        add(f"(1) raw pycrdt bulk, {x['vouchers']:,} vouchers, {x['docs']} docs: vouchers/s", x["vouchers_per_s"])
        add("    apply only: vouchers/s", x["apply_only_vouchers_per_s"])
        add("    update bytes per voucher (bulk / one per transaction)",
            f"{x['update_bytes_per_voucher']:.0f} / {r['raw']['single']['update_bytes_per_voucher']:.0f}")
    if "bulk" in r:
        x = r["bulk"]
        add(f"(2) p2psync bulk, {x['vouchers']:,} vouchers: vouchers/s", x["vouchers_per_s"])
        add("    post_many at A / transfer+apply at B / report at B (s)",
            f"{x['post_seconds']:.2f} / {x['transfer_and_apply_seconds']:.2f} / {x['report_seconds']:.2f}")
        if "raw" in r:
            add("    ratio to (1)", x["vouchers_per_s"] / r["raw"]["bulk"]["vouchers_per_s"], "{:.4f}")
    if "peer" in r:
        x = r["peer"]["bulk"]
        add(f"(3) pycrdt-websocket bulk, {x['vouchers']:,} vouchers: vouchers/s", x["vouchers_per_s"])
        if "bulk" in r:
            add("    ratio (2)/(3)", r["bulk"]["vouchers_per_s"] / x["vouchers_per_s"], "{:.4f}")
        if "live" in r["peer"]:
            add(f"    peer live, {r['peer']['live']['vouchers']:,} vouchers: p50 / p99 (ms)",
                f"{r['peer']['live']['p50_ms']:.2f} / {r['peer']['live']['p99_ms']:.2f}")
    if "per_voucher" in r:
        x = r["per_voucher"]
        add(f"(1) one voucher per post, {x['vouchers']:,} posts at once, each durable, until B holds them: vouchers/s",
            x["vouchers_per_s"])
        if "peer" in r:
            add("    peer, one transaction per voucher back to back: vouchers/s", r["peer"]["stream"]["vouchers_per_s"])
    if "floors.cpu" in r:
        x = r["floors.cpu"]
        add(f"(3) CPU per voucher, {x['vouchers']:,} vouchers: post_many / receive / plain sqlite3 rows (us)",
            f"{x['post_many_cpu_us']:.1f} / {x['receive_cpu_us']:.1f} / {x['sqlite_floor_cpu_us']:.1f}")
    if "live" in r:
        x = r["live"]
        add(f"(4) live latency, {x['vouchers']:,} vouchers: p50 / p90 / p99 / max (ms)",
            f"{x['p50_ms']:.1f} / {x['p90_ms']:.1f} / {x['p99_ms']:.1f} / {x['max_ms']:.1f}")
        add("    post at A p50 / notify+send+hop p50 / Node.receive at B p50 (ms)",
            f"{x['post_at_a_p50_ms']:.1f} / {x['a_to_b_hop_p50_ms']:.1f} / {x['receive_at_b_p50_ms']:.1f}")
    if "live.cpu" in r:
        x = r["live.cpu"]
        add(f"    CPU of one post at A / its receive at B, back to back and after {x['idle_ms']:.0f} ms idle (us)",
            f"{x['post_cpu_us']:.0f} / {x['receive_cpu_us']:.0f} and {x['post_cpu_after_idle_us']:.0f} / "
            f"{x['receive_cpu_after_idle_us']:.0f} ({x['p2psync_idle_penalty']:.2f}x)")
        add("    a fixed piece of work not p2psync's, the same two ways (us)",
            f"{x['fixed_work_cpu_us']:.0f} and {x['fixed_work_cpu_after_idle_us']:.0f} ({x['idle_penalty']:.2f}x)")
    if "live.commit_floor" in r:
        x = r["live.commit_floor"]
        add("    a durable SQLite commit on this disk now, p50 / p99 (ms; two per live voucher)",
            f"{x['p50_ms']:.2f} / {x['p99_ms']:.2f}")
    if "wire" in r:
        for kind in ("live", "bulk"):
            w = r["wire"][kind]
            v = w["vouchers"]
            add(f"(5) wire bytes/voucher, {kind} ({v:,} in {w['entries']:,} entries): raw/entry/ws/TCP",
                f"{w['raw_update_bytes'] / v:.0f} / {w['entry_bytes'] / v:.0f} / "
                f"{(w['ws_bytes_a_to_b'] + w['ws_bytes_b_to_a']) / v:.0f} / "
                f"{(w['tcp_bytes_a_to_b'] + w['tcp_bytes_b_to_a']) / v:.0f}")
        if "peer" in r:
            add("    peer websocket bytes per voucher, live / bulk",
                f"{r['peer']['live']['ws_bytes_per_voucher']:.0f} / {r['peer']['bulk']['ws_bytes_per_voucher']:.0f}")
    if "firstsync.p2psync" in r:
        b, x = r["firstsync.build"], r["firstsync.p2psync"]
        add(f"(6) first sync, {x['vouchers']:,} vouchers in {b['entries']:,} entries: p2psync seconds", x["seconds"], "{:.2f}")
        add("    p2psync peak RSS sender / receiver (MB)",
            f"{x['sender_peak_rss_mb']:.0f} / {x['receiver_peak_rss_mb']:.0f}")
    if "firstsync.books_only" in r:
        add("    p2psync seconds with no voucher report rows written (a bound for reports that follow)",
            r["firstsync.books_only"]["sync_seconds"], "{:.2f}")
    if "firstsync.peer" in r:
        x = r["firstsync.peer"]
        add("    peer seconds", x["seconds"], "{:.2f}")
        if "firstsync.books_only" in r:
            add("    ratio of that bound to the peer", r["firstsync.books_only"]["sync_seconds"] / x["seconds"], "{:.2f}")
        add("    peer peak RSS server / client (MB)", f"{x['sender_peak_rss_mb']:.0f} / {x['receiver_peak_rss_mb']:.0f}")
    if "scale.converge" in r:
        x = r["scale.converge"]
        add(f"(7) {x['nodes']} node processes via one relay, {x['vouchers_per_node']:,} vouchers each: "
            "seconds until all agree", x["seconds_to_agree"], "{:.1f}")
        add("    all agree / HO peak RSS / max node peak RSS / relay peak RSS (MB)",
            f"{x['all_agree']} / {x['ho_peak_rss_mb']:.0f} / {x['max_node_peak_rss_mb']:.0f} / {x['relay_peak_rss_mb']:.0f}")
    if "scale.ho_memory" in r:
        x = r["scale.ho_memory"]
        add(f"    HO holding {x['vouchers']:,} vouchers, {x['offices']} offices: peak RSS open + consolidated TB (MB)",
            x["peak_rss_mb"])
        add("    trial balances seconds (consolidated and per office) / consolidated again, warm / "
            "all docs loaded peak RSS (MB)",
            f"{x['trial_balance_seconds']:.2f} / {x.get('consolidated_warm_seconds', float('nan')):.2f} / "
            f"{x['all_docs_peak_rss_mb']:.0f} ({x['all_docs_loaded']} docs)")
    width = max(len(label) for label, _ in rows)
    lines = [f"{label:<{width}}  {value}" for label, value in rows]
    lines.append("")
    lines.append(f"targets (floors of this run: {floors(r)})")
    for key, value in r.get("targets", {}).items():
        goal, met = GOALS[key]
        state = "" if met is None else ("MET" if met(value) else "NOT MET")
        lines.append(f"  {key:<34} {value:>10.3f}  goal {goal:<22} {state}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few minutes")
    parser.add_argument("--scale", action="store_true", help="the head office memory at 1,000,000 vouchers (slow)")
    parser.add_argument("--only", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--bulk", type=int, help="vouchers for (1), (2), (3)")
    parser.add_argument("--live", type=int, help="vouchers for (4)")
    parser.add_argument("--first-sync", dest="first_sync", type=int, help="vouchers for (6)")
    parser.add_argument("--branches", type=int, help="branch processes for (7)")
    parser.add_argument("--per-node", dest="per_node", type=int, help="vouchers each office imports in (7)")
    parser.add_argument("--ho-vouchers", dest="ho_vouchers", type=int, help="vouchers in the head office home of (7)")
    parser.add_argument("--workdir", help="where the nodes' homes go (default: the system temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the homes after the run")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    results = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(table(results))
    print(f"\nwritten to {args.out.relative_to(Path.cwd()) if args.out.is_relative_to(Path.cwd()) else args.out}")


if __name__ == "__main__":
    main()
