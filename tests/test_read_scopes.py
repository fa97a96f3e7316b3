"""Read scopes in the policy and the keys: who may read what, the keys sealed to each member, and
what an office that may not read an entry can still check of it."""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from helpers import deliver, draft, home_bytes, outgoing, scoped_offices, seal_raw, send, setup_branch, setup_head, sync

from p2psync.books.change import Change
from p2psync.errors import InvalidInput, RuleViolation
from p2psync.node import forks, registrar, views
from p2psync.node.office import Node
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError, Unreadable
from p2psync.trust import policy as pol
from p2psync.trust.certs import issue_node_cert, make_root_cert, to_der
from p2psync.trust.keys import NodeKeys, org_id

OFFICES = {"HO": "head", "RO1": "branch", "BR1": "branch", "BR2": "branch"}


class ScopedOrg:
    """A head office authority and members, made with per-scope keys (or, `scoped=False`, as an
    organisation made before scopes)."""

    def __init__(self, scoped: bool = True) -> None:
        self.root = Ed25519PrivateKey.generate()
        self.org = org_id(self.root.public_key())
        self.root_cert = make_root_cert(self.root)
        self.keys = {office: NodeKeys.generate() for office in OFFICES}
        self.authority = pol.Authority(self.root, {})
        self.policy = self.authority.genesis(self.org, self.der("HO"), scoped=scoped)
        for office in OFFICES:
            if office != "HO":
                self.policy = self.authority.admit(self.policy, self.der(office))

    def der(self, office: str) -> bytes:
        k = self.keys[office]
        return to_der(issue_node_cert(self.root, self.root_cert, k.signing.public_key(), k.sealing.public_key(),
                                      office, OFFICES[office]))

    def view(self, office: str) -> View:
        return View(self, office)

    def sealed(self, office: str, doc: str, seq: int = 1, update: bytes = b"CANARY-99",
               to: tuple[str, ...] = ()) -> bytes:
        """An entry by `office`'s node, sealed as its node seals (the scope key once scoped, and the
        keys of its links to the offices `to`)."""
        change = Change(doc, self.keys[office].node_id, seq, update, {}, to)
        return self.view(office).seal(change)


class View:
    """`entry.Keys` as one member holds them, on the same rules as `Membership`."""

    def __init__(self, org: ScopedOrg, office: str) -> None:
        from p2psync.node.membership import Membership

        self.membership = Membership.__new__(Membership)
        m = self.membership
        m.root, m.org, m.keys, m.node_id = org.root.public_key(), org.org, org.keys[office], org.keys[office].node_id
        m._members, m.ring, m._derived = {}, pol.KeyRing(), {}
        m._adopt(org.policy)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.membership, name)


def test_a_policy_without_grants_means_the_defaults_and_encodes_as_before() -> None:
    org = ScopedOrg(scoped=False)
    body = org.policy.body()
    assert b"grants" not in body and b"scoped_from" not in body  # an older policy's bytes, unchanged
    decoded = pol._decode(body)
    assert decoded.grants == {} and decoded.scoped_from == 0
    br1 = org.policy.member(org.keys["BR1"].node_id, org.root.public_key())
    head = org.policy.member(org.keys["HO"].node_id, org.root.public_key())
    assert org.policy.reads("BR1", False) == {"BR1"} and org.policy.reads("HO", True) is None
    assert org.policy.may_read(br1, "masters") and org.policy.may_read(br1, "vouchers/BR1")
    assert not org.policy.may_read(br1, "vouchers/BR2") and org.policy.may_read(head, "vouchers/BR2")


def test_grants_are_signed_and_round_trip() -> None:
    org = ScopedOrg()
    policy = org.authority.set_grants(org.policy, "RO1", ["BR1", "BR2"])
    blob = pol.sign(policy, org.root)
    assert pol.verify(blob, org.root.public_key(), org.org) == policy
    assert policy.grants == {"RO1": ("BR1", "BR2")} and policy.epoch == org.policy.epoch  # a grant rotates nothing
    forged = blob.replace(b'\\"BR2\\"', b'\\"BR3\\"')
    assert forged != blob
    with pytest.raises(pol.PolicyError, match="signature"):
        pol.verify(forged, org.root.public_key(), org.org)


