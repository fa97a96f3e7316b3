"""The command line as people feel it: how long a short command takes, and how soon a voucher posted
with the CLI while the node runs shows at a linked office.

    python bench/cli.py [--vouchers 25] [--runs 10] [--workdir DIR] [--keep]

- `cli_version_s`: wall time of ``p2psync --version``, median of `runs` processes (and their CPU).
- `trial_balance_s`: wall time of ``p2psync report trial-balance`` on small books (a head office with
  the benchmark ledgers and 20 vouchers), median of `runs`.
- `cli_post_visible_at_peer_ms`: two ``p2psync run`` processes, BR1 linked to HO over loopback
  websockets; ``p2psync voucher post`` at HO, one process per voucher, one at a time; for each, the
  time from the moment HO's voucher table holds it (the command's commit) until BR1's does, both
  read from separate read-only connections (HO's every 0.5 ms, BR1's every 0.2 ms). p50 and p90.

Interpreter start-up counts in every figure, as it does for a user. The package's modules are
compiled first (`compileall`), as an installed package's are: with ``PYTHONDONTWRITEBYTECODE`` set,
every command would otherwise compile them again. No test asserts these figures.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from common import make_drafts, make_org, percentile, wait_for

import p2psync
from p2psync.node import control
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node

SERVING = re.compile(r"serving on wss://[^\s:]+:(\d+)")
SMALL_BOOKS = 20


def _p2psync(*args: str) -> list[str]:
    return [sys.executable, "-m", "p2psync", *args]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    env.pop("P2PSYNC_HOME", None)
    return env


def timed_runs(args: list[str], runs: int) -> dict[str, float]:
    """Median and minimum wall time of `runs` processes of `args`, and their median CPU (user + system)."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(), check=True, timeout=120)
        walls.append(time.perf_counter() - began)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return {"median_s": statistics.median(walls), "min_s": min(walls), "cpu_median_s": statistics.median(cpus),
            "runs": runs}


def cli_version_s(runs: int = 10) -> dict[str, float]:
    """``p2psync --version``: the floor of every command (the interpreter, click, the dispatch)."""
    return timed_runs(_p2psync("--version"), runs)


def trial_balance_s(base: Path, runs: int = 10) -> dict[str, float]:
    """``p2psync report trial-balance`` on a head office holding `SMALL_BOOKS` vouchers."""
    (home,) = make_org(base / "small", ())
    node = Node.open(home)
    try:
        node.post_many(make_drafts(SMALL_BOOKS, seed=7))
    finally:
        node.close()
    return timed_runs(_p2psync("--home", str(home), "report", "trial-balance"), runs)


def _start(home: Path, *extra: str) -> tuple[subprocess.Popen[bytes], int]:
    """``p2psync run`` on loopback (no mDNS, no dashboard); returns the process and its port."""
    out_path = home.parent / f"{home.name}-run.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(_p2psync("--home", str(home), "run", "--host", "127.0.0.1", "--port", "0", "--no-mdns",
                                         "--no-dashboard", *extra), stdout=out, stderr=subprocess.STDOUT, env=_env(),
                                start_new_session=True)

    def serving() -> re.Match[str] | None:
        if proc.poll() is not None:
            raise RuntimeError(f"{home.name} exited {proc.returncode}:\n{out_path.read_text(errors='replace')[-3000:]}")
        return SERVING.search(out_path.read_text(errors="replace"))

    return proc, int(wait_for(serving, 120, 0.05, f"{home.name} to serve").group(1))


def _linked(home: Path, office: str) -> bool:
    data = control.request(home, "status", timeout=10)
    return bool(data) and any(p["office"] == office and p["online"] and p["last_sync"] for p in data["peers"])


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _read_only(home: Path) -> sqlite3.Connection:
    """A look at a running node's database beside its own writer (WAL)."""
    return sqlite3.connect(f"{(home / DB_FILE).resolve().as_uri()}?mode=ro", uri=True, timeout=30)


