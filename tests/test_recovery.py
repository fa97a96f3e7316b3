"""Recovery on real damaged files: a truncated database, an empty file, a damaged entry log or report
table; `doctor` names what is wrong and the command that mends it, and every error on such a home
names a command that works. A backup taken while the node process runs is restored into a fresh
home, which refuses to post until it has caught up with its own entries from a peer; then it posts
without reusing a sequence number."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from helpers import copy_home
from procs import Fleet, cli, make_org, post_here, query, quarantined, vectors, voucher_args, wait_converged, \
    wait_until
from test_storage_faults import damage_file, zeroed

from p2psync.node import recovery
from p2psync.node.home import DB_FILE, KEYS_DIR
from p2psync.node.office import Node


@pytest.fixture(scope="module")
def org(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """HO and BR1, with ten vouchers posted at BR1 (enough pages to tear)."""
    homes = make_org(tmp_path_factory.mktemp("recovery"), branches=("BR1",))
    for n in range(10):
        post_here(homes[1], "payment", "2026-04-05", "Rent", "Cash", str(100 + n))
    return homes


@pytest.fixture
def br1(org: list[Path], tmp_path: Path) -> Path:
    home = tmp_path / "BR1"
    copy_home(org[1], home)
    return home


def one_line_error(result: object) -> str:
    assert result.returncode == 1, result.stdout  # type: ignore[attr-defined]
    stderr = result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    return stderr.strip()


def doctor(home: Path) -> dict:
    result = cli(home, "doctor", "--json", check=False)
    return json.loads(result.stdout)


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_truncated_or_empty_database_names_restore_and_restore_mends_it(br1: Path, tmp_path: Path,
                                                                         damage: str) -> None:
    expected = cli(br1, "voucher", "list", "--json").stdout
    cli(br1, "backup", str(tmp_path / "br1.backup"))
    db = br1 / DB_FILE
    os.truncate(db, db.stat().st_size // 2 if damage == "truncated" else 0)

    for command in (("voucher", "list"), ("rebuild",), ("report", "trial-balance")):
        line = one_line_error(cli(br1, *command, check=False))
        assert damage in line and "p2psync restore FILE" in line and "p2psync rebuild" not in line
    found = doctor(br1)
    assert not found["ok"] and len(found["findings"]) == 1
    assert damage in found["findings"][0]["problem"] and "p2psync restore FILE" in found["findings"][0]["fix"]

    cli(br1, "restore", str(tmp_path / "br1.backup"))
    assert [p.name for p in br1.glob(f"{DB_FILE}.damaged-*")], "the damaged file is kept aside"
    assert cli(br1, "voucher", "list", "--json").stdout == expected
    assert "catching up" in doctor(br1)["findings"][0]["problem"]


def test_a_damaged_entry_log_names_restore_and_a_damaged_report_table_names_rebuild(br1: Path,
                                                                                    tmp_path: Path) -> None:
    other = tmp_path / "other"
    copy_home(br1, other)
    assert damage_file(br1 / DB_FILE, "entry", "leaf", zeroed) >= 1
    line = one_line_error(cli(br1, *voucher_args("payment", "2026-04-06", "Rent", "Cash", "1"), check=False))
    assert "damaged beyond its caches" in line and "p2psync restore FILE" in line
    assert "p2psync restore FILE" in one_line_error(cli(br1, "rebuild", check=False))
    assert "restore" in doctor(br1)["findings"][0]["fix"]

    assert damage_file(other / DB_FILE, "linerow", "leaf", zeroed) >= 1
    assert doctor(other)["findings"][0]["fix"].startswith("p2psync rebuild")
    cli(other, "rebuild")
    assert doctor(other) == {"home": str(other), "ok": True, "findings": []}


def test_doctor_finds_missing_keys_and_a_missing_database(br1: Path) -> None:
    (br1 / KEYS_DIR / "node-sealing.pem").unlink()
    finding = doctor(br1)["findings"][0]
    assert "node-sealing.pem" in finding["problem"] and "keys folder" in finding["fix"]
    (br1 / DB_FILE).unlink()
    finding = doctor(br1)["findings"][0]
    assert "missing" in finding["problem"] and "p2psync restore FILE" in finding["fix"]
    assert "p2psync restore FILE" in one_line_error(cli(br1, "voucher", "list", check=False))


def test_restore_says_what_a_wrong_file_is_and_refuses_it(org: list[Path], br1: Path, tmp_path: Path) -> None:
    head_backup, relay_db, text = tmp_path / "ho.backup", tmp_path / "relay.db", tmp_path / "notes.txt"
    cli(org[0], "backup", str(head_backup))
    with sqlite3.connect(relay_db) as conn:
        conn.execute("CREATE TABLE relay_meta (key TEXT, value TEXT)")
    conn.close()
    text.write_text("not a backup\n")
    before = (br1 / DB_FILE).read_bytes()
    for file, says in ((head_backup, "the backup is of office HO"), (relay_db, "relay's database"),
                       (text, "is not a database")):
        assert says in one_line_error(cli(br1, "restore", str(file), "--force", check=False))
    own = tmp_path / "br1.backup"
    cli(br1, "backup", str(own))
    assert "already exists" in one_line_error(cli(br1, "backup", str(own), check=False))
    assert "--force" in one_line_error(cli(br1, "restore", str(own), check=False))  # the database is whole
    assert (br1 / DB_FILE).read_bytes() == before


def test_catching_up_is_not_lifted_while_a_peer_holds_more_of_our_own_entries(br1: Path, tmp_path: Path) -> None:
    cli(br1, "backup", str(tmp_path / "b"))
    cli(br1, "restore", str(tmp_path / "b"), "--force")
    node = Node.open(br1)
    try:
        me, held = node.identity.node_id, node.vectors()
        ahead = {doc: {**vector, me: vector.get(me, 0) + 1} for doc, vector in held.items()}
        assert not recovery.finish_catching_up(node, ahead, "HO")
        assert node.catching_up
        assert recovery.finish_catching_up(node, held, "HO") and not node.catching_up
    finally:
        node.close()
    assert doctor(br1)["ok"]


def test_backup_while_running_then_restore_catches_up_before_posting(org: list[Path], tmp_path: Path,
                                                                     fleet: Fleet) -> None:
    ho, br1 = tmp_path / "HO", tmp_path / "BR1"
    copy_home(org[0], ho)
    copy_home(org[1], br1)
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    wait_converged(ho, br1)
    backup = tmp_path / "br1.backup"
    cli(br1, "backup", str(backup))  # while its node runs
    after = [json.loads(cli(br1, *voucher_args("payment", "2026-04-07", "Rent", "Cash", str(n))).stdout)["number"]
             for n in (1, 2, 3)]
    wait_converged(ho, br1)
    assert "a node is running" in one_line_error(cli(br1, "restore", str(backup), "--force", check=False))
    held_by_head = vectors(ho)
    branch.stop()

    fresh = tmp_path / "new-machine" / "BR1"  # the old disk is gone: its keys were backed up apart
    cli(fresh, "restore", str(backup), "--keys", str(br1 / KEYS_DIR))
    refused = one_line_error(cli(fresh, *voucher_args("payment", "2026-04-08", "Rent", "Cash", "9"), check=False))
    assert "catching up after a restore" in refused and "p2psync sync" in refused
    assert "catching up" in one_line_error(cli(fresh, "voucher", "cancel", after[0], "--reason", "x", check=False))
    assert "catching up after a restore" in cli(fresh, "status").stdout
    shown = json.loads(cli(fresh, "status", "--json").stdout)["node"]  # what the dashboard's Status screen shows
    assert shown["catching_up"] and "p2psync sync --peer" in shown["catching_up_notice"]

    synced = cli(fresh, "sync", "--peer", head.url)
    assert "Caught up" in synced.stdout and "catching up" not in cli(fresh, "status").stdout
    assert vectors(fresh) == held_by_head  # every entry of its own is back
    number = json.loads(cli(fresh, *voucher_args("payment", "2026-04-08", "Rent", "Cash", "9")).stdout)["number"]
    assert number not in after
    fleet.start(fresh, peers=(head.url,))
    wait_until(lambda: vectors(ho) == vectors(fresh), "HO to receive the restored office's new voucher")
    assert not quarantined(ho) and not query(ho, "SELECT * FROM equivocation")
    mine = query(fresh, "SELECT doc, seq FROM entry WHERE author = (SELECT value FROM setting WHERE key='node_id')")
    assert len(mine) == len(set(mine))


def policy_version(home: Path) -> int:
    return int(json.loads(cli(home, "settings", "--json").stdout)["policy_version"])


def test_a_restored_head_office_signs_no_policy_until_it_has_caught_up(org: list[Path], tmp_path: Path,
                                                                      fleet: Fleet) -> None:
    """The branches hold a policy the head office signed after its backup: a restored head office
    signing now would reuse that version. Every act that signs one is refused, in one line saying why
    and what to do, and nothing is signed; one sync brings the newest policy back and lifts it."""
    ho, br1 = tmp_path / "HO", tmp_path / "BR1"
    copy_home(org[0], ho)
    copy_home(org[1], br1)
    backup = tmp_path / "ho.backup"
    cli(ho, "backup", str(backup))
    cli(ho, "settings", "--sync-after", "2026-04-01")  # signed after the backup
    newest = policy_version(ho)
    branch = fleet.start(br1)
    cli(ho, "sync", "--peer", branch.url)
    assert policy_version(br1) == newest

    cli(ho, "restore", str(backup), "--force")
    restored = policy_version(ho)
    assert restored < newest
    for command in (("invite", "BR1"), ("branch", "add", "BR9", "Pune Branch"), ("revoke", "BR1"),
                    ("settings", "--sync-after", "2026-04-02"), ("settings", "--relay", "wss://relay.example:8471")):
        line = one_line_error(cli(ho, *command, check=False))
        assert "catching up after a restore" in line and "p2psync sync --peer" in line, (command, line)
    assert policy_version(ho) == restored
    assert "BR9" not in cli(ho, "branch", "list").stdout

    assert "Caught up" in cli(ho, "sync", "--peer", branch.url).stdout
    assert policy_version(ho) == newest  # the policy it signed after the backup came back with the sync
    cli(ho, "invite", "BR1")
    cli(ho, "settings", "--sync-after", "2026-04-02")
    assert policy_version(ho) == newest + 1
