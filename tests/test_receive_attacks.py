"""Attacks on receiving: entries that skip or repeat a sequence, equivocate, replay, come from another
organisation, a revoked or unknown author, or date a voucher before the sync-after date. Each is
refused with a precise reason (or held back, for a gap), and nothing already stored changes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import msgspec
import pytest
from helpers import (
    begin_books,
    draft,
    forge_entry,
    forged_revision,
    outgoing,
    send,
    setup_branch,
    setup_head,
    state,
    voucher_rows,
)

from p2psync.books.change import Change
from p2psync.books.model import Line, Side, encode_revision
from p2psync.node import Node, forks, quarantine, registrar
from p2psync.protocol import entry
from p2psync.store import log
from p2psync.store.tables import Equivocation


@pytest.fixture
def org(tmp_path: Path) -> tuple[Node, Node, Node]:
    head = setup_head(tmp_path / "HO")
    br1 = setup_branch(tmp_path / "BR1", "BR1", head)
    br2 = setup_branch(tmp_path / "BR2", "BR2", head)
    for branch in (br1, br2):
        branch.adopt_policy(head.policy_blob())
    yield head, br1, br2
    for node in (head, br1, br2):
        node.close()


def post(node: Node, amount: str, date: str = "2026-04-01") -> None:
    node.post(draft("journal", date, {"Rent": amount}, {"Creditors": amount}, f"rent {amount}"))


def new_entries(source: Node, target: Node) -> list[bytes]:
    return outgoing(source, target)


def test_a_skipped_sequence_waits_and_is_never_applied_out_of_order(org: tuple[Node, Node, Node]) -> None:
    head, br1, _br2 = org
    post(br1, "1")
    post(br1, "2")
    first, second = new_entries(br1, head)[-2:]
    before = state(head)
    result = head.receive([second])
    assert (result.applied, result.waiting, result.quarantined) == (0, 1, [])
    assert state(head) == before
    result = head.receive([first])
    assert result.applied == 2 and result.waiting == 0


def test_replayed_entries_are_harmless_duplicates(org: tuple[Node, Node, Node]) -> None:
    head, br1, _br2 = org
    post(br1, "5")
    blobs = new_entries(br1, head)
    assert head.receive(blobs).applied == len(blobs)
    after = state(head)
    replay = head.receive(blobs + blobs)
    assert (replay.applied, replay.duplicates, replay.quarantined) == (0, 2 * len(blobs), [])
    assert state(head) == after


def test_a_different_entry_with_a_held_sequence_is_refused_as_equivocation(org: tuple[Node, Node, Node]) -> None:
    head, br1, _br2 = org
    post(br1, "7")
    held = new_entries(br1, head)[-1]
    head.receive(new_entries(br1, head))
    original = entry.open_entry(held, br1.trust)
    twin = br1.trust.seal(Change(original.doc, original.author, original.seq, original.update, original.deps))
    assert twin != held  # same change, fresh nonce: a different entry for the same sequence
    before = state(head)
    result = head.receive([twin])
    # the held entry stays applied; the other is quarantined, and both are kept as proof (which one every
    # office keeps is settled where links find the chains part: test_equivocation.py)
    assert result.applied == 0 and result.quarantined[0].startswith("equivocation")
    assert state(head) == before
    with head.db.read() as session:
        assert log.envelope(session, *original.key) == held
        proof = session.get(Equivocation, original.key)
        assert proof is not None and (proof.held, proof.other) == (held, twin)
    assert [(f["office"], f["seq"]) for f in forks.found(head)] == [("BR1", original.seq)]
    assert head.receive([twin]).quarantined and len(head.quarantined()) == 1  # sent again: stored once


def test_a_forged_copy_of_a_held_entry_is_not_blamed_on_its_author(org: tuple[Node, Node, Node]) -> None:
    # a relay (or anyone on the way) alters an entry the receiver already holds: that is a forgery,
    # refused for its signature, never recorded as the honest author's equivocation
    head, br1, _br2 = org
    post(br1, "8")
    held = new_entries(br1, head)[-1]
    head.receive(new_entries(br1, head))
    forged = held[:-80] + bytes([held[-80] ^ 1]) + held[-79:]
    before = state(head)
    result = head.receive([forged])
    assert result.applied == 0 and result.quarantined == ["signature does not verify against the author's certificate"]
    assert state(head) == before


def test_an_entry_of_another_organisation_is_refused(org: tuple[Node, Node, Node], tmp_path: Path) -> None:
    head, _br1, _br2 = org
    other = setup_head(tmp_path / "OTHER")
    post(other, "9")
    before = state(head)
    result = head.receive(outgoing(other))
    assert result.applied == 0 and all("another organisation" in r for r in result.quarantined)
    assert state(head) == before
    other.close()


def test_an_unknown_author_waits_in_quarantine_until_the_policy_admits_it(org: tuple[Node, Node, Node],
                                                                          tmp_path: Path) -> None:
    head, br1, _br2 = org
    head.add_office("BR3", "Branch Three")
    br3 = begin_books(registrar.enroll_here(head, tmp_path / "BR3", "BR3"))
    send(head, br3)
    post(br3, "11")
    own = [blob for blob in new_entries(br3, br1) if entry.peek(blob).author == br3.identity.node_id]
    result = br1.receive(own)  # br1 has not heard of BR3 yet
    assert result.applied == 0 and len(result.quarantined) == len(own)
    assert all("unknown author" in r for r in result.quarantined)
    send(head, br1)  # the admitting policy arrives: the quarantined entries are retried and applied
    assert "vouchers/BR3/2026-04" in br1.vectors()
    assert br1.receive(own).duplicates == len(own)
    br3.close()


def test_a_revoked_branch_is_refused_after_its_cutoff(org: tuple[Node, Node, Node]) -> None:
    head, br1, br2 = org
    post(br1, "13")
    send(br1, head)
    registrar.revoke(head, "BR1")
    post(br1, "14")  # made after the revocation, sealed with the old epoch key it still holds
    late = new_entries(br1, head)
    before = state(head)
    result = head.receive(late)
    assert result.applied == 0 and all("revoked" in r for r in result.quarantined)
    assert state(head) == before
    # the other branch refuses it too once the policy reached it, but keeps what came before
    br2.adopt_policy(head.policy_blob())
    send(head, br2)
    assert br2.receive(late).applied == 0
    assert "vouchers/BR1/2026-04" in br2.vectors()
    # and the revoked branch cannot read what is written from now on
    post(head, "15")
    br1.adopt_policy(head.policy_blob())
    result = br1.receive(new_entries(head, br1))
    assert result.applied == 0 and any("no key for epoch" in r for r in result.quarantined)


def test_a_voucher_before_the_sync_after_date_stays_local_and_is_refused_if_sent(org: tuple[Node, Node, Node]) -> None:
    head, br1, _br2 = org
    registrar.set_sync_after(head, dt.date(2026, 4, 1))
    br1.adopt_policy(head.policy_blob())
    post(br1, "17", date="2026-03-15")  # before the date: kept in BR1's local book, never sealed
    assert new_entries(br1, head) == []
    assert [v["number"] for v in voucher_rows(br1)] == ["BR1/JRN/00001"]
    # a forged shared entry dated before the date is refused on receipt
    rev = forged_revision("BR1", "BR1/JRN/00042", (Line("Rent", Side.DR, 1), Line("Creditors", Side.CR, 1)))
    rev = msgspec.structs.replace(rev, content=msgspec.structs.replace(rev.content, date=dt.date(2026, 3, 31)))
    blob = forge_entry(br1, "vouchers/BR1/2026-04", lambda m: m.__setitem__(rev.id, encode_revision(rev)))
    before = state(head)
    result = head.receive([blob])
    assert result.applied == 0 and "before the sync-after date" in result.quarantined[0]
    assert state(head) == before


def test_a_replacement_machine_numbers_in_a_series_of_its_own(org: tuple[Node, Node, Node], tmp_path: Path) -> None:
    """A lost laptop's vouchers and its replacement's can never share a number, even when the new
    machine posts before it has received the old one's books."""
    head, _br1, br2 = org
    post(br2, "21")
    send(br2, head)
    registrar.revoke(head, "BR2")
    replacement = begin_books(registrar.enroll_here(head, tmp_path / "BR2-new", "BR2"))
    replacement.adopt_policy(head.policy_blob())
    masters = [b for b in outgoing(head, replacement) if entry.peek(b).doc == "masters"]
    replacement.receive(masters)  # the ledgers, but not yet the old laptop's vouchers
    post(replacement, "22")
    numbers = [v["number"] for v in voucher_rows(replacement)]
    assert numbers == ["BR2/JRN/2-00001"]
    send(replacement, head)
    send(head, replacement)
    held = {v["number"]: v["amount"] for v in voucher_rows(head)}
    assert held["BR2/JRN/00001"] == 2100 and held["BR2/JRN/2-00001"] == 2200
    assert all(v["conflicts"] == 0 for v in voucher_rows(head))
    # and a member cannot post into another machine's series
    assert replacement.series == 2 and br2.series == 1
    replacement.close()


