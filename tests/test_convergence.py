"""Convergence: three offices that post, amend and cancel concurrently and exchange their entries in
any order, with duplicates and gaps, end with identical books, and no revision is ever silently lost."""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    OFFICES,
    all_reports,
    assert_log_whole,
    conflict_rows,
    copy_home,
    day_book,
    deliver,
    doc_contents,
    draft,
    entries,
    forge_entry,
    forged_revision,
    open_trio,
    outgoing,
    pending_count,
    revisions,
    send,
    sync,
    voucher_rows,
)
from hypothesis import event, given, settings
from hypothesis import strategies as st
from pycrdt import Map

from p2psync.books.drafts import Draft
from p2psync.books.groups import group_key
from p2psync.books.model import (
    Action,
    Line,
    Revision,
    Side,
    encode_revision,
)
from p2psync.books.money import to_decimal
from p2psync.errors import RuleViolation
from p2psync.node.office import Node
from p2psync.store import queries

#: Valid shapes per voucher type over the standard chart: (debit ledger, credit ledger).
SHAPES: dict[str, list[tuple[str, str]]] = {
    "payment": [("Rent", "Cash"), ("Creditors", "Bank")],
    "receipt": [("Cash", "Debtors"), ("Bank", "Interest")],
    "contra": [("Bank", "Cash"), ("Cash", "Bank")],
    "journal": [("Rent", "Creditors"), ("Furniture", "Loan")],
    "sales": [("Debtors", "Sales"), ("Cash", "Sales")],
    "credit-note": [("Sales", "Debtors")],
}
KINDS = sorted(SHAPES)
PREFIX_KIND = {"PMT": "payment", "RCT": "receipt", "CTR": "contra", "JRN": "journal", "SAL": "sales",
               "CRN": "credit-note"}


def shaped(kind: str, variant: int, paise: int, month: int) -> Draft:
    dr, cr = SHAPES[kind][variant % len(SHAPES[kind])]
    amount = str(to_decimal(paise))
    return draft(kind, f"2026-{month:02d}-{paise % 28 + 1:02d}", {dr: amount}, {cr: amount}, f"{kind} {paise}")


# ---------------------------------------------------------------- what every replica must agree on


def expected_resolution(revs: list[Revision]) -> dict[str, tuple[Revision, set[str]]]:
    """Per voucher: the winning revision and the ids of the losing heads, computed from the DAG."""
    by_number: dict[str, list[Revision]] = defaultdict(list)
    for rev in revs:
        by_number[rev.number].append(rev)
    out = {}
    for number, group in by_number.items():
        replaced = {parent for rev in group for parent in rev.parents}
        heads = [rev for rev in group if rev.id not in replaced]
        cancels = [rev for rev in heads if rev.action is Action.CANCEL]  # a cancellation wins over amendments
        winner = max(cancels or heads, key=lambda r: (r.generation, r.at, r.id))
        # two cancellations of one voucher agree: only an amendment against a cancellation is a conflict
        out[number] = (winner, {rev.id for rev in heads if rev.id != winner.id
                                and not (rev.action is Action.CANCEL and winner.action is Action.CANCEL)})
    return out


#: Periods the balances are checked over: whole books, and periods that start or end inside a month,
#: span months or lie inside one (the month totals are read whole, the edge months line by line).
PERIODS: list[tuple[dt.date | None, dt.date | None]] = [
    (None, None), (None, dt.date(2026, 4, 15)), (dt.date(2026, 4, 10), None), (dt.date(2026, 4, 10), dt.date(2026, 5, 20)),
    (dt.date(2026, 5, 1), dt.date(2026, 5, 31)), (dt.date(2026, 3, 1), dt.date(2026, 6, 30)),
    (dt.date(2026, 5, 10), dt.date(2026, 5, 12)), (None, dt.date(2026, 3, 31)),
]