def test_each_member_holds_only_the_keys_of_what_it_reads() -> None:
    org = ScopedOrg()
    br2_entry = org.sealed("BR2", "vouchers/BR2/2026-04")
    masters_entry = org.sealed("BR2", "masters")
    assert entry.peek(br2_entry).scope == "vouchers/BR2"
    assert entry.open_entry(br2_entry, org.view("HO")).update == b"CANARY-99"
    assert entry.open_entry(br2_entry, org.view("BR2")).update == b"CANARY-99"
    for office in ("BR1", "RO1"):
        with pytest.raises(Unreadable):
            entry.open_entry(br2_entry, org.view(office))
        assert entry.check_signature(br2_entry, org.view(office)).author == org.keys["BR2"].node_id
        assert entry.open_entry(masters_entry, org.view(office)).update == b"CANARY-99"
    ring = org.view("BR1").ring
    assert set(ring.scoped) == {"masters", "vouchers/BR1", "vouchers/>BR1",  # its books, and links into them
                                "vouchers/BR1>HO", "vouchers/BR1>BR2", "vouchers/BR1>RO1"}  # its links out
    assert not ring.epochs  # no secret, no other office's books


def test_an_entry_linked_to_an_office_is_read_there_and_by_no_other_office() -> None:
    """A voucher of BR2's that touches @BR1: BR1 reads it through the link (and only so: it still
    cannot apply BR2's books), RO1 cannot read it, the head office and BR2 read it as their own."""
    org = ScopedOrg()
    linked = org.sealed("BR2", "vouchers/BR2/2026-04", to=("BR1",))
    header = entry.peek(linked)
    assert header.to == ("BR1",) and set(header.wraps) == {"vouchers/BR2", "vouchers/BR2>BR1"}
    for office in ("HO", "BR2"):
        change = entry.open_entry(linked, org.view(office))
        assert change.update == b"CANARY-99" and change.to == ("BR1",)
    with pytest.raises(entry.LinkedOnly) as seen:
        entry.open_entry(linked, org.view("BR1"))
    assert seen.value.change.update == b"CANARY-99"
    with pytest.raises(Unreadable) as unread:
        entry.open_entry(linked, org.view("RO1"))
    assert not isinstance(unread.value, entry.LinkedOnly)
    org.policy = org.authority.set_grants(org.policy, "RO1", ["BR1"])  # a reader of BR1 reads links into BR1
    with pytest.raises(entry.LinkedOnly):
        entry.open_entry(linked, org.view("RO1"))


def test_an_author_cannot_show_a_linked_office_other_content_than_its_readers() -> None:
    """ChaCha20-Poly1305 does not commit to its key, so an author could wrap another content key for
    the linked office (with a ciphertext crafted to open under both). The key commitment in the
    signed header admits only the committed key: a wrap of any other is carried unread there, and
    never a reason to refuse (the readers cannot check the wraps of other offices)."""
    org = ScopedOrg()
    br2, epoch = org.view("BR2"), org.policy.epoch
    good, other = os.urandom(32), os.urandom(32)
    own, link = br2.scope_key("vouchers/BR2", epoch), br2.scope_key("vouchers/BR2>BR1", epoch)
    nonce = os.urandom(12)
    header = entry.Header(org.org, "vouchers/BR2/2026-04", org.keys["BR2"].node_id, 1, epoch, {}, nonce, False, 1,
                          "vouchers/BR2", ("BR1",),
                          {"vouchers/BR2": entry._wrap(own, nonce, "vouchers/BR2", good),
                           "vouchers/BR2>BR1": entry._wrap(link, nonce, "vouchers/BR2>BR1", other)},
                          entry._commit(good))
    forged = _signed(header, ChaCha20Poly1305(good).encrypt(nonce, b"CANARY-99", header.encode()),
                     org.keys["BR2"].signing)
    assert entry.open_entry(forged, org.view("HO")).update == b"CANARY-99"  # readers read the committed content
    with pytest.raises(Unreadable) as carried:
        entry.open_entry(forged, org.view("BR1"))
    assert not isinstance(carried.value, entry.LinkedOnly)
    committed_to_other = dataclasses.replace(header, commitment=entry._commit(other))
    forged = _signed(committed_to_other, ChaCha20Poly1305(good).encrypt(nonce, b"CANARY-99",
                                                                        committed_to_other.encode()),
                     org.keys["BR2"].signing)
    with pytest.raises(EntryError, match="not the one the entry commits to"):
        entry.open_entry(forged, org.view("HO"))


