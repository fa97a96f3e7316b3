"""Offices whose clocks disagree by hours. Ordering never depends on clocks agreeing: every replica
picks the same winner from the same data, whatever the clocks said; only *which* concurrent edit
wins follows the clock its author claimed. Expiry checks hold within the documented bound: a
certificate is valid from a day before the head office issued it, and an invite's expiry is judged
by the head office's clock alone (docs/security.md, "Clock skew")."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

import pytest
from cryptography import x509
from helpers import conflict_rows, draft, state, sync, voucher_rows

from p2psync.node import registrar
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.trust import enroll
from p2psync.trust.certs import BACKDATE, NODE_YEARS, CertificateError, verify_node_cert
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import NodeKeys, unb64


def skewed(hours: float) -> Callable[[], str]:
    """A clock running `hours` ahead of (or, negative, behind) the real one."""
    return lambda: (dt.datetime.now(dt.timezone.utc) + dt.timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_offices_hours_apart_converge_on_the_same_winner(trio: list[Node]) -> None:
    head, branch, other = trio
    head.clock, branch.clock, other.clock = skewed(+5), skewed(-7), skewed(+30)
    post = branch.post(draft("payment", "2026-04-05", {"Rent": "100"}, {"Cash": "100"}, "April rent"))
    sync(head, branch, other)
    # the head office amends first in real time, the branch a moment later: the clocks disagree by
    # twelve hours, and the head office's claims the later time, so its amendment wins everywhere
    by_head = head.amend(post.number, draft("payment", "2026-04-05", {"Rent": "110"}, {"Cash": "110"}, "HO fix"))
    by_branch = branch.amend(post.number, draft("payment", "2026-04-05", {"Rent": "90"}, {"Cash": "90"}, "BR1"))
    assert by_head.at > by_branch.at
    sync(head, branch, other)
    for node in (head, branch, other):
        with node.db.read() as session:
            row = queries.voucher(session, post.number)
        assert row is not None and row.current == by_head.id and row.conflicts == 1
        assert ("voucher", post.number, by_head.id, by_branch.id) in conflict_rows(node)
    books = [{k: v for k, v in state(node).items() if k != "vectors"} for node in (head, branch, other)]
    assert books[0] == books[1] == books[2]


def test_a_ledger_named_twice_under_skewed_clocks_is_decided_the_same_everywhere(trio: list[Node]) -> None:
    head, branch, other = trio
    head.clock, branch.clock = skewed(+9), skewed(-9)
    kept = head.add_ledger("Advances", "Loans & Advances (Asset)")
    branch.add_ledger("ADVANCES", "Sundry Creditors")  # later in real time, earlier by its clock
    sync(head, branch, other)
    groups = []
    for node in (head, branch, other):
        with node.db.read() as session:
            groups.append([(row.name, group.name) for row, group in queries.ledgers(session) if row.key == "advances"])
    # records of one name made concurrently: the head office's is in force, whatever either clock said
    assert groups[0] == groups[1] == groups[2] == [(kept.name, "Loans & Advances (Asset)")]
    assert voucher_rows(head) == voucher_rows(branch) == voucher_rows(other)


def member_cert(node: Node) -> bytes:
    return unb64(node.trust.policy.members[node.trust.node_id])


@pytest.mark.parametrize("offset, valid", [
    (-BACKDATE + dt.timedelta(hours=1), True),     # a receiver's clock up to a day behind the head office's
    (-BACKDATE - dt.timedelta(hours=1), False),
    (dt.timedelta(days=365 * NODE_YEARS - 2), True),  # ahead: for the certificate's whole life
    (dt.timedelta(days=365 * NODE_YEARS + 1), False),
], ids=["23h-behind", "25h-behind", "years-ahead", "past-its-life"])
def test_a_certificate_is_valid_within_the_documented_skew(trio: list[Node], offset: dt.timedelta,
                                                           valid: bool) -> None:
    head, branch, _other = trio
    der = member_cert(branch)
    issued = _issued_at(der)
    if valid:
        assert verify_node_cert(der, head.trust.root, now=issued + offset).node_id == branch.trust.node_id
    else:
        with pytest.raises(CertificateError, match="outside its validity period"):
            verify_node_cert(der, head.trust.root, now=issued + offset)


def _issued_at(der: bytes) -> dt.datetime:
    return x509.load_der_x509_certificate(der).not_valid_before_utc + BACKDATE


def test_joining_with_a_clock_a_day_off_gives_a_clear_refusal_and_an_hour_off_works(trio: list[Node]) -> None:
    """The invite's expiry is judged by the head office's clock alone; the branch's clock only
    judges the certificate it is given, within a day."""
    head = trio[0]
    head.add_office("BR3", "Branch Three")
    now = dt.datetime.now(dt.timezone.utc)
    for behind, works in ((dt.timedelta(hours=20), True), (dt.timedelta(hours=26), False)):
        code = InviteCode.parse(registrar.invite(head, "BR3")[0])
        keys = NodeKeys.generate()
        request = enroll.request(code, keys)
        reply = registrar.handle_enroll(head, request)
        if works:
            assert enroll.read_reply(reply, code, request, keys, now=now - behind).org == head.trust.org
        else:
            with pytest.raises(CertificateError, match="outside its validity period"):
                enroll.read_reply(reply, code, request, keys, now=now - behind)


def test_an_invite_expires_by_the_head_office_clock(trio: list[Node], caplog: pytest.LogCaptureFixture) -> None:
    """The branch is told only that the code is not valid (the same for every reason); the head
    office's log says it expired."""
    head = trio[0]
    head.add_office("BR3", "Branch Three")
    code = InviteCode.parse(registrar.invite(head, "BR3", ttl=dt.timedelta(seconds=-1))[0])
    keys = NodeKeys.generate()
    with caplog.at_level(logging.WARNING, logger=registrar.__name__):
        reply = registrar.handle_enroll(head, enroll.request(code, keys))
    assert reply == enroll.refusal(registrar.REFUSED)
    assert f"invite {code.invite_id.hex()} for BR3 expired at" in caplog.text