def expected_movements(resolution: dict[str, tuple[Revision, set[str]]], start: dt.date | None = None,
                       end: dt.date | None = None) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(office, ledger key) -> (net before `start`, debits and credits from `start` to `end`), from
    the winning, not cancelled revisions."""
    sums: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    for winner, _losers in resolution.values():
        day = winner.content.date
        if winner.action is Action.CANCEL or (end and day > end):
            continue
        for line in winner.content.lines:
            total = sums[(winner.office, group_key(line.ledger))]
            if start and day < start:
                total[0] += line.signed
            else:
                total[1 if line.side is Side.DR else 2] += line.paise
    return {key: (b, d, c) for key, (b, d, c) in sums.items()}


def assert_balances(node: Node, resolution: dict[str, tuple[Revision, set[str]]]) -> None:
    """Every trial balance, consolidated and per office, over every period in `PERIODS`, equals the
    sums of the winning revisions' lines (opening balances aside)."""
    for start, end in PERIODS:
        movements = expected_movements(resolution, start, end)
        for office in (None, *OFFICES):
            offices = [office] if office else list(OFFICES)
            with node.db.read() as session:
                got = {b.key: (b.opening - queries.opening_of(session, b.key, office), b.debit, b.credit)
                       for b in queries.balances(session, office, start, end)}
            for key, figures in got.items():
                want = [movements.get((o, key), (0, 0, 0)) for o in offices]
                assert figures == tuple(sum(w[i] for w in want) for i in range(3)), (office, key, start, end)


def assert_consistent(node: Node) -> None:
    """What must hold at every moment, however partial the entries a replica has received: its log has
    no gaps, every revision's parents are present, and its tables match its own revisions."""
    assert_log_whole(node)
    revs = revisions(node)
    ids = {rev.id for rev in revs}
    chart = node.chart()
    for rev in revs:
        assert set(rev.parents) <= ids, f"{rev.number}: an amendment arrived before what it replaces"
        assert all(chart.ledger(line.ledger) is not None for line in rev.content.lines)
    resolution = expected_resolution(revs)
    rows = {row["number"]: row for row in voucher_rows(node)}
    assert set(rows) == set(resolution)
    for number, (winner, losers) in resolution.items():
        assert (rows[number]["current"], rows[number]["conflicts"]) == (winner.id, len(losers))
    assert_balances(node, resolution)


def assert_converged(nodes: list[Node], made: set[str] | None = None) -> None:
    """Identical logs, documents, reports and conflicts everywhere, matching an independent model."""
    assert all(pending_count(node) == 0 for node in nodes)
    for node in nodes:
        assert_consistent(node)
    first = nodes[0]
    vectors = first.vectors()
    docs = doc_contents(first)
    log = entries(first)
    book = all_reports(first)
    rows = voucher_rows(first)
    conflicts = conflict_rows(first)
    for node in nodes[1:]:
        assert node.vectors() == vectors
        assert entries(node) == log
        assert doc_contents(node) == docs
        assert voucher_rows(node) == rows
        assert conflict_rows(node) == conflicts
        assert all_reports(node) == book
    revs = revisions(first)
    ids = {rev.id for rev in revs}
    assert made is None or made <= ids, "a revision made somewhere is missing"
    for rev in revs:
        assert sum(line.signed for line in rev.content.lines) == 0, rev.number
        assert set(rev.parents) <= ids
    resolution = expected_resolution(revs)
    want_conflicts = {("voucher", number, winner.id, loser)
                      for number, (winner, losers) in resolution.items() for loser in losers}
    assert {c for c in conflicts if c[0] == "voucher"} == want_conflicts
    by_number = {row["number"]: row for row in rows}
    assert set(by_number) == set(resolution)
    for number, (winner, losers) in resolution.items():
        row = by_number[number]
        assert (row["current"], row["cancelled"], row["conflicts"]) == (
            winner.id, winner.action is Action.CANCEL, len(losers))
    assert_balances(first, resolution)
    for row in day_book(first)["rows"]:
        assert sum(ln["debit"] for ln in row["lines"]) == sum(ln["credit"] for ln in row["lines"])