def _signed(header: entry.Header, ciphertext: bytes, signer: Ed25519PrivateKey) -> bytes:
    header_bytes = header.encode()
    body = (entry.MAGIC + struct.pack(">H", len(header_bytes)) + header_bytes
            + struct.pack(">I", len(ciphertext)) + ciphertext)
    return body + signer.sign(body)


def _resealed(blob: bytes, header: entry.Header, signer: Ed25519PrivateKey) -> bytes:
    """`blob` with `header` in place of its own, signed again by its author (a hostile author's
    entry: its header is refused before its ciphertext is looked at)."""
    return _signed(header, entry.frame(blob)[2], signer)


def test_a_header_naming_links_wrongly_is_refused_by_everyone() -> None:
    org = ScopedOrg()
    honest = org.sealed("BR2", "vouchers/BR2/2026-04", to=("BR1",))
    header = entry.peek(honest)
    cases = {
        "its own": dataclasses.replace(header, to=("BR2",)),
        "wrapped keys": dataclasses.replace(header, wraps={"vouchers/BR2": header.wraps["vouchers/BR2"]}),
        "out of order": dataclasses.replace(header, to=("RO1", "BR1")),
        "wrong length": dataclasses.replace(header, commitment=b"x"),
    }
    for words, forged_header in cases.items():
        forged = _resealed(honest, forged_header, org.keys["BR2"].signing)
        for office in OFFICES:
            with pytest.raises(EntryError, match=words):
                entry.open_entry(forged, org.view(office))


def test_a_grant_opens_an_office_and_taking_it_back_rotates_its_keys() -> None:
    org = ScopedOrg()
    org.policy = org.authority.set_grants(org.policy, "RO1", ["BR2"])
    before = org.sealed("BR2", "vouchers/BR2/2026-04", seq=1)
    ro1 = org.view("RO1")
    assert entry.open_entry(before, ro1).seq == 1
    org.policy = org.authority.set_grants(org.policy, "RO1", [])
    assert org.policy.epoch == 2 and org.policy.grants == {}
    after = org.sealed("BR2", "vouchers/BR2/2026-04", seq=2)
    assert entry.peek(after).epoch == 2
    ro1.membership._adopt(org.policy)  # keeps the keys it held: what it read stays readable
    assert entry.open_entry(before, ro1).seq == 1
    with pytest.raises(Unreadable):
        entry.open_entry(after, ro1)
    assert entry.open_entry(after, org.view("HO")).seq == 2


def test_an_entry_naming_another_scope_is_refused_everywhere() -> None:
    org = ScopedOrg()
    keys = org.keys["BR2"]
    key = org.view("BR2").scope_key("masters", 1)
    blob = entry.seal(Change("vouchers/BR2/2026-04", keys.node_id, 1, b"x", {}), org.org, 1, key, keys.signing,
                      1, "masters")  # BR2's books under the key every office holds
    with pytest.raises(EntryError, match="names the key of scope"):
        entry.peek(blob)


def test_the_organisation_wide_key_is_refused_for_a_scoped_epoch() -> None:
    org = ScopedOrg()
    head = org.view("HO")
    keys = org.keys["HO"]
    blob = entry.seal(Change("vouchers/BR2/2026-04", keys.node_id, 1, b"x", {}), org.org, 1, head.ring[1],
                      keys.signing)  # the head office's epoch secret used as if it were a key for all
    with pytest.raises(EntryError, match="per scope"):
        entry.open_entry(blob, head)


