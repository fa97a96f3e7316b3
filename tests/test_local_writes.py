"""A command that writes to the books of a home whose node is running tells that node at once
(`p2psync.node.local_writes`), and the node sends the new entries to its links then, not at its
safety-net poll. Real processes: two nodes linked over loopback, and the CLI. The poll is set to an
hour here, so that anything that arrives arrived because of the notice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from procs import Fleet, cli, linked, make_org, policy, voucher_args, voucher_numbers, wait_until

from p2psync.books.drafts import make_draft
from p2psync.node.local_writes import tell_running_node
from p2psync.node.office import Node
from p2psync.node.runtime import LOCAL_POLL_ENV


@pytest.fixture
def linked_pair(tmp_path: Path, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """HO and BR1 running, BR1 linked to HO, neither polling for other processes' writes."""
    monkeypatch.setenv(LOCAL_POLL_ENV, "3600")
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    fleet.start(br1, peers=(head.url,))
    wait_until(lambda: linked(br1, "HO"), "BR1 to link with HO")
    return ho, br1


def test_what_cli_commands_write_reaches_a_linked_peer_on_their_notice(linked_pair: tuple[Path, Path]) -> None:
    ho, br1 = linked_pair
    cli(ho, "ledger", "add", "Freight", "--group", "Direct Expenses")  # a masters entry
    posted = cli(ho, *voucher_args("payment", "2026-04-02", "Freight", "Cash", "125.00", "by the CLI"))
    number = posted.stdout.split('"number": "')[1].split('"')[0]
    wait_until(lambda: number in voucher_numbers(br1), f"{number} to reach BR1")
    cli(ho, "settings", "--sync-after", "2025-04-01")  # a new policy, signed by the command
    wait_until(lambda: policy(br1).get("sync_after") == "2025-04-01", "the new policy to reach BR1")


def test_without_a_notice_the_entry_waits_for_the_poll(linked_pair: tuple[Path, Path]) -> None:
    """The control for the test above: a write that tells no one stays at HO (the poll is an hour
    away) until the notice comes."""
    ho, br1 = linked_pair
    node = Node.open(ho)
    try:
        number = node.post(make_draft("receipt", "2026-04-03", ["Cash=10"], ["Sales=10"])).number
    finally:
        node.close()
    time.sleep(1.5)
    assert number not in voucher_numbers(br1)
    tell_running_node(ho)
    wait_until(lambda: number in voucher_numbers(br1), f"{number} to reach BR1 once HO is told")


def test_a_notice_with_no_node_running_is_silent(tmp_path: Path) -> None:
    """Posting offline is the normal case: nothing to tell, nothing printed."""
    (ho,) = make_org(tmp_path, ())
    result = cli(ho, *voucher_args("receipt", "2026-04-01", "Cash", "Sales", "5.00"))
    assert result.stderr == ""
