"""``p2psync demo``: a head office and two branches on this machine, end to end, as real processes.

A relay and three nodes run as separate ``p2psync`` processes on loopback. The branches register with
one-time codes, every office posts vouchers, BR1 finds the head office on the LAN (zeroconf on the
loopback interface), BR2 reaches the others only through the relay. The offices keep the default read
scopes: the head office reads every office's books, each branch the masters and its own books, and
carries the other's entries unread. The demo ends when every office holds every entry, the head
office reads them all, and each branch's books are what the head office reads of them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from p2psync.cli import render
from p2psync.errors import P2PSyncError

COMPANY = "Demo Traders Pvt Ltd"
LEDGERS = [("Cash", "Cash-in-Hand", "2,00,000"), ("HDFC Bank", "Bank Accounts", "5,00,000"),
           ("Capital", "Capital Account", "7,00,000 Cr"), ("Sales", "Sales Accounts", None),
           ("Purchases", "Purchase Accounts", None), ("Rent", "Indirect Expenses", None),
           ("Salaries", "Indirect Expenses", None)]
#: Each branch's opening balances, set by the head office: cash in hand to pay from from the first day.
BRANCH_OPENINGS = [("Cash", "1,00,000"), ("Capital", "1,00,000 Cr")]
#: (type, debit, credit, weight, largest amount): mostly sales, so cash and bank stay in credit.
KINDS = [("sales", "Cash", "Sales", 5, 40_000), ("receipt", "HDFC Bank", "Sales", 3, 60_000),
         ("payment", "Rent", "Cash", 2, 15_000), ("payment", "Salaries", "HDFC Bank", 1, 30_000),
         ("purchase", "Purchases", "HDFC Bank", 2, 50_000), ("contra", "HDFC Bank", "Cash", 1, 20_000)]
ADDRESS = re.compile(r"(wss?://[\w.\-]+:\d+)")
WAIT_SECONDS = 90.0


class Demo:
    """The processes of the demo and the commands it runs against them."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: list[subprocess.Popen[str]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("P2PSYNC_HOME", None)

    def home(self, office: str) -> str:
        return str(self.base / office.lower())

    def run(self, office: str, *args: str) -> str:
        """A one-shot command at `office`, run in this process (the nodes are the separate processes);
        its standard output."""
        from p2psync.cli.main import cli  # the command group that holds this very command

        captured = io.StringIO()
        with contextlib.redirect_stdout(captured):
            cli.main(args=["--home", self.home(office), *args], prog_name="p2psync", standalone_mode=False)
        return captured.getvalue()

    def start(self, args: list[str], log_name: str) -> str:
        """Start a long-running process; returns the address it prints when ready."""
        log = open(self.base / f"{log_name}.log", "w", encoding="utf-8")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen([sys.executable, "-m", "p2psync", *args], stdout=subprocess.PIPE, stderr=log,
                                text=True, env=self.env)
        self.procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = ADDRESS.search(line)
        if not match:
            said = (self.base / f"{log_name}.log").read_text(encoding="utf-8", errors="replace")
            raise P2PSyncError(f"{log_name} did not start: {said[-300:]}")
        return match.group(1)

    def node(self, office: str, *extra: str) -> str:
        return self.start(["--home", self.home(office), "run", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                           *extra],
                          office.lower())

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    def trial_balance(self, office: str, of: str | None = None) -> dict[str, Any]:
        """The trial balance `office` reads: all it may read, or the books of office `of`."""
        return json.loads(self.run(office, "report", "trial-balance", *(["--office", of] if of else []), "--json"))

    def held(self, office: str) -> dict[str, int]:
        """The entries `office` holds from each node, read or carried."""
        return {row["node"]: row["entries"] for row in json.loads(self.run(office, "branch", "nodes", "--json"))}

    def status(self, office: str) -> dict[str, Any]:
        return json.loads(self.run(office, "status", "--json"))