def test_an_older_organisation_moves_to_scoped_keys_and_older_entries_stay_readable_to_all() -> None:
    org = ScopedOrg(scoped=False)
    old = org.sealed("BR2", "vouchers/BR2/2026-04", seq=1)
    org.policy = org.authority.scope_keys(org.policy)
    assert org.policy.scoped_from == 2 and org.policy.epoch == 2
    assert org.authority.scope_keys(org.policy) is org.policy  # once
    new = org.sealed("BR2", "vouchers/BR2/2026-04", seq=2)
    assert entry.peek(old).scope is None and entry.peek(new).scope == "vouchers/BR2"
    br1 = org.view("BR1")
    assert entry.open_entry(old, br1).seq == 1  # sealed before: under the key every member holds
    with pytest.raises(Unreadable):
        entry.open_entry(new, br1)
    assert entry.open_entry(new, org.view("HO")).seq == 2


def test_a_key_ring_round_trips_and_refuses_short_keys() -> None:
    ring = pol.KeyRing({1: b"k" * 32}, {"vouchers/BR1": {2: b"s" * 32}})
    assert pol.KeyRing.decode(ring.names()) == ring
    with pytest.raises(ValueError):
        pol.KeyRing.decode({"masters@2": "AAAA"})
    assert dataclasses.replace(ring).epochs == {1: b"k" * 32}


# ---------------------------------------------------------------- offices carrying what they cannot read

CANARY_BR2 = "CANARY-BR2-7f3a"


@pytest.fixture()
def offices(tmp_path: Path) -> Iterator[dict[str, Node]]:
    """HO, RO1, BR1 and BR2 of an organisation with per-scope keys."""
    with scoped_offices(tmp_path) as nodes:
        yield nodes


def _post(node: Node, narration: str, amount: str = "125.00") -> str:
    return node.post(draft("receipt", "2026-04-03", {"Cash": amount}, {"Sales": amount}, narration)).number


def _numbers(node: Node) -> set[str]:
    return {row["number"] for row in views.vouchers(node)}


def _home_bytes(node: Node) -> bytes:
    """Every file of a node's home, as bytes (database, its write-ahead log, the log file)."""
    node.close()
    return home_bytes(node.home)


def test_head_office_offline_a_branch_carries_another_branchs_books_unread(offices: dict[str, Node]) -> None:
    head, br1, br2 = offices["HO"], offices["BR1"], offices["BR2"]
    number = _post(br2, CANARY_BR2)
    br1.adopt_policy(br2.policy_blob())  # as a link passes it on
    got = br1.receive(outgoing(br2, br1))
    assert got.carried >= 1 and not got.quarantined
    assert number not in _numbers(br1)
    assert set(outgoing(br2)) <= set(outgoing(br1))  # every entry of BR2's, held to pass on
    result = head.receive(outgoing(br1, head))  # later, from BR1 alone
    assert not result.quarantined and number in _numbers(head)
    assert CANARY_BR2 in str(views.voucher(head, number))
    assert CANARY_BR2.encode() not in _home_bytes(br1)


def test_a_grant_opens_what_was_carried_and_taking_it_back_stops_new_reading(offices: dict[str, Node]) -> None:
    head, ro1, br2 = offices["HO"], offices["RO1"], offices["BR2"]
    first = _post(br2, "first")
    deliver(ro1, outgoing(br2, ro1), policy_from=br2)
    assert first not in _numbers(ro1)
    registrar.set_grants(head, "RO1", add=["BR2"])
    ro1.adopt_policy(head.policy_blob())
    assert first in _numbers(ro1)  # the carried entries, opened with the key the grant brought
    registrar.set_grants(head, "RO1", remove=["BR2"])
    send(head, br2)
    second = _post(br2, "second")
    ro1.adopt_policy(head.policy_blob())
    got = ro1.receive(outgoing(br2, ro1))
    assert got.carried >= 1 and not got.quarantined
    assert first in _numbers(ro1) and second not in _numbers(ro1)  # still carries it: passes it on
    assert second in {row["number"] for row in _after(head, ro1)}


