"""The period lock: the head office locks the books up to a date in its signed policy, and no office
may post, amend or cancel a voucher dated on or before it. Each office refuses that where a voucher is
entered, and every receiver refuses it in an entry, whichever policy version the entry cites, so a
branch holding valid keys cannot write into a locked period by going round its own node. Unlocking is a
new policy version, and both stay in the policy's history."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import msgspec
import pytest
from helpers import (
    forged_revision,
    outgoing,
    refused_everywhere,
    seal_raw,
    send,
    state,
    sync,
    voucher_rows,
    y_item,
    y_update,
)
from procs import cli, here_json, voucher_args

from p2psync.books import schema
from p2psync.books.drafts import Draft, make_draft
from p2psync.books.model import Action, Line, Revision, Side, encode_revision
from p2psync.books.yupdate import decode_state_vector
from p2psync.errors import RuleViolation
from p2psync.node import registrar, views
from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE
from p2psync.node.office import Node
from p2psync.protocol import entry
from p2psync.trust import policy as policies
from p2psync.trust.keys import load_root

LOCK = dt.date(2026, 3, 31)
MARCH = "vouchers/BR1/2026-03"
LOCKED = "in the books locked up to 2026-03-31"
BALANCED = (Line("Rent", Side.DR, 100), Line("Creditors", Side.CR, 100))


def journal(node: Node, date: str, amount: str = "10", narration: str = "") -> Revision:
    return node.post(make_draft("journal", date, [f"Rent={amount}"], [f"Creditors={amount}"], narration))


def amend_draft(date: str, amount: str = "11") -> Draft:
    return make_draft("journal", date, [f"Rent={amount}"], [f"Creditors={amount}"], "amended")


def hostile(branch: Node, doc: str, rev: Revision, policy: int | None = None) -> bytes:
    """`rev` written into `doc` as the branch's next entry, sealed with its real keys, citing `policy`
    (default: the one it holds): what a branch that goes round its own node can send."""
    own = schema.client_id(branch.identity.node_id)
    clock = decode_state_vector(branch.store.read_doc(doc).get_state()).get(own, 0)
    update = y_update([(own, clock, [y_item(encode_revision(rev), parent=schema.REVISIONS, key=rev.id)])])
    vectors = branch.vectors()  # it had seen the masters (the ledgers) and the others' work in `doc`
    others = {a: s for a, s in vectors.get(doc, {}).items() if a != branch.identity.node_id}
    deps = {schema.MASTERS: vectors[schema.MASTERS], **({doc: others} if others else {})}
    return seal_raw(branch, doc, update, deps=deps, policy=policy)


def revision(branch: Node, number: str, date: dt.date, action: Action = Action.POST,
             parent: Revision | None = None) -> Revision:
    rev = forged_revision("BR1", number, BALANCED, action, branch.identity.node_id)
    return msgspec.structs.replace(rev, content=msgspec.structs.replace(rev.content, date=date),
                                   parents=(parent.id,) if parent else (), generation=2 if parent else 1,
                                   reason="hostile" if action is Action.CANCEL else "")


def narrations(node: Node) -> list[str]:
    return sorted(v["narration"] for v in voucher_rows(node))


def locked_after_march_and_april(trio: list[Node]) -> tuple[Revision, Revision]:
    """BR1's vouchers of 10 March and 5 April, held by every office, then the books locked up to 31
    March at every office."""
    head, branch, other = trio
    march = journal(branch, "2026-03-10", narration="march")
    april = journal(branch, "2026-04-05", narration="april")
    sync(head, branch, other)
    registrar.set_lock_until(head, LOCK)
    sync(head, branch, other)
    return march, april


# ---------------------------------------------------------------- where a voucher is entered


def test_posting_amending_and_cancelling_in_the_locked_period_are_refused_where_entered(trio: list[Node]) -> None:
    head, branch, other = trio
    march, april = locked_after_march_and_april(trio)

    for attempt, words in [
        (lambda: journal(branch, "2026-03-20"), "date 2026-03-20 is in the books locked up to 2026-03-31"),
        (lambda: journal(branch, "2026-03-31"), "date 2026-03-31 is in the books locked up to 2026-03-31"),
        (lambda: branch.amend(march.number, amend_draft("2026-04-10")), "cannot be amended: it would change 2026-03-10"),
        (lambda: branch.cancel(march.number, "wrong"), "cannot be cancelled: it would change 2026-03-10"),
        (lambda: branch.amend(april.number, amend_draft("2026-03-15")), "date 2026-03-15 is in the books locked"),
        (lambda: head.cancel(march.number, "head office too"), "cannot be cancelled"),
    ]:
        before = state(branch), state(head)
        with pytest.raises(RuleViolation) as refused:
            attempt()
        assert words in str(refused.value) and "only the head office can unlock" in str(refused.value)
        assert (state(branch), state(head)) == before
    # what is after the lock goes on as before
    branch.amend(april.number, amend_draft("2026-04-06"))
    journal(branch, "2026-04-01", narration="first unlocked day")
    sync(head, branch, other)
    assert narrations(head) == narrations(other) == ["amended", "first unlocked day", "march"]


def test_local_vouchers_are_locked_too(trio: list[Node]) -> None:
    """A voucher before the sync-after date never leaves its office, so no receiver judges it; the lock
    is about the books, not about sharing, so where it is entered it is refused all the same."""
    head, branch, _other = trio
    registrar.set_sync_after(head, dt.date(2026, 3, 1))
    registrar.set_lock_until(head, LOCK)
    send(head, branch)
    with pytest.raises(RuleViolation, match="date 2026-02-10 is in the books locked up to 2026-03-31"):
        journal(branch, "2026-02-10")
    assert branch.vectors().get("vouchers/BR1/2026-02") is None and voucher_rows(branch) == []


# ---------------------------------------------------------------- every receiver


def test_a_hostile_branchs_entries_into_the_locked_period_are_refused_by_every_receiver(trio: list[Node]) -> None:
    """A post dated in the lock, an amendment moving a locked voucher out of it, a cancellation of a
    locked voucher, and an amendment moving an open voucher into it: each refused with the same reason at
    every office, whose books do not change."""
    head, branch, other = trio
    march, april = locked_after_march_and_april(trio)

    post = revision(branch, "BR1/JRN/00091", dt.date(2026, 3, 20))
    refused_everywhere(hostile(branch, MARCH, post), [head, other],
                       f"voucher {post.number} is dated 2026-03-20, {LOCKED}")
    out = revision(branch, march.number, dt.date(2026, 4, 10), Action.AMEND, march)
    refused_everywhere(hostile(branch, MARCH, out), [head, other],
                       f"voucher {march.number} cannot be amended: it would change 2026-03-10, {LOCKED}")
    cancel = revision(branch, march.number, march.content.date, Action.CANCEL, march)
    refused_everywhere(hostile(branch, MARCH, cancel), [head, other],
                       f"voucher {march.number} cannot be cancelled: it would change 2026-03-10, {LOCKED}")
    into = revision(branch, april.number, dt.date(2026, 3, 25), Action.AMEND, april)
    refused_everywhere(hostile(branch, "vouchers/BR1/2026-04", into), [head, other],
                       f"voucher {april.number} cannot be amended: it would change 2026-03-25, {LOCKED}")
    assert narrations(head) == narrations(other) == ["april", "march"]


def test_citing_the_policy_from_before_the_lock_does_not_get_past_it(trio: list[Node]) -> None:
    """A branch that has written nothing since the lock can cite the older policy without breaking its
    chain; the head office's policy says what it held when it locked, and every office judges an entry
    beyond that by the lock."""
    head, branch, other = trio
    march = journal(branch, "2026-03-10", narration="march")
    sync(head, branch, other)
    old = entry.peek(outgoing(branch)[-1]).policy
    registrar.set_lock_until(head, LOCK)
    sync(head, branch, other)
    assert head.trust.policy.rule(policies.LOCK_UNTIL).as_of(old) is None

    post = revision(branch, "BR1/JRN/00092", dt.date(2026, 3, 21))
    refused_everywhere(hostile(branch, MARCH, post, policy=old), [head, other], LOCKED)
    cancel = revision(branch, march.number, march.content.date, Action.CANCEL, march)
    refused_everywhere(hostile(branch, MARCH, cancel, policy=old), [head, other], "cannot be cancelled")
    # a document the head office never held is beyond what it held, too
    feb = revision(branch, "BR1/JRN/00093", dt.date(2026, 2, 3))
    refused_everywhere(hostile(branch, "vouchers/BR1/2026-02", feb, policy=old), [head, other], LOCKED)


def test_an_office_that_applied_an_entry_before_it_held_the_lock_withdraws_it(trio: list[Node]) -> None:
    """BR1 and BR2 have not heard of the lock: BR1 amends a March voucher into April and posts into
    February, BR2 applies both. When the policy reaches them, each takes them back out, so every office
    ends with the same books; BR1's work after the lock flows on."""
    head, br1, br2 = trio
    march = journal(br1, "2026-03-05", narration="march")
    sync(head, br1, br2)
    registrar.set_lock_until(head, LOCK)  # only the head office holds it
    br1.amend(march.number, amend_draft("2026-04-02"))
    journal(br1, "2026-02-14", narration="february")
    late = outgoing(br1, head)
    result = head.receive(late)
    assert result.applied == 0 and len(result.quarantined) == 2
    assert all(LOCKED in reason for reason in result.quarantined)
    assert br2.receive(late).applied == 2
    assert narrations(br2) == ["amended", "february"]
    for node in (br2, br1):
        node.adopt_policy(head.policy_blob())
        assert narrations(node) == ["march"], node.identity.office
        withdrawn = [q["reason"] for q in node.quarantined() if "withdrawn" in q["reason"]]
        assert len(withdrawn) == 2 and all(LOCKED in reason for reason in withdrawn), withdrawn
    assert state(br1)["docs"] == state(br2)["docs"] == state(head)["docs"]
    journal(br1, "2026-04-03", narration="after the lock")
    for node in (head, br2):
        assert node.receive(outgoing(br1, node)).applied >= 1
        assert narrations(node) == ["after the lock", "march"]