@contextlib.contextmanager
def _workspace(keep: bool) -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="p2psync-demo-"))
    try:
        yield base
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _vouchers(office: str, count: int, rng: random.Random, path: Path) -> Path:
    """A sheet of `count` vouchers dated in the first month of the current financial year: inside the
    posting window whatever year the demo runs in."""
    import datetime as dt  # only the demo needs them

    from p2psync.books.posting import financial_year

    first = financial_year(dt.date.today())[0]
    rows = ["voucher,type,date,ledger,dr,cr,narration"]
    for i in range(1, count + 1):
        kind, debit, credit, _weight, largest = rng.choices(KINDS, weights=[k[3] for k in KINDS])[0]
        amount = f"{rng.randint(100, largest)}.{rng.randint(0, 99):02d}"
        day = (first + dt.timedelta(days=rng.randint(0, 29))).isoformat()
        narration = f"{office} {kind} {i}"
        rows.append(f"{i},{kind},{day},{debit},{amount},,{narration}")
        rows.append(f"{i},{kind},{day},{credit},,{amount},{narration}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the offices' data directories and logs, and print where.")
@click.option("--vouchers", default=200, show_default=True, type=click.IntRange(1, 100_000),
              help="Vouchers posted at each office.")
def demo_cmd(keep: bool, vouchers: int) -> None:
    """A head office and two branches on this machine: register, post, sync, compare."""
    with _workspace(keep) as base:
        demo = Demo(base)
        try:
            _play(demo, vouchers)
        finally:
            demo.stop()
        if keep:
            render.info(f"Data and logs kept in {base}")


def _play(demo: Demo, vouchers: int) -> None:
    rng = random.Random(7)
    started = time.monotonic()
    with render.err.status("Starting a relay") as progress:
        relay = demo.start(["relay", "--host", "127.0.0.1", "--port", "0", "--db", str(demo.base / "relay.db")], "relay")
        render.info(f"Relay on {relay}")
        progress.update("Creating the head office")
        out = demo.run("HO", "init", "--head-office", "--company", COMPANY, "--name", "Head Office")
        render.info(next(line for line in out.splitlines() if "Registration ID" in line))
        for code, name in (("BR1", "Pune Branch"), ("BR2", "Nagpur Branch")):
            demo.run("HO", "branch", "add", code, name)
        for name, group, opening in LEDGERS:
            demo.run("HO", "ledger", "add", name, "--group", group, *(["--opening", opening] if opening else []))
        for code in ("BR1", "BR2"):  # each branch starts with cash and capital of its own
            for name, amount in BRANCH_OPENINGS:
                demo.run("HO", "ledger", "opening", name, amount, "--office", code)
        demo.run("HO", "settings", "--relay", relay)
        progress.update("Starting the head office's node")
        head = demo.node("HO")
        render.info(f"Head office node on {head}")
        for code in ("BR1", "BR2"):
            progress.update(f"Registering {code} with a one-time code")
            invite = demo.run("HO", "invite", code).strip().splitlines()[-1]
            joined = demo.run(code, "join", invite, *(["--via", head] if code == "BR2" else []))
            render.info(f"{code}: one-time code {invite[:9]}… → {joined.strip()}")
        progress.update("Starting the branches' nodes")
        demo.node("BR1")  # finds the head office on the LAN by zeroconf
        demo.node("BR2", "--no-mdns")  # no LAN: only the relay
        render.info("BR1 runs on the LAN (zeroconf); BR2 reaches the others only through the relay")
        for office in ("HO", "BR1", "BR2"):
            progress.update(f"Posting {vouchers} vouchers at {office}")
            _wait_for_ledgers(demo, office)
            demo.run(office, "voucher", "import", str(_vouchers(office, vouchers, rng, demo.base / f"{office}.csv")))
        render.info(f"Posted {vouchers} vouchers at each of HO, BR1 and BR2")
        progress.update("Waiting for every office to hold every entry")
        agreed = _converge(demo, vouchers)
    for office in ("HO", "BR1", "BR2"):
        _show_status(office, demo.status(office))
    tb = agreed.consolidated
    render.table("Consolidated trial balance at the head office (every office's books)", ["Ledger", "Debit", "Credit"],
                 [[r["ledger"], _money(r["debit"]), _money(r["credit"])] for r in tb["rows"]], numeric={1, 2},
                 footer=["Total", _money(tb["total"]["debit"]), _money(tb["total"]["credit"])])
    render.table("What each office reads (every office also reads the masters)",
                 ["Office", "Reads the books of", "Vouchers", "Entries held", "Trial balance total"],
                 [[office, "every office" if office == "HO" else office, count, agreed.entries,
                   _money(total)] for office, count, total in agreed.offices], numeric={2, 3, 4})
    render.info(f"BR1 carries BR2's entries to pass them on, unread: {_refusal(demo, 'BR1', 'BR2')}")
    render.info("Every office holds every entry; the head office reads every office's books, and each branch's "
                f"books are what the head office reads of them ({time.monotonic() - started:.1f} s).")