# ---------------------------------------------------------------- the property

replica = st.integers(0, 2)
posts = st.tuples(st.just("post"), replica, st.sampled_from(KINDS), st.integers(0, 1), st.integers(1, 10**7),
                  st.integers(4, 5))
amends = st.tuples(st.just("amend"), replica, st.integers(0, 50), st.integers(0, 1), st.integers(1, 10**7))
cancels = st.tuples(st.just("cancel"), replica, st.integers(0, 50))
syncs = st.tuples(st.just("sync"), replica, replica, st.integers(0, 2**32))
#: Posts at every office, then a full exchange, so that later amendments have shared targets.
prologues = st.lists(posts, min_size=3, max_size=6)
operations = st.lists(st.one_of(posts, amends, amends, amends, cancels, syncs, syncs), min_size=8, max_size=24)


class Run:
    """Drives three replicas through a list of operations, checking each one's local outcome."""

    def __init__(self, nodes: list[Node]) -> None:
        self.nodes = nodes
        self.made: set[str] = set()
        self.refused = 0

    def post(self, who: int, kind: str, variant: int, paise: int, month: int) -> None:
        rev = self.nodes[who].post(shaped(kind, variant, paise, month))
        assert rev.number.startswith(f"{OFFICES[who]}/")
        self.made.add(rev.id)

    def _pick(self, who: int, pick: int) -> Any:
        with self.nodes[who].db.read() as session:
            rows = queries.vouchers(session)
        return rows[pick % len(rows)] if rows else None

    def revise(self, who: int, pick: int, variant: int | None, paise: int = 0) -> None:
        node = self.nodes[who]
        row = self._pick(who, pick)
        if row is None:
            return
        allowed = not row.cancelled and (node.identity.is_head or row.office == node.identity.office)
        before = node.vectors()
        try:
            if variant is None:
                rev = node.cancel(row.number, f"cancelled at {node.identity.office}")
            else:
                kind = PREFIX_KIND[row.number.split("/")[1]]
                rev = node.amend(row.number, shaped(kind, variant, paise, 4 + paise % 2))  # may change month
        except RuleViolation:
            assert not allowed, f"{node.identity.office} was refused {row.number}"
            assert node.vectors() == before
            self.refused += 1
            return
        assert allowed, f"{node.identity.office} changed {row.number}, which it may not"
        assert rev.number == row.number and rev.generation >= 2
        self.made.add(rev.id)

    def exchange(self, source: int, target: int, seed: int) -> None:
        if source == target:
            return
        rng = random.Random(seed)
        src, dst = self.nodes[source], self.nodes[target]
        lacking, mode = outgoing(src, dst), rng.random()
        if mode < 0.35:  # hold back the first: everything after it must wait for it
            subset = lacking[1:]
        else:  # any subset, of what the target lacks or of everything: gaps are parked, not lost
            items = lacking if mode < 0.7 else outgoing(src)
            subset = rng.sample(items, rng.randint(0, len(items)))
        subset += rng.choices(subset, k=rng.randint(0, 3)) if subset else []  # and duplicates
        rng.shuffle(subset)
        deliver(dst, subset, policy_from=src)
        assert_consistent(dst)

    def apply(self, op: tuple) -> None:
        match op:
            case ("post", who, kind, variant, paise, month):
                self.post(who, kind, variant, paise, month)
            case ("amend", who, pick, variant, paise):
                self.revise(who, pick, variant, paise)
            case ("cancel", who, pick):
                self.revise(who, pick, None)
            case ("sync", source, target, seed):
                self.exchange(source, target, seed)

    def full_exchange(self, seed: int) -> None:
        """The sync conversation: each side sends what the other's version vectors lack, with some
        stale duplicates thrown in, until a whole round moves nothing."""
        rng = random.Random(seed)
        moved = True
        while moved:
            moved = False
            pairs = [(s, t) for s in self.nodes for t in self.nodes if s is not t]
            rng.shuffle(pairs)
            for source, target in pairs:
                items = outgoing(source, target)
                stale = outgoing(source)
                items += rng.choices(stale, k=min(3, len(stale)))
                rng.shuffle(items)
                moved |= deliver(target, items) > 0


