"""A full disk, for real: homes and a relay database on a small tmpfs that a filler file fills up.

Posting, importing and receiving then fail with one clear line and write nothing (the database
stays whole, every report as it was); once space is freed the node carries on. A relay whose disk is
full refuses to store, tells the member to try later, and stores everything when it does.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import copy_home
from outside import require
from procs import Fleet, cli, environment, make_org, post_here, query, reports, voucher_numbers

from p2psync.errors import StoreError
from p2psync.node.office import Node

DISK_BYTES = 24 * 1024 * 1024
POST = ("voucher", "post", "--type", "payment", "--date", "2026-04-01", "--dr", "Rent=10", "--cr", "Cash=10")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of a few MB, mounted for this test only (needs root)."""
    where = tmp_path / "disk"
    where.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
                             capture_output=True, text=True, check=False)
    require(None if mounted.returncode == 0 else f"cannot mount a small tmpfs: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


class Filler:
    """Takes every free byte of a file system, and gives it back."""

    def __init__(self, disk: Path) -> None:
        self.path = disk / "filler"

    def fill(self) -> None:
        with open(self.path, "ab", buffering=0) as handle:
            for chunk in (1024 * 1024, 4096, 1):
                try:
                    while True:
                        handle.write(b"\0" * chunk)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        assert os.statvfs(self.path).f_bavail == 0

    def free(self) -> None:
        self.path.unlink()


def receive_at(home: Path, blobs: list[bytes]) -> None:
    node = Node.open(home)
    try:
        node.receive(blobs)
    finally:
        with contextlib.suppress(StoreError):  # closing writes snapshots: the disk may be full
            node.close()


def integrity(home: Path) -> list[str]:
    return [row for (row,) in query(home, "PRAGMA integrity_check")]


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_a_full_disk_refuses_writes_in_one_line_and_changes_nothing(small_disk: Path, tmp_path: Path) -> None:
    ho, br1 = make_org(small_disk / "org", ("BR1",))
    for amount in ("11", "12"):
        cli(br1, "voucher", "post", "--type", "receipt", "--date", "2026-04-02", "--dr", f"Cash={amount}",
            "--cr", "Sales=" + amount)
    branch = Node.open(br1)
    incoming = branch.entries()
    branch.close()
    vouchers = tmp_path / "vouchers.csv"  # the file imported lives on another disk
    vouchers.write_text("voucher,type,date,ledger,dr,cr\n1,payment,2026-04-03,Rent,5,\n1,payment,2026-04-03,"
                        "Cash,,5\n")
    filler = Filler(small_disk)

    # A write may still fit in space SQLite already holds (its write-ahead log): until one fails,
    # free the disk, take the reports, and fill it again. Reading needs a little space too (SQLite's
    # shared-memory file), so the reports are compared once space is back, before any new write.
    for _ in range(50):
        before = reports(ho, ("HO",))
        filler.fill()
        result = cli(ho, *POST, check=False)
        if result.returncode != 0:
            break
        filler.free()
    assert "disk is full" in one_line_error(result)
    assert "disk is full" in one_line_error(cli(ho, "voucher", "import", str(vouchers), check=False))
    with pytest.raises(StoreError, match="disk is full"):
        receive_at(ho, incoming)
    filler.free()
    assert integrity(ho) == ["ok"]
    assert reports(ho, ("HO",)) == before

    cli(ho, *POST)
    cli(ho, "voucher", "import", str(vouchers))
    node = Node.open(ho)
    try:
        assert node.receive(incoming).applied == 2  # the two receipts; the rest it already held
    finally:
        node.close()
    assert integrity(ho) == ["ok"]
    assert {"BR1/RCT/00001", "BR1/RCT/00002"} <= voucher_numbers(ho)
    assert len(reports(ho, ("HO",))["vouchers"]) == len(before["vouchers"]) + 4


@pytest.fixture
def relay_on(small_disk: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    db = small_disk / "relay.db"
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


def relay_holds(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=15)) as conn:
        return int(conn.execute("SELECT count(*) FROM relay_entry").fetchone()[0])


@pytest.mark.slow
def test_a_relay_on_a_full_disk_says_try_later_and_stores_when_the_member_retries(
        small_disk: Path, tmp_path: Path, relay_on: tuple[str, Path]) -> None:
    url, db = relay_on
    ho, br1 = make_org(tmp_path / "org", ("BR1",), relays=(url,))
    cli(ho, "sync")  # the relay now holds the organisation's policy and the masters
    held = relay_holds(db)
    vouchers = tmp_path / "april.csv"  # enough to need more than the space SQLite already holds
    vouchers.write_text("voucher,type,date,ledger,dr,cr,narration\n" + "".join(
        f"{n},payment,2026-04-{n % 28 + 1:02d},Rent,1,,{'x' * 900}\n{n},payment,2026-04-{n % 28 + 1:02d},Cash,,1,\n"
        for n in range(1, 201)))
    cli(ho, "voucher", "import", str(vouchers))
    filler = Filler(small_disk)
    filler.fill()

    refused = cli(ho, "sync", check=False)
    assert "try again later" in one_line_error(refused)
    assert relay_holds(db) == held

    filler.free()
    cli(ho, "sync")  # the member simply tries again (a running node redials on its own)
    cli(br1, "sync")
    assert {f"HO/PMT/{n:05d}" for n in range(1, 201)} <= voucher_numbers(br1)


@pytest.mark.slow
def test_sync_fails_in_one_line_while_the_peers_disk_is_full_and_succeeds_once_it_is_not(
        small_disk: Path, tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(small_disk / "org", ("BR1",))
    branch = tmp_path / "BR1"  # the branch's own disk has room: only the head office's is full
    copy_home(br1, branch)
    head = fleet.start(ho)
    filler = Filler(small_disk)

    # As above, a write may still fit in what SQLite already holds: post and sync until one does not.
    for n in range(1, 51):
        posted = post_here(branch, "receipt", "2026-04-02", "Cash", "Sales", f"{n}.00", "x" * 900)
        filler.fill()
        refused = cli(branch, "sync", "--peer", head.url, check=False)
        if refused.returncode != 0:
            break
        filler.free()
    line = one_line_error(refused)
    assert head.url in line and "disk is full" in line and "try again later" in line, line
    filler.free()
    assert posted not in voucher_numbers(ho)

    cli(branch, "sync", "--peer", head.url)  # exit code 0: the head office acknowledged storing it all
    assert posted in voucher_numbers(ho)
    assert integrity(ho) == ["ok"]
