"""What the relay keeps: sealed entries per organisation, each organisation's newest verified policy,
and per-organisation usage.

The relay is untrusted, so it holds nothing but what members gave it: entry blobs (ciphertext and
their clear headers) and signed policy blobs. `RelayStore` is the interface the server uses; it is
blocking and speaks only in plain values, so that a shared server database can implement it later
and back several relay processes. `SqliteRelayStore` is the embedded default: SQLite through
SQLModel in WAL mode with a full fsync on commit (an entry is durable before it is acknowledged).

Its tables live in their own SQLModel registry, so they never mix with a node's tables.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Index, LargeBinary, UniqueConstraint, func
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import registry
from sqlmodel import Column, Field, Session, SQLModel, select

from p2psync.books.change import Deps
from p2psync.errors import StoreError
from p2psync.protocol.entry import Header
from p2psync.store.db import sqlite_engine, write_transaction

SCHEMA_VERSION = "1"


# ---------------------------------------------------------------- interface


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the relay holds it; `id` is its arrival order within the relay."""

    id: int
    doc: str
    author: str
    seq: int
    blob: bytes


@dataclass(frozen=True)
class Page:
    """One page of entries in arrival order; `cursor` is the last arrival id looked at (pass it back)."""

    entries: list[StoredEntry]
    cursor: int


@dataclass(frozen=True)
class StoredPolicy:
    version: int
    blob: bytes


@dataclass
class PutResult:
    """What `put_entries` did with each entry it was given."""

    stored: list[StoredEntry] = field(default_factory=list)
    duplicates: int = 0
    #: (doc, author, seq) of entries refused because a different entry with that key is held.
    equivocations: list[tuple[str, str, int]] = field(default_factory=list)
    #: (doc, author, seq) of entries refused because the author's previous sequence is not held.
    gaps: list[tuple[str, str, int]] = field(default_factory=list)
    #: True if nothing was stored because the organisation's quota would be exceeded.
    over_quota: bool = False


class RelayStore(Protocol):
    """Storage behind a relay. Every method is atomic and safe to call from several threads."""

    def put_entries(self, org: str, items: Sequence[tuple[Header, bytes]], quota: int | None = None) -> PutResult:
        """Store the entries not yet held, all or none; duplicates are ignored, a different entry
        for a held (doc, author, seq) is refused as equivocation, one whose author's previous
        sequence is not held is refused as a gap (vectors would otherwise claim what is missing).
        With `quota`, nothing is stored if the organisation's bytes would exceed it."""
        ...

    def vectors(self, org: str, docs: Sequence[str] | None = None) -> Deps:
        """Per document (all, or those in `docs`), each author's highest sequence held."""
        ...

    def entries_after(self, org: str, after_id: int, limit: int, skip: Deps | None = None) -> Page:
        """Up to `limit` entries that arrived after `after_id`, in arrival order, leaving out those
        the holder of vectors `skip` already has (looked at, but not returned)."""
        ...

    def policy(self, org: str) -> StoredPolicy | None: ...

    def set_policy(self, org: str, version: int, blob: bytes) -> bool:
        """Keep `blob` if it is newer than the one held; False if it is not. The caller verified it."""
        ...

    def usage_bytes(self, org: str) -> int: ...

    def close(self) -> None: ...


# ---------------------------------------------------------------- SQLite tables


class RelayModel(SQLModel, registry=registry()):
    """Base of the relay's tables: a metadata of their own, apart from a node's."""


class RelayEntry(RelayModel, table=True):
    __tablename__ = "relay_entry"
    __table_args__ = (
        UniqueConstraint("org", "doc", "author", "seq"),
        Index("ix_relay_entry_arrival", "org", "id"),
        {"sqlite_autoincrement": True},  # arrival ids are never reused
    )

    id: int | None = Field(default=None, primary_key=True)
    org: str
    doc: str
    author: str
    seq: int
    size: int
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RelayPolicy(RelayModel, table=True):
    __tablename__ = "relay_policy"

    org: str = Field(primary_key=True)
    version: int
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RelayUsage(RelayModel, table=True):
    __tablename__ = "relay_usage"

    org: str = Field(primary_key=True)
    bytes: int = 0
    entries: int = 0


class RelayMeta(RelayModel, table=True):
    __tablename__ = "relay_meta"

    key: str = Field(primary_key=True)
    value: str


# ---------------------------------------------------------------- SQLite implementation