#: Hypothesis may spend up to 300 s shrinking a failure; let it finish and report the minimal case.
@pytest.mark.timeout(900)
@settings(max_examples=10, deadline=None)
@given(prologue=prologues, ops=operations, seed=st.integers(0, 2**32))
def test_replicas_converge(trio_template: Path, prologue: list[tuple], ops: list[tuple], seed: int) -> None:
    with tempfile.TemporaryDirectory() as where:
        nodes = open_trio(trio_template, Path(where))
        try:
            run = Run(nodes)
            for op in prologue:
                run.apply(op)
            run.full_exchange(seed)
            for op in ops:
                run.apply(op)
            run.full_exchange(seed)
            assert_converged(nodes, run.made)
            conflicts = {c for c in conflict_rows(nodes[0]) if c[0] == "voucher"}
            event(f"concurrent revisions in conflict: {min(len(conflicts), 3)}{'+' if len(conflicts) >= 3 else ''}")
            event(f"refused amendments or cancellations: {bool(run.refused)}")
            event(f"revisions made: {min(len(run.made) // 5 * 5, 20)}+")
        finally:
            for node in nodes:
                node.close()


# ---------------------------------------------------------------- concurrent amendments, by hand


def test_concurrent_amendments_pick_one_winner_everywhere_and_keep_the_loser(trio: list[Node],
                                                                               tmp_path: Path) -> None:
    head, branch, other = trio
    post = branch.post(draft("payment", "2026-04-05", {"Rent": "100"}, {"Cash": "100"}, "April rent"))
    sync(head, branch, other)
    by_head = head.amend(post.number, draft("payment", "2026-04-05", {"Rent": "110"}, {"Cash": "110"}, "HO fix"))
    by_branch = branch.amend(post.number, draft("payment", "2026-04-06", {"Rent": "90"}, {"Bank": "90"}, "BR1 fix"))
    assert by_head.parents == by_branch.parents == (post.id,)
    assert by_head.generation == by_branch.generation == 2
    winner, loser = sorted((by_head, by_branch), key=lambda r: (r.generation, r.at, r.id), reverse=True)

    # a fourth replica: BR2's copy, to receive the same entries in the opposite order
    other.close()
    copy_home(tmp_path / "BR2", tmp_path / "BR2-copy")
    other = Node.open(tmp_path / "BR2")
    twin = Node.open(tmp_path / "BR2-copy")
    try:
        from_head, from_branch = outgoing(head, other), outgoing(branch, other)
        deliver(other, from_head + from_branch)
        deliver(twin, from_branch[::-1] + from_head[::-1])
        send(branch, head)
        send(head, branch)
        replicas = [head, branch, other, twin]
        assert_converged(replicas, {post.id, by_head.id, by_branch.id})
        for node in replicas:
            with node.db.read() as session:
                row = queries.voucher(session, post.number)
                assert row is not None and row.current == winner.id and row.conflicts == 1
            kept = {r.id for r in node.store.revisions(post.number)}
            assert kept == {post.id, by_head.id, by_branch.id}
            assert ("voucher", post.number, winner.id, loser.id) in conflict_rows(node)
            rent = {b.name: b for b in _balances(node, "BR1")}["Rent"]
            assert rent.debit == sum(ln.paise for ln in winner.content.lines if ln.side is Side.DR)

        # an amendment made after seeing both replaces both heads: the conflict is resolved
        settled = head.amend(post.number, draft("payment", "2026-04-05", {"Rent": "95"}, {"Cash": "95"}, "agreed"))
        assert set(settled.parents) == {by_head.id, by_branch.id} and settled.generation == 3
        sync(head, branch, other)
        send(head, twin)
        assert_converged(replicas)
        for node in replicas:
            assert not {c for c in conflict_rows(node) if c[1] == post.number}
    finally:
        twin.close()
        trio[2] = other  # closed by the fixture


