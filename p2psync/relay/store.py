"""What the relay keeps: sealed entries per organisation, each organisation's newest verified policy,
and per-organisation usage.

The relay is untrusted, so it holds nothing but what members gave it: entry blobs (ciphertext and
their clear headers) and signed policy blobs. `RelayStore` is the interface the server uses; it is
blocking and speaks only in plain values. `SqlRelayStore` implements it on any SQLAlchemy engine;
`SqliteRelayStore` is the embedded default (WAL mode, full fsync on commit: an entry is durable
before it is acknowledged) and `postgres.PostgresRelayStore` the shared one that several relay
processes use at once. `open_store` picks one from what `p2psync relay --db` was given.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import delete, func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, select

from p2psync.deps import Deps
from p2psync.errors import StoreError
from p2psync.protocol.entry import Header
from p2psync.relay.schema import RelayEntry, RelayFloor, RelayPolicy, RelayUsage, prepare
from p2psync.sqlite import sqlite_engine, write_transaction

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------- interface


@dataclass(frozen=True)
class StoredEntry:
    """An entry as the relay holds it; `id` is its arrival order within the organisation."""

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


@dataclass(frozen=True)
class Usage:
    """What one organisation holds at the relay."""

    bytes: int
    entries: int


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
    #: With `over_quota`: the bytes already held and the bytes the new entries needed.
    held_bytes: int = 0
    needed_bytes: int = 0


#: Told which organisation's entries changed (None: perhaps any of them), from a thread of the store's.
OnChange = Callable[[str | None], None]


class RelayStore(Protocol):
    """Storage behind a relay. Every method is atomic and safe to call from several threads."""

    #: True when other relay processes may write the same data: their changes come through `watch`.
    shared: bool
    #: Where the data is, for messages (no password).
    where: str

    def put_entries(self, org: str, items: Sequence[tuple[Header, bytes]], quota: int | None = None) -> PutResult:
        """Store the entries not yet held, all or none; duplicates are ignored, a different entry
        for a held (doc, author, seq) is refused as equivocation, one whose author's previous
        sequence is not held is refused as a gap (vectors would otherwise claim what is missing).
        With `quota`, nothing is stored if the organisation's bytes would exceed it.
        Within an organisation, arrival ids become visible to readers in increasing order."""
        ...

    def vectors(self, org: str, docs: Sequence[str] | None = None) -> Deps:
        """Per document (all, or those in `docs`), each author's highest sequence held (or expired)."""
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

    def usage(self) -> dict[str, Usage]:
        """Every organisation's usage, for metrics."""
        ...

    def expire(self, before: float, orgs: Collection[str] | None = None,
               exclude: Collection[str] = ()) -> dict[str, int]:
        """Drop entries stored before `before` (seconds since the epoch) of the organisations in
        `orgs` (all if None) but not in `exclude`; returns how many per organisation. What an author
        had expires as a floor that still counts as held, so nobody is asked to send it again."""
        ...

    def watch(self, on_change: OnChange) -> None:
        """Call `on_change` when another process stores entries (never, for an unshared store)."""
        ...

    def close(self) -> None: ...


def open_store(location: str | Path) -> RelayStore:
    """The store at `location`: a ``postgresql://`` URL, or the path of a SQLite file."""
    text = str(location)
    if text.startswith(("postgresql:", "postgres:", "postgresql+psycopg:")):
        from p2psync.relay.postgres import PostgresRelayStore  # only with the `postgres` extra

        return PostgresRelayStore(text)
    if "://" in text:
        raise StoreError(f"unknown relay database {text.split('://')[0]}://...: give a file path or a "
                         "postgresql:// URL")
    return SqliteRelayStore(Path(text).expanduser())


# ---------------------------------------------------------------- on any SQLAlchemy engine


