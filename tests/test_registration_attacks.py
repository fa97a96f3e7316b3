"""Attacks on registration: every invite-code misuse is refused with a precise reason, nothing is
enrolled, and a recorded enrollment gives an eavesdropper nothing to read or guess."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from helpers import setup_head
from sqlmodel import select

from p2psync.errors import InvalidInput
from p2psync.node import Node, registrar
from p2psync.store.tables import Invite
from p2psync.trust import enroll
from p2psync.trust.enroll import EnrollError
from p2psync.trust.invite import MAX_WRONG_TRIES, InviteCode
from p2psync.trust.keys import NodeKeys

CANARY = "CANARY-Ledger-Zeta"


@pytest.fixture
def head(tmp_path: Path) -> Node:
    node = setup_head(tmp_path / "HO")
    node.add_ledger(CANARY, "Sundry Debtors", "98765.43")
    yield node
    node.close()


def attempt(head: Node, code: InviteCode, keys: NodeKeys | None = None) -> tuple[bytes, bytes, NodeKeys]:
    keys = keys or NodeKeys.generate()
    request = enroll.request(code, keys)
    return request, registrar.handle_enroll(head, request), keys


def members(head: Node) -> set[str]:
    return set(head.trust.policy.members)


def test_a_good_code_enrolls_once(head: Node, tmp_path: Path) -> None:
    code = InviteCode.parse(registrar.invite(head, "BR1")[0])
    request, reply, keys = attempt(head, code)
    enrolled = enroll.read_reply(reply, code, request, keys)
    assert enrolled.grant.office == "BR1" and keys.node_id in members(head)
    branch = Node.join(tmp_path / "BR1", enrolled, keys)
    assert branch.identity.office == "BR1" and branch.registration_id == head.registration_id
    # the same branch retrying after a lost reply gets the same reply; anyone else is refused
    assert registrar.handle_enroll(head, request) == reply
    _request, again, other = attempt(head, code)
    with pytest.raises(EnrollError, match="already been used"):
        enroll.read_reply(again, code, _request, other)
    assert other.node_id not in members(head)
    branch.close()


def test_expired_code_refused(head: Node) -> None:
    code = InviteCode.parse(registrar.invite(head, "BR1")[0])
    with head.db.write() as session:
        row = session.get(Invite, code.invite_id.hex())
        row.expires_at = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)).isoformat()
        session.add(row)
    before = members(head)
    request, reply, keys = attempt(head, code)
    with pytest.raises(EnrollError, match="expired"):
        enroll.read_reply(reply, code, request, keys)
    assert members(head) == before


def test_wrong_secret_counts_tries_and_locks(head: Node) -> None:
    real = InviteCode.parse(registrar.invite(head, "BR1")[0])
    guess = InviteCode(real.invite_id, bytes(12), real.pin)
    reasons = []
    for _ in range(MAX_WRONG_TRIES):
        request, reply, keys = attempt(head, guess)
        with pytest.raises(EnrollError) as refused:
            enroll.read_reply(reply, guess, request, keys)
        reasons.append(str(refused.value))
    assert "wrong invite code" in reasons[0] and "locked" in reasons[-1]
    request, reply, keys = attempt(head, real)  # even the right code is refused now
    with pytest.raises(EnrollError, match="locked"):
        enroll.read_reply(reply, real, request, keys)
    assert keys.node_id not in members(head)


def test_mistyped_code_is_caught_before_anything_is_sent(head: Node) -> None:
    text = registrar.invite(head, "BR1")[0]
    flipped = ("B" if text[0] != "B" else "C") + text[1:]
    with pytest.raises(InvalidInput, match="typo"):
        InviteCode.parse(flipped)
    with pytest.raises(InvalidInput):
        InviteCode.parse(text[:-5])
    with pytest.raises(InvalidInput):
        InviteCode.parse("not a code at all!")


def test_code_of_another_organisation_refused(head: Node, tmp_path: Path) -> None:
    other = setup_head(tmp_path / "OTHER")
    foreign = InviteCode.parse(registrar.invite(other, "BR1")[0])
    request, reply, keys = attempt(head, foreign)
    with pytest.raises(EnrollError, match="unknown invite code"):
        enroll.read_reply(reply, foreign, request, keys)
    other.close()


def test_join_to_the_wrong_organisation_refused(head: Node, tmp_path: Path) -> None:
    """A branch holding org A's code reaches org B's head office, which answers with B's grant (as
    if B had issued a code with the same id and secret): the pin and MAC unmask it."""
    other = setup_head(tmp_path / "OTHER")
    ours = InviteCode.parse(registrar.invite(head, "BR1")[0])
    with other.db.write() as session:  # B forges an invite with A's id and secret
        session.add(Invite(invite_id=ours.invite_id.hex(), office="BR1", secret=ours.secret, pin=ours.pin,
                           created_at="x", expires_at=(dt.datetime.now(dt.timezone.utc)
                                                       + dt.timedelta(minutes=5)).isoformat()))
    request, reply, keys = attempt(other, ours)
    with pytest.raises(EnrollError, match="another organisation"):
        enroll.read_reply(reply, ours, request, keys)
    other.close()


def test_invite_needs_a_branch_in_the_branch_master(head: Node) -> None:
    from p2psync.errors import NotFound

    with pytest.raises(NotFound, match="branch master"):
        registrar.invite(head, "BR9")


def test_recorded_enrollment_holds_no_names_amounts_or_secret(head: Node) -> None:
    text = registrar.invite(head, "BR1")[0]
    code = InviteCode.parse(text)
    request, reply, _keys = attempt(head, code)
    transcript = request + reply
    for secret in (CANARY.encode(), b"98765", b"Acme Traders", b"Branch One", code.secret, code.secret.hex().encode(),
                   text.encode(), text.replace("-", "").encode()):
        assert secret not in transcript
    # nor does a guess at the code check out against the transcript without the 96-bit secret
    forged = InviteCode(code.invite_id, bytes(12), code.pin)
    with pytest.raises(EnrollError, match="does not prove knowledge"):
        enroll.read_reply(reply, forged, request, _keys)


def test_stored_entries_hold_no_names_or_amounts_in_clear(head: Node) -> None:
    from p2psync.store.tables import Entry

    with head.db.read() as session:
        envelopes = [row.envelope for row in session.exec(select(Entry)) if row.envelope]
    assert envelopes and not any(CANARY.encode() in e or b"98765" in e for e in envelopes)
    headers = [json.loads(e[6:6 + int.from_bytes(e[4:6], "big")]) for e in envelopes]
    assert all(set(h) == {"org", "doc", "author", "seq", "epoch", "deps", "nonce", "z", "pv"} for h in headers)