def test_a_longer_chain_of_amendments_outranks_a_later_single_one(trio: list[Node]) -> None:
    """Winners are ranked by generation first: two amendments in a row at the branch beat one made
    afterwards at the head office, on every replica, and the head office's is kept as the conflict."""
    head, branch, other = trio
    post = branch.post(draft("payment", "2026-04-05", {"Rent": "100"}, {"Cash": "100"}))
    sync(head, branch, other)
    first = branch.amend(post.number, draft("payment", "2026-04-05", {"Rent": "101"}, {"Cash": "101"}))
    second = branch.amend(post.number, draft("payment", "2026-04-05", {"Rent": "102"}, {"Cash": "102"}))
    late = head.amend(post.number, draft("payment", "2026-04-05", {"Rent": "150"}, {"Cash": "150"}))
    assert (first.generation, second.generation, late.generation) == (2, 3, 2)
    assert second.parents == (first.id,) and late.parents == (post.id,)
    sync(head, branch, other)
    assert_converged([head, branch, other], {post.id, first.id, second.id, late.id})
    for node in (head, branch, other):
        with node.db.read() as session:
            row = queries.voucher(session, post.number)
        assert row is not None and row.current == second.id and row.amount == 10200
        assert ("voucher", post.number, second.id, late.id) in conflict_rows(node)


def test_concurrent_cancel_and_amend_keep_both_and_agree(trio: list[Node]) -> None:
    head, branch, other = trio
    post = branch.post(draft("receipt", "2026-04-05", {"Cash": "500"}, {"Debtors": "500"}))
    sync(head, branch, other)
    cancel = head.cancel(post.number, "not received")
    amend = branch.amend(post.number, draft("receipt", "2026-04-05", {"Bank": "450"}, {"Debtors": "450"}))
    sync(head, branch, other)
    assert_converged([head, branch, other], {post.id, cancel.id, amend.id})
    for node in (head, branch, other):  # cancelled stays cancelled: the amendment is the listed loser
        with node.db.read() as session:
            row = queries.voucher(session, post.number)
        assert row is not None and row.cancelled and row.current == cancel.id and row.conflicts == 1


def _balances(node: Node, office: str | None = None) -> list:
    with node.db.read() as session:
        return queries.balances(session, office)


# ---------------------------------------------------------------- masters created concurrently


def test_same_ledger_created_at_two_offices_is_harmless(trio: list[Node]) -> None:
    head, branch, other = trio
    head.add_ledger("Petty Cash", "Cash-in-Hand")
    branch.add_ledger("petty cash", "Cash-in-Hand")
    sync(head, branch, other)
    assert_converged([head, branch, other])
    for node in (head, branch, other):
        assert not {c for c in conflict_rows(node) if c[0] == "ledger"}
        with node.db.read() as session:
            assert [row.name for row, _ in queries.ledgers(session) if row.key == "petty cash"] == ["Petty Cash"]
    branch.post(draft("contra", "2026-04-01", {"PETTY CASH": "5"}, {"Cash": "5"}))
    sync(head, branch, other)
    assert_converged([head, branch, other])