class SqlRelayStore:
    """The store on one SQLAlchemy engine. Subclasses say how writers to one organisation are kept
    apart (`_lock_org`) and how other processes hear of new entries (`_announce`)."""

    shared = False

    def __init__(self, engine: Engine, where: str, writer_lock: AbstractContextManager[object]) -> None:
        self.engine = engine
        self.where = where
        self._writer_lock = writer_lock
        self._open()

    def _open(self) -> None:
        with self._write(f"cannot use relay database {self.where}") as session:
            self._lock_schema(session)
            upgraded = prepare(session.connection(), self.where)
        if upgraded:
            logger.info("relay database %s upgraded from schema version %s", self.where, upgraded)

    def _lock_schema(self, session: Session) -> None:
        """Keep two processes from creating or upgrading the tables at once."""

    def _lock_org(self, session: Session, org: str) -> None:
        """Keep writers to `org` apart until this transaction ends (so arrival ids commit in order)."""

    def _announce(self, session: Session, org: str) -> None:
        """Tell other processes, once this transaction commits, that `org` has new entries."""

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with _database_errors(f"relay database {self.where}"), Session(self.engine) as session:
            yield session

    @contextmanager
    def _write(self, context: str | None = None) -> Iterator[Session]:
        """A write transaction, committed on normal exit and rolled back on any exception."""
        context = context or f"relay database {self.where}"
        with (self._writer_lock, _database_errors(context),
              write_transaction(self.engine, lambda exc: f"{context}: {_one_line(exc)}") as session):
            yield session

    # ------------------------------------------------------------ entries

    def put_entries(self, org: str, items: Sequence[tuple[Header, bytes]], quota: int | None = None) -> PutResult:
        result = PutResult()
        with self._write() as session:
            self._lock_org(session, org)
            accepted = _plan(session, org, items, result)
            usage = session.get(RelayUsage, org) or RelayUsage(org=org, bytes=0, entries=0)
            added = sum(len(blob) for _h, blob in accepted)
            if quota is not None and accepted and usage.bytes + added > quota:
                result.over_quota, result.held_bytes, result.needed_bytes = True, usage.bytes, added
                return result
            now = int(time.time())
            rows = [RelayEntry(org=org, doc=h.doc, author=h.author, seq=h.seq, size=len(b), stored_at=now, blob=b)
                    for h, b in accepted]
            session.add_all(rows)
            session.flush()
            usage.bytes += added
            usage.entries += len(rows)
            session.add(usage)
            if rows:
                self._announce(session, org)
            result.stored = [StoredEntry(r.id, r.doc, r.author, r.seq, r.blob) for r in rows]  # type: ignore[arg-type]
        return result

    def vectors(self, org: str, docs: Sequence[str] | None = None) -> Deps:
        held = (select(RelayEntry.doc, RelayEntry.author, func.max(RelayEntry.seq))
                .where(RelayEntry.org == org).group_by(RelayEntry.doc, RelayEntry.author))
        floors = select(RelayFloor.doc, RelayFloor.author, RelayFloor.seq).where(RelayFloor.org == org)
        if docs is not None:
            held = held.where(RelayEntry.doc.in_(list(docs)))  # type: ignore[attr-defined]
            floors = floors.where(RelayFloor.doc.in_(list(docs)))  # type: ignore[attr-defined]
        out: Deps = {}
        with self._read() as session:
            for doc, author, seq in [*session.exec(held), *session.exec(floors)]:
                vector = out.setdefault(doc, {})
                vector[author] = max(seq, vector.get(author, 0))
        return out

    def entries_after(self, org: str, after_id: int, limit: int, skip: Deps | None = None) -> Page:
        skip = skip or {}
        with self._read() as session:
            refs = session.exec(
                select(RelayEntry.id, RelayEntry.doc, RelayEntry.author, RelayEntry.seq)
                .where(RelayEntry.org == org, RelayEntry.id > after_id)  # type: ignore[operator]
                .order_by(RelayEntry.id).limit(limit)).all()  # type: ignore[arg-type]
            if not refs:
                return Page([], after_id)
            wanted = [r for r in refs if r[3] > skip.get(r[1], {}).get(r[2], 0)]
            blobs = dict(session.exec(select(RelayEntry.id, RelayEntry.blob)
                                      .where(RelayEntry.id.in_([r[0] for r in wanted])))  # type: ignore[union-attr]
                         .all()) if wanted else {}
        return Page([StoredEntry(i, d, a, s, blobs[i]) for i, d, a, s in wanted], refs[-1][0])  # type: ignore[arg-type]

    def expire(self, before: float, orgs: Collection[str] | None = None,
               exclude: Collection[str] = ()) -> dict[str, int]:
        cutoff = int(before)
        query = select(RelayEntry.org).where(RelayEntry.stored_at < cutoff).distinct()
        if orgs is not None:
            query = query.where(RelayEntry.org.in_(list(orgs)))  # type: ignore[attr-defined]
        if exclude:
            query = query.where(RelayEntry.org.not_in(list(exclude)))  # type: ignore[attr-defined]
        with self._read() as session:
            targets = list(session.exec(query).all())
        counts = {}
        for org in targets:  # one transaction per organisation: no long lock on the others
            with self._write() as session:
                self._lock_org(session, org)
                counts[org] = _expire_org(session, org, cutoff)
        return {org: count for org, count in counts.items() if count}

    # ------------------------------------------------------------ policy and usage

    def policy(self, org: str) -> StoredPolicy | None:
        with self._read() as session:
            row = session.get(RelayPolicy, org)
            return StoredPolicy(row.version, row.blob) if row else None

    def set_policy(self, org: str, version: int, blob: bytes) -> bool:
        with self._write() as session:
            self._lock_org(session, org)
            row = session.get(RelayPolicy, org)
            if row is not None and row.version >= version:
                return False
            session.merge(RelayPolicy(org=org, version=version, blob=blob))
        return True

    def usage_bytes(self, org: str) -> int:
        with self._read() as session:
            row = session.get(RelayUsage, org)
            return row.bytes if row else 0

    def usage(self) -> dict[str, Usage]:
        with self._read() as session:
            return {row.org: Usage(row.bytes, row.entries) for row in session.exec(select(RelayUsage))}

    def watch(self, on_change: OnChange) -> None:
        """Nothing to watch: no other process writes this store."""

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _database_errors(context: str) -> Iterator[None]:
    """Any database failure (server gone, disk full, connection refused) as one `StoreError` line."""
    try:
        yield
    except DBAPIError as exc:
        raise StoreError(f"{context}: {_one_line(exc)}") from None


