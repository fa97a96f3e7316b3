"""One side of a multi-process measurement, run by `run.py` as ``python bench/sides.py COMMAND ...``.

Each side prints JSON lines on stdout (one per event: ready, result); its peak memory is its own
(VmHWM), so the two sides of a sync are measured separately.

    build-home    a head office with N vouchers posted in daily-import batches, and a fresh branch
    p2p-serve     a head office node serving links until told "stop" on stdin
    p2p-sync      a fresh branch: one full exchange with the head office ("sync company details")
    peer-serve    a pycrdt-websocket server holding the same documents, until "stop"
    peer-sync     fresh pycrdt Provider clients syncing every document from it
    post          post N vouchers at a node (as `voucher import` does), beside its running process
    ho-build      a head office that received N vouchers from 49 branch offices
    ho-memory     open that head office and run a consolidated trial balance: peak memory
    pair-a        a head office node serving, posting what `pair.py` asks
    pair-b        a branch node dialing it, reporting what `pair.py` asks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
import time
from pathlib import Path
from typing import Any

import pair
from common import (
    count_vouchers,
    head_office_year,
    make_drafts,
    make_org,
    peak_rss_mb,
    query,
    rss_mb,
)


def emit(**values: Any) -> None:
    print(json.dumps(values), flush=True)


def write_states(path: Path, states: dict[str, bytes]) -> None:
    with path.open("wb") as out:
        for name, state in states.items():
            raw = name.encode()
            out.write(struct.pack(">HI", len(raw), len(state)) + raw + state)


def read_states(path: Path) -> dict[str, bytes]:
    data = path.read_bytes()
    out, at = {}, 0
    while at < len(data):
        name_len, state_len = struct.unpack_from(">HI", data, at)
        at += 6
        name = data[at:at + name_len].decode()
        at += name_len
        out[name] = data[at:at + state_len]
        at += state_len
    return out


# ---------------------------------------------------------------- (6) first sync, p2psync


def build_home(base: Path, vouchers: int, batch: int, seed_file: Path) -> None:
    """The head office's year: `vouchers` posted in batches of `batch` in date order (one entry per
    batch and month touched), then the documents exported for the peer to hold the same ones."""
    from p2psync.books import schema
    from p2psync.store import log

    started = time.perf_counter()
    node = head_office_year(base, vouchers, batch)
    home_a = node.home
    try:
        with node.db.read() as session:
            names = [n for n in log.documents(session) if not schema.parse_doc_name(n).is_masters]
        write_states(seed_file, {name: node.store.read_doc(name).get_update() for name in names})
    finally:
        node.close()
    emit(seconds=time.perf_counter() - started, entries=query(home_a, "SELECT count(*) FROM entry")[0][0],
         docs=len(names), vouchers=count_vouchers(home_a))


def p2p_serve(home: Path) -> None:
    from p2psync.node.office import Node
    from p2psync.node.runtime import NodeRuntime

    async def main() -> None:
        node = Node.open(home)
        runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
        await runtime.start()
        emit(port=runtime.port, rss_mb=rss_mb())
        await asyncio.to_thread(sys.stdin.readline)
        await runtime.stop()
        node.close()

    asyncio.run(main())
    emit(peak_rss_mb=peak_rss_mb(), cpu_s=time.process_time())


def p2p_sync(home: Path, url: str, expect: int, books_only: bool = False) -> None:
    """One full exchange; with `books_only`, no voucher's report rows are written (a bound, for the
    bench alone, of what a mode writing them after the sync would give: the books are durable then,
    and the checks, the log and the documents are the same)."""
    from p2psync.books import reports
    from p2psync.node.office import Node
    from p2psync.node.runtime import NodeRuntime
    from p2psync.store import materialize, queries

    if books_only:
        materialize.vouchers = lambda *_args, **_kw: None  # type: ignore[assignment]
    started = time.perf_counter()
    node = Node.open(home)
    runtime = NodeRuntime(node, peers=(url,), mdns=False)
    try:
        states = asyncio.run(runtime.sync_once(timeout=3600))
    finally:
        runtime.worker.shutdown(wait=True)
    synced = time.perf_counter()
    with node.db.read() as session:
        balances = queries.balances(session)
        report = reports.trial_balance(balances, "consolidated")
    done = time.perf_counter()
    node.close()
    errors = [s.last_error for s in states if s.last_error]
    if books_only:
        expect = count_vouchers(home)  # none: what was received is checked by the full run
    emit(seconds=done - started, sync_seconds=synced - started, report_seconds=done - synced,
         vouchers=count_vouchers(home), received=sum(s.stats.received for s in states),
         errors=errors, trial_balance_rows=len(report["rows"]), peak_rss_mb=peak_rss_mb(), cpu_s=time.process_time())
    if count_vouchers(home) != expect:
        sys.exit(f"first sync ended with {count_vouchers(home)} of {expect} vouchers")


# ---------------------------------------------------------------- (6) first sync, the peer


def peer_serve(seed_file: Path) -> None:
    import peer

    async def main() -> None:
        async with peer.server(read_states(seed_file) if seed_file.name else None) as (port, _server):
            emit(port=port, rss_mb=rss_mb())
            await asyncio.to_thread(sys.stdin.readline)

    asyncio.run(main())
    emit(peak_rss_mb=peak_rss_mb(), cpu_s=time.process_time())


def peer_sync(seed_file: Path, port: int, expect: int) -> None:
    import peer

    names = list(read_states(seed_file))  # only the room names: the states come over the wire

    async def main() -> float:
        started = time.perf_counter()
        async with peer.client(port, names) as docs:
            await peer.wait_held(docs, expect)
            return time.perf_counter() - started

    seconds = asyncio.run(main())
    emit(seconds=seconds, peak_rss_mb=peak_rss_mb(), cpu_s=time.process_time())


# ---------------------------------------------------------------- (7) scale


def post(home: Path, count: int, seed: int) -> None:
    """What ``p2psync voucher import FILE`` does: open the node, post every draft in one batch, close."""
    from p2psync.node.office import Node

    drafts = make_drafts(count, seed=seed)
    emit(ready=True)
    sys.stdin.readline()  # every office starts at once
    started = time.perf_counter()
    node = Node.open(home)
    try:
        node.post_many(drafts)
    finally:
        node.close()
    emit(seconds=time.perf_counter() - started)


def ho_build(base: Path, offices: int, vouchers: int, batch: int) -> None:
    """A head office holding `vouchers` across `offices` offices: every branch posts its share (in
    batches of `batch`, date order) and the head office receives them all, as from syncs."""
    from p2psync.node.office import Node

    started = time.perf_counter()
    codes = [f"B{i:02d}" for i in range(1, offices)]
    homes = make_org(base, codes)
    per_office = vouchers // offices
    head = Node.open(homes[0])
    received = 0
    try:
        for index, home in enumerate(homes):
            node = head if index == 0 else Node.open(home)
            try:
                for at in range(0, per_office, batch):
                    node.post_many(make_drafts(min(batch, per_office - at), seed=70 + index, start=at, total=per_office))
                if node is not head:
                    result = head.receive(node.entries(head.vectors()))
                    if result.quarantined:
                        raise RuntimeError(f"refused: {result.quarantined[:3]}")
                    received += result.applied
                    head.store.forget()  # as a restarted head office would: nothing cached
            finally:
                if node is not head:
                    node.close()
    finally:
        head.close()
    emit(seconds=time.perf_counter() - started, vouchers=count_vouchers(homes[0]), offices=offices,
         entries_received=received, peak_rss_mb=peak_rss_mb())


def ho_memory(home: Path, load_docs: bool) -> None:
    """Peak memory of the head office opening its books and running a consolidated trial balance;
    then, separately reported, after loading every voucher document in turn (what a long-running
    node that has received into every document holds: the cache keeps the most recent ones)."""
    from p2psync.books import reports
    from p2psync.node.office import Node
    from p2psync.store import log, queries

    base_rss = rss_mb()
    started = time.perf_counter()
    node = Node.open(home)
    opened = time.perf_counter()
    with node.db.read() as session:
        balances = queries.balances(session)
        report = reports.trial_balance(balances, "consolidated")
        per_office = {o.code: len(reports.trial_balance(queries.balances(session, o.code), o.code)["rows"])
                      for o in queries.offices(session)}
    done = time.perf_counter()
    with node.db.read() as session:  # warm: the pages are cached now, as in a running node
        reports.trial_balance(queries.balances(session), "consolidated")
    warm = time.perf_counter() - done
    out: dict[str, Any] = {"vouchers": count_vouchers(home), "open_seconds": opened - started,
                           "trial_balance_seconds": done - opened, "consolidated_warm_seconds": warm, "offices": len(per_office),
                           "trial_balance_rows": len(report["rows"]), "start_rss_mb": base_rss,
                           "peak_rss_mb": peak_rss_mb()}
    if load_docs:
        t = time.perf_counter()
        with node.db.read() as session:
            names = log.documents(session)
        for name in names:
            node.store.read_doc(name)
        out.update(all_docs_loaded=len(names), all_docs_seconds=time.perf_counter() - t,
                   all_docs_peak_rss_mb=peak_rss_mb())
    node.db.dispose()
    emit(**out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("build-home")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--vouchers", type=int, required=True)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--seed-file", type=Path, required=True)
    p = sub.add_parser("p2p-serve")
    p.add_argument("--home", type=Path, required=True)
    p = sub.add_parser("p2p-sync")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--url", required=True)
    p.add_argument("--expect", type=int, required=True)
    p.add_argument("--books-only", action="store_true", help="write no voucher report rows (a bound)")
    p = sub.add_parser("peer-serve")
    p.add_argument("--seed-file", type=Path, required=True)
    p = sub.add_parser("peer-sync")
    p.add_argument("--seed-file", type=Path, required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--expect", type=int, required=True)
    p = sub.add_parser("post")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("ho-build")
    p.add_argument("--base", type=Path, required=True)
    p.add_argument("--offices", type=int, default=50)
    p.add_argument("--vouchers", type=int, required=True)
    p.add_argument("--batch", type=int, default=1000)
    p = sub.add_parser("pair-a")
    p.add_argument("--home", type=Path, required=True)
    p = sub.add_parser("pair-b")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--url", required=True)
    p = sub.add_parser("ho-memory")
    p.add_argument("--home", type=Path, required=True)
    p.add_argument("--load-docs", action="store_true")
    args = parser.parse_args()
    if args.command == "build-home":
        build_home(args.base, args.vouchers, args.batch, args.seed_file)
    elif args.command == "p2p-serve":
        p2p_serve(args.home)
    elif args.command == "p2p-sync":
        p2p_sync(args.home, args.url, args.expect, args.books_only)
    elif args.command == "peer-serve":
        peer_serve(args.seed_file)
    elif args.command == "peer-sync":
        peer_sync(args.seed_file, args.port, args.expect)
    elif args.command == "post":
        post(args.home, args.count, args.seed)
    elif args.command == "ho-build":
        ho_build(args.base, args.offices, args.vouchers, args.batch)
    elif args.command == "pair-a":
        pair.serve_a(args.home)
    elif args.command == "pair-b":
        pair.dial_b(args.home, args.url)
    elif args.command == "ho-memory":
        ho_memory(args.home, args.load_docs)


if __name__ == "__main__":
    main()
