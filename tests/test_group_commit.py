"""Group commit: posts that queue while a commit goes to disk share the next one, each still a voucher
of its own, refused alone, and none returned before its commit; a group's posts in one month are one
entry, as a batch posted together is."""

from __future__ import annotations

import asyncio
import secrets
import sqlite3
from contextlib import closing

import msgspec
import pytest
from helpers import draft, state, sync

from p2psync.books import schema
from p2psync.books.drafts import Draft
from p2psync.books.importer import ImportedDraft
from p2psync.books.model import Action
from p2psync.canonical import utc_now
from p2psync.errors import RuleViolation
from p2psync.node import views
from p2psync.node.home import DB_FILE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime

RENT = draft("payment", "2026-04-01", {"Rent": "10"}, {"Cash": "10"})
RECEIPT = draft("receipt", "2026-04-02", {"Cash": "25"}, {"Debtors": "25"})
UNKNOWN = draft("payment", "2026-04-03", {"Rent": "10"}, {"Vault": "10"})


def _committed(node: Node) -> list[str]:
    """Voucher numbers as another connection sees them: only what was committed."""
    with closing(sqlite3.connect(f"file:{node.home / DB_FILE}?mode=ro", uri=True)) as db:
        return [n for (n,) in db.execute("SELECT number FROM voucherrow ORDER BY number")]


def test_a_refused_draft_undoes_only_itself(head: Node, branch: Node) -> None:
    results = head.post_group([RENT, UNKNOWN, RECEIPT, RENT])
    assert isinstance(results[1], RuleViolation) and "unknown ledger 'Vault'" in str(results[1])
    assert [r.number for r in results if not isinstance(r, Exception)] == ["HO/PMT/00001", "HO/RCT/00001",
                                                                          "HO/PMT/00002"]
    assert _committed(head) == ["HO/PMT/00001", "HO/PMT/00002", "HO/RCT/00001"]
    in_memory = state(head)
    home = head.home
    head.close()
    reopened = Node.open(home)  # what memory held is what the log holds
    try:
        assert state(reopened) == in_memory
        sync(reopened, branch)
        assert _committed(branch) == _committed(reopened)
    finally:
        reopened.close()


def test_the_posts_of_a_group_in_one_month_are_one_entry(head: Node, branch: Node) -> None:
    me = head.identity.node_id
    may = draft("payment", "2026-05-04", {"Rent": "7"}, {"Cash": "7"})
    results = head.post_group([RENT, UNKNOWN, RECEIPT, may, RENT])
    assert [type(r).__name__ for r in results] == ["Revision", "RuleViolation", "Revision", "Revision", "Revision"]
    vectors = head.vectors()
    assert (vectors["vouchers/HO/2026-04"][me], vectors["vouchers/HO/2026-05"][me]) == (1, 1)
    sync(head, branch)
    assert branch.quarantined() == [] and _committed(branch) == _committed(head)
    assert state(branch)["vouchers"] == state(head)["vouchers"]


def test_a_voucher_for_other_offices_splits_a_month_into_entries_that_each_continue_the_last(
        head: Node, branch: Node) -> None:
    """A voucher that BR1 reads through a link is sealed for it in an entry of its own, between the
    entries of the posts before and after it: each entry's update takes its author's clocks on from
    the one before, or every receiver would refuse it."""
    me = head.identity.node_id
    linked = draft("journal", "2026-04-05", {"@BR1": "3"}, {"Rent": "3"})
    head.post_group([RENT, linked, RECEIPT, RENT])
    assert head.vectors()["vouchers/HO/2026-04"][me] == 3
    sync(head, branch)
    assert branch.quarantined() == [] and _committed(branch) == _committed(head)


