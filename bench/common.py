"""Shared pieces of the benchmarks: realistic vouchers, organisations on disk, memory and timing helpers.

Nothing here measures anything; `run.py` and the process sides in `sides.py` do.
"""

from __future__ import annotations

import json
import math
import os
import random
import secrets
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from contextlib import closing
from pathlib import Path
from typing import Any

from p2psync.books import schema
from p2psync.books.drafts import make_draft, resolve_names
from p2psync.books.importer import ImportedDraft
from p2psync.books.model import Action, Revision, encode_revision
from p2psync.books.rules import Chart
from p2psync.canonical import utc_now
from p2psync.node import registrar
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node

BENCH_DIR = Path(__file__).resolve().parent
COMPANY = "Bench Traders Pvt Ltd"
#: The ledgers every benchmark organisation has, with their Tally/Saral groups.
LEDGERS = {
    "Cash": "Cash-in-Hand",
    "HDFC Bank": "Bank Accounts",
    "Sales": "Sales Accounts",
    "Purchases": "Purchase Accounts",
    "Shop Rent": "Indirect Expenses",
    "Salaries": "Indirect Expenses",
    "Sundry Debtors Control": "Sundry Debtors",
    "Sundry Creditors Control": "Sundry Creditors",
    "Capital": "Capital Account",
}
CUSTOMERS = ["Sharma Traders", "Gupta & Sons", "Reddy Agencies", "Patel Hardware", "Iyer Textiles",
             "Khan Electricals", "Das Pharma", "Mehta Steel", "Nair Spices", "Singh Motors"]
#: Financial year April to March: documents are per (office, month), so vouchers spread over 12 of them.
MONTHS = [(2025, m) for m in range(4, 13)] + [(2026, m) for m in range(1, 4)]


# ---------------------------------------------------------------- vouchers