# ---------------------------------------------------------------- unlocking, and who may lock


def test_unlocking_allows_posting_again_and_both_are_in_the_history(trio: list[Node]) -> None:
    """Unlocking is a new policy version: what is entered under it is accepted everywhere, while what
    was refused under the lock stays refused at every office (it cites the lock, or an older version, and
    lies beyond what the head office held when it locked)."""
    head, branch, other = trio
    sync(head, branch, other)
    views.change_settings(head, lock_until="2026-03-31")
    sync(head, branch, other)
    under_lock = hostile(branch, MARCH, revision(branch, "BR1/JRN/00094", dt.date(2026, 3, 22)))
    refused_everywhere(under_lock, [head, other], LOCKED)
    assert views.settings(branch)["lock_until"] == "2026-03-31"

    views.change_settings(head, lock_until="none")
    sync(head, branch, other)
    assert views.settings(branch)["lock_until"] is None
    refused_everywhere(under_lock, [head, other], LOCKED)
    journal(branch, "2026-03-22", narration="after the unlock")
    sync(head, branch, other)
    assert narrations(head) == narrations(other) == ["after the unlock"]

    locks = [(c["date"], c["issued_at"] is not None) for c in views.policy_history(branch)
             if c["setting"] == "lock_until"]
    assert locks == [("2026-03-31", True), (None, True)]
    versions = [c["version"] for c in views.policy_history(head) if c["setting"] == "lock_until"]
    assert versions[0] < versions[1] == head.trust.policy.version