def _count(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM voucherrow").fetchone()[0])


def _until_more(db: sqlite3.Connection, than: int, interval: float, timeout: float = 60) -> float:
    """Poll `db` until its voucher table holds more than `than` rows; the moment it did."""
    deadline = time.monotonic() + timeout
    while _count(db) <= than:
        if time.monotonic() > deadline:
            raise TimeoutError("the voucher did not arrive in time")
        time.sleep(interval)
    return time.perf_counter()


def cli_post_visible_at_peer_ms(base: Path, vouchers: int = 25, warmup: int = 2) -> dict[str, Any]:
    """From the commit of ``p2psync voucher post`` at HO to the voucher in BR1's tables, per voucher."""
    ho, br1 = make_org(base / "pair", ("BR1",))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        head, port = _start(ho)
        procs.append(head)
        procs.append(_start(br1, "--peer", f"wss://127.0.0.1:{port}")[0])
        wait_for(lambda: _linked(br1, "HO"), 120, 0.1, "BR1 to link with HO")
        latencies, cli_walls = [], []
        with closing(_read_only(ho)) as at_ho, closing(_read_only(br1)) as at_br1:
            for i in range(warmup + vouchers):
                held, peer_held, amount = _count(at_ho), _count(at_br1), f"{100 + i}.00"
                began = time.perf_counter()
                post = subprocess.Popen(_p2psync("--home", str(ho), "voucher", "post", "--type", "receipt", "--date",
                                                 "2026-04-01", "--dr", f"Cash={amount}", "--cr", f"Sales={amount}"),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
                committed = _until_more(at_ho, held, 0.0005)
                arrived = _until_more(at_br1, peer_held, 0.0002)
                _, err = post.communicate(timeout=120)
                if post.returncode != 0:
                    raise RuntimeError(f"voucher post exited {post.returncode}: {err.decode(errors='replace')}")
                if i >= warmup:
                    latencies.append((arrived - committed) * 1000)
                    cli_walls.append(time.perf_counter() - began)
    finally:
        _stop(procs)
    return {"vouchers": len(latencies), "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
            "max_ms": max(latencies), "cli_post_wall_median_s": statistics.median(cli_walls)}


def measure(base: Path, vouchers: int, runs: int) -> dict[str, Any]:
    """Every figure of this module, as `run.py` sections report theirs."""
    compileall.compile_dir(Path(p2psync.__file__).parent, quiet=1)
    return {"load_average_at_start": os.getloadavg(), "cli_version_s": cli_version_s(runs), "trial_balance_s": trial_balance_s(base, runs),
            "cli_post_visible_at_peer_ms": cli_post_visible_at_peer_ms(base, vouchers),
            "load_average_at_end": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vouchers", type=int, default=25, help="vouchers posted one at a time with the CLI")
    parser.add_argument("--runs", type=int, default=10, help="processes timed for --version and the trial balance")
    parser.add_argument("--workdir", type=Path, help="where the homes go (default: the system temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the homes after the run")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="p2psync-cli-", dir=args.workdir))
    try:
        figures = measure(base, args.vouchers, args.runs)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    version, tb, post = figures["cli_version_s"], figures["trial_balance_s"], figures["cli_post_visible_at_peer_ms"]
    print(f"p2psync --version: median {version['median_s']:.3f} s (min {version['min_s']:.3f}, "
          f"CPU {version['cpu_median_s']:.3f} s) over {version['runs']} runs")
    print(f"report trial-balance, {SMALL_BOOKS} vouchers: median {tb['median_s']:.3f} s (min {tb['min_s']:.3f}, "
          f"CPU {tb['cpu_median_s']:.3f} s) over {tb['runs']} runs")
    print(f"CLI post visible at the peer, {post['vouchers']} vouchers: p50 {post['p50_ms']:.1f} ms, "
          f"p90 {post['p90_ms']:.1f} ms, max {post['max_ms']:.1f} ms (one post command: "
          f"{post['cli_post_wall_median_s']:.2f} s)")
    print(f"load average at start {figures['load_average_at_start'][0]:.2f}, at end {figures['load_average_at_end'][0]:.2f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