def make_drafts(count: int, seed: int = 1, start: int = 0, months: int = 12, total: int = 0) -> list[ImportedDraft]:
    """`count` vouchers of the usual mix (receipts, payments, sales, purchases, contra, journals),
    each valid for its type, with varied amounts, dates and narrations. Dates cycle through the
    months, or with `total` run in date order (item i of `total` falls in month i * months // total),
    as a year of daily imports would."""
    rng = random.Random(seed * 1_000_003 + start)
    out = []
    for i in range(start, start + count):
        year, month = MONTHS[i * months // total if total else i % months]
        date = f"{year}-{month:02d}-{rng.randint(1, 28):02d}"
        amount = f"{rng.randint(100, 9_999_999) / 100:.2f}"
        who = CUSTOMERS[rng.randrange(len(CUSTOMERS))]
        kind = rng.choices(["receipt", "payment", "sales", "purchase", "contra", "journal"],
                           weights=[30, 25, 20, 15, 5, 5])[0]
        if kind == "receipt":
            dr, cr, text = rng.choice(["Cash", "HDFC Bank"]), "Sundry Debtors Control", f"Received from {who} against bill {i}"
        elif kind == "payment":
            dr, cr = rng.choice(["Shop Rent", "Salaries", "Sundry Creditors Control"]), rng.choice(["Cash", "HDFC Bank"])
            text = f"Paid {dr.lower()} ref {i}"
        elif kind == "sales":
            dr, cr, text = "Sundry Debtors Control", "Sales", f"Invoice INV-{i:07d} to {who}"
        elif kind == "purchase":
            dr, cr, text = "Purchases", "Sundry Creditors Control", f"Bill {i} from {who}"
        elif kind == "contra":
            dr, cr, text = "HDFC Bank", "Cash", f"Cash deposited, slip {i}"
        else:
            dr, cr, text = "Sundry Debtors Control", "Sales", f"Adjustment {i} for {who}"
        out.append(ImportedDraft(f"item {i + 1}", make_draft(kind, date, [f"{dr}={amount}"], [f"{cr}={amount}"], text)))
    return out


def total_paise(drafts: Iterable[ImportedDraft]) -> int:
    """The debit total of the drafts: what a trial balance's debit column grows by."""
    return sum(line.paise for d in drafts for line in d.draft.lines if line.side.value == "Dr")


def revisions_like_p2psync(drafts: list[ImportedDraft], chart: Chart, office: str, author: str) -> list[Revision]:
    """The revisions `Node.post_many` would make of these drafts (numbers, ids, timestamps), without a node."""
    counters: dict[str, int] = defaultdict(lambda: 1)
    out = []
    for item in drafts:
        content = resolve_names(item.draft, chart)
        kind = content.type
        number = f"{office}/{kind.prefix}/{counters[kind.value]:05d}"
        counters[kind.value] += 1
        out.append(Revision(secrets.token_hex(12), number, office, content, Action.POST, (), 1, author, utc_now()))
    return out


def values_by_doc(revisions: list[Revision]) -> dict[str, list[tuple[str, str]]]:
    """Per (office, month) document, the (key, JSON value) pairs p2psync writes into its `revisions` map."""
    by_doc: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for rev in revisions:
        by_doc[schema.voucher_doc(rev.office, rev.content.date)].append((rev.id, encode_revision(rev)))
    return dict(by_doc)


# ---------------------------------------------------------------- organisations


def make_org(base: Path, branches: Iterable[str] = ("BR1",), relays: tuple[str, ...] = (),
             synced: bool = True) -> list[Path]:
    """A head office with the standard ledgers and enrolled branches: [HO, *branches]. With `synced`,
    every branch has had its first exchange (masters and policy) with the head office. Every office
    reads every office's books (open books), so that a branch applies what it receives, as the
    figures of earlier rounds measured."""
    branches = list(branches)
    head = Node.create_head(base / "HO", COMPANY, "HO", "Head Office", open_books=True)
    try:
        if relays:
            registrar.set_relays(head, list(relays))
        for code in branches:
            head.add_office(code, f"Branch {code}")
        for name, group in LEDGERS.items():
            head.add_ledger(name, group)
        for code in branches:
            registrar.enroll_here(head, base / code, code).close()
        for code in branches:
            branch = Node.open(base / code)
            try:
                branch.adopt_policy(head.policy_blob())
                if synced:
                    received = branch.receive(head.entries(branch.vectors()))
                    if received.quarantined:
                        raise RuntimeError(f"setup refused entries: {received.quarantined}")
            finally:
                branch.close()
    finally:
        head.close()
    return [base / "HO", *(base / code for code in branches)]



def head_office_year(base: Path, vouchers: int, batch: int = 100) -> Node:
    """The head office of `make_org(base, ("BR1",), synced=False)` after posting `vouchers` in batches
    of `batch` in date order (one entry per batch and month touched), open: what a first sync sends
    a fresh branch. The caller closes it."""
    home_a, _home_b = make_org(base, ("BR1",), synced=False)
    node = Node.open(home_a)
    try:
        for at in range(0, vouchers, batch):
            node.post_many(make_drafts(min(batch, vouchers - at), seed=6, start=at, total=vouchers))
    except BaseException:
        node.close()
        raise
    return node


def count_vouchers(home: Path) -> int:
    return query(home, "SELECT count(*) FROM voucherrow")[0][0]


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """A read-only look at a node's database (WAL lets it run beside the node's own writer)."""
    with closing(sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute(sql, params).fetchall()


# ---------------------------------------------------------------- measuring


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.005, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def commit_floor(directory: Path, count: int = 300) -> dict[str, float]:
    """What one durable commit costs on this disk, right now: plain `sqlite3` in WAL mode with
    synchronous=FULL (as the node's database), one small row per transaction. A live voucher needs two
    (the post at A, the receive at B), so this bounds its latency from below."""
    path = directory / "commit-floor.db"
    directory.mkdir(parents=True, exist_ok=True)
    times = []
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (payload BLOB)")
        row = os.urandom(700)
        for _ in range(count):
            began = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            db.execute("INSERT INTO t VALUES (?)", (row,))
            db.execute("COMMIT")
            times.append((time.perf_counter() - began) * 1000)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return {"commits": count, "p50_ms": percentile(times, 50), "p99_ms": percentile(times, 99)}


def filesystem_of(path: Path) -> str:
    """The type of the filesystem holding `path` (ext4, tmpfs, ...): fsync costs depend on it."""
    best, kind = "", "unknown"
    try:
        with open("/proc/mounts") as mounts:
            for line in mounts:
                parts = line.split()
                if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
                    best, kind = parts[1], parts[2]
    except OSError:
        pass
    return kind


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    mem = 0
    try:
        with open("/proc/meminfo") as info:
            mem = int(next(line.split()[1] for line in info if line.startswith("MemTotal"))) // 1024
    except (OSError, StopIteration):
        pass
    import platform

    import pycrdt
    return {"cores": os.cpu_count(), "cpu": model, "memory_mb": mem, "python": platform.python_version(),
            "p2psync_commit": _git("rev-parse", "--short", "HEAD"),
            "p2psync_uncommitted_files": len(_git("status", "--porcelain", "--", "p2psync").splitlines()),
            "pycrdt": pycrdt.__version__ if hasattr(pycrdt, "__version__") else _version("pycrdt"),
            "platform": platform.platform(terse=True)}


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, check=False,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------- process sides


def side(*args: str, env: dict[str, str] | None = None, stdin: bool = False) -> subprocess.Popen[str]:
    """Start `python bench/sides.py ARGS...`: one side of a two-process measurement."""
    return subprocess.Popen([sys.executable, str(BENCH_DIR / "sides.py"), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})))


def read_json_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """The next stdout line of a side that is a JSON object (sides print one per event)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"side exited {proc.wait()} without a result:\n{err[-4000:]}")
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise TimeoutError("side gave no result in time")


def finish(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    """Wait for a side that ends by itself and return its last JSON line."""
    out, err = proc.communicate(timeout=timeout)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"side exited {proc.returncode}:\n{err[-4000:]}")
    return json.loads(lines[-1])