def test_same_ledger_in_two_groups_is_listed_as_a_conflict(trio: list[Node]) -> None:
    head, branch, other = trio
    first = head.add_ledger("Advances", "Loans & Advances (Asset)")
    second = branch.add_ledger("ADVANCES", "Sundry Creditors")
    sync(head, branch, other)
    assert_converged([head, branch, other])
    earliest, later = sorted((first, second), key=lambda r: (r.at, r.office, r.author))
    for node in (head, branch, other):
        assert ("ledger", "advances", f"{earliest.name}@{earliest.office}",
                f"{later.name}@{later.office}") in conflict_rows(node)
        with node.db.read() as session:
            [(row, group)] = [(r, g) for r, g in queries.ledgers(session) if r.key == "advances"]
        assert (row.name, group.name) == (earliest.name, earliest.group)


def test_voucher_on_a_concurrently_redefined_ledger_still_converges(trio: list[Node]) -> None:
    """A voucher valid under its author's chart must be admitted everywhere, even where a concurrently
    created ledger of the same name resolved to another group; otherwise the books would diverge and
    every later entry of that document would wait forever behind the refused one."""
    head, branch, other = trio
    head.add_ledger("Float", "Cash-in-Hand")
    branch.add_ledger("float", "Indirect Expenses")
    branch.post(draft("journal", "2026-04-01", {"float": "100"}, {"Creditors": "100"}))
    later = branch.post(draft("journal", "2026-04-02", {"Rent": "1"}, {"Creditors": "1"}))
    sync(head, branch, other)
    assert_converged([head, branch, other])
    for node in (head, branch, other):
        assert ("ledger", "float") in {c[:2] for c in conflict_rows(node)}  # the clash itself is listed
        with node.db.read() as session:
            assert queries.voucher(session, later.number) is not None


def test_concurrent_openings_for_one_office_converge(trio: list[Node]) -> None:
    head, branch, other = trio
    head.set_opening("Cash", "100", office="BR1")
    branch.set_opening("Cash", "200")
    sync(head, branch, other)
    assert_converged([head, branch, other])


# ---------------------------------------------------------------- entries that would break the books


BALANCED = (Line("Rent", Side.DR, 100), Line("Creditors", Side.CR, 100))


DOC = "vouchers/BR1/2026-04"
UNBALANCED = (Line("Rent", Side.DR, 100), Line("Creditors", Side.CR, 99))


def _adding(rev: Revision) -> Callable[[Map], None]:
    return lambda revisions_map: revisions_map.__setitem__(rev.id, encode_revision(rev))


#: Entries a member could sign that would break the books, each with the reason it must be refused for.
FORGERIES: dict[str, tuple[Callable[[Node, Revision], bytes], str]] = {
    "unbalanced voucher": (
        lambda b, p: forge_entry(b, DOC, _adding(forged_revision("BR1", "BR1/JRN/00009", UNBALANCED))), "do not equal"),
    "another office's books": (
        lambda b, p: forge_entry(b, "vouchers/HO/2026-04", _adding(forged_revision("HO", "HO/JRN/00009", BALANCED))),
        "may not write office HO"),
    "one ledger on both sides": (
        lambda b, p: forge_entry(b, DOC, _adding(forged_revision("BR1", "BR1/JRN/00009", (
            Line("Rent", Side.DR, 1), Line("rent", Side.CR, 1))))), "both debited and credited"),
    "unknown ledger": (
        lambda b, p: forge_entry(b, DOC, _adding(forged_revision("BR1", "BR1/JRN/00009", (
            Line("Vault", Side.DR, 1), Line("Capital", Side.CR, 1))))), "unknown ledger 'Vault'"),
    "amend naming no parent": (
        lambda b, p: forge_entry(b, DOC, _adding(forged_revision("BR1", p.number, BALANCED, action=Action.AMEND))),
        "names no revision it replaces"),
    "deleted revision": (lambda b, p: forge_entry(b, DOC, lambda m: m.pop(p.id)), "delete of revisions/"),
    "overwritten revision": (
        lambda b, p: forge_entry(b, DOC, lambda m: m.__setitem__(p.id, encode_revision(forged_revision("BR1", p.number, BALANCED)))),
        "update of revisions/"),
    "malformed value": (
        lambda b, p: forge_entry(b, DOC, lambda m: m.__setitem__("x" * 24, '{"v": 1, "lines": "oops"}')),
        "malformed voucher revision"),
}


