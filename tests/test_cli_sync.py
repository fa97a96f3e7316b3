"""The sync commands as people use them: ``init``, ``branch add``, ``invite``, ``join``, ``run``,
``settings --mode manual``, ``sync``, ``status`` and ``restart``, each a real ``python -m p2psync``
process. What they print and their exit codes are the contract (DESIGN §9): errors are one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path

import pytest
from procs import (
    WAIT,
    Fleet,
    begin_books_here,
    cli,
    cli_many,
    converged,
    free_port,
    here,
    linked,
    make_org,
    peers_of,
    policy,
    post_here,
    setting,
    status,
    voucher_args,
    voucher_numbers,
    wait_converged,
    wait_until,
)
from websockets.asyncio.server import ServerConnection, serve

from p2psync.net import tls
from p2psync.node.home import KEYS_DIR, LOG_FILE
from p2psync.protocol.sync import SyncConnection
from p2psync.trust.keys import unb64


def open_log(home: Path) -> str:
    return (home / LOG_FILE).read_text(errors="replace")


def one_error_line(stderr: str) -> str:
    """The whole of stderr, which must be a single ``error: ...`` line."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


@pytest.mark.slow
def test_offices_set_up_with_the_cli_converge_and_gossip_through_the_head_office(tmp_path: Path,
                                                                                 fleet: Fleet) -> None:
    ho, br1, br2 = (tmp_path / code for code in ("HO", "BR1", "BR2"))
    created = cli(ho, "init", "--head-office", "--company", "Acme Traders", "--open-books").stdout  # all read all
    registration = re.search(r"Registration ID: (\S+)", created)
    assert registration is not None
    cli(ho, "branch", "add", "BR1", "Branch One")
    cli(ho, "branch", "add", "BR2", "Branch Two")
    here(ho, "ledger", "add", "Cash", "--group", "Cash-in-Hand")
    here(ho, "ledger", "add", "Sales", "--group", "Sales Accounts")
    head = fleet.start(ho)

    codes = [result.stdout.split()[-1] for result in cli_many((ho, ("invite", "BR1")), (ho, ("invite", "BR2")))]
    joined = cli_many((br1, ("join", codes[0], "--via", head.url)), (br2, ("join", codes[1], "--via", head.url)))
    for code, result in zip(("BR1", "BR2"), joined, strict=True):
        assert f"as branch {code}" in result.stdout and registration.group(1) in result.stdout
    for home in (ho, br1, br2):  # each office's books begin before the dates posted below
        begin_books_here(home)

    fleet.start(br1, peers=(head.url,))  # BR1 and BR2 each link to the head office only
    fleet.start(br2, peers=(head.url,))
    wait_converged(ho, br1, br2)  # the first exchange brings the branches the masters

    posted = cli_many((ho, voucher_args("receipt", "2026-04-01", "Cash", "Sales", "1000.00", "at HO")),
                      (br1, voucher_args("receipt", "2026-04-02", "Cash", "Sales", "250.50", "at BR1")),
                      (br2, voucher_args("receipt", "2026-04-03", "Cash", "Sales", "75.25", "at BR2")))
    numbers = {json.loads(result.stdout)["number"] for result in posted}
    assert {n.split("/")[0] for n in numbers} == {"HO", "BR1", "BR2"}
    wait_until(lambda: all(numbers <= voucher_numbers(home) for home in (ho, br1, br2)),
               "every office to hold every voucher")
    wait_converged(ho, br1, br2)
    for home in (br1, br2):  # so BR1's voucher reached BR2 through the head office (gossip)
        assert {p["office"] for p in status(home)["peers"] if p["online"]} == {"HO"}

    balances = [r.stdout for r in cli_many(*((home, ("report", "trial-balance", "--json")) for home in (ho, br1, br2)))]
    assert balances[0] == balances[1] == balances[2]
    total = json.loads(balances[0])["total"]
    assert total["debit"] == total["credit"] == "1325.75"


