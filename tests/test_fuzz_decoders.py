"""Property-based fuzzing of every decoder and state machine that reads bytes from outside.

Inputs are mostly valid encodings mutated the way real damage and real attackers mutate them (bit
flips, truncation, splicing two valid inputs, bytes inserted, one JSON field replaced by any JSON
value), plus some pure noise. Each goes through the harness of `fuzz/` for that decoder, whose
oracle is the property: a result or the decoder's own error, never another exception. The receive
paths (node and relay) must also leave the books, or the relay's store, exactly as they were. The
longer, coverage-guided runs of the same harnesses are `python -m fuzz.run`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mutations import mutations

from fuzz.common import quiet_logs, world
from fuzz.harnesses import NAMES, harness
from p2psync.books import model
from p2psync.books.change import Change
from p2psync.books.drafts import Draft
from p2psync.books.importer import parse_csv, parse_json
from p2psync.books.model import Action, Line, Revision, Side, VoucherContent, VoucherType
from p2psync.books.money import MAX_PAISE, format_paise
from p2psync.deps import Deps
from p2psync.protocol import entry
from p2psync.protocol.sync import Ack, Entries, Hello, Refused, SyncConnection
from p2psync.trust.invite import InviteCode
from p2psync.trust.policy import Authority, claimed_version, sign, verify

#: A few seconds per decoder: the suite stays fast; `fuzz/run.py` is for long runs.
BUDGET = {"inbox": 40, "relay": 30, "enroll": 60, "entry": 80}
DEFAULT_BUDGET = 120

def inputs(name: str) -> st.SearchStrategy[bytes]:
    seeds = harness(name).seeds()
    near_valid = st.sampled_from(seeds).flatmap(lambda seed: mutations(seed, seeds))
    return st.one_of(near_valid, near_valid, st.sampled_from(seeds), st.binary(max_size=256))


def _fuzz_test(name: str) -> Callable[[], None]:
    @settings(max_examples=BUDGET.get(name, DEFAULT_BUDGET), deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(data=inputs(name))
    def test(data: bytes) -> None:
        with quiet_logs():
            harness(name).check(data)

    return test


@pytest.mark.parametrize("name", NAMES)
def test_any_input_gives_a_result_or_a_precise_refusal(name: str) -> None:
    _fuzz_test(name)()


def test_every_harness_is_fuzzed_here() -> None:
    import fuzz

    files = {p.stem.removeprefix("fuzz_") for p in Path(fuzz.__file__).parent.glob("fuzz_*.py")}
    assert files == set(NAMES)


# ---------------------------------------------------------------- valid inputs round-trip

ROUND_TRIP = settings(max_examples=60, deadline=None)
NAMES_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"]), min_size=1, max_size=30)
DOCS = st.sampled_from(["masters", "vouchers/HO/2026-04", "vouchers/BR1/2025-12"])
VECTORS = st.dictionaries(DOCS, st.dictionaries(st.text("0123456789abcdef", min_size=1, max_size=32),
                                                st.integers(1, 2**40), max_size=3), max_size=3)
LINES = st.lists(st.tuples(NAMES_TEXT, st.sampled_from(list(Side)), st.integers(1, 10**13)), min_size=1,
                 max_size=6).map(lambda items: tuple(Line(*item) for item in items))
DATES = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31))


@ROUND_TRIP
@given(update=st.binary(max_size=3000), seq=st.integers(1, 2**40), doc=DOCS, deps=VECTORS)
def test_a_sealed_entry_opens_to_the_same_change(update: bytes, seq: int, doc: str, deps: Deps) -> None:
    w = world()
    change = Change(doc, w.head.trust.node_id, seq, update, deps)
    blob = w.head.trust.seal(change)
    scoped = w.head.trust.policy.is_scoped(w.head.trust.policy.epoch)
    assert entry.open_entry(blob, w.head.trust) == replace(change, to=() if scoped else None)  # sealed for no link
    assert entry.peek(blob).seq == seq


@ROUND_TRIP
@given(vectors=VECTORS, policy=st.integers(0, 2**40), blobs=st.lists(st.binary(max_size=200), max_size=8),
       node=st.text(max_size=128), reason=st.text(max_size=600))
def test_sync_frames_parse_to_what_was_framed(vectors: Deps, policy: int, blobs: list[bytes], node: str,
                                              reason: str) -> None:
    ours, theirs = SyncConnection(), SyncConnection()
    hello = theirs.receive(ours.hello(node, "org", "branch", policy, vectors))
    assert hello == Hello(node, "org", "branch", policy, vectors)
    batch = theirs.receive(ours.entries(blobs))
    assert batch == Entries(1, blobs)
    assert ours.receive(theirs.hello("peer", "org", "head", 1, {})).node == "peer"
    held = {doc: vector for doc, vector in vectors.items() if vector}  # an empty vector says nothing
    assert ours.receive(theirs.ack(1, vectors)) == Ack(1, held, len(blobs)) and not ours.in_flight
    assert theirs.receive(ours.refuse(reason)) == Refused(reason[:500])


@ROUND_TRIP
@given(invite_id=st.binary(min_size=4, max_size=4), secret=st.binary(min_size=12, max_size=12),
       pin=st.binary(min_size=3, max_size=3), spacing=st.sampled_from(["-", " ", "", "\n"]))
def test_an_invite_code_reads_back_however_it_is_spaced(invite_id: bytes, secret: bytes, pin: bytes,
                                                        spacing: str) -> None:
    code = InviteCode(invite_id, secret, pin)
    assert InviteCode.parse(code.text().replace("-", spacing).lower()) == code


@ROUND_TRIP
@given(kind=st.sampled_from(list(VoucherType)), date=DATES, lines=LINES, narration=st.text(max_size=80),
       action=st.sampled_from(list(Action)), generation=st.integers(1, 2**31), at=st.text(max_size=30),
       parents=st.lists(st.text("0123456789abcdef", max_size=24), max_size=3))
def test_a_revision_decodes_to_what_was_encoded(kind: VoucherType, date: dt.date, lines: tuple[Line, ...],
                                                narration: str, action: Action, generation: int, at: str,
                                                parents: list[str]) -> None:
    rev = Revision("ab" * 12, "HO/JRN/00001", "HO", VoucherContent(kind, date, lines, narration), action,
                   tuple(parents), generation, "cd" * 16, at, "reason")
    assert model.decode_revision(model.encode_revision(rev)) == rev


@ROUND_TRIP
@given(sync_after=st.none() | DATES, relays=st.lists(st.text(max_size=40), max_size=3))
def test_a_signed_policy_verifies_to_what_was_issued(sync_after: dt.date | None, relays: list[str]) -> None:
    w = world()
    authority = Authority(w.root, w.head.trust.ring)
    issued = authority.settings(w.head.trust.policy, sync_after=sync_after.isoformat() if sync_after else None,
                                relays=tuple(relays))
    blob = sign(issued, w.root)
    assert verify(blob, w.root.public_key(), w.org) == issued
    assert claimed_version(blob) == issued.version


VOUCHERS = st.lists(st.tuples(st.sampled_from(["payment", "receipt", "journal", "sales"]), DATES,
                              st.lists(st.tuples(st.sampled_from(["Rent", "Cash", "Bank", "Sales"]),
                                                 st.booleans(), st.integers(1, MAX_PAISE)), min_size=1, max_size=4),
                              st.text(st.characters(blacklist_categories=["Cs", "Cc", "Zl", "Zp"]), max_size=30)),
                    min_size=1, max_size=5)


@ROUND_TRIP
@given(vouchers=VOUCHERS)
def test_vouchers_written_as_csv_and_json_read_back_the_same(vouchers: list[Any]) -> None:
    rows, items = ["voucher,type,date,ledger,dr,cr,narration"], []
    for n, (kind, date, lines, narration) in enumerate(vouchers, start=1):
        for ledger, debit, paise in lines:
            amount = format_paise(paise)
            quoted = '"' + narration.replace('"', '""') + '"'
            rows.append(f"{n},{kind},{date.isoformat()},{ledger},{amount if debit else ''},"
                        f"{'' if debit else amount},{quoted}")
        items.append({"type": kind, "date": date.isoformat(), "narration": narration,
                      "lines": [{"ledger": ledger, "dr" if debit else "cr": format_paise(paise)}
                                for ledger, debit, paise in lines]})
    from_csv = [i.draft for i in parse_csv("\n".join(rows) + "\n")]
    from_json = [i.draft for i in parse_json(json.dumps(items))]
    expected = [Draft(VoucherType(kind), date, tuple(Line(ledger, Side.DR if debit else Side.CR, paise)
                                                     for ledger, debit, paise in lines), narration.strip())
                for kind, date, lines, narration in vouchers]
    assert from_json == expected
    assert [(d.type, d.date, d.lines) for d in from_csv] == [(d.type, d.date, d.lines) for d in expected]