@pytest.fixture(scope="module")
def posted_template(trio_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Revision]:
    """The three offices after BR1 posted a voucher and everyone exchanged."""
    where = tmp_path_factory.mktemp("posted")
    head, branch, other = open_trio(trio_template, where)
    posted = branch.post(draft("journal", "2026-04-01", {"Rent": "1"}, {"Creditors": "1"}))
    sync(head, branch, other)
    for node in (head, branch, other):
        node.close()
    return where, posted


@pytest.mark.parametrize("forgery", sorted(FORGERIES))
def test_an_entry_that_would_break_the_books_is_refused_and_changes_nothing(
        posted_template: tuple[Path, Revision], tmp_path: Path, forgery: str) -> None:
    template, posted = posted_template
    head, branch, _ = nodes = open_trio(template, tmp_path)
    try:
        before = {"docs": doc_contents(head), "reports": all_reports(head), "vectors": head.vectors()}
        make, reason = FORGERIES[forgery]
        blob = make(branch, posted)
        result = head.receive([blob])
        assert result.applied == 0 and len(result.quarantined) == 1
        assert reason in result.quarantined[0]
        assert {"docs": doc_contents(head), "reports": all_reports(head), "vectors": head.vectors()} == before
        # the same entry again is refused again, and honest work still flows afterwards
        assert head.receive([blob]).applied == 0
        head.post(draft("journal", "2026-04-02", {"Rent": "2"}, {"Creditors": "2"}))
        branch.post(draft("journal", "2026-04-02", {"Rent": "3"}, {"Creditors": "3"}))
        sync(*nodes)
        assert_converged(nodes)
    finally:
        for node in nodes:
            node.close()


def test_the_type_rule_is_checked_on_receipt_too(trio: list[Node]) -> None:
    """A member that bypasses its own node's posting checks gets the voucher type's rule applied by
    every receiver, with the same reason everywhere."""
    head, branch, other = trio
    journal = forged_revision("BR1", "BR1/JRN/00001", (Line("Cash", Side.DR, 1), Line("Capital", Side.CR, 1)))
    blob = forge_entry(branch, "vouchers/BR1/2026-04", lambda m: m.__setitem__(journal.id, encode_revision(journal)))
    reasons = set()
    for node in (head, other):
        result = node.receive([blob])
        assert result.applied == 0 and len(result.quarantined) == 1
        reasons.add(result.quarantined[0])
    assert len(reasons) == 1 and "a Journal may not use cash or bank ledger 'Cash'" in reasons.pop()
    with pytest.raises(RuleViolation, match="Journal"):
        branch.post(draft("journal", "2026-04-01", {"Cash": "1"}, {"Capital": "1"}))


def test_the_type_rule_is_judged_with_the_groups_the_author_had(trio: list[Node]) -> None:
    """The head office names 'Petty' an expense while BR1, not yet knowing, makes its own 'Petty' a
    cash ledger and pays out of it. BR1's payment is valid by the chart it was posted under, so every
    office admits it, whether the head office's record reached it first or not."""
    head, branch, other = trio
    head.add_ledger("Petty", "Indirect Expenses")
    branch.add_ledger("Petty", "Cash-in-Hand")
    paid = branch.post(draft("payment", "2026-04-03", {"Rent": "9"}, {"Petty": "9"}, "tea"))
    send(head, other)  # the head office's record first
    send(branch, other)
    send(branch, head)
    sync(head, branch, other)
    for node in (head, branch, other):
        assert paid.number in {row["number"] for row in voucher_rows(node)}, node.identity.office
        assert not node.quarantined(), node.identity.office
    assert_converged([head, branch, other])
