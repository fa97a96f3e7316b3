"""Read scopes between real `p2psync run` processes: a branch carries another branch's entries to
the head office unread, a regional office reads what it is granted, and no more once the grant is
taken back, and an organisation made before read scopes moves to them when its head office, able
to sign, runs `p2psync sync` or `p2psync run`. A branch that carries another's entries and turns
hostile (alters, drops, reorders or withholds them) is caught or bypassed, as the relay is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from helpers import before_read_scopes, exchange, home_bytes
from procs import (
    Fleet,
    cli,
    here,
    here_json,
    linked,
    make_org,
    peers_of,
    policy,
    post_here,
    quarantined,
    query,
    refused,
    sync_here,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)
from test_live_attacks import push_direct

CANARY = "CANARY-BR2-Q7"
MOVED = "made before read scopes: they are in force"
CANARY_AMOUNT = "98,765.43"


def test_head_office_offline_a_branch_carries_another_branchs_entries_it_cannot_read(tmp_path: Path,
                                                                                    fleet: Fleet) -> None:
    ho, br1, br2 = make_org(tmp_path, read_all=False)
    head = fleet.start(ho)
    one = fleet.start(br1, peers=(head.url,))
    two = fleet.start(br2, peers=(head.url, one.url))
    wait_until(lambda: linked(br2, "HO", "BR1"), "BR2 to link with the head office and with BR1")
    wait_until(lambda: all(policy(h).get("scoped_from") for h in (br1, br2)), "the scoped policy to spread")

    head.stop()
    wait_until(lambda: not any(p["online"] for p in peers_of(br2, "HO")), "BR2 to see the head office offline")
    number = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", CANARY_AMOUNT, CANARY)
    wait_converged(br1, br2)  # BR1 holds every entry of BR2's
    assert number not in voucher_numbers(br1) and not quarantined(br1)
    two.stop()
    one.stop()
    home = home_bytes(br1)
    assert CANARY.encode() not in home and b"9876543" not in home and b"98765.43" not in home
    assert here_json(br1, "report", "trial-balance")["scope"] == "BR1: 1 of 3 offices"

    head = fleet.start(ho, port=head.port)  # BR2 stays away: BR1 alone brings its entries
    fleet.start(br1, peers=(head.url,))
    wait_until(lambda: number in voucher_numbers(ho), "the head office to read BR2's voucher from BR1")
    shown = here_json(ho, "voucher", "show", number)
    assert CANARY in str(shown) and here_json(ho, "report", "trial-balance")["scope"] == "consolidated"


def test_a_regional_office_reads_what_it_is_granted_and_carries_what_it_no_longer_may(tmp_path: Path,
                                                                                     fleet: Fleet) -> None:
    ho, ro1, br2 = make_org(tmp_path, ("RO1", "BR2"), read_all=False)
    here(ho, "scope", "grant", "RO1", "BR2")
    head = fleet.start(ho)
    sync_here(br2, head.url)
    granted = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", "10.00", "while granted")
    sync_here(br2, head.url)
    sync_here(ro1, head.url)
    assert granted in voucher_numbers(ro1)
    assert here_json(ro1, "report", "trial-balance")["scope"] == "BR2, RO1: 2 of 3 offices"

    epoch = policy(ho)["epoch"]
    here(ho, "scope", "revoke", "RO1", "BR2")
    # until BR2 holds the rotated policy it seals under the key RO1 still holds (the window of
    # docs/security.md, Revocation): the running head office takes it up at its next poll
    wait_until(lambda: sync_here(br2, head.url) and policy(br2)["epoch"] == epoch + 1, "BR2 to hold the rotated policy")
    later = post_here(br2, "receipt", "2026-04-03", "Cash", "Sales", "20.00", "after the grant was taken back")
    sync_here(br2, head.url)
    sync_here(ro1, head.url)
    assert later in voucher_numbers(ho) and granted in voucher_numbers(ro1)
    assert later not in voucher_numbers(ro1)  # carried: held, not read
    assert vectors(ro1)["vouchers/BR2/2026-04"] == vectors(ho)["vouchers/BR2/2026-04"]
    assert not quarantined(ro1)
    assert here_json(ro1, "report", "trial-balance")["scope"] == "RO1: 1 of 3 offices"


def test_an_older_organisation_moves_to_read_scopes_when_its_head_office_syncs(tmp_path: Path,
                                                                              fleet: Fleet) -> None:
    with before_read_scopes():
        ho, br1, br2 = make_org(tmp_path, read_all=False)
    assert "scoped_from" not in policy(ho)
    one = fleet.start(br1)
    fleet.start(br2, peers=(one.url,))
    old = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", "10.00", "sealed for every office")
    wait_until(lambda: old in voucher_numbers(br1), "BR1 to read BR2's voucher, as every office did before scopes")

    synced = cli(ho, "sync", "--peer", one.url)  # the head office, upgraded, syncs once
    assert synced.stderr.count(MOVED) == 1 and "Traceback" not in synced.stderr
    moved = policy(ho)
    assert (moved["scoped_from"], moved["epoch"]) == (2, 2) and "grants" not in moved  # branches: the defaults
    wait_until(lambda: policy(br2).get("scoped_from") == 2, "the scoped policy to reach BR2 through BR1")
    new = post_here(br2, "receipt", "2026-04-03", "Cash", "Sales", "20.00", "sealed for BR2's readers")
    wait_converged(br1, br2)
    assert old in voucher_numbers(br1) and new not in voucher_numbers(br1) and not quarantined(br1)
    assert here_json(br1, "report", "trial-balance")["scope"] == "BR1: 1 of 3 offices"

    again = cli(ho, "sync", "--peer", one.url)
    assert MOVED not in again.stderr and policy(ho)["epoch"] == 2  # once
    assert {old, new} <= voucher_numbers(ho)
    assert "already in force" in here(ho, "scope", "enable")


def test_an_older_organisation_moves_to_read_scopes_when_its_head_office_runs(tmp_path: Path,
                                                                             fleet: Fleet) -> None:
    with before_read_scopes():
        ho, br1 = make_org(tmp_path, ("BR1",), read_all=False)
    head = fleet.start(ho)
    assert head.output().count(MOVED) == 1 and policy(ho)["scoped_from"] == 2
    fleet.start(br1, peers=(head.url,))
    wait_until(lambda: policy(br1).get("scoped_from") == 2, "BR1 to receive the scoped policy")
    head.stop()
    again = fleet.start(ho, port=head.port)  # its output goes on in the same file
    assert again.output().count(MOVED) == 1 and policy(ho)["epoch"] == 2  # once: not again at the restart


def test_a_head_office_still_catching_up_does_not_move_an_older_organisation(tmp_path: Path, fleet: Fleet) -> None:
    with before_read_scopes():
        ho, br1 = make_org(tmp_path, ("BR1",), read_all=False)
    cli(ho, "backup", str(tmp_path / "ho.backup"))
    cli(ho, "restore", str(tmp_path / "ho.backup"), "--force")
    head = fleet.start(ho)  # catching up: it may sign nothing, so it moves nothing
    assert MOVED not in head.output() and "scoped_from" not in policy(ho)
    head.stop()

    branch = fleet.start(br1)
    synced = cli(ho, "sync", "--peer", branch.url)
    assert "Caught up" in synced.stdout  # then it may sign, and does
    assert synced.stderr.count(MOVED) == 1 and policy(ho)["scoped_from"] == 2


def test_open_books_and_every_offices_books_at_the_command_line(tmp_path: Path) -> None:
    ho = tmp_path / "HO"
    assert "Every office reads every office's books" in here(ho, "init", "--head-office", "--company", "Acme",
                                                             "--open-books")
    here(ho, "branch", "add", "BR1", "Pune Branch")
    here(ho, "branch", "add", "AUD", "Internal Audit")  # added after: open books cover it too
    rows = {r["office"]: r for r in here_json(ho, "scope", "list")}
    assert rows["BR1"]["all"] and rows["AUD"]["all"] and rows["BR1"]["every_office"] == ["*"]
    assert "Every branch office also reads the books of every office" in here(ho, "scope", "list")

    closed = here_json(ho, "scope", "revoke", "--every-office", "--all")
    assert closed["office"] == "*" and not closed["all"] and closed["rotated"]
    granted = here_json(ho, "scope", "grant", "AUD", "--all")
    assert granted["all"] and granted["granted"] == ["*"] and not granted["rotated"]
    rows = {r["office"]: r for r in here_json(ho, "scope", "list")}
    assert rows["BR1"]["reads"] == ["BR1"] and rows["AUD"]["reads"] == ["AUD", "BR1", "HO"]
    assert "revoke AUD --all" in refused(ho, "scope", "revoke", "AUD", "BR1")
    assert "--all" in refused(ho, "scope", "grant", "AUD")
    taken = here_json(ho, "scope", "revoke", "AUD", "--all")
    assert taken["reads"] == ["AUD"] and taken["granted"] == [] and taken["rotated"]
    assert here_json(ho, "report", "trial-balance")["scope"] == "consolidated"  # the head office reads all


def test_a_hostile_carrier_that_alters_reorders_or_withholds_what_it_cannot_read_is_caught_or_bypassed(
        tmp_path: Path, fleet: Fleet) -> None:
    """BR1 carries BR2's entries without reading them, then, holding its valid keys, passes them to
    the running head office altered, out of order, and with the first withheld: the altered one is
    refused (and not charged to BR2), the second waits for the first, and the first arrives from BR2
    itself; the head office ends with BR2's books exactly as posted."""
    ho, br1, br2 = make_org(tmp_path, read_all=False)
    first = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", "11.00", f"{CANARY} one")
    second = post_here(br2, "receipt", "2026-04-03", "Cash", "Sales", "22.00", f"{CANARY} two")
    exchange(br1, br2)
    carried = [blob for (blob,) in query(br1, "SELECT envelope FROM entry WHERE doc = 'vouchers/BR2/2026-04' "
                                              "ORDER BY seq")]
    assert len(carried) == 2 and not {first, second} & voucher_numbers(br1)  # held, not read
    altered = bytearray(carried[0])
    altered[-80] ^= 0x01  # one bit of the ciphertext BR1 cannot read

    head = fleet.start(ho)
    asyncio.run(push_direct(head.url, br1, [bytes(altered)]))
    wait_until(lambda: any("signature does not verify" in r for r in quarantined(ho)), "the altered entry refused")
    assert query(ho, "SELECT author FROM quarantine") == [("?",)]  # not charged to BR2, whose it is not
    asyncio.run(push_direct(head.url, br1, [carried[1]]))  # the second, with the first withheld
    wait_until(lambda: query(ho, "SELECT count(*) FROM pending") == [(1,)], "the second entry to wait for the first")
    assert not {first, second} & voucher_numbers(ho)

    fleet.start(br2, peers=(head.url,))  # BR2 itself brings what BR1 withheld
    wait_until(lambda: {first, second} <= voucher_numbers(ho), "the head office to apply both of BR2's entries")
    assert query(ho, "SELECT count(*) FROM pending") == [(0,)] and len(quarantined(ho)) == 1
    assert vectors(ho)["vouchers/BR2/2026-04"] == vectors(br2)["vouchers/BR2/2026-04"]
    assert f"{CANARY} two" in str(here_json(ho, "voucher", "show", second))
