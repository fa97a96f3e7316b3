"""Attacks on the trust primitives: each tries to get a forged, foreign, revoked, tampered or stale
entry or policy accepted, and must be refused with a precise reason."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.books.change import Change
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError
from p2psync.trust import policy as pol
from p2psync.trust.certs import (
    ED25519_ALGORITHM,
    CertificateError,
    issue_node_cert,
    make_root_cert,
    root_public_from_cert,
    to_der,
    verify_node_cert,
)
from p2psync.trust.keys import NodeKeys, org_id, registration_id
from p2psync.trust.policy import PolicyError
from p2psync.trust.seal import SealError

CANARY = b"narration: CANARY-Diwali-bonus ledger: CANARY-Secret-Ledger amount 98765.43"


class Org:
    """A head office authority and members, with the view one member has of the policy. Its epochs
    have one key for everything, as an organisation made before read scopes has: the attacks here are
    on the entry and policy primitives, which per-scope keys leave as they are (test_read_scopes.py
    attacks those)."""

    def __init__(self) -> None:
        self.root = Ed25519PrivateKey.generate()
        self.org = org_id(self.root.public_key())
        self.root_cert = make_root_cert(self.root)
        self.keys = {"HO": NodeKeys.generate(), "BR1": NodeKeys.generate(), "BR2": NodeKeys.generate()}
        self.authority = pol.Authority(self.root, {})
        self.policy = self.authority.genesis(self.org, self.der("HO", "head"), scoped=False)
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


# ---------------------------------------------------------------- the unsigned outer algorithm

#: sha256WithRSAEncryption with NULL parameters: another algorithm a forger might name outside.
RSA_SHA256 = bytes.fromhex("300d06092a864886f70d01010b0500")
#: ecdsa-with-SHA256 and Ed448: other algorithms whose identifiers carry no parameters.
ECDSA_SHA256 = bytes.fromhex("300a06082a8648ce3d040302")
ED448 = bytes.fromhex("300506032b6571")
#: (Ed25519's identifier with NULL parameters, which RFC 8410 forbids, `cryptography` already refuses.)
DIFFERS = "outer signatureAlgorithm differs from the signed one"


def outer_at(der: bytes) -> int:
    """Where the outer AlgorithmIdentifier starts: the last Ed25519 identifier, after tbsCertificate."""
    return der.rindex(ED25519_ALGORITHM)


def parses(der: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        return False
    return True


def with_outer(der: bytes, algorithm: bytes) -> bytes:
    """`der` with its outer AlgorithmIdentifier replaced, the Certificate SEQUENCE's length fixed up
    (node and root certificates here are 256..65535 bytes long: a two-byte length)."""
    at = outer_at(der)
    body = der[4:at] + algorithm + der[at + len(ED25519_ALGORITHM):]
    assert der[:2] == b"\x30\x82"
    return b"\x30\x82" + len(body).to_bytes(2, "big") + body


def test_a_certificate_with_its_outer_algorithm_changed_is_refused(org: Org) -> None:
    """The outer AlgorithmIdentifier is not covered by the signature: every bit flipped in it, and
    every other algorithm put there, left the certificate valid, so one certificate had many byte
    encodings (the certificate fuzz harness found an accepted certificate that was not the one
    issued). Now each is refused; every flip that still parses as X.509 names the mismatch."""
    der, root = org.der("BR1", "branch"), org.root.public_key()
    assert verify_node_cert(der, root).office == "BR1"
    at, parsed = outer_at(der), 0
    for byte in range(at, at + len(ED25519_ALGORITHM)):
        for bit in range(8):
            flipped = bytearray(der)
            flipped[byte] ^= 1 << bit
            with pytest.raises(CertificateError) as refused:
                verify_node_cert(bytes(flipped), root)
            if parses(bytes(flipped)):
                parsed += 1
                assert DIFFERS in str(refused.value)
            else:
                assert "not valid DER" in str(refused.value)
    assert parsed >= 20  # most flips in the OID's three bytes name another OID: the attack itself
    for algorithm in (RSA_SHA256, ECDSA_SHA256, ED448):
        with pytest.raises(CertificateError, match=DIFFERS):
            verify_node_cert(with_outer(der, algorithm), root)


def test_a_root_certificate_with_its_outer_algorithm_changed_is_refused(org: Org) -> None:
    der = to_der(org.root_cert)
    assert root_public_from_cert(der) is not None
    for algorithm in (RSA_SHA256, ECDSA_SHA256, ED448):
        with pytest.raises(CertificateError, match=DIFFERS):
            root_public_from_cert(with_outer(der, algorithm))


def test_a_signature_with_unused_bits_claimed_is_refused(org: Org) -> None:
    """The BIT STRING's first byte (unused bits) is not signed either: 1 instead of 0 gives the same
    signature bytes when the last bit is 0, another encoding of the same certificate."""
    keys = org.keys["BR1"]
    der = next(d for d in (to_der(issue_node_cert(org.root, org.root_cert, keys.signing.public_key(),
                                                  keys.sealing.public_key(), "BR1", "branch")) for _ in range(64))
               if not d[-1] & 1)
    claimed = bytearray(der)
    claimed[-65] = 1  # the unused-bits byte before the 64 signature bytes
    with pytest.raises(CertificateError, match="not a 64-byte Ed25519 signature"):
        verify_node_cert(bytes(claimed), org.root.public_key())


def test_a_tls_peer_presenting_a_changed_outer_algorithm_is_refused(org: Org) -> None:
    """`tls.peer_member` judges the certificate the peer presented with `verify_node_cert`, whatever
    OpenSSL accepted before it."""
    from p2psync.net import tls  # after p2psync.node, which it imports back

    changed = with_outer(org.der("BR1", "branch"), RSA_SHA256)

    class Presented:
        def getpeercert(self, binary_form: bool = False) -> bytes:
            return changed

    trust = dataclasses.make_dataclass("Trust", ["root", "policy"])(org.root.public_key(), org.policy)
    with pytest.raises(CertificateError, match=DIFFERS):
        tls.peer_member(Presented(), trust)  # type: ignore[arg-type]


def test_sealed_key_ring_opens_only_for_its_member(org: Org) -> None:
    br1, br2 = org.keys["BR1"], org.keys["BR2"]
    swapped = dataclasses.replace(org.policy, sealed={br2.node_id: org.policy.sealed[br1.node_id]})
    with pytest.raises(SealError):
        swapped.key_ring(br2.node_id, br2.sealing)


def test_registration_id_is_short_and_stable(org: Org) -> None:
    rid = registration_id(org.org)
    assert rid == registration_id(org_id(org.root.public_key()))
    assert len(rid.replace("-", "")) == 16 and rid != registration_id(Org().org)
