"""Attacks on the trust primitives: each tries to get a forged, foreign, revoked, tampered or stale
entry or policy accepted, and must be refused with a precise reason."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.books.change import Change
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError
from p2psync.trust import policy as pol
from p2psync.trust.certs import CertificateError, issue_node_cert, make_root_cert, to_der, verify_node_cert
from p2psync.trust.keys import NodeKeys, org_id, registration_id
from p2psync.trust.policy import PolicyError
from p2psync.trust.seal import SealError

CANARY = b"narration: CANARY-Diwali-bonus ledger: CANARY-Secret-Ledger amount 98765.43"


class Org:
    """A head office authority and members, with the view one member has of the policy."""

    def __init__(self) -> None:
        self.root = Ed25519PrivateKey.generate()
        self.org = org_id(self.root.public_key())
        self.root_cert = make_root_cert(self.root)
        self.keys = {"HO": NodeKeys.generate(), "BR1": NodeKeys.generate(), "BR2": NodeKeys.generate()}
        self.authority = pol.Authority(self.root, {})
        self.policy = self.authority.genesis(self.org, self.der("HO", "head"))
        for office in ("BR1", "BR2"):
            self.policy = self.authority.admit(self.policy, self.der(office, "branch"))

    def der(self, office: str, role: str) -> bytes:
        k = self.keys[office]
        return to_der(issue_node_cert(self.root, self.root_cert, k.signing.public_key(), k.sealing.public_key(),
                                      office, role))

    def view(self, office: str) -> View:
        return View(self, self.policy, office)


class View:
    def __init__(self, org: Org, policy: pol.Policy, office: str) -> None:
        self.org = org.org
        self.root = org.root.public_key()
        self.policy = policy
        me = org.keys[office]
        self.ring = policy.key_ring(me.node_id, me.sealing)

    def author(self, node: str):  # type: ignore[no-untyped-def]
        return self.policy.member(node, self.root)

    def cutoff(self, node: str, doc: str) -> int | None:
        revoked = self.policy.revoked.get(node)
        return None if revoked is None else revoked.get(doc, 0)

    def epoch_key(self, epoch: int) -> bytes:
        if epoch not in self.ring:
            raise EntryError(f"no key for epoch {epoch} here")
        return self.ring[epoch]


@pytest.fixture()
def org() -> Org:
    return Org()


def sealed(org: Org, office: str = "BR1", seq: int = 1, doc: str = "vouchers/BR1/2026-04",
           update: bytes = CANARY) -> bytes:
    keys = org.keys[office]
    ring = org.policy.key_ring(keys.node_id, keys.sealing)
    return entry.seal(Change(doc, keys.node_id, seq, update, {}), org.org, org.policy.epoch, ring[org.policy.epoch],
                      keys.signing)


def test_entry_round_trip_and_no_clear_text(org: Org) -> None:
    blob = sealed(org)
    change = entry.open_entry(blob, org.view("BR2"))
    assert change.update == CANARY and change.seq == 1
    assert b"CANARY" not in blob and b"98765" not in blob


def test_forged_signature_refused(org: Org) -> None:
    blob = bytearray(sealed(org))
    blob[-1] ^= 0x01
    with pytest.raises(EntryError, match="signature"):
        entry.open_entry(bytes(blob), org.view("BR2"))


def test_signed_by_another_key_claiming_a_member_refused(org: Org) -> None:
    impostor = NodeKeys.generate()
    ring = org.policy.key_ring(org.keys["BR1"].node_id, org.keys["BR1"].sealing)
    change = Change("vouchers/BR1/2026-04", org.keys["BR1"].node_id, 1, b"x", {})
    blob = entry.seal(change, org.org, 1, ring[1], impostor.signing)
    with pytest.raises(EntryError, match="signature"):
        entry.open_entry(blob, org.view("HO"))


def test_flipped_ciphertext_bit_refused(org: Org) -> None:
    blob = sealed(org)
    header_len = int.from_bytes(blob[4:6], "big")
    at = 6 + header_len + 4 + 3  # inside the ciphertext
    tampered = bytearray(blob)
    tampered[at] ^= 0x80
    with pytest.raises(EntryError, match="signature"):
        entry.open_entry(bytes(tampered), org.view("HO"))


def test_ciphertext_under_wrong_key_refused_even_if_signed(org: Org) -> None:
    keys = org.keys["BR1"]
    blob = entry.seal(Change("vouchers/BR1/2026-04", keys.node_id, 1, b"x", {}), org.org, 1, b"\x00" * 32, keys.signing)
    with pytest.raises(EntryError, match="ciphertext fails authentication"):
        entry.open_entry(blob, org.view("HO"))


def test_entry_of_another_organisation_refused(org: Org) -> None:
    other = Org()
    with pytest.raises(EntryError, match="another organisation"):
        entry.open_entry(sealed(other), org.view("HO"))


def test_unknown_author_refused(org: Org) -> None:
    stranger = NodeKeys.generate()
    ring = org.policy.key_ring(org.keys["BR1"].node_id, org.keys["BR1"].sealing)
    blob = entry.seal(Change("vouchers/BR1/2026-04", stranger.node_id, 1, b"x", {}), org.org, 1, ring[1],
                      stranger.signing)
    with pytest.raises(EntryError, match="unknown author"):
        entry.open_entry(blob, org.view("HO"))


def test_revoked_author_refused_after_cutoff_and_cannot_decrypt_new_epoch(org: Org) -> None:
    before = sealed(org, seq=1)
    br1 = org.keys["BR1"]
    org.policy = org.authority.revoke(org.policy, br1.node_id, {"vouchers/BR1/2026-04": 1})
    assert org.policy.epoch == 2
    view = org.view("HO")
    assert entry.open_entry(before, view).seq == 1  # made before the revocation: still valid
    with pytest.raises(EntryError, match="revoked"):
        entry.open_entry(sealed_with_old_ring(org, br1, seq=2), view)
    with pytest.raises(PolicyError, match="no epoch key"):
        org.policy.key_ring(br1.node_id, br1.sealing)
    after = entry.peek(sealed(org, office="HO", doc="vouchers/HO/2026-04"))
    assert after.epoch == 2 and 2 not in {1}  # the revoked branch only ever held epoch 1


def sealed_with_old_ring(org: Org, keys: NodeKeys, seq: int) -> bytes:
    return entry.seal(Change("vouchers/BR1/2026-04", keys.node_id, seq, b"late", {}), org.org, 1,
                      org.authority.ring[1], keys.signing)


@pytest.mark.parametrize("blob", [b"", b"P2E1", b"XXXX" + b"\x00" * 80, b"P2E1\xff\xff" + b"\x00" * 100])
def test_garbage_entries_refused_precisely(org: Org, blob: bytes) -> None:
    with pytest.raises(EntryError):
        entry.open_entry(blob, org.view("HO"))


def test_tampered_policy_refused(org: Org) -> None:
    blob = pol.sign(org.policy, org.root)
    tampered = blob.replace(b'\\"sync_after\\":null', b'\\"sync_after\\":\\"2020-01-01\\"')
    assert tampered != blob
    with pytest.raises(PolicyError, match="signature"):
        pol.verify(tampered, org.root.public_key(), org.org)


def test_policy_signed_by_another_root_refused(org: Org) -> None:
    other = Org()
    with pytest.raises(PolicyError):
        pol.verify(pol.sign(other.policy, other.root), org.root.public_key(), org.org)


def test_older_or_same_policy_refused(org: Org) -> None:
    current = org.policy
    newer = org.authority.settings(current, sync_after="2026-04-01")
    accepted = pol.verify(pol.sign(newer, org.root), org.root.public_key(), org.org, current)
    assert accepted.version == current.version + 1 and accepted.sync_after == "2026-04-01"
    for stale in (current, newer):
        with pytest.raises(PolicyError, match="not newer"):
            pol.verify(pol.sign(stale, org.root), org.root.public_key(), org.org, accepted)


def test_node_certificate_from_another_root_refused(org: Org) -> None:
    other = Org()
    with pytest.raises(CertificateError, match="not signed"):
        verify_node_cert(other.der("BR1", "branch"), org.root.public_key())


def test_sealed_key_ring_opens_only_for_its_member(org: Org) -> None:
    br1, br2 = org.keys["BR1"], org.keys["BR2"]
    swapped = dataclasses.replace(org.policy, sealed={br2.node_id: org.policy.sealed[br1.node_id]})
    with pytest.raises(SealError):
        swapped.key_ring(br2.node_id, br2.sealing)


def test_registration_id_is_short_and_stable(org: Org) -> None:
    rid = registration_id(org.org)
    assert rid == registration_id(org_id(org.root.public_key()))
    assert len(rid.replace("-", "")) == 16 and rid != registration_id(Org().org)