def test_manual_mode_exchanges_nothing_until_sync_is_run(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    assert "manual" in cli(br1, "settings", "--mode", "manual").stdout
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    at_head = post_here(ho, "receipt", "2026-04-01", "Cash", "Sales", "300.00")
    at_branch = post_here(br1, "receipt", "2026-04-01", "Cash", "Sales", "40.00")

    refused = cli(ho, "sync", "--peer", branch.url, check=False)  # the branch takes no link it did not ask for
    assert refused.returncode == 1
    assert "manual mode" in one_error_line(refused.stderr)
    assert at_head not in voucher_numbers(br1) and at_branch not in voucher_numbers(ho)
    assert status(br1)["node"]["mode"] == "manual"
    assert not any(p["online"] for p in status(br1)["peers"])
    assert not any(p["online"] or p["received"] for p in status(ho)["peers"]), "the branch never linked"

    synced = cli(br1, "sync", "--peer", head.url)
    assert synced.returncode == 0 and synced.stderr == ""
    assert "Sync" in synced.stdout and "HO" in synced.stdout and "ok" in synced.stdout
    assert converged(ho, br1), "a one-shot sync ends only when both sides hold everything"
    assert {at_head, at_branch} <= voucher_numbers(ho) == voucher_numbers(br1)
    assert here(ho, "report", "trial-balance", "--json") == here(br1, "report", "trial-balance", "--json")

    nowhere = f"wss://127.0.0.1:{free_port()}"
    failed = cli(br1, "sync", "--peer", nowhere, check=False)
    assert failed.returncode == 1
    line = one_error_line(failed.stderr)
    assert nowhere in line and "Traceback" not in failed.stdout


def test_status_shows_links_and_restart_relinks(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    post_here(ho, "receipt", "2026-04-01", "Cash", "Sales", "10.00")
    wait_until(lambda: linked(br1, "HO") and linked(ho, "BR1"), "both sides to show the link")
    wait_converged(ho, br1)

    shown = json.loads(cli(br1, "status", "--json").stdout)
    assert shown["node"]["running"] is True and shown["node"]["office"] == "BR1"
    (to_head,) = shown["peers"]
    assert to_head["office"] == "HO" and to_head["online"] is True and to_head["last_sync"]
    assert to_head["received"] >= 1 and to_head["last_error"] == ""

    (before,) = peers_of(ho, "BR1")
    restarted = cli(br1, "restart")
    assert "Restarted" in restarted.stdout
    # Nothing new was written, so a newer last sync on both sides comes from a new conversation.
    wait_until(lambda: linked(ho, "BR1") and peers_of(ho, "BR1")[0]["last_sync"] > before["last_sync"],
               "the head office to see BR1 link and sync again")
    wait_until(lambda: linked(br1, "HO") and peers_of(br1, "HO")[0]["last_sync"] > to_head["last_sync"],
               "BR1 to link and sync again")
    assert "restarting" in open_log(ho), "the old link was closed as restarting"

    head.stop()
    wait_until(lambda: peers_of(br1, "HO")[0]["last_error"] and not peers_of(br1, "HO")[0]["online"],
               "BR1 to show the head office offline")
    (gone,) = json.loads(cli(br1, "status", "--json").stdout)["peers"]  # one entry per peer, also while it is down
    assert gone["office"] == "HO" and gone["online"] is False and gone["last_sync"] and gone["last_error"]

    branch.stop()
    stopped = json.loads(cli(br1, "status", "--json").stdout)
    assert stopped["node"]["running"] is False
    assert [(p["office"], p["online"], bool(p["last_sync"])) for p in stopped["peers"]] == [("HO", False, True)]
    text = cli(br1, "status").stdout
    assert "not running" in text and "Offline" in text

    no_node = cli(br1, "restart", check=False)
    assert no_node.returncode == 1
    assert "not running" in one_error_line(no_node.stderr)


def test_run_refuses_a_busy_port_and_a_second_node_on_one_home(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    args = ("run", "--host", "127.0.0.1", "--no-mdns", "--port")

    second = cli(ho, *args, "0", check=False, timeout=WAIT)
    assert second.returncode == 1
    assert "already running" in one_error_line(second.stderr)

    busy = cli(br1, *args, str(head.port), check=False, timeout=WAIT)
    assert busy.returncode == 1
    assert one_error_line(busy.stderr) == f"error: cannot listen on 127.0.0.1:{head.port}: address already in use"

    assert status(ho)["node"]["running"] is True, "the running node kept its control channel"
    assert status(br1)["node"]["running"] is False, "the refused node left nothing behind"
    assert setting(ho, "office") == "HO"


class CuttingPeer:
    """A member (the head office's certificate) that greets, takes the first batch of entries it is
    sent, and then ends the link without acknowledging it: closing cleanly (1000), or dropping the
    connection. It runs its own event loop in a thread, so a real ``p2psync sync`` can dial it."""

    def __init__(self, head: Path, how: str) -> None:
        self.head, self.how = head, how
        self.batches = 0
        self.ready = threading.Event()
        self.port = 0
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    def __enter__(self) -> CuttingPeer:
        self._thread.start()
        assert self.ready.wait(WAIT), "the cutting peer did not start"
        return self

    def __exit__(self, *_exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)

    @property
    def url(self) -> str:
        return f"wss://127.0.0.1:{self.port}"

    async def _serve(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        context = tls.server_context(self.head / KEYS_DIR, unb64(setting(self.head, "root_cert")))
        async with serve(self._converse, "127.0.0.1", 0, ssl=context) as server:
            self.port = server.sockets[0].getsockname()[1]
            self.ready.set()
            await self._stop.wait()

    async def _converse(self, ws: ServerConnection) -> None:
        body = policy(self.head)
        await ws.recv()  # the dialer's hello
        await ws.send(SyncConnection().hello(setting(self.head, "node_id"), body["org"], "head", body["version"], {}))
        while not isinstance(await ws.recv(), bytes):
            pass
        self.batches += 1
        if self.how == "close":
            await ws.close()
        else:
            ws.transport.abort()


@pytest.mark.parametrize("how, said", [("close", "the peer closed the link (code 1000)"),
                                       ("drop", "the connection dropped")])
def test_sync_fails_when_the_peer_ends_the_link_before_acknowledging_what_it_was_sent(
        tmp_path: Path, how: str, said: str) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    post_here(br1, "receipt", "2026-04-01", "Cash", "Sales", "70.00")
    with CuttingPeer(ho, how) as peer:
        result = cli(br1, "sync", "--peer", peer.url, check=False)
        rows = json.loads(cli(br1, "sync", "--peer", peer.url, "--json", check=False).stdout)
    assert peer.batches == 2, "each sync sent its entries"
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert peer.url in line and said in line and "before the exchange was complete" in line
    assert re.search(r"\d+ entries sent were not acknowledged as stored", line), line
    (row,) = rows
    assert row["ok"] is False and row["sent"] >= 1 and row["acknowledged"] == 0
