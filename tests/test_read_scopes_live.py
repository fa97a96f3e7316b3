"""Read scopes between real `p2psync run` processes: a branch carries another branch's entries to
the head office unread, and a regional office reads what it is granted, and no more once the grant
is taken back."""

from __future__ import annotations

from pathlib import Path

from procs import (
    Fleet,
    here,
    here_json,
    linked,
    make_org,
    peers_of,
    policy,
    post_here,
    quarantined,
    sync_here,
    vectors,
    voucher_numbers,
    wait_converged,
    wait_until,
)

CANARY = "CANARY-BR2-Q7"
CANARY_AMOUNT = "98,765.43"


def _home_bytes(home: Path) -> bytes:
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def test_head_office_offline_a_branch_carries_another_branchs_entries_it_cannot_read(tmp_path: Path,
                                                                                    fleet: Fleet) -> None:
    ho, br1, br2 = make_org(tmp_path, read_all=False)
    here(ho, "scope", "enable")
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
    home = _home_bytes(br1)
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
    here(ho, "scope", "enable")
    here(ho, "scope", "grant", "RO1", "BR2")
    head = fleet.start(ho)
    sync_here(br2, head.url)
    granted = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", "10.00", "while granted")
    sync_here(br2, head.url)
    sync_here(ro1, head.url)
    assert granted in voucher_numbers(ro1)
    assert here_json(ro1, "report", "trial-balance")["scope"] == "BR2, RO1: 2 of 3 offices"

    here(ho, "scope", "revoke", "RO1", "BR2")
    # until BR2 holds the rotated policy it seals under the key RO1 still holds (the window of
    # docs/security.md, Revocation): the running head office takes it up at its next poll
    wait_until(lambda: sync_here(br2, head.url) and policy(br2)["epoch"] == 3, "BR2 to hold the rotated policy")
    later = post_here(br2, "receipt", "2026-04-03", "Cash", "Sales", "20.00", "after the grant was taken back")
    sync_here(br2, head.url)
    sync_here(ro1, head.url)
    assert later in voucher_numbers(ho) and granted in voucher_numbers(ro1)
    assert later not in voucher_numbers(ro1)  # carried: held, not read
    assert vectors(ro1)["vouchers/BR2/2026-04"] == vectors(ho)["vouchers/BR2/2026-04"]
    assert not quarantined(ro1)
    assert here_json(ro1, "report", "trial-balance")["scope"] == "RO1: 1 of 3 offices"
