"""The relay's store and rate limits, without sockets: what is kept, refused and returned."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from p2psync.protocol.entry import Header
from p2psync.relay.server import Bucket, Limits, Refusal, Throttle
from p2psync.relay.store import SqliteRelayStore

ORG, OTHER = "a" * 64, "b" * 64


def item(seq: int, blob: bytes | None = None, doc: str = "masters", author: str = "n1") -> tuple[Header, bytes]:
    header = Header(ORG, doc, author, seq, 1, {}, b"\0" * 12, False, 1)
    return header, blob if blob is not None else f"{doc}/{author}/{seq}".encode()


@pytest.fixture
def store(tmp_path: Path) -> SqliteRelayStore:
    return SqliteRelayStore(tmp_path / "relay.db")


def test_entries_are_kept_per_organisation_in_arrival_order(store: SqliteRelayStore) -> None:
    result = store.put_entries(ORG, [item(1), item(2), item(1, doc="vouchers/HO/2024-05")])
    assert [(e.doc, e.seq) for e in result.stored] == [("masters", 1), ("masters", 2), ("vouchers/HO/2024-05", 1)]
    assert [e.id for e in result.stored] == sorted(e.id for e in result.stored)
    assert store.vectors(ORG) == {"masters": {"n1": 2}, "vouchers/HO/2024-05": {"n1": 1}}
    assert store.vectors(ORG, ["masters"]) == {"masters": {"n1": 2}}
    assert store.vectors(OTHER) == {} and store.entries_after(OTHER, 0, 10).entries == []
    assert store.usage_bytes(ORG) == sum(len(b) for _h, b in [item(1), item(2), item(1, doc="vouchers/HO/2024-05")])


def test_duplicates_are_ignored_and_a_different_entry_is_equivocation(store: SqliteRelayStore) -> None:
    store.put_entries(ORG, [item(1), item(2)])
    result = store.put_entries(ORG, [item(2), item(2, b"forked"), item(3), item(3, b"forked too")])
    assert [e.seq for e in result.stored] == [3]
    assert result.duplicates == 1
    assert result.equivocations == [("masters", "n1", 2), ("masters", "n1", 3)]
    assert [e.blob for e in store.entries_after(ORG, 0, 10).entries] == [item(1)[1], item(2)[1], item(3)[1]]


def test_a_gap_is_refused_and_a_shuffled_batch_is_stored_in_sequence(store: SqliteRelayStore) -> None:
    result = store.put_entries(ORG, [item(2), item(4)])
    assert result.stored == [] and result.gaps == [("masters", "n1", 2), ("masters", "n1", 4)]
    result = store.put_entries(ORG, [item(3), item(1, doc="vouchers/HO/2024-05"), item(1), item(2)])
    assert [(e.doc, e.seq) for e in result.stored] == [("masters", 1), ("vouchers/HO/2024-05", 1),
                                                       ("masters", 2), ("masters", 3)]
    assert store.vectors(ORG)["masters"] == {"n1": 3}


def test_the_quota_stores_all_or_nothing(store: SqliteRelayStore) -> None:
    first = item(1)
    store.put_entries(ORG, [first], quota=100)
    result = store.put_entries(ORG, [item(2, b"x" * 60), item(3, b"y" * 60)], quota=100)
    assert result.over_quota and result.stored == []
    assert store.usage_bytes(ORG) == len(first[1])
    assert store.put_entries(ORG, [first], quota=len(first[1])).duplicates == 1  # duplicates cost nothing


def test_pages_skip_what_the_reader_holds(store: SqliteRelayStore) -> None:
    store.put_entries(ORG, [item(s) for s in range(1, 6)] + [item(1, author="n2")])
    page = store.entries_after(ORG, 0, 4, {"masters": {"n1": 3}})
    assert [e.seq for e in page.entries] == [4]
    rest = store.entries_after(ORG, page.cursor, 4, {"masters": {"n1": 3}})
    assert [(e.author, e.seq) for e in rest.entries] == [("n1", 5), ("n2", 1)]
    assert store.entries_after(ORG, rest.cursor, 4).entries == []


def test_only_a_newer_policy_replaces_the_held_one(store: SqliteRelayStore) -> None:
    assert store.policy(ORG) is None
    assert store.set_policy(ORG, 2, b"v2")
    assert not store.set_policy(ORG, 2, b"v2 again") and not store.set_policy(ORG, 1, b"v1")
    assert store.set_policy(ORG, 3, b"v3")
    held = store.policy(ORG)
    assert held is not None and (held.version, held.blob) == (3, b"v3")


def test_the_store_survives_reopening_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SqliteRelayStore(path)
    store.put_entries(ORG, [item(1)])
    store.close()
    again = SqliteRelayStore(path)
    assert again.vectors(ORG) == {"masters": {"n1": 1}}
    again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"relay_entry", "relay_policy", "relay_usage"} <= tables and "entry" not in tables


def test_a_busy_member_is_slowed_and_a_flooding_one_refused() -> None:
    now = [0.0]
    bucket = Bucket(rate=10, burst=20, clock=lambda: now[0])
    assert bucket.charge(20) == 0
    assert bucket.charge(10) == pytest.approx(1.0)
    now[0] = 1.0
    assert bucket.charge(10) == pytest.approx(1.0)  # one second of debt paid, one more taken
    throttle = Throttle(Limits(entries_per_second=10, entries_burst=10, max_debt_seconds=2), clock=lambda: now[0])
    assert throttle.charge(10, 100) == 0
    assert throttle.charge(20, 100) == pytest.approx(2.0)
    with pytest.raises(Refusal, match="rate limit"):
        throttle.charge(1, 100)