def _after(head: Node, carrier: Node) -> list[dict]:
    head.receive(outgoing(carrier, head))
    return views.vouchers(head)


def test_a_carrier_refuses_what_a_reader_would_refuse_from_the_header(offices: dict[str, Node]) -> None:
    br1, br2 = offices["BR1"], offices["BR2"]
    _post(br2, "real")
    br1.adopt_policy(br2.policy_blob())
    blobs = outgoing(br2, br1)
    altered = bytearray(blobs[-1])
    altered[-70] ^= 1  # the ciphertext: its signature no longer verifies
    got = br1.receive([bytes(altered)])
    assert got.quarantined and "signature" in got.quarantined[0] and not got.carried
    trust = br1.trust  # BR1 writing BR2's books, under a key of its making: no carrier can tell the key
    intruder = entry.seal(Change("vouchers/BR2/2026-04", trust.node_id, 1, b"\x00\x00", {}), trust.org,
                          trust.policy.epoch, b"k" * 32, trust.keys.signing, trust.policy.version, "vouchers/BR2")
    offices["RO1"].adopt_policy(br2.policy_blob())
    got = offices["RO1"].receive([intruder])
    assert got.quarantined and "may not write office BR2" in got.quarantined[0]


def test_a_carrier_keeps_the_proof_of_an_equivocation_it_cannot_read(offices: dict[str, Node]) -> None:
    br1, br2 = offices["BR1"], offices["BR2"]
    _post(br2, "one")
    deliver(br1, outgoing(br2, br1), policy_from=br2)
    doc = "vouchers/BR2/2026-04"
    seq = br2.vectors()[doc][br2.identity.node_id]
    twin = seal_raw(br2, doc, b"\x00\x00", seq=seq)  # a second entry, signed, for a position held
    got = br1.receive([twin])
    assert got.quarantined and got.quarantined[0].startswith("equivocation")
    assert [f["author"] for f in forks.found(br1)] == [br2.identity.node_id]


def test_reports_cover_what_an_office_may_read_and_say_so(offices: dict[str, Node]) -> None:
    head, ro1, br1, br2 = offices["HO"], offices["RO1"], offices["BR1"], offices["BR2"]
    br2.set_opening("Cash", "900.00")
    _post(br2, "BR2 sale", "40.00")
    _post(br1, "BR1 sale", "7.00")
    registrar.set_grants(head, "RO1", add=["BR2"])
    for node in (br1, ro1, head):
        for source in (br2, br1, head):
            if source is not node:
                node.adopt_policy(head.policy_blob())
                node.receive(outgoing(source, node))
    at_br1 = views.report(br1, "trial-balance")
    assert at_br1["scope"] == "BR1: 1 of 4 offices" and at_br1["offices"] == ["BR1"]
    cash = {row["ledger"]: row for row in at_br1["rows"]}["Cash"]
    assert str(cash["debit"]) == "7.00"  # BR2's opening and sale, carried here, count for nothing
    with pytest.raises(RuleViolation, match="may not read BR2"):
        views.report(br1, "day-book", office="BR2")
    at_ro1 = views.report(ro1, "trial-balance")
    assert at_ro1["scope"] == "BR2, RO1: 2 of 4 offices"
    assert views.report(ro1, "trial-balance", office="BR2")["rows"] == views.report(head, "trial-balance",
                                                                                     office="BR2")["rows"]
    assert views.report(head, "trial-balance")["scope"] == "consolidated"