def test_a_voucher_numbered_in_another_machines_series_is_refused(org: tuple[Node, Node, Node]) -> None:
    head, br1, _br2 = org
    rev = forged_revision("BR1", "BR1/JRN/2-00001", (Line("Rent", Side.DR, 1), Line("Creditors", Side.CR, 1)))
    blob = forge_entry(br1, "vouchers/BR1/2026-04", lambda m: m.__setitem__(rev.id, encode_revision(rev)))
    before = state(head)
    result = head.receive([blob])
    assert result.applied == 0 and "number series" in result.quarantined[0]
    assert state(head) == before


def test_the_quarantine_keeps_one_row_per_entry_and_a_bounded_share_per_author(
        org: tuple[Node, Node, Node], monkeypatch: pytest.MonkeyPatch) -> None:
    """A member whose entries are refused cannot fill the disk: the same entry sent again is not stored
    again, an author's share is bounded (then one summary row counts the rest), and forgeries claiming a
    member are charged to nobody's share but their own anonymous one."""
    head, br1, _br2 = org
    monkeypatch.setattr(quarantine, "MAX_ROWS", 3)
    refused = []
    for n in range(6):  # unbalanced vouchers, each a distinct signed entry, each refused
        rev = forged_revision("BR1", f"BR1/JRN/0004{n}", (Line("Rent", Side.DR, 2), Line("Creditors", Side.CR, 1)))
        refused.append(forge_entry(br1, "vouchers/BR1/2026-04", lambda m, rev=rev: m.__setitem__(
            rev.id, encode_revision(rev))))
    for _ in range(3):
        assert len(head.receive(refused[:1]).quarantined) == 1  # refused each time, stored once
    rows = head.quarantined()
    assert [(q["seq"], q["count"]) for q in rows] == [(1, 1)]
    for blob in refused:  # six different entries, all sequence 1 of BR1's chain, all refused
        head.receive([blob])
    forged = refused[0][:-80] + bytes([refused[0][-80] ^ 1]) + refused[0][-79:]
    head.receive([forged])
    rows = head.quarantined()
    mine = [(q["seq"], q["count"]) for q in rows if q["author"] == br1.identity.node_id]
    assert mine == [(1, 1), (1, 1), (1, 1), (0, 3)], mine  # three kept whole, three more only counted
    assert [q["author"] for q in rows if "signature" in q["reason"]] == ["?"]


