"""The relay's store and rate limits, without sockets: what is kept, refused, expired and returned.
The store's contract runs against both backends: SQLite and a real PostgreSQL server."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import create_engine, text

from p2psync import chain
from p2psync.errors import StoreError
from p2psync.protocol.entry import Header
from p2psync.relay.postgres import engine_url
from p2psync.relay.schema import SCHEMA_VERSION
from p2psync.relay.server import Bucket, Limits, Refusal, Throttle
from p2psync.relay.store import RelayStore, SqliteRelayStore, Usage, open_store

ORG, OTHER = "a" * 64, "b" * 64


def item(seq: int, blob: bytes | None = None, doc: str = "masters", author: str = "n1") -> tuple[Header, bytes]:
    header = Header(ORG, doc, author, seq, 1, {}, b"\0" * 12, False, 1)
    return header, blob if blob is not None else f"{doc}/{author}/{seq}".encode()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh relay database is: a SQLite file, or a new database on the test PostgreSQL server."""
    return str(tmp_path / "relay.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(location: str) -> Iterator[RelayStore]:
    opened = open_store(location)
    yield opened
    opened.close()


def test_entries_are_kept_per_organisation_in_arrival_order(store: RelayStore) -> None:
    result = store.put_entries(ORG, [item(1), item(2), item(1, doc="vouchers/HO/2024-05")])
    assert [(e.doc, e.seq) for e in result.stored] == [("masters", 1), ("masters", 2), ("vouchers/HO/2024-05", 1)]
    assert [e.id for e in result.stored] == sorted(e.id for e in result.stored)
    assert store.vectors(ORG) == {"masters": {"n1": 2}, "vouchers/HO/2024-05": {"n1": 1}}
    assert store.vectors(ORG, ["masters"]) == {"masters": {"n1": 2}}
    assert store.vectors(OTHER) == {} and store.entries_after(OTHER, 0, 10).entries == []
    assert store.usage_bytes(ORG) == sum(len(b) for _h, b in [item(1), item(2), item(1, doc="vouchers/HO/2024-05")])


def test_duplicates_are_ignored_and_a_different_entry_is_equivocation(store: RelayStore) -> None:
    store.put_entries(ORG, [item(1), item(2)])
    result = store.put_entries(ORG, [item(2), item(2, b"forked"), item(3), item(3, b"forked too")])
    assert [e.seq for e in result.stored] == [3]
    assert result.duplicates == 1
    assert result.equivocations == [("masters", "n1", 2), ("masters", "n1", 3)]
    assert [e.blob for e in store.entries_after(ORG, 0, 10).entries] == [item(1)[1], item(2)[1], item(3)[1]]


def test_a_gap_is_refused_and_a_shuffled_batch_is_stored_in_sequence(store: RelayStore) -> None:
    result = store.put_entries(ORG, [item(2), item(4)])
    assert result.stored == [] and result.gaps == [("masters", "n1", 2), ("masters", "n1", 4)]
    result = store.put_entries(ORG, [item(3), item(1, doc="vouchers/HO/2024-05"), item(1), item(2)])
    assert [(e.doc, e.seq) for e in result.stored] == [("masters", 1), ("vouchers/HO/2024-05", 1),
                                                       ("masters", 2), ("masters", 3)]
    assert store.vectors(ORG)["masters"] == {"n1": 3}


def test_the_quota_stores_all_or_nothing(store: RelayStore) -> None:
    first = item(1)
    store.put_entries(ORG, [first], quota=100)
    result = store.put_entries(ORG, [item(2, b"x" * 60), item(3, b"y" * 60)], quota=100)
    assert result.over_quota and result.stored == []
    assert store.usage_bytes(ORG) == len(first[1])
    assert store.put_entries(ORG, [first], quota=len(first[1])).duplicates == 1  # duplicates cost nothing


def test_pages_skip_what_the_reader_holds(store: RelayStore) -> None:
    store.put_entries(ORG, [item(s) for s in range(1, 6)] + [item(1, author="n2")])
    page = store.entries_after(ORG, 0, 4, {"masters": {"n1": 3}})
    assert [e.seq for e in page.entries] == [4]
    rest = store.entries_after(ORG, page.cursor, 4, {"masters": {"n1": 3}})
    assert [(e.author, e.seq) for e in rest.entries] == [("n1", 5), ("n2", 1)]
    assert store.entries_after(ORG, rest.cursor, 4).entries == []


def test_only_a_newer_policy_replaces_the_held_one(store: RelayStore) -> None:
    assert store.policy(ORG) is None
    assert store.set_policy(ORG, 2, b"v2")
    assert not store.set_policy(ORG, 2, b"v2 again") and not store.set_policy(ORG, 1, b"v1")
    assert store.set_policy(ORG, 3, b"v3")
    held = store.policy(ORG)
    assert held is not None and (held.version, held.blob) == (3, b"v3")


def test_expired_entries_leave_a_floor_that_still_counts_as_held(store: RelayStore) -> None:
    store.put_entries(ORG, [item(1), item(2), item(3), item(1, doc="vouchers/HO/2024-05")])
    store.put_entries(OTHER, [item(1)])
    assert store.expire(time.time() - 3600) == {}  # nothing is an hour old
    assert store.expire(time.time() + 10, exclude=[OTHER]) == {ORG: 4}
    assert store.entries_after(ORG, 0, 10).entries == [] and store.usage_bytes(ORG) == 0
    assert store.vectors(ORG) == {"masters": {"n1": 3}, "vouchers/HO/2024-05": {"n1": 1}}
    again = store.put_entries(ORG, [item(2), item(4)])  # an expired entry is not taken again, the next is no gap
    assert again.duplicates == 1 and [e.seq for e in again.stored] == [4] and again.gaps == []
    assert store.vectors(ORG, ["masters"]) == {"masters": {"n1": 4}}
    assert [e.seq for e in store.entries_after(OTHER, 0, 10).entries] == [1]
    assert store.expire(time.time() + 10, orgs=[OTHER]) == {OTHER: 1}
    assert store.usage() == {ORG: Usage(len(item(4)[1]), 1), OTHER: Usage(0, 0)}


def test_readers_never_skip_an_entry_while_two_stores_write_one_organisation(location: str) -> None:
    """Two stores on one database (as two relay processes have) write one organisation at once; a
    reader following arrival ids, as a member's cursor does, must see every entry exactly once."""
    writers = [open_store(location), open_store(location)]
    reader = open_store(location)
    count = 60
    seen: list[tuple[str, int]] = []

    def write(store: RelayStore, author: str) -> None:
        for seq in range(1, count + 1):
            assert len(store.put_entries(ORG, [item(seq, author=author)]).stored) == 1

    threads = [threading.Thread(target=write, args=(w, f"n{i}")) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    cursor, deadline = 0, time.monotonic() + 60
    while (any(t.is_alive() for t in threads) or len(seen) < 2 * count) and time.monotonic() < deadline:
        page = reader.entries_after(ORG, cursor, 7)
        seen.extend((e.author, e.seq) for e in page.entries)
        cursor = page.cursor
    for thread in threads:
        thread.join()
    assert sorted(seen) == sorted((f"n{i}", s) for i in range(2) for s in range(1, count + 1))
    for opened in (*writers, reader):
        opened.close()


def test_a_shared_store_hears_what_another_process_stored(pg_url: str) -> None:
    here, there = open_store(pg_url), open_store(pg_url)
    assert here.shared and there.shared
    heard: list[str | None] = []
    here.watch(heard.append)
    here.put_entries(ORG, [item(1)])  # its own writes: its server already knows
    there.put_entries(OTHER, [item(1)])
    deadline = time.monotonic() + 20
    while not heard and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert heard == [OTHER]
    here.close()
    there.close()


def test_a_dropped_listening_connection_is_replaced_and_wakes_every_member(pg_url: str) -> None:
    here, there = open_store(pg_url), open_store(pg_url)
    heard: list[str | None] = []
    here.watch(heard.append)

    def hears(what: str | None) -> None:
        deadline = time.monotonic() + 30
        while what not in heard and time.monotonic() < deadline:
            time.sleep(0.05)
        assert what in heard, heard

    with psycopg.connect(pg_url, autocommit=True) as admin:  # as a database restart or a network cut would
        killed = admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()").fetchall()
    assert killed == [(True,)]
    hears(None)  # anything may have been missed meanwhile: every member reads the store again
    there.put_entries(OTHER, [item(1)])
    hears(OTHER)
    here.close()
    there.close()


# ---------------------------------------------------------------- schema versions

#: The tables version 1 of p2psync created (SQLite; PostgreSQL differs in the id and blob types).
V1_TABLES = """
CREATE TABLE relay_entry (id {id}, org VARCHAR NOT NULL, doc VARCHAR NOT NULL, author VARCHAR NOT NULL,
    seq INTEGER NOT NULL, size INTEGER NOT NULL, blob {blob} NOT NULL, UNIQUE (org, doc, author, seq));
CREATE INDEX ix_relay_entry_arrival ON relay_entry (org, id);
CREATE TABLE relay_policy (org VARCHAR NOT NULL, version INTEGER NOT NULL, blob {blob} NOT NULL, PRIMARY KEY (org));
CREATE TABLE relay_usage (org VARCHAR NOT NULL, bytes INTEGER NOT NULL, entries INTEGER NOT NULL, PRIMARY KEY (org));
CREATE TABLE relay_meta ("key" VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY ("key"));
INSERT INTO relay_meta VALUES ('schema_version', '1');
INSERT INTO relay_policy VALUES ('{org}', 4, {policy});
INSERT INTO relay_usage VALUES ('{org}', 12, 2);
INSERT INTO relay_entry (org, doc, author, seq, size, blob) VALUES ('{org}', 'masters', 'n1', 1, 6, {e1});
INSERT INTO relay_entry (org, doc, author, seq, size, blob) VALUES ('{org}', 'masters', 'n1', 2, 6, {e2});
"""


def _engine_for(location: str):  # type: ignore[no-untyped-def]
    return create_engine(engine_url(location) if "://" in location else f"sqlite:///{location}")


def write_version_1(location: str) -> None:
    postgres = "://" in location
    script = V1_TABLES.format(
        id="BIGSERIAL PRIMARY KEY" if postgres else "INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT",
        blob="BYTEA" if postgres else "BLOB", org=ORG,
        **{name: (f"'\\x{value.hex()}'::bytea" if postgres else f"X'{value.hex()}'")
           for name, value in (("policy", b"policy-v4"), ("e1", b"entry1"), ("e2", b"entry2"))})
    engine = _engine_for(location)
    with engine.begin() as conn:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(text(statement))
    engine.dispose()


def test_a_version_1_database_is_upgraded_in_place_with_its_data(location: str) -> None:
    write_version_1(location)
    store = open_store(location)
    assert [(e.seq, e.blob) for e in store.entries_after(ORG, 0, 10).entries] == [(1, b"entry1"), (2, b"entry2")]
    held = store.policy(ORG)
    assert held is not None and (held.version, held.blob) == (4, b"policy-v4")
    assert store.usage() == {ORG: Usage(12, 2)} and store.vectors(ORG) == {"masters": {"n1": 2}}
    assert [e.seq for e in store.put_entries(ORG, [item(3)]).stored] == [3]  # the next one is no gap
    assert store.expire(time.time() - 60) == {}  # entries from before the upgrade count from the upgrade
    assert store.expire(time.time() + 10) == {ORG: 3} and store.vectors(ORG) == {"masters": {"n1": 3}}
    store.close()
    engine = _engine_for(location)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT value FROM relay_meta WHERE key = 'schema_version'")).scalar() \
            == SCHEMA_VERSION == "3"
    engine.dispose()
    open_store(location).close()  # opening an upgraded database again changes nothing


def test_a_database_of_a_newer_relay_is_refused_untouched(location: str) -> None:
    open_store(location).close()
    engine = _engine_for(location)
    with engine.begin() as conn:
        conn.execute(text("UPDATE relay_meta SET value = '9' WHERE key = 'schema_version'"))
    engine.dispose()
    with pytest.raises(StoreError, match="relay schema version '9'"):
        open_store(location)


def test_an_unusable_database_location_is_a_precise_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match=r"cannot use relay database postgresql://nobody:\*\*\*@127\.0\.0\.1:1/x: .*refused"):
        open_store("postgresql://nobody:secret@127.0.0.1:1/x")
    with pytest.raises(StoreError, match="give a file path or a postgresql:// URL"):
        open_store("mysql://127.0.0.1/x")
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="cannot use relay database"):
        open_store(tmp_path / "dir.db")


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