def test_a_post_refused_after_its_write_leaves_the_held_posts_before_it_whole(head: Node, branch: Node) -> None:
    """Under negative-cash 'refuse' a post is judged after it is written (its rows are what the cash
    balance reads): undoing it reloads the month's document from the log, which holds none of the
    group's posts yet, so the ones before it are applied again. What is logged and what memory holds
    then agree, and the branch applies the entry whole."""
    views.change_settings(head, negative_cash="refuse")
    head.set_opening("Cash", "100")
    overdraw = draft("payment", "2026-04-03", {"Rent": "5000"}, {"Cash": "5000"})
    results = head.post_group([RENT, RECEIPT, overdraw, RENT])
    assert isinstance(results[2], RuleViolation) and "refuses" in str(results[2])
    assert [r.number for r in results if not isinstance(r, Exception)] == ["HO/PMT/00001", "HO/RCT/00001",
                                                                          "HO/PMT/00002"]
    assert head.vectors()["vouchers/HO/2026-04"][head.identity.node_id] == 1
    in_memory = state(head)
    home = head.home
    head.close()
    reopened = Node.open(home)
    try:
        assert state(reopened) == in_memory
        sync(reopened, branch)
        assert branch.quarantined() == [] and _committed(branch) == _committed(reopened)
    finally:
        reopened.close()


def test_another_change_to_a_month_holding_posts_logs_them_first(head: Node, branch: Node) -> None:
    """Inside a group, a change that is not a held post (here a cancellation, written as any other
    change is) to a month whose posts are held: the posts are logged first, so the cancellation's
    entry takes the author's clocks on from theirs, and the branch applies both."""
    month = "vouchers/HO/2026-04"
    with head.store.transaction() as batch, batch.coalescing():
        (posted,) = head._post_in(batch, [ImportedDraft("", RENT)], head.settings())
        cancel = msgspec.structs.replace(posted, id=secrets.token_hex(12), action=Action.CANCEL, parents=(posted.id,),
                                         generation=2, at=utc_now(), reason="posted twice")
        batch.change(month, lambda doc: schema.put_revisions(doc, [cancel]), {schema.MASTERS: batch.vector(schema.MASTERS)})
    assert head.vectors()[month][head.identity.node_id] == 2
    sync(head, branch)
    assert branch.quarantined() == [] and state(branch)["vouchers"] == state(head)["vouchers"]
    assert [row["cancelled"] for row in views.vouchers(branch)] == [True]


def test_a_group_where_every_draft_is_refused_changes_nothing(head: Node) -> None:
    before = state(head)
    assert all(isinstance(r, RuleViolation) for r in head.post_group([UNKNOWN, UNKNOWN]))
    assert state(head) == before


def test_concurrent_posts_share_commits_and_return_after_theirs(head: Node) -> None:
    groups: list[int] = []
    post_group = head.post_group

    def counted(drafts: list[Draft]) -> list[object]:
        groups.append(len(drafts))
        return post_group(drafts)

    head.post_group = counted  # type: ignore[method-assign]

    async def main() -> list[object]:
        runtime = NodeRuntime(head, host="127.0.0.1", port=0, mdns=False)

        async def one(item: Draft) -> object:
            try:
                rev = await runtime.post(item)
            except RuleViolation as exc:
                return exc
            assert rev.number in _committed(head)  # durable before it returned
            return rev

        try:
            return await asyncio.gather(*(one(UNKNOWN if i == 7 else RENT) for i in range(40)))
        finally:
            runtime.worker.shutdown(wait=True)

    results = asyncio.run(main())
    assert isinstance(results[7], RuleViolation)
    assert sum(groups) == 40 and len(groups) < 40  # they queued behind one another's commits
    numbers = sorted(r.number for r in results if not isinstance(r, Exception))
    assert numbers == [f"HO/PMT/{i:05d}" for i in range(1, 40)] == _committed(head)


def test_a_failed_commit_fails_every_post_of_its_group(head: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(_drafts: list[Draft]) -> list[object]:
        raise OSError("disk gone")

    monkeypatch.setattr(head, "post_group", broken)

    async def main() -> list[BaseException | None]:
        runtime = NodeRuntime(head, host="127.0.0.1", port=0, mdns=False)
        try:
            results = await asyncio.gather(*(runtime.post(RENT) for _ in range(3)), return_exceptions=True)
        finally:
            runtime.worker.shutdown(wait=True)
        return [r if isinstance(r, BaseException) else None for r in results]

    assert all(isinstance(r, OSError) for r in asyncio.run(main()))
    assert _committed(head) == []
