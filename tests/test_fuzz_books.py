"""Fuzzing at the level of the books: a branch's real entries, mutated on the way, reach the head
office; voucher files, mutated, are imported. Nothing refused may change a report, and a file is
imported whole or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import draft, open_trio, outgoing, state, voucher_rows
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import mutations

from fuzz.common import quiet_logs
from p2psync.books.importer import read_file
from p2psync.errors import P2PSyncError
from p2psync.node.office import Node

SLOW_EXAMPLES = settings(max_examples=25, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def office_pair(trio_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, Node]]:
    """A head office and a branch holding two vouchers the head office has not received yet."""
    head, branch, other = open_trio(trio_template, tmp_path_factory.mktemp("pair"))
    other.close()
    branch.post(draft("payment", "2026-04-01", {"Rent": "1250.50"}, {"Cash": "1250.50"}, "April rent"))
    branch.post(draft("sales", "2026-04-02", {"Debtors": "99.99"}, {"Sales": "99.99"}, "Invoice 7"))
    yield head, branch
    head.close()
    branch.close()


@SLOW_EXAMPLES
@given(data=st.data())
def test_mutated_entries_from_a_branch_change_nothing_and_lose_nothing(office_pair: tuple[Node, Node],
                                                                       data: st.DataObject) -> None:
    head, branch = office_pair
    real = outgoing(branch, head)
    assert real, "the branch holds entries the head office lacks"
    picked = data.draw(st.sampled_from(real))
    mutated = data.draw(mutations(picked, real).filter(lambda blob: blob not in real))
    before = state(head)
    with quiet_logs():
        result = head.receive([mutated])
    assert result.applied == 0 and result.waiting == 0 and len(result.quarantined) + result.duplicates == 1
    assert state(head) == before


def test_after_mutated_copies_the_real_entries_still_apply(trio: list[Node]) -> None:
    head, branch, _other = trio
    branch.post(draft("payment", "2026-04-01", {"Rent": "1250.50"}, {"Cash": "1250.50"}, "April rent"))
    branch.post(draft("sales", "2026-04-02", {"Debtors": "99.99"}, {"Sales": "99.99"}, "Invoice 7"))
    real = outgoing(branch, head)
    with quiet_logs():
        head.receive([blob[:-1] + bytes([blob[-1] ^ 1]) for blob in real])
        assert head.receive(real).applied == len(real)
    assert {v["number"] for v in voucher_rows(head)} >= {"BR1/PMT/00001", "BR1/SAL/00001"}


GOOD_CSV = """voucher,type,date,ledger,dr,cr,narration
1,payment,2026-04-05,Rent,"1,250.50",,April rent
1,payment,2026-04-05,Cash,,1250.50,
2,sales,2026-04-06,Debtors,99.99,,Invoice 8
2,sales,2026-04-06,Sales,,99.99,
3,contra,2026-04-07,Bank,500,,deposit
3,contra,2026-04-07,Cash,,500,
""".encode()


@SLOW_EXAMPLES
@given(content=st.one_of(mutations(GOOD_CSV, [GOOD_CSV]), st.just(GOOD_CSV)),
       suffix=st.sampled_from([".csv", ".json", ".txt"]))
def test_a_voucher_file_is_imported_whole_or_not_at_all(office_pair: tuple[Node, Node], content: bytes,
                                                       suffix: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    head, _branch = office_pair
    path = tmp_path_factory.mktemp("import") / f"vouchers{suffix}"
    path.write_bytes(content)
    before = state(head)
    try:
        drafts = read_file(path)
        posted = head.post_many(drafts)
    except P2PSyncError as exc:  # a bad file (InvalidInput) or a bad voucher in it (RuleViolation)
        assert str(exc) and "\n" not in str(exc)
        assert state(head) == before
        return
    after = voucher_rows(head)
    assert len(after) == len(before["vouchers"]) + len(drafts) == len(before["vouchers"]) + len(posted)
