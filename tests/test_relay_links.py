"""Real node processes finding each other without being told where: through a relay process only,
and by zeroconf on the loopback interface."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from procs import Fleet, environment, linked, make_org, post_here, voucher_numbers, wait_converged, wait_until

CANARY = "CANARY-relay-narration-Ashoka"


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    nodes = Fleet()
    yield nodes
    nodes.close()


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = tmp_path / "relay.db"
    proc = subprocess.Popen([sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port", "0",
                             "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=environment(tmp_path))
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"(ws://127\.0\.0\.1:\d+)", line)
    assert match, line
    yield match.group(1), db
    proc.terminate()
    proc.wait(20)


@pytest.mark.slow
def test_a_branch_with_no_direct_path_converges_through_the_relay_alone(tmp_path: Path, fleet: Fleet,
                                                                         relay: tuple[str, Path]) -> None:
    url, db = relay
    ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(url,))
    fleet.start(ho)  # no --peer, no mDNS: the only path between them is the relay
    fleet.start(br1)
    at_ho = post_here(ho, "receipt", "2026-04-03", "Cash", "Sales", "1500.00", f"{CANARY} at HO")
    at_br1 = post_here(br1, "receipt", "2026-04-04", "Cash", "Sales", "2500.00", f"{CANARY} at BR1")
    wait_converged(ho, br1)
    assert {at_ho, at_br1} <= voucher_numbers(ho) == voucher_numbers(br1)
    raw = b"".join(path.read_bytes() for path in db.parent.glob("relay.db*"))
    assert CANARY.encode() not in raw and b"Sales" not in raw and b"Cash" not in raw
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("select name from sqlite_master where type='table'")]
    assert tables  # the relay did store something: ciphertext only


@pytest.mark.slow
def test_offices_on_one_lan_find_each_other_by_zeroconf(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    fleet.start(ho, mdns=True)
    fleet.start(br1, mdns=True)
    wait_until(lambda: linked(br1, "HO"), "BR1 to find the head office on the LAN and link to it")
    number = post_here(br1, "payment", "2026-04-05", "Rent", "Cash", "800.00", "found by zeroconf")
    wait_converged(ho, br1)
    assert number in voucher_numbers(ho)