class SqliteRelayStore:
    """The relay's embedded store: one SQLite file for every organisation it serves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the relay database's folder {path.parent}: {exc.strerror}") from None
        self.engine = sqlite_engine(path, connect_args={"check_same_thread": False},
                                    pool_size=8, max_overflow=8)
        self._lock = threading.Lock()  # one writer at a time inside this process
        self._open()

    def _open(self) -> None:
        try:
            RelayModel.metadata.create_all(self.engine)
            with self._write() as session:
                meta = session.get(RelayMeta, "schema_version")
                if meta is None:
                    session.add(RelayMeta(key="schema_version", value=SCHEMA_VERSION))
                elif meta.value != SCHEMA_VERSION:
                    raise StoreError(f"{self.path} has relay schema version {meta.value!r}; "
                                     f"this p2psync needs {SCHEMA_VERSION}")
        except OperationalError as exc:
            raise StoreError(f"cannot use relay database {self.path}: {exc.orig}") from None

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        """A write transaction, committed on normal exit and rolled back on any exception."""
        with self._lock, write_transaction(self.engine, lambda exc: f"relay database error: {exc.orig}") as session:
            yield session

    # ------------------------------------------------------------ entries

    def put_entries(self, org: str, items: Sequence[tuple[Header, bytes]], quota: int | None = None) -> PutResult:
        result = PutResult()
        with self._write() as session:
            accepted = _plan(session, org, items, result)
            usage = session.get(RelayUsage, org) or RelayUsage(org=org)
            added = sum(len(blob) for _h, blob in accepted)
            if quota is not None and accepted and usage.bytes + added > quota:
                result.over_quota = True
                return result
            rows = [RelayEntry(org=org, doc=h.doc, author=h.author, seq=h.seq, size=len(b), blob=b)
                    for h, b in accepted]
            session.add_all(rows)
            session.flush()
            usage.bytes += added
            usage.entries += len(rows)
            session.add(usage)
            result.stored = [StoredEntry(r.id, r.doc, r.author, r.seq, r.blob) for r in rows]  # type: ignore[arg-type]
        return result

    def vectors(self, org: str, docs: Sequence[str] | None = None) -> Deps:
        query = (select(RelayEntry.doc, RelayEntry.author, func.max(RelayEntry.seq))
                 .where(RelayEntry.org == org).group_by(RelayEntry.doc, RelayEntry.author))
        if docs is not None:
            query = query.where(RelayEntry.doc.in_(list(docs)))  # type: ignore[attr-defined]
        out: Deps = {}
        with self._read() as session:
            for doc, author, seq in session.exec(query):
                out.setdefault(doc, {})[author] = seq
        return out

    def entries_after(self, org: str, after_id: int, limit: int, skip: Deps | None = None) -> Page:
        skip = skip or {}
        with self._read() as session:
            refs = session.exec(
                select(RelayEntry.id, RelayEntry.doc, RelayEntry.author, RelayEntry.seq)
                .where(RelayEntry.org == org, RelayEntry.id > after_id)  # type: ignore[operator]
                .order_by(RelayEntry.id).limit(limit)).all()
            if not refs:
                return Page([], after_id)
            wanted = [r for r in refs if r[3] > skip.get(r[1], {}).get(r[2], 0)]
            blobs = dict(session.exec(select(RelayEntry.id, RelayEntry.blob)
                                      .where(RelayEntry.id.in_([r[0] for r in wanted])))  # type: ignore[union-attr]
                         .all()) if wanted else {}
        return Page([StoredEntry(i, d, a, s, blobs[i]) for i, d, a, s in wanted], refs[-1][0])

    # ------------------------------------------------------------ policy and usage

    def policy(self, org: str) -> StoredPolicy | None:
        with self._read() as session:
            row = session.get(RelayPolicy, org)
            return StoredPolicy(row.version, row.blob) if row else None

    def set_policy(self, org: str, version: int, blob: bytes) -> bool:
        with self._write() as session:
            row = session.get(RelayPolicy, org)
            if row is not None and row.version >= version:
                return False
            session.merge(RelayPolicy(org=org, version=version, blob=blob))
        return True

    def usage_bytes(self, org: str) -> int:
        with self._read() as session:
            row = session.get(RelayUsage, org)
            return row.bytes if row else 0

    def close(self) -> None:
        self.engine.dispose()


def _plan(session: Session, org: str, items: Sequence[tuple[Header, bytes]],
          result: PutResult) -> list[tuple[Header, bytes]]:
    """Which entries to insert, in an order that keeps each author's sequence rising; counts the rest."""
    groups: dict[tuple[str, str], list[tuple[int, Header, bytes]]] = {}
    for position, (header, blob) in enumerate(items):
        groups.setdefault((header.doc, header.author), []).append((position, header, blob))
    placed: list[tuple[int, Header, bytes]] = []
    for (doc, author), members in groups.items():
        placed.extend(_plan_chain(session, org, doc, author, members, result))
    placed.sort(key=lambda item: item[0])
    return [(header, blob) for _position, header, blob in placed]


def _plan_chain(session: Session, org: str, doc: str, author: str,
                members: list[tuple[int, Header, bytes]], result: PutResult) -> list[tuple[int, Header, bytes]]:
    """One author's entries to one document: keep the contiguous run after what is held.

    The run's entries take the batch positions its members had, lowest sequence first, so that an
    author's entries are always stored (and forwarded) in sequence order."""
    held_max = session.exec(select(func.max(RelayEntry.seq)).where(
        RelayEntry.org == org, RelayEntry.doc == doc, RelayEntry.author == author)).one() or 0
    old = sorted({h.seq for _p, h, _b in members if h.seq <= held_max})
    held = dict(session.exec(select(RelayEntry.seq, RelayEntry.blob).where(
        RelayEntry.org == org, RelayEntry.doc == doc, RelayEntry.author == author,
        RelayEntry.seq.in_(old))).all()) if old else {}  # type: ignore[attr-defined]
    fresh: dict[int, tuple[Header, bytes]] = {}
    positions: list[int] = []
    for position, header, blob in members:
        known = held[header.seq] if header.seq in held else fresh.get(header.seq, (None, None))[1]
        if known is None:
            fresh[header.seq] = (header, blob)
            positions.append(position)
        elif known == blob:
            result.duplicates += 1
        else:
            result.equivocations.append((doc, author, header.seq))
    run: list[tuple[Header, bytes]] = []
    next_seq = held_max + 1
    for seq in sorted(fresh):
        if seq <= next_seq:  # the next one, or one missing below what is held
            run.append(fresh[seq])
            next_seq = max(next_seq, seq + 1)
        else:
            result.gaps.append((doc, author, seq))
    return [(position, header, blob) for position, (header, blob) in zip(sorted(positions), run)]
