"""Links between offices under read scopes: a voucher of BR1's against ``@BR2`` is sealed for BR2 too,
so BR2 takes it up (accepts or disputes it) and reconciles exactly as the head office does, while
BR2 still reads nothing else of BR1's books, and no third office reads the voucher at all."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import (
    draft,
    exchange,
    forge_entry,
    forged_revision,
    home_bytes,
    refused_everywhere,
    scoped_offices,
    sync,
)
from procs import here, here_json, make_org, post_here
from pycrdt import Doc

from p2psync.books import schema
from p2psync.books.change import Change
from p2psync.books.importer import ImportedDraft
from p2psync.books.model import Line, Side, encode_revision
from p2psync.node import interoffice, linked, views
from p2psync.node.office import Node
from p2psync.protocol import entry

DAY = "2026-04-06"
TODAY = dt.date(2026, 4, 30)
PRIVATE = "BR1-PRIVATE-7Q"  # a voucher of BR1's that no other branch may read
SHARED = "BR1-TO-BR2-5K"  # BR1's voucher against BR2: BR2 must read it


@pytest.fixture()
def offices(tmp_path: Path) -> Iterator[dict[str, Node]]:
    """HO, RO1, BR1 and BR2 under the default read scopes: each branch reads its own books only."""
    with scoped_offices(tmp_path) as nodes:
        yield nodes


def _items(node: Node) -> set[tuple[str, str, str]]:
    return {(i["ref"], i["status"], i["why"]) for pair in interoffice.report(node, None, TODAY)["pairs"]
            for i in pair["items"]}


def test_a_voucher_against_another_office_is_read_there_and_nowhere_else(offices: dict[str, Node]) -> None:
    head, br1, br2, ro1 = offices["HO"], offices["BR1"], offices["BR2"], offices["RO1"]
    sync(*offices.values())  # every office holds the policy that enrolled the others
    private, shared = (rev.number for rev in br1.post_many([
        ImportedDraft("", draft("receipt", DAY, {"Cash": "4321.09"}, {"Sales": "4321.09"}, PRIVATE)),
        ImportedDraft("", draft("payment", DAY, {"@BR2": "2500"}, {"Cash": "2500"}, SHARED))]))
    held = {entry.peek(blob).to for blob in br1.entries() if entry.peek(blob).doc.startswith("vouchers/BR1/")}
    assert held == {(), ("BR2",)}  # one batch, two entries: the private voucher is sealed for BR1's readers only
    sync(*offices.values())
    assert not any(node.quarantined() for node in offices.values())

    pending = interoffice.counterparts(br2, TODAY)
    assert [(p["ref"], p["status"]) for p in pending] == [(shared, "pending")]
    assert pending[0]["suggested"] == [{"ledger": "@BR1", "side": "Cr", "amount": pending[0]["amount"]},
                                       {"ledger": "Cash", "side": "Dr", "amount": pending[0]["amount"]}]
    assert interoffice.counterparts(ro1, TODAY) == []
    home = home_bytes(br2.home)
    assert PRIVATE.encode() not in home and b"432109" not in home and b"4321.09" not in home
    assert {shared, private}.isdisjoint(row["number"] for row in views.vouchers(br2))  # not in its books
    assert {shared, private} <= {row["number"] for row in views.vouchers(head)}
    assert SHARED.encode() not in home_bytes(ro1.home)

    mirror = interoffice.accept(br2, shared)
    sync(*offices.values())
    expected = {(shared, "matched", "")}
    assert _items(head) == _items(br2) == _items(br1) == expected
    assert interoffice.report(br2, "BR2", TODAY) == interoffice.report(head, "BR2", TODAY)
    assert mirror.number not in {row["number"] for row in views.vouchers(br1)}  # BR1 does not read BR2's books
    # an amendment that takes BR2 off the voucher still reaches BR2: it was once its counterpart
    br1.amend(shared, draft("payment", DAY, {"Rent": "2500"}, {"Cash": "2500"}, SHARED))
    sync(*offices.values())
    assert _items(head) == _items(br2) and _items(head) != expected
    assert not any(node.quarantined() for node in offices.values())


def test_an_entry_sealed_for_the_wrong_offices_is_refused_by_every_reader(offices: dict[str, Node]) -> None:
    head, br1, br2, ro1 = offices["HO"], offices["BR1"], offices["BR2"], offices["RO1"]
    doc = schema.voucher_doc("BR1", dt.date(2026, 4, 6))
    br1.post(draft("receipt", DAY, {"Cash": "10"}, {"Sales": "10"}, "opens the month"))
    sync(*offices.values())
    against_br2 = forged_revision("BR1", "BR1/JNL/00009", (Line("@BR2", Side.DR, 100), Line("Rent", Side.CR, 100)))
    plain = forged_revision("BR1", "BR1/JNL/00010", (Line("Rent", Side.DR, 100), Line("Sales", Side.CR, 100)))
    hidden = forge_entry(br1, doc, lambda revs: revs.__setitem__(against_br2.id, encode_revision(against_br2)))
    assert entry.peek(hidden).to == ()  # BR2 could not see a voucher against it
    refused_everywhere(hidden, [head], "sealed for no other office, but its vouchers concern BR2")
    leaked = forge_entry(br1, doc, lambda revs: revs.__setitem__(plain.id, encode_revision(plain)), to=("BR2",))
    refused_everywhere(leaked, [head], "sealed for BR2, but its vouchers concern no other office")
    # BR2 and RO1 cannot read BR1's books: they carry it, as the relay would, and apply nothing
    for node in (br2, ro1):
        result = node.receive([hidden])
        assert (result.carried, result.applied, result.quarantined) == (1, 0, [])
        assert interoffice.counterparts(node, TODAY) == []


def test_two_branches_take_up_each_others_vouchers_from_the_command_line(tmp_path: Path) -> None:
    """The real command line under the default scopes: BR2 lists, accepts and reconciles BR1's
    voucher against it, and its reconciliation is the head office's, though it reads none of BR1's
    books (its trial balance covers BR2 alone)."""
    ho, br1, br2 = make_org(tmp_path, read_all=False)
    sent = post_here(br1, "payment", DAY, "@BR2", "Cash", "1,500", SHARED)
    post_here(br1, "receipt", DAY, "Cash", "Sales", "4,321.09", PRIVATE)
    exchange(ho, br1, br2)
    listed = here_json(br2, "inter-office", "list")
    assert [(i["ref"], i["status"], i["amount"]) for i in listed] == [(sent, "pending", "1500.00")]
    mirror = here_json(br2, "inter-office", "accept", sent)
    assert mirror["narration"] == f"{SHARED} [inter-office {sent}]"
    exchange(ho, br1, br2)
    reports = {home.name: here_json(home, "report", "inter-office", "--office", "BR2") for home in (ho, br2)}
    assert reports["HO"] == reports["BR2"]
    assert {(i["ref"], i["status"]) for pair in reports["HO"]["pairs"] for i in pair["items"]} == {(sent, "matched")}
    assert here_json(br2, "report", "trial-balance")["scope"] == "BR2: 1 of 3 offices"
    assert PRIVATE not in here(br2, "inter-office", "list") + here(br2, "voucher", "list")


def test_a_linked_office_notes_only_the_authors_own_new_revisions_of_its_office(offices: dict[str, Node]) -> None:
    """What a linked office cannot leave to the readers of the author's books: a revision filed under
    another office (here BR2's own, to fake BR2's side of the pair), or an update under another Yjs
    client id, is noted nowhere, and the entry is only carried."""
    br1, br2 = offices["BR1"], offices["BR2"]
    sync(*offices.values())
    doc = schema.voucher_doc("BR1", dt.date(2026, 4, 6))
    fake = forged_revision("BR2", "BR2/JNL/00009", (Line("@BR1", Side.DR, 100), Line("Rent", Side.CR, 100)))
    forged = forge_entry(br1, doc, lambda revs: revs.__setitem__(fake.id, encode_revision(fake)), to=("BR2",))
    result = br2.receive([forged])
    assert (result.carried, result.applied, result.quarantined) == (1, 0, [])
    assert interoffice.counterparts(br2, TODAY) == [] and interoffice.pairs(br2) == {}

    real = forged_revision("BR1", "BR1/JNL/00009", (Line("@BR2", Side.DR, 100), Line("Rent", Side.CR, 100)))
    other_client = Doc(client_id=12345)
    updates: list[bytes] = []
    other_client.observe(lambda event: updates.append(event.update))
    schema.put_revisions(other_client, [real])
    change = Change(doc, br1.identity.node_id, 1, updates[-1])
    with pytest.raises(linked.NotLinkable, match="outside its author's new voucher revisions"):
        linked.read(change, schema.client_id(br1.identity.node_id))


def test_a_linked_entry_that_waited_for_the_one_before_it_is_noted_when_it_is_carried(
        offices: dict[str, Node]) -> None:
    """Delivered out of order, BR1's second entry against BR2 waits at BR2 (in `pending`) for the
    first; once that arrives both are carried, and both vouchers are BR2's counterparts."""
    br1, br2 = offices["BR1"], offices["BR2"]
    sync(*offices.values())
    first = br1.post(draft("payment", DAY, {"@BR2": "100"}, {"Cash": "100"}, "first")).number
    second = br1.post(draft("payment", DAY, {"@BR2": "200"}, {"Cash": "200"}, "second")).number
    doc = schema.voucher_doc("BR1", dt.date(2026, 4, 6))
    blobs = sorted((blob for blob in br1.entries() if entry.peek(blob).doc == doc), key=lambda b: entry.peek(b).seq)
    early = br2.receive([blobs[-1]])
    assert (early.carried, early.waiting, early.quarantined) == (0, 1, [])
    late = br2.receive([blobs[-2]])
    assert (late.carried, late.waiting, late.quarantined) == (2, 0, [])
    assert {p["ref"] for p in interoffice.counterparts(br2, TODAY)} == {first, second}