def _wait_for_ledgers(demo: Demo, office: str) -> None:
    """A branch posts against the head office's ledgers: wait until its node has received them."""
    deadline = time.monotonic() + WAIT_SECONDS
    while len(json.loads(demo.run(office, "ledger", "list", "--json"))) < len(LEDGERS):
        if time.monotonic() > deadline:
            raise P2PSyncError(f"{office} did not receive the head office's ledgers within {WAIT_SECONDS:.0f} s")
        time.sleep(0.2)


@dataclass(frozen=True)
class Agreed:
    """Where the demo ends: the head office's consolidated trial balance, the entries every office
    holds, and per office the vouchers it reads and its trial balance's total."""

    consolidated: dict[str, Any]
    entries: int
    offices: list[tuple[str, int, str]]


def _converge(demo: Demo, vouchers: int) -> Agreed:
    """Wait until every office holds the same entries (each branch carrying the other's), the head
    office reads all the vouchers posted, and each branch's trial balance is the head office's of
    that branch."""
    deadline = time.monotonic() + WAIT_SECONDS
    offices = ("HO", "BR1", "BR2")
    while True:
        held = [demo.held(office) for office in offices]
        read = [len(json.loads(demo.run(office, "voucher", "list", "--json"))) for office in offices]
        own = {code: demo.trial_balance(code) for code in offices[1:]}
        agree = all(_figures(own[code]) == _figures(demo.trial_balance("HO", code)) for code in offices[1:])
        if held[0] == held[1] == held[2] and read == [3 * vouchers, vouchers, vouchers] and agree:
            consolidated = demo.trial_balance("HO")
            totals = [consolidated["total"]["debit"], *(own[code]["total"]["debit"] for code in offices[1:])]
            return Agreed(consolidated, sum(held[0].values()), list(zip(offices, read, totals, strict=True)))
        if time.monotonic() > deadline:
            raise P2PSyncError(f"the offices did not agree within {WAIT_SECONDS:.0f} s (vouchers read: {read})")
        time.sleep(0.5)


def _figures(report: dict[str, Any]) -> tuple[Any, Any]:
    """A trial balance's rows and totals, without its label (which says whose books it covers)."""
    return report["rows"], report["total"]


def _refusal(demo: Demo, office: str, other: str) -> str:
    """What `office` answers when asked for `other`'s books, which it may not read."""
    try:
        demo.trial_balance(office, other)
    except P2PSyncError as exc:
        return str(exc)
    raise P2PSyncError(f"{office} read {other}'s books, which the default read scopes do not allow")


def _money(text: str) -> str:
    return render.money(Decimal(text))


def _show_status(office: str, data: dict[str, Any]) -> None:
    rows = [[p["office"] or "relay", "Online" if p["online"] else "Offline", (p["last_sync"] or "never")[11:19],
             p["sent"], p["received"]] for p in data["peers"]]
    render.table(f"Status at {office}", ["Peer", "Status", "Last sync (UTC)", "Sent", "Received"], rows,
                 numeric={3, 4})