def test_a_branch_cannot_set_the_lock(trio: list[Node]) -> None:
    _head, branch, _other = trio
    before, mode = branch.trust.policy.version, branch.settings()["mode"]
    for attempt in (lambda: views.change_settings(branch, lock_until="2026-03-31", mode="manual"),
                    lambda: registrar.set_lock_until(branch, LOCK)):
        with pytest.raises(RuleViolation, match="only the head office can lock or unlock a period"):
            attempt()
    assert branch.trust.policy.version == before and branch.trust.policy.lock_until is None
    assert branch.settings()["mode"] == mode  # refused whole: nothing else given was changed


def test_policies_without_a_lock_read_and_sign_as_before(head: Node) -> None:
    """Policies signed before the lock existed carry none of its fields: they decode with no lock and
    encode to the same bytes, so their signatures and meaning stay as they were."""
    body = json.loads(head.policy_blob())["body"].encode()
    assert b"lock_until" not in body
    decoded = policies.verify(head.policy_blob(), head.trust.root, head.trust.org)
    assert decoded.lock_until is None and decoded.rule(policies.LOCK_UNTIL).judging(MARCH, "x", 9, 0) is None
    assert decoded.body() == body


@pytest.mark.parametrize("field, value", [
    ("lock_until", "2026-02-30"), ("lock_until", 20260331), ("lock_until_history", {"x": None}),
    ("lock_until_history", {"3": "soon"}), ("lock_until_held", {"3": {"vouchers/BR1/2026-03": {"a": "1"}}}),
    ("rules_changed_at", {"3": 5}),
])
def test_a_signed_policy_with_a_malformed_lock_is_refused(head: Node, field: str, value: object) -> None:
    """The lock's fields are checked for their type like every other: a signed body is no proof of shape."""
    body = json.loads(json.loads(head.policy_blob())["body"])
    blob = policies.sign_body(json.dumps({**body, field: value}).encode(), load_root(head.home / KEYS_DIR / ROOT_KEY_FILE))
    with pytest.raises(policies.PolicyError, match="malformed"):
        policies.verify(blob, head.trust.root, head.trust.org)