def _one_line(exc: DBAPIError) -> str:
    return " ".join(str(exc.orig).split())


class SqliteRelayStore(SqlRelayStore):
    """The relay's embedded store: one SQLite file for every organisation it serves, one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the relay database's folder {path.parent}: {exc.strerror}") from None
        engine = sqlite_engine(path, connect_args={"check_same_thread": False}, pool_size=8, max_overflow=8)
        # One writer at a time inside this process: SQLite has one write lock for the whole file.
        super().__init__(engine, str(path), threading.Lock())


# ---------------------------------------------------------------- shared steps


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
    floor_row = session.get(RelayFloor, (org, doc, author))
    floor = floor_row.seq if floor_row else 0
    held_max = max(floor, session.exec(select(func.max(RelayEntry.seq)).where(
        RelayEntry.org == org, RelayEntry.doc == doc, RelayEntry.author == author)).one() or 0)
    old = sorted({h.seq for _p, h, _b in members if h.seq <= held_max})
    held = dict(session.exec(select(RelayEntry.seq, RelayEntry.blob).where(
        RelayEntry.org == org, RelayEntry.doc == doc, RelayEntry.author == author,
        RelayEntry.seq.in_(old))).all()) if old else {}  # type: ignore[attr-defined]
    fresh: dict[int, tuple[Header, bytes]] = {}
    positions: list[int] = []
    for position, header, blob in members:
        known = held[header.seq] if header.seq in held else fresh.get(header.seq, (None, None))[1]
        if known is None and header.seq <= floor:
            result.duplicates += 1  # held once and expired: taking it again would only make it wait again
        elif known is None:
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


def _expire_org(session: Session, org: str, cutoff: int) -> int:
    """Drop one organisation's entries stored before `cutoff`, raising the floors they leave."""
    expired = session.exec(
        select(RelayEntry.doc, RelayEntry.author, func.max(RelayEntry.seq), func.count(),  # type: ignore[call-overload]
               func.sum(RelayEntry.size))
        .where(RelayEntry.org == org, RelayEntry.stored_at < cutoff)
        .group_by(RelayEntry.doc, RelayEntry.author)).all()
    for doc, author, seq, _count, _size in expired:
        floor = session.get(RelayFloor, (org, doc, author)) or RelayFloor(org=org, doc=doc, author=author, seq=0)
        floor.seq = max(floor.seq, seq)
        session.add(floor)
    session.exec(delete(RelayEntry).where(RelayEntry.org == org, RelayEntry.stored_at < cutoff))  # type: ignore[arg-type]
    count = sum(row[3] for row in expired)
    usage = session.get(RelayUsage, org)
    if usage is not None:
        usage.bytes -= sum(row[4] for row in expired)
        usage.entries -= count
        session.add(usage)
    return count