def test_an_entry_carried_unread_waits_for_what_it_depends_on_like_any_other(offices: dict[str, Node]) -> None:
    br1, br2 = offices["BR1"], offices["BR2"]
    br2.add_ledger("Counter Cash", "Cash-in-Hand")  # a masters entry its voucher depends on
    number = br2.post(draft("receipt", "2026-04-03", {"Counter Cash": "5.00"}, {"Sales": "5.00"}, "waits")).number
    blobs = outgoing(br2, br1)
    masters = [b for b in blobs if entry.peek(b).doc == "masters"]
    books = [b for b in blobs if entry.peek(b).doc != "masters"]
    assert masters and books
    br1.adopt_policy(br2.policy_blob())
    first = br1.receive(books)  # what they depend on has not arrived: parked, unread
    assert not first.quarantined and first.waiting and not first.carried
    second = br1.receive(masters)
    assert not second.quarantined and second.carried == len(books) and not second.waiting
    assert number not in _numbers(br1) and set(blobs) <= set(outgoing(br1))


def test_a_carrier_that_drops_reorders_or_withholds_is_bypassed(offices: dict[str, Node]) -> None:
    head, br1, br2 = offices["HO"], offices["BR1"], offices["BR2"]
    numbers = [_post(br2, f"sale {n}", f"{n}.00") for n in (1, 2, 3)]
    br1.adopt_policy(br2.policy_blob())
    assert not br1.receive(outgoing(br2, br1)).quarantined
    carried = [b for b in outgoing(br1, head) if entry.peek(b).doc.startswith("vouchers/BR2/")]
    assert len(carried) == 3
    got = head.receive(list(reversed(carried[1:])))  # the first dropped, the rest reordered
    assert not got.quarantined and got.waiting == 2 and not set(numbers) & _numbers(head)
    got = head.receive(outgoing(br2, head))  # from its author, or any other holder
    assert not got.quarantined and not got.waiting and set(numbers) <= _numbers(head)


# ---------------------------------------------------------------- the defaults, open books and --all


def test_a_new_organisation_reads_by_the_defaults_from_its_first_epoch(offices: dict[str, Node]) -> None:
    head, br1, br2 = offices["HO"], offices["BR1"], offices["BR2"]
    assert head.trust.policy.scoped_from == 1 and head.trust.policy.grants == {}
    numbers = {office: _post(offices[office], f"{office} sale") for office in ("HO", "BR1", "BR2")}
    sync(head, br1, br2)
    assert set(numbers.values()) <= _numbers(head)
    assert _numbers(br1) == {numbers["BR1"]} and _numbers(br2) == {numbers["BR2"]}
    assert set(outgoing(br1)) == set(outgoing(head)) == set(outgoing(br2))  # each carries what it cannot read
    for office in ("HO", "BR2"):
        with pytest.raises(RuleViolation, match=f"may not read {office}"):
            views.report(br1, "day-book", office=office)
    assert views.report(head, "trial-balance")["scope"] == "consolidated"


def test_open_books_every_office_reads_every_office_including_one_added_later(tmp_path: Path) -> None:
    head = setup_head(tmp_path / "HO", read_all=True)  # p2psync init --open-books
    assert head.trust.policy.grants == {"*": ("*",)} and head.trust.policy.scoped_from == 1
    br1 = setup_branch(tmp_path / "BR1", "BR1", head)
    head.add_office("BR3", "Branch Three")  # after BR1 holds its keys: no new grant, no new key for it
    br3 = setup_branch(tmp_path / "BR3", "BR3", head)
    try:
        number = _post(br3, "BR3's first sale")
        send(br3, br1)
        assert number in _numbers(br1)
        assert {r["office"]: r["all"] for r in views.read_scopes(head)} == {"HO": True, "BR1": True, "BR2": True,
                                                                          "BR3": True}
        assert views.report(br1, "trial-balance")["scope"] == "consolidated"
    finally:
        for node in (head, br1, br3):
            node.close()