# ---------------------------------------------------------------- the dashboard


def test_the_dashboard_sets_and_shows_the_lock_and_refuses_a_voucher_in_it(head: Node, branch: Node) -> None:
    from test_dashboard_api import run, served

    locked_day = {"type": "journal", "date": "2026-03-20", "narration": "",
                  "lines": [{"side": "Dr", "ledger": "Rent", "amount": "5"},
                            {"side": "Cr", "ledger": "Creditors", "amount": "5"}]}

    async def scenario() -> None:
        async with served(head, head.home) as web:
            version = (await web.get("/api/settings"))[1]["policy_version"]
            status, after = await web.post("/api/settings", {"lock_until": "2026-03-31"})
            assert (status, after["lock_until"], after["policy_version"]) == (200, "2026-03-31", version + 1)
            status, refused = await web.post("/api/vouchers", locked_day)
            assert status == 422 and refused["error"].startswith("date 2026-03-20 is in the books locked up to")
            assert (await web.get("/api/status"))[1]["node"]["lock_until"] == "2026-03-31"
        async with served(branch, branch.home) as web:
            status, refused = await web.post("/api/settings", {"lock_until": "2026-03-31"})
            assert (status, refused["error"]) == (422, registrar.HEAD_ONLY_LOCK)

    run(scenario())


# ---------------------------------------------------------------- the command line


def test_the_command_line_locks_shows_and_refuses(trio_template: Path, tmp_path: Path) -> None:
    homes = {code: tmp_path / code for code in ("HO", "BR1")}
    for code, home in homes.items():
        shutil.copytree(trio_template / code, home)
    ho, br1 = homes["HO"], homes["BR1"]
    branch_try = cli(br1, "settings", "--lock-until", "2026-03-31", check=False)
    assert branch_try.returncode == 1 and branch_try.stderr.startswith("error: only the head office can lock")
    assert len(branch_try.stderr.splitlines()) == 1
    assert here_json(ho, "settings", "--lock-until", "2026-03-31")["lock_until"] == "2026-03-31"
    nodes = [Node.open(home) for home in (ho, br1)]
    try:
        sync(*nodes)
    finally:
        for node in nodes:
            node.close()
    posted = cli(br1, *voucher_args("journal", "2026-03-20", "Rent", "Creditors", "5"), check=False)
    assert posted.returncode == 1, posted.stdout
    assert posted.stderr.splitlines() == [
        ("error: date 2026-03-20 is in the books locked up to 2026-03-31; only the head office can unlock them "
         "('p2psync settings --lock-until')")]
    assert here_json(br1, "status")["node"]["lock_until"] == "2026-03-31"
    history = here_json(br1, "settings", "--history")
    assert [(c["setting"], c["date"]) for c in history if c["setting"] == "lock_until"] == [
        ("lock_until", "2026-03-31")]
