"""Real ``python -m p2psync`` processes for the sync tests: one-shot commands, long-running nodes,
and read-only looks at a node's database while its process owns it. Commands whose process does not
matter (posting a voucher, printing a report) can also run in this process through the same CLI code,
which is much faster than starting Python again.

Every node process is registered with a `Fleet`, whose `close` (called by a fixture, also on
failure) stops what is still running: SIGTERM first, SIGKILL if it does not exit in time.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from helpers import BOOKS_BEGIN, begin_books

from p2psync.cli.main import cli as cli_group
from p2psync.node import control, registrar
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime, PeerState, status_from_db

#: The bound on every wait in these tests; each normally ends within a few seconds.
WAIT = 45.0
COMPANY = "Sync Links Traders"
LEDGERS = {"Cash": "Cash-in-Hand", "Bank": "Bank Accounts", "Sales": "Sales Accounts", "Rent": "Indirect Expenses",
           "Capital": "Capital Account"}
SERVING = re.compile(r"serving on wss://([^\s:]+):(\d+)")
DASHBOARD = re.compile(r"Dashboard: (http://\S+)")


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT, interval: float = 0.1) -> Any:
    """Poll `predicate` until it returns something true (which is returned), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def environment(base: Path) -> dict[str, str]:
    """The child's environment: unbuffered output and per-user directories inside the test's tmp."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")
    for var in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env[var] = str(base / "xdg")
    env.pop("P2PSYNC_HOME", None)
    return env


def cli(home: Path, *args: str, check: bool = True, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run one ``p2psync`` command on `home` and wait for it."""
    result = subprocess.run([sys.executable, "-m", "p2psync", "--home", str(home), *args], capture_output=True,
                            text=True, timeout=timeout, env=environment(home.parent), check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"p2psync {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def cli_many(*calls: tuple[Path, tuple[str, ...]]) -> list[subprocess.CompletedProcess[str]]:
    """Several commands on different homes at once; all must succeed."""
    procs = [subprocess.Popen([sys.executable, "-m", "p2psync", "--home", str(home), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=environment(home.parent)) for home, args in calls]
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err), (_home, args) in zip(procs, outputs, calls, strict=True):
        assert proc.returncode == 0, f"p2psync {' '.join(args)} exited {proc.returncode}:\n{out}\n{err}"
    return [subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
            for proc, (out, err) in zip(procs, outputs, strict=True)]


def voucher_args(kind: str, date: str, dr: str, cr: str, amount: str, narration: str = "") -> tuple[str, ...]:
    return ("voucher", "post", "--type", kind, "--date", date, "--dr", f"{dr}={amount}", "--cr", f"{cr}={amount}",
            "--narration", narration, "--json")


def refused(home: Path, *args: str) -> str:
    """Run a command that must fail: exit 1 and one ``error:`` line, never a traceback; returns the line."""
    result = cli(home, *args, check=False)
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def here(home: Path, *args: str) -> str:
    """Run one ``p2psync`` command in this process (same code as the real command); returns its output."""
    result = CliRunner().invoke(cli_group, ["--home", str(home), *args], catch_exceptions=False)
    assert result.exit_code == 0, f"p2psync {' '.join(args)} exited {result.exit_code}:\n{result.output}"
    return result.stdout


def begin_books_here(home: Path) -> None:
    """``p2psync settings --books-begin`` for a home made with ``init``, ``join`` or the dashboard, as
    `helpers.begin_books` does for those made in this process."""
    here(home, "settings", "--books-begin", BOOKS_BEGIN)


def here_json(home: Path, *args: str) -> Any:
    return json.loads(here(home, *args, "--json"))


def post_here(home: Path, kind: str, date: str, dr: str, cr: str, amount: str, narration: str = "") -> str:
    """``p2psync voucher post`` run in this process; returns the voucher's number."""
    return str(json.loads(here(home, *voucher_args(kind, date, dr, cr, amount, narration)))["number"])


def sync_here(home: Path, *urls: str) -> list[PeerState]:
    """One ``p2psync sync --peer URL ...`` in this process; returns what it did per peer."""
    node = Node.open(home)
    try:
        runtime = NodeRuntime(node, peers=urls, mdns=False)
        try:
            return asyncio.run(runtime.sync_once(timeout=WAIT))
        finally:
            runtime.worker.shutdown(wait=True)
    finally:
        node.close()


def status(home: Path) -> dict[str, Any]:
    """What ``p2psync status --json`` prints: from the running node, else from the database."""
    data = control.request(home, "status")
    if data is not None:
        return data
    node = Node.open(home)
    try:
        return status_from_db(node)
    finally:
        node.close()


def peers_of(home: Path, office: str) -> list[dict[str, Any]]:
    """The status entries of `home`'s links with office `office`."""
    return [p for p in status(home)["peers"] if p["office"] == office]


def linked(home: Path, *offices: str) -> bool:
    """Whether `home`'s running node has a synced, online link with each of `offices`."""
    peers = status(home)["peers"]
    return all(any(p["office"] == o and p["online"] and p["last_sync"] for p in peers) for o in offices)


def relay_linked(home: Path) -> bool:
    """Whether `home`'s running node has a synced, online link with a relay."""
    return any(p["kind"] == "relay" and p["online"] and p["last_sync"] for p in status(home)["peers"])


# ---------------------------------------------------------------- homes


def make_org(base: Path, branches: tuple[str, ...] = ("BR1", "BR2"), company: str = COMPANY,
             relays: tuple[str, ...] = (), read_all: bool = True) -> list[Path]:
    """Homes of a head office (with the standard ledgers) and enrolled branches: [HO, *branches].
    Each branch has had its first exchange with the head office ("Sync Company Details"): it holds
    the masters and the policy that lists every branch (and the relays given). `read_all`: every
    office reads every office's books (``init --open-books``: the tests of what readers agree on);
    else the default read scopes."""
    head = begin_books(Node.create_head(base / "HO", company, "HO", "Head Office", open_books=read_all))
    try:
        if relays:
            registrar.set_relays(head, list(relays))
        for code in branches:
            head.add_office(code, f"Branch {code}")
        for name, group in LEDGERS.items():
            head.add_ledger(name, group)
        for code in branches:
            begin_books(registrar.enroll_here(head, base / code, code)).close()
        for code in branches:
            branch = Node.open(base / code)
            try:
                branch.adopt_policy(head.policy_blob())
                assert not branch.receive(head.entries(branch.vectors())).quarantined
            finally:
                branch.close()
    finally:
        head.close()
    return [base / "HO", *(base / code for code in branches)]


# ---------------------------------------------------------------- a node's database, read only


def query(home: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(f"file:{home / DB_FILE}?mode=ro", uri=True, timeout=15)) as db:
        return db.execute(sql, params).fetchall()


def vectors(home: Path) -> dict[str, dict[str, int]]:
    """Per shared document, the highest sequence held from each author."""
    out: dict[str, dict[str, int]] = {}
    for doc, author, seq in query(home, "SELECT doc, author, max(seq) FROM entry WHERE doc NOT LIKE 'local/%' "
                                        "GROUP BY doc, author"):
        out.setdefault(doc, {})[author] = seq
    return out


def voucher_numbers(home: Path) -> set[str]:
    return {number for (number,) in query(home, "SELECT number FROM voucherrow")}


def converged(*homes: Path) -> bool:
    """Every home holds the same entries, and none waits for anything."""
    first = vectors(homes[0])
    return (bool(first) and all(vectors(home) == first for home in homes[1:])
            and all(query(home, "SELECT count(*) FROM pending")[0][0] == 0 for home in homes))


def wait_converged(*homes: Path, timeout: float = WAIT) -> None:
    wait_until(lambda: converged(*homes), f"{', '.join(h.name for h in homes)} to converge", timeout)


def quarantined(home: Path) -> list[str]:
    return [reason for (reason,) in query(home, "SELECT reason FROM quarantine")]


def setting(home: Path, key: str) -> str:
    rows = query(home, "SELECT value FROM setting WHERE key = ?", key)
    return str(rows[0][0]) if rows else ""


def policy(home: Path) -> dict[str, Any]:
    """The body of the signed policy the node holds."""
    return dict(json.loads(json.loads(setting(home, "policy"))["body"]))


def reports(home: Path, offices: tuple[str, ...]) -> dict[str, Any]:
    """Every report as ``--json`` prints it, consolidated and per office, and every ledger's statement."""
    out: dict[str, Any] = {}
    for kind in ("trial-balance", "profit-loss", "balance-sheet", "day-book"):
        out[kind] = here_json(home, "report", kind)
        for office in offices:
            out[f"{kind}/{office}"] = here_json(home, "report", kind, "--office", office)
    for ledger in LEDGERS:
        out[f"ledger/{ledger}"] = here_json(home, "report", "ledger", ledger)
    out["vouchers"] = here_json(home, "voucher", "list")
    out["conflicts"] = _shared(here_json(home, "conflicts"))
    return out


def _shared(conflicts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conflicts as every office must list them: without how this office may settle each version
    (only the voucher's office, or the head office, may), which differs by office by design."""
    return [{**c, "versions": [{k: v for k, v in version.items() if k != "settle"} for version in c["versions"]]}
            if "versions" in c else c for c in conflicts]


# ---------------------------------------------------------------- node processes


class NodeProcess:
    """``p2psync run`` on one home, on loopback (without mDNS unless asked), with its dashboard on a
    free port if asked; or ``p2psync dashboard``, which can start before the office is set up."""

    def __init__(self, home: Path, port: int = 0, peers: tuple[str, ...] = (), mdns: bool = False,
                 dashboard: bool = False, command: str = "run") -> None:
        self.home = home
        self.port = port
        self.peers = peers
        self.mdns = mdns
        self.dashboard = dashboard or command == "dashboard"
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.out = home.parent / f"{home.name}-run.out"

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> NodeProcess:
        """Start, and return once the node serves (its port is then known, also for port 0); an office
        not set up yet, once its dashboard serves."""
        set_up = (self.home / DB_FILE).exists()
        before = len(SERVING.findall(self.output())), len(DASHBOARD.findall(self.output()))
        args = [sys.executable, "-m", "p2psync", "--home", str(self.home), self.command, "--host", "127.0.0.1",
                "--port", str(self.port), *([] if self.mdns else ["--no-mdns"]),
                *(["--dashboard-port", "0"] if self.dashboard else ["--no-dashboard"])]
        for peer in self.peers:
            args += ["--peer", peer]
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environment(self.home.parent),
                                         start_new_session=True)
        if self.dashboard:
            wait_until(lambda: self._printed(DASHBOARD, before[1]), f"{self.home.name}'s dashboard to serve")
        if set_up:
            self.wait_serving(before[0])
        return self

    def wait_serving(self, before: int = 0) -> None:
        match = wait_until(lambda: self._printed(SERVING, before), f"{self.home.name} to serve")
        self.port = int(match.group(2))

    @property
    def dashboard_url(self) -> str:
        """The sign-in address the node printed last."""
        return DASHBOARD.findall(self.output())[-1]

    def _printed(self, pattern: re.Pattern[str], before: int) -> re.Match[str] | None:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{self.home.name} exited {self.proc.returncode}:\n{self.output()}")
        matches = list(pattern.finditer(self.output()))
        return matches[-1] if len(matches) > before else None

    def output(self) -> str:
        return self.out.read_text(errors="replace") if self.out.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, as an operator stops a node: it must exit cleanly (code 0) in time."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.home.name} did not stop on SIGTERM:\n{self.output()}") from None
        assert self.proc.returncode == 0, f"{self.home.name} exited {self.proc.returncode}:\n{self.output()}"

    def kill(self) -> None:
        """SIGKILL: no chance to clean up."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(20)


class RelayProcess:
    """``p2psync relay`` on loopback, its database in `base`/relay (port 0: any free port), with any
    further `options` of the command."""

    def __init__(self, base: Path, port: int = 0, *options: str) -> None:
        self.db = base / "relay" / "relay.db"
        self.db.parent.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port",
                                      str(port), "--db", str(self.db), *options], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=environment(base))
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"relay listening on (ws://127\.0\.0\.1:\d+)", line)
        assert match, line
        self.url = match.group(1)

    def stored(self) -> bytes:
        """Every byte of its database files."""
        return b"".join(p.read_bytes() for p in self.db.parent.glob("relay.db*"))

    def stop(self) -> None:
        """SIGTERM: it must exit cleanly (code 0) in time."""
        self.proc.terminate()
        assert self.proc.wait(WAIT) == 0


class Fleet:
    """The node processes of one test; `close` ends whatever still runs."""

    def __init__(self) -> None:
        self.nodes: list[NodeProcess] = []

    def start(self, home: Path, port: int = 0, peers: tuple[str, ...] = (), mdns: bool = False,
              dashboard: bool = False, command: str = "run") -> NodeProcess:
        node = NodeProcess(home, port, peers, mdns, dashboard, command)
        self.nodes.append(node)
        return node.start()

    def close(self) -> None:
        """Stop every node still running; then report any that did not stop cleanly."""
        problems = []
        for node in self.nodes:
            if node.running:
                try:
                    node.stop(10)
                except AssertionError as exc:
                    problems.append(str(exc))
        assert not problems, "\n".join(problems)