def test_a_grant_of_every_office_reads_an_office_added_later_until_it_is_taken_back(tmp_path: Path) -> None:
    head = setup_head(tmp_path / "HO", read_all=False)
    head.add_office("RO1", "Regional Office")
    registrar.set_grants(head, "RO1", add=["BR1"])
    registrar.set_grants(head, "RO1", add=["*"])  # p2psync scope grant RO1 --all
    assert head.trust.policy.grants == {"RO1": ("*",)}  # every office's books: BR1's among them
    ro1 = setup_branch(tmp_path / "RO1", "RO1", head)
    head.add_office("BR3", "Branch Three")
    br3 = setup_branch(tmp_path / "BR3", "BR3", head)
    try:
        first = _post(br3, "before")
        send(head, ro1)
        send(br3, ro1)
        assert first in _numbers(ro1)
        assert views.report(ro1, "trial-balance")["scope"] == "consolidated"
        with pytest.raises(InvalidInput, match="revoke RO1 --all"):
            registrar.set_grants(head, "RO1", remove=["BR3"])  # one office out of every office's
        epoch = head.trust.policy.epoch
        registrar.set_grants(head, "RO1", remove=["*"])  # p2psync scope revoke RO1 --all
        assert head.trust.policy.grants == {} and head.trust.policy.epoch == epoch + 1
        send(head, br3)
        second = _post(br3, "after")
        send(head, ro1)
        got = ro1.receive(outgoing(br3, ro1))
        assert got.carried >= 1 and not got.quarantined
        assert first in _numbers(ro1) and second not in _numbers(ro1)  # what it read stays; nothing new
        assert views.report(ro1, "trial-balance")["scope"] == "RO1: 1 of 5 offices"
    finally:
        for node in (head, ro1, br3):
            node.close()


def test_a_grant_to_every_office_and_what_cannot_be_taken_out_of_it(offices: dict[str, Node]) -> None:
    head, br1 = offices["HO"], offices["BR1"]
    hers = _post(head, "the head office's")
    registrar.set_grants(head, "*", add=["HO"])  # p2psync scope grant --every-office HO
    policy = head.trust.policy
    assert policy.grants == {"*": ("HO",)} and policy.reads("BR1", False) == {"BR1", "HO"}
    assert policy.reads("HO", True) is None
    send(head, br1)
    assert hers in _numbers(br1)
    with pytest.raises(InvalidInput, match="revoke --every-office HO"):
        registrar.set_grants(head, "BR1", remove=["HO"])  # BR1 reads it as every branch office does
    registrar.set_grants(head, "*", add=["*"])  # open books
    assert head.trust.policy.grants == {"*": ("*",)}
    with pytest.raises(InvalidInput, match="revoke --every-office --all"):
        registrar.set_grants(head, "BR1", remove=["*"])
    rows = {r["office"]: r for r in views.read_scopes(head)}
    assert rows["BR1"]["all"] and rows["BR1"]["every_office"] == ["*"] and rows["BR1"]["granted"] == []
    assert rows["HO"]["every_office"] == []
    registrar.set_grants(head, "*", remove=["*"])
    assert head.trust.policy.grants == {} and head.trust.policy.epoch == policy.epoch + 1


def test_a_wildcard_holder_is_sealed_the_epochs_secret_and_nothing_after_it_is_taken_back() -> None:
    org = ScopedOrg()
    org.policy = org.authority.set_grants(org.policy, "RO1", ["*"])
    ro1 = org.view("RO1")
    assert set(ro1.ring.epochs) == {1} and not ro1.ring.scoped  # the secret: any office's key, BR9's too
    later = org.sealed("HO", "vouchers/BR9/2026-04")
    assert entry.open_entry(later, ro1).update == b"CANARY-99"
    br1_ring = org.view("BR1").ring
    assert not br1_ring.epochs and {s for s in br1_ring.scoped if ">" not in s} == {"masters", "vouchers/BR1"}
    org.policy = org.authority.set_grants(org.policy, "RO1", [])
    assert org.policy.epoch == 2
    ro1.membership._adopt(org.policy)
    assert set(ro1.ring.epochs) == {1}
    assert {s for s in ro1.ring.scoped if ">" not in s} == {"masters", "vouchers/RO1"}  # and its links
    with pytest.raises(Unreadable):
        entry.open_entry(org.sealed("HO", "vouchers/BR9/2026-04"), ro1)
    assert entry.open_entry(later, ro1).update == b"CANARY-99"  # sealed while it read every office's
