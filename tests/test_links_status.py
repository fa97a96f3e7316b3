"""What an office sees of its links: no error on a healthy link across periodic full reconciles, an
error in words it can act on (the technical detail in ``--json`` and the log), counts in vouchers,
the progress of a first sync, and times in the office's own zone and date format. Each drives real
``python -m p2psync`` processes (one runtime runs in this process, to reconcile every second).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from procs import Fleet, cli, free_port, linked, make_org, peers_of, post_here, status, voucher_numbers, wait_until

from p2psync.books.drafts import make_draft
from p2psync.node.home import LOG_FILE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime

IST = ZoneInfo("Asia/Kolkata")


class QuickReconcile(NodeRuntime):
    """The node's runtime with the periodic full reconcile every second instead of every N minutes."""

    @property
    def interval(self) -> float:
        return 1.0


def test_periodic_full_reconcile_leaves_healthy_links_without_an_error(tmp_path: Path, fleet: Fleet,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """The reconcile used to cancel the link, which websockets closes with 1011, and the head office
    showed ``received 1011 (internal error)`` on a healthy link. It now closes normally."""
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    caplog.set_level(logging.INFO, logger="p2psync.node.runtime")

    async def branch() -> dict:
        node = Node.open(br1)
        runtime = QuickReconcile(node, host="127.0.0.1", port=0, peers=(head.url,), mdns=False)
        await runtime.start()
        try:
            await asyncio.to_thread(wait_until, lambda: caplog.text.count("periodic full reconcile") >= 3,
                                    "three periodic full reconciles")
            number = await asyncio.to_thread(post_here, ho, "receipt", "2026-04-01", "Cash", "Sales", "10.00")
            await asyncio.to_thread(wait_until, lambda: number in voucher_numbers(br1), "the link to carry on")
            await asyncio.to_thread(wait_until, lambda: linked(ho, "BR1"), "the head office to see BR1 linked")
            return await runtime.status()
        finally:
            await runtime.stop()
            node.close()

    mine = asyncio.run(branch())
    assert [(p["office"], p["last_error"], p["last_error_detail"]) for p in mine["peers"]] == [("HO", "", "")]
    (seen,) = peers_of(ho, "BR1")
    assert seen["last_error"] == "" and seen["last_error_detail"] == "", seen
    shown = cli(ho, "status").stdout
    assert "1011" not in shown and "internal error" not in shown
    assert "1011" not in (ho / LOG_FILE).read_text(errors="replace")


def test_an_error_is_shown_in_plain_words_with_the_detail_in_json(tmp_path: Path, fleet: Fleet) -> None:
    _ho, br1 = make_org(tmp_path, ("BR1",))
    nowhere = f"wss://127.0.0.1:{free_port()}"
    fleet.start(br1, peers=(nowhere,))
    (peer,) = wait_until(lambda: [p for p in status(br1)["peers"] if p["last_error"]], "BR1 to fail to reach it")
    assert peer["last_error"] == f"nothing answers at {nowhere}: is p2psync running at that office?"
    assert "ConnectionRefusedError" in peer["last_error_detail"] or "111" in peer["last_error_detail"], peer
    assert "nothing answers at" in cli(br1, "status").stdout
    assert "last_error_detail" in cli(br1, "status", "--json").stdout


def post_many(home: Path, count: int) -> None:
    """`count` vouchers, each posted on its own (an entry each), as a busy office does over months."""
    node = Node.open(home)
    try:
        for i in range(count):
            node.post(make_draft("receipt", "2026-04-01", [f"Cash={i + 1}"], [f"Sales={i + 1}"]))
    finally:
        node.close()


def import_vouchers(home: Path, count: int) -> None:
    """`count` vouchers in one import: one entry carries them all."""
    rows = ["voucher,type,date,ledger,dr,cr"]
    for i in range(count):
        rows += [f"V{i},payment,02-04-2026,Rent,{i + 1}.00,", f"V{i},payment,02-04-2026,Cash,,{i + 1}.00"]
    path = home.parent / f"{home.name}-import.csv"
    path.write_text("\n".join(rows) + "\n")
    cli(home, "voucher", "import", str(path))


@pytest.mark.slow
def test_counts_are_in_vouchers_and_a_first_sync_shows_its_progress(tmp_path: Path, fleet: Fleet) -> None:
    """More entries than one batch holds (500) make a first sync of several steps, each shown."""
    ho, br1, br2 = make_org(tmp_path, ("BR1", "BR2"))
    post_many(ho, 620)
    import_vouchers(br1, 40)
    head = fleet.start(ho)

    synced = cli(br1, "sync", "--peer", head.url)
    steps = re.findall(r"Receiving from HO: (\d+)% \(([\d,]+) vouchers so far\)", synced.stderr)
    assert steps and all(int(percent) < 100 and int(vouchers.replace(",", "")) > 0 for percent, vouchers in steps), \
        synced.stderr
    assert re.search(r"│ HO\s+│\s+40 │\s+620 │ ok", synced.stdout), synced.stdout  # sent, received: vouchers

    (to_head,) = status(br1)["peers"]
    assert (to_head["sent_vouchers"], to_head["sent"]) == (40, 1), "40 vouchers went in one entry"
    assert to_head["received_vouchers"] == 620 and to_head["received"] >= 620
    assert {(r["direction"], r["vouchers"]) for r in status(br1)["sync_log"]} == {("sent", 40), ("received", 620)}
    (at_head,) = peers_of(ho, "BR1")
    assert (at_head["received_vouchers"], at_head["sent_vouchers"]) == (40, 620)

    fleet.start(br2, peers=(head.url,))  # a running node's first sync: its progress goes to its log
    wait_until(lambda: voucher_numbers(br2) >= voucher_numbers(br1), "BR2 to receive everything")
    logged = re.findall(r"receiving from HO: [\d,]+ vouchers so far, (\d+)% of \d+ entries",
                        (br2 / LOG_FILE).read_text(errors="replace"))
    assert logged and all(int(p) < 100 for p in logged)
    wait_until(lambda: peers_of(br2, "HO")[0]["received_vouchers"] == 660, "BR2's count of vouchers")
    assert re.search(r"│ HO\s+│.*│\s+\d+ │\s+660 │", cli(br2, "status").stdout)


def test_times_are_local_and_dates_written_the_offices_way(tmp_path: Path, fleet: Fleet,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    number = post_here(ho, "receipt", "2026-04-01", "Cash", "Sales", "10.00")
    cli(br1, "sync", "--peer", head.url)

    data = json.loads(cli(br1, "status", "--json").stdout)
    stamp = data["sync_log"][0]["at"]
    assert stamp.endswith("Z"), "--json keeps ISO in UTC with its zone"
    moment = dt.datetime.fromisoformat(stamp).astimezone(IST)
    shown = cli(br1, "status").stdout
    assert "At (IST)" in shown and moment.strftime("%d-%m-%Y %H:%M:%S") in shown, shown
    assert "(UTC)" not in shown

    assert "yyyy-mm-dd" in cli(br1, "settings", "--date-format", "yyyy-mm-dd").stdout
    assert moment.strftime("%Y-%m-%d %H:%M:%S") in cli(br1, "status").stdout
    assert json.loads(cli(br1, "settings", "--json").stdout)["date_format"] == "yyyy-mm-dd"

    history = json.loads(cli(ho, "voucher", "show", number, "--json").stdout)["history"][0]["at"]
    made = dt.datetime.fromisoformat(history).astimezone(IST)
    assert made.strftime("%d-%m-%Y %H:%M:%S") in cli(ho, "voucher", "show", number).stdout

    refused = cli(br1, "settings", "--date-format", "yy/mm/dd", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr


def test_join_help_names_the_tls_address(tmp_path: Path) -> None:
    shown = cli(tmp_path / "nowhere", "join", "-h").stdout
    assert "wss://HOST:PORT" in shown and "ws://HOST" not in shown