def test_an_entry_beyond_what_the_head_office_held_is_judged_by_the_new_sync_after_date(
        org: tuple[Node, Node, Node]) -> None:
    """Citing the policy from before the date was set no longer brings a back-dated voucher in: the head
    office's policy says which positions it held when it set the date, and every office judges an entry
    beyond them by the new date. An office that applied one before it held that policy (it cited the
    older one) withdraws it when the policy arrives, so every office ends with the same books."""
    head, br1, br2 = org
    post(br1, "5", date="2026-03-10")
    send(br1, head)
    send(br1, br2)
    registrar.set_sync_after(head, dt.date(2026, 4, 1))
    post(br1, "6", date="2026-03-20")  # BR1 does not take the new policy: it cites the old one
    late = new_entries(br1, head)
    result = head.receive(late)
    assert result.applied == 0 and "before the sync-after date 2026-04-01" in result.quarantined[0]
    assert br2.receive(late).applied == 1  # BR2 does not hold the new policy yet
    assert len(voucher_rows(br2)) == 2
    for node in (br2, br1):
        node.adopt_policy(head.policy_blob())
        assert [v["narration"] for v in voucher_rows(node)] == ["rent 5"], node.identity.office
        assert any("sync-after date 2026-04-01" in q["reason"] for q in node.quarantined())
    assert state(br2)["docs"]["vouchers/BR1/2026-03"] == state(head)["docs"]["vouchers/BR1/2026-03"]
    post(br1, "7", date="2026-04-02")  # after the date, BR1's chain carries on at every office
    for node in (head, br2):
        assert node.receive(new_entries(br1, node)).applied == 1