def test_chain_heads_hashes_and_dropping_a_losing_side(store: RelayStore) -> None:
    """The relay keeps each author's chain head per document (whole chains only), the entries' hashes
    to find where two chains part, and drops its side of an equivocation when it lost."""
    blobs = [item(seq)[1] for seq in (1, 2, 3)]
    store.put_entries(ORG, [item(1), item(2)])
    store.put_entries(ORG, [item(3), item(1, doc="vouchers/HO/2024-05")])
    heads = [None]
    for blob in blobs:
        heads.append(chain.link(heads[-1], blob))
    assert store.heads(ORG)["masters"] == {"n1": (3, heads[3])}
    assert store.entry_hashes(ORG, "masters", "n1", 2) == [chain.entry_hash(b) for b in blobs[:2]]
    assert store.drop_from(ORG, "masters", "n1", 2) == 2
    assert store.vectors(ORG)["masters"] == {"n1": 1} and store.heads(ORG)["masters"] == {"n1": (1, heads[1])}
    assert store.usage()[ORG] == Usage(len(blobs[0]) + len(item(1, doc="vouchers/HO/2024-05")[1]), 2)
    assert [e.seq for e in store.put_entries(ORG, [item(2, b"the kept side")]).stored] == [2]
    assert store.heads(ORG)["masters"] == {"n1": (2, chain.link(heads[1], b"the kept side"))}
