"""The write path of the books: every change, made here or received, is applied to its document,
appended to the log and materialized in one SQLite transaction, or not at all."""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc, Map, merge_updates
from sqlmodel import Session

from p2psync.books import schema
from p2psync.books.change import Change
from p2psync.books.interoffice import linked_offices
from p2psync.books.model import Revision
from p2psync.books.yupdate import decode_state_vector
from p2psync.chain import link as link_chain
from p2psync.deps import Deps
from p2psync.errors import StoreError
from p2psync.sqlite import raw_connection
from p2psync.store import docs, log, materialize, queries
from p2psync.store.db import (
    MONTHS_ADDED_AFTER,
    REPORTS_VERSION,
    REPORTS_VERSION_KEY,
    UNLINKED_KEY,
    Database,
    get_setting,
    set_setting,
)
from p2psync.store.docs import LoadedDoc
from p2psync.store.tables import LedgerMonthRow, Snapshot

logger = logging.getLogger(__name__)

#: How many documents stay in memory (besides the masters). A month of a busy office is a few MB.
MAX_CACHED_DOCS = 32

#: How many of the entries it committed last a store remembers (see `BookStore.sealed_after`).
RECENT_ENTRIES = 256

#: A logged entry as the links send it: (entry id, document, author, sequence, voucher revisions it
#: carries, sealed entry or None for local books, which never leave the node).
Logged = tuple[int, str, str, int, int, bytes | None]

#: Keys changed per root map, with the action ("add", "update", "delete") Yjs reported.
Changed = dict[str, dict[str, str]]
#: The values of the keys added or updated per root map, as the transaction left them.
Values = dict[str, dict[str, Any]]
#: Inspects a received change after it was applied in memory; raises to refuse it. Returns the voucher
#: revisions it decoded, by key, which are then materialized without decoding them again.
Validator = Callable[[Change, Changed, Values], dict[str, Revision]]
#: Reads a received change's update before it is applied, given the document's state vector here;
#: raises to refuse it, else returns the author's clock after it.
Inspector = Callable[[Change, dict[int, int]], int]


def _transact(doc: Doc, mutate: Callable[[Doc], None]) -> bytes:
    """Run `mutate` in one transaction; the update of that transaction alone. Unlike a diff against
    the state before, its delete set holds only what this transaction deleted, which is all a
    receiver lets an author's update delete."""
    updates: list[bytes] = []
    subscription = doc.observe(lambda event: updates.append(event.update))
    try:
        with doc.transaction(origin="local"):
            mutate(doc)
    finally:
        doc.unobserve(subscription)
    return updates[-1] if updates else b"\x00\x00"


#: The signature of a `Watch` recorder, given rather than read: pycrdt asks `inspect.signature` of every
#: observer it subscribes (to pass the transaction or not), which took 7 µs of the 10 a subscription cost.
_ONE_ARGUMENT = inspect.Signature([inspect.Parameter("event", inspect.Parameter.POSITIONAL_ONLY)])


class Watch:
    """Collects which keys of which root maps a transaction changed, and their new values (Yjs
    reports each as the map then holds it: reading them from the map again cost more than the rest
    of the event)."""

    def __init__(self, doc: Doc, name: str) -> None:
        self.changed: Changed = defaultdict(dict)
        self.values: Values = defaultdict(dict)
        maps = schema.MASTERS_MAPS if schema.parse_doc_name(name).is_masters else (schema.REVISIONS,)
        self._subs: list[tuple[Map, Any]] = []
        for map_name in maps:
            root = schema.root(doc, map_name)
            self._subs.append((root, root.observe(self._recorder(map_name))))

    def _recorder(self, map_name: str) -> Callable[[Any], None]:
        def record(event: Any) -> None:
            changed, values = self.changed[map_name], self.values[map_name]
            for key, info in event.keys.items():
                changed[key] = info["action"]
                if "newValue" in info:
                    values[key] = info["newValue"]
        record.__signature__ = _ONE_ARGUMENT  # type: ignore[attr-defined]
        return record

    def close(self) -> None:
        for root, sub in self._subs:
            root.unobserve(sub)


class BookStore:
    """One node's books: documents cached in memory, kept in step with the log on disk.

    The cache is bounded: past `MAX_CACHED_DOCS` the least recently used documents are dropped
    (snapshotted first when a write transaction is at hand), so a head office that has touched every
    month of every office does not hold them all; the masters document stays, every check reads it."""

    def __init__(self, db: Database, author: str, client_id: int,
                 seal: Callable[[Change], bytes | None] | None = None, policy: Callable[[], int] = lambda: 0) -> None:
        self.db = db
        self.author = author
        self.client_id = client_id
        #: Turns a local change into the signed, encrypted entry that is logged and sent.
        self.seal = seal
        #: The policy version this node's sealed entries cite.
        self.policy = policy
        self._docs: OrderedDict[str, LoadedDoc] = OrderedDict()
        #: Leave due snapshots to `write_due_snapshots` instead of writing them inside the change's
        #: own transaction (a running node does, when idle: a snapshot re-encodes a whole month).
        self.defer_snapshots = False
        #: The newest sealed entry this store committed: lets a running node wake its links after a
        #: post without a round trip to the database.
        self.last_sealed = 0
        #: The entries this store committed last, oldest first (replaced whole, never changed in
        #: place: the event loop reads it while the worker commits).
        self._recent: tuple[Logged, ...] = ()
        #: The session of the write transaction `transaction` has open, and the documents in memory
        #: known to be level with the log inside it: it holds the write lock, and every change it
        #: makes to the log passes through its batch, which keeps them level.
        self._writing: Session | None = None
        self._level: set[str] = set()

    # ------------------------------------------------------------ reading

    def loaded(self, session: Session, name: str) -> LoadedDoc:
        """The document as of the log, catching up with entries another process appended."""
        cached = self._docs.get(name)
        writing = session is self._writing
        if cached is None:
            cached = docs.load(session, name, self.client_id)
            self._docs[name] = cached
        else:
            self._docs.move_to_end(name)
            if not (writing and name in self._level):  # asked once per write: a receive asks up to 4 times
                for entry_id, update in log.after(session, name, cached.upto):
                    cached.doc.apply_update(update)
                    cached.upto = entry_id
                    cached.entries += 1
        if writing:
            self._level.add(name)
        return cached

    def read_doc(self, name: str) -> Doc:
        with self.db.read() as session:
            doc = self.loaded(session, name).doc
        self._evict(self._least_used())
        return doc

    def revisions(self, number: str) -> list[Revision]:
        """Every revision of voucher `number` (none if there is no such voucher), from its documents."""
        with self.db.read() as session:
            revs = queries.revisions(session, number, self._reader(session))
        self._evict(self._least_used())
        return revs

    def _reader(self, session: Session) -> materialize.Stored:
        def read(name: str, ids: list[str]) -> list[Revision]:
            return schema.read_revisions(self.loaded(session, name).doc, ids)
        return read

    def _least_used(self) -> list[LoadedDoc]:
        """The documents beyond the cache's bound, least recently used first (never the masters)."""
        extra = len(self._docs) - MAX_CACHED_DOCS
        if extra <= 0:
            return []
        return [loaded for name, loaded in self._docs.items() if name != schema.MASTERS][:extra]

    def _evict(self, stale: list[LoadedDoc]) -> None:
        for loaded in stale:
            self._docs.pop(loaded.name, None)

    # ------------------------------------------------------------ writing

    @contextmanager
    def transaction(self) -> Iterator[Batch]:
        """A batch of changes committed together; on any failure nothing is written and the
        documents it touched are dropped from memory, to be reloaded from the log."""
        touched: set[str] = set()
        try:
            with self.db.write() as session:
                self._writing, self._level = session, set()
                batch = Batch(self, session, touched)
                yield batch
                if not self.defer_snapshots:
                    batch.save_due_snapshots()
                stale = self._least_used()
                for loaded in stale:  # so that loading it again replays little of the log
                    if loaded.entries != loaded.snapshot_entries:
                        docs.save_snapshot(session, loaded)
        except BaseException:
            for name in touched:
                self._docs.pop(name, None)
            raise
        finally:
            self._writing = None
        if batch.logged:
            self._recent = (*self._recent, *batch.logged)[-RECENT_ENTRIES:]
            self.last_sealed = max([self.last_sealed, *(row[0] for row in batch.logged if row[5] is not None)])
        self._evict(stale)

    def sealed_after(self, after_id: int, upto: int) -> list[tuple[int, str, str, int, int, bytes]] | None:
        """The sealed entries logged after `after_id`, from memory, if this store committed every
        entry from `after_id` to at least `upto` itself (so no other process on the home wrote in
        between); None when memory cannot tell, and the log must be read. Nothing, when `after_id` is
        past `upto` and past this store's last commit (which, writers being serialized, held the
        newest entry of the log when it committed; later ones of other processes are announced by
        the runtime's poll)."""
        if self._recent and after_id >= max(upto, self._recent[-1][0]):
            return []
        newer = [row for row in self._recent if row[0] > after_id]
        if not newer or newer[-1][0] < upto or any(row[0] != after_id + n for n, row in enumerate(newer, start=1)):
            return None
        return [(entry_id, doc, author, seq, vouchers, blob) for entry_id, doc, author, seq, vouchers, blob in newer
                if blob is not None]

    def forget(self) -> None:
        self._docs.clear()

    def write_snapshots(self) -> None:
        """Snapshot every document that changed since its last snapshot (on clean shutdown)."""
        with self.db.write() as session:
            for loaded in self._docs.values():
                if loaded.entries != loaded.snapshot_entries:
                    docs.save_snapshot(session, loaded)

    def check_snapshots(self) -> None:
        """Rebuild the caches from the log if the snapshot table itself is damaged (a torn page):
        a damaged snapshot *value* is caught by its checksum when loaded, but a damaged table would
        fail the next write to it. SQLite checks that table's pages alone (quick_check(TABLE))."""
        try:
            with self.db.read() as session:
                found = session.connection().exec_driver_sql("PRAGMA quick_check(snapshot)").scalars().all()
        except StoreError as exc:
            found = [str(exc)]
        if found != ["ok"]:
            logger.warning("snapshot table is damaged (%s); rebuilding every cache from the entry log", found[0][:200])
            self.rebuild()

    def write_due_snapshots(self) -> int:
        """Snapshot the documents in memory that are due one; how many were written."""
        due = [loaded for loaded in self._docs.values() if docs.snapshot_due(loaded)]
        if due:
            with self.db.write() as session:
                for loaded in due:
                    docs.save_snapshot(session, loaded)
        return len(due)

    def check_reports(self) -> None:
        """Rebuild the report tables from the documents if another version of p2psync made them: their
        layout differs (the entry log and the snapshots are left as they are)."""
        with self.db.read() as session:
            held = get_setting(session, REPORTS_VERSION_KEY, "1")
        if held == MONTHS_ADDED_AFTER:
            logger.info("report tables of version %s; adding the monthly ledger totals of version %s", held,
                        REPORTS_VERSION)
            self.db.add_tables([LedgerMonthRow])
            with self.db.write() as session:
                materialize.months_from_lines(raw_connection(session))
                set_setting(session, REPORTS_VERSION_KEY, REPORTS_VERSION)
        elif held != REPORTS_VERSION:
            logger.info("report tables of version %s; rebuilding them as version %s", held, REPORTS_VERSION)
            self.rebuild(snapshots=False)

    def link_log(self, cited: Callable[[bytes], int]) -> int:
        """Record each entry's clock and cited policy where an older version did not (see
        `Database.upgrade`), by replaying each such document's log; how many documents it replayed.
        `cited` reads the policy version from a sealed entry."""
        with self.db.read() as session:
            if get_setting(session, UNLINKED_KEY) is None:
                return 0
        with self.db.write() as session:
            names = log.unlinked(session)
            for name in names:
                doc = schema.new_doc(name)
                chains: dict[str, bytes] = {}
                for entry_id, author, update, envelope in list(log.replay(session, name)):
                    doc.apply_update(update)
                    clock = decode_state_vector(doc.get_state()).get(schema.client_id(author), 0)
                    chain = None
                    if envelope:
                        chain = chains[author] = link_chain(chains.get(author), envelope)
                    log.set_link(session, entry_id, clock, cited(envelope) if envelope else 0, chain)
            raw_connection(session).execute("DELETE FROM setting WHERE key = ?", (UNLINKED_KEY,))
        return len(names)

    def rebuild(self, snapshots: bool = True) -> None:
        """Recreate every materialized table, and the snapshots too unless told otherwise, from the
        log alone, one document at a time (none is kept in memory)."""
        self.forget()
        self.db.recreate([*([Snapshot] if snapshots else []), *materialize.TABLES], materialize.OBSOLETE_TABLES)
        with self.db.write() as session:
            names = log.documents(session)
            for name in names:
                loaded = docs.load(session, name, self.client_id)
                if schema.parse_doc_name(name).is_masters:
                    materialize.masters(session, loaded.doc)
                else:
                    revisions = schema.read_revisions(loaded.doc, schema.root(loaded.doc, schema.REVISIONS).keys())
                    materialize.vouchers(session, name, revisions, self._rebuild_reader(session, loaded))
                if snapshots:
                    docs.save_snapshot(session, loaded)
            if schema.MASTERS not in names:
                materialize.masters(session, schema.new_doc(schema.MASTERS))
            set_setting(session, REPORTS_VERSION_KEY, REPORTS_VERSION)

    def _rebuild_reader(self, session: Session, loaded: LoadedDoc) -> materialize.Stored:
        """Reads revisions from the document being rebuilt, or loads another one (a voucher amended in
        a document other than its own), without keeping it."""
        def read(name: str, ids: list[str]) -> list[Revision]:
            doc = loaded.doc if name == loaded.name else docs.load(session, name, self.client_id).doc
            return schema.read_revisions(doc, ids)
        return read


@dataclass
class _Held:
    """A local change of vouchers written to its document and its report rows, its entry not yet
    logged (`Batch.coalescing`)."""

    doc: str
    to: tuple[str, ...]
    update: bytes
    deps: Deps
    written: dict[str, Revision]
    clock: int


class Batch:
    """Changes inside one write transaction."""

    def __init__(self, store: BookStore, session: Session, touched: set[str]) -> None:
        self.store = store
        self.session = session
        self._touched = touched
        self.changes: list[Change] = []
        self.logged: list[Logged] = []
        #: Version vectors read in this batch, kept level with every entry it logs (see `vector`).
        self._vectors: dict[str, dict[str, int]] = {}
        #: While `coalescing`, the voucher changes whose entries are not logged yet, in order.
        self._held: list[_Held] | None = None

    def vector(self, name: str) -> dict[str, int]:
        """The document's version vector as this transaction holds it (a copy to keep): read from the
        log once per batch, then kept level by each entry the batch logs. A receive asked it up to four
        times per entry and a post twice, at some 8 µs each. Entries taken out of the log inside a
        batch (`log.drop_from`) must be taken before it is first asked."""
        held = self._vectors.get(name)
        if held is None:
            held = self._vectors[name] = log.vector(self.session, name)
        return dict(held)

    def _count(self, change: Change) -> None:
        held = self._vectors.get(change.doc)
        if held is not None:
            held[change.author] = max(held.get(change.author, 0), change.seq)

    def forget(self, name: str) -> None:
        """Drop a document from memory after a refused change; it is reloaded from the log."""
        self.store._docs.pop(name, None)

    @contextmanager
    def part(self) -> Iterator[None]:
        """A part of the batch that a failure undoes alone (an SQLite savepoint): group commit puts
        several callers' posts in one transaction, and one refused must not undo the others. On
        failure every document the batch touched is dropped from memory, to be reloaded from the log
        as this transaction now holds it (the parts before this one included)."""
        db = raw_connection(self.session)
        logged, changes, held = len(self.logged), len(self.changes), len(self._held or ())
        db.execute("SAVEPOINT part")
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK TO part")
            db.execute("RELEASE part")
            self._vectors.clear()
            del self.logged[logged:], self.changes[changes:]
            for name in self._touched:
                self.store._docs.pop(name, None)
            if self._held is not None:
                del self._held[held:]
                self._reapply_held()
            raise
        db.execute("RELEASE part")

    @contextmanager
    def coalescing(self) -> Iterator[None]:
        """Voucher changes made inside are written to their documents and report rows at once, and
        logged at the end as one entry per run of consecutive changes of a document (for the same
        offices): group commit's posts, each a part of its own, then cost one signature, one log row
        and one entry to receive per document, as a batch posted together does. A change of another
        kind to a document holding such changes logs them first, so every entry's update continues
        its author's clocks exactly."""
        self._held = []
        try:
            yield
            self._log_held()
        finally:
            self._held = None

    def _reapply_held(self) -> None:
        """After a part was undone and the documents dropped from memory: the changes held before it
        are in no log yet, so they are applied again to the documents reloaded from it."""
        for held in self._held or ():
            self.store.loaded(self.session, held.doc).doc.apply_update(held.update)

    def _log_held(self) -> None:
        """Log the held changes as entries, one per run of consecutive changes of a document for the
        same offices."""
        runs: list[list[_Held]] = []
        last: dict[str, list[_Held]] = {}
        for held in self._held or ():
            run = last.get(held.doc)
            if run is None or run[-1].to != held.to:
                run = last[held.doc] = []
                runs.append(run)
            run.append(held)
        if self._held:
            self._held.clear()
        for run in runs:
            self._log_run(run)

    def _log_run(self, run: list[_Held]) -> None:
        name, author = run[0].doc, self.store.author
        deps: Deps = {}
        written: dict[str, Revision] = {}
        for held in run:
            for dep_doc, vector in held.deps.items():
                merged = deps.setdefault(dep_doc, {})
                for who, seq in vector.items():
                    merged[who] = max(merged.get(who, 0), seq)
            written.update(held.written)
        updates = [held.update for held in run]
        change = Change(doc=name, author=author, seq=self.vector(name).get(author, 0) + 1,
                        update=updates[0] if len(updates) == 1 else merge_updates(*updates), deps=deps,
                        to=run[0].to)
        envelope = self.store.seal(change) if self.store.seal else None
        policy = 0 if schema.parse_doc_name(name).local else self.store.policy()
        self._log(self.store.loaded(self.session, name), change, len(written), local=True, envelope=envelope,
                  clock=run[-1].clock, policy=policy)
        self.changes.append(change)

    def doc(self, name: str) -> Doc:
        self._touched.add(name)
        return self.store.loaded(self.session, name).doc

    def revisions(self, number: str) -> list[Revision]:
        """Every revision of voucher `number` (none if there is no such voucher), from its documents."""
        return queries.revisions(self.session, number, self._read)

    def _read(self, name: str, ids: list[str]) -> list[Revision]:
        return schema.read_revisions(self.doc(name), ids)

    def change(self, name: str, mutate: Callable[[Doc], None], deps: Deps | None = None,
               revisions: Iterable[Revision] = ()) -> Change | None:
        """Make a local change; returns the logged change, or None when it changed nothing.
        `revisions` are the voucher revisions `mutate` writes, as it writes them (not read back): when
        given, they are the change, and no observer needs to report it (converting every value
        written back to Python cost as much again as writing it)."""
        self._touched.add(name)
        if self._held and not revisions and any(held.doc == name for held in self._held):
            self._log_held()
        loaded = self.store.loaded(self.session, name)
        written = {rev.id: rev for rev in revisions}
        watch = None if written else Watch(loaded.doc, name)
        try:
            update = _transact(loaded.doc, mutate)
        finally:
            if watch is not None:
                watch.close()
        changed: Changed = {schema.REVISIONS: dict.fromkeys(written, "add")} if watch is None else watch.changed
        if not changed:
            return None
        author = self.store.author
        held = self.vector(name)
        vector = {a: s for a, s in held.items() if a != author}
        all_deps: Deps = {name: vector} if vector else {}
        for dep_doc, dep_vector in (deps or {}).items():
            if dep_doc != name and dep_vector:
                all_deps.setdefault(dep_doc, {}).update(dep_vector)
        to = linked_offices(written.values(), schema.revision_reader(loaded.doc)) if written else ()
        clock = decode_state_vector(loaded.doc.get_state()).get(self.store.client_id, 0)
        if self._held is not None and written and not schema.parse_doc_name(name).is_masters:
            self._held.append(_Held(name, to, update, all_deps, written, clock))
            materialize.vouchers(self.session, name, list(written.values()), self._read)
            return None
        change = Change(doc=name, author=author, seq=held.get(author, 0) + 1, update=update, deps=all_deps, to=to)
        envelope = self.store.seal(change) if self.store.seal else None
        policy = 0 if schema.parse_doc_name(name).local else self.store.policy()
        self._record(loaded, change, changed, written, local=True, envelope=envelope, clock=clock, policy=policy)
        return change

    def receive(self, change: Change, inspect: Inspector, validate: Validator | None = None,
                envelope: bytes | None = None, policy: int = 0) -> bool:
        """Apply a change from another node whose dependencies are met; False if already held.
        `inspect` reads the update before the document sees it, and refuses by raising."""
        if log.has(self.session, *change.key):
            return False
        self._touched.add(change.doc)
        loaded = self.store.loaded(self.session, change.doc)
        clock = inspect(change, decode_state_vector(loaded.doc.get_state()))
        watch = Watch(loaded.doc, change.doc)
        try:
            loaded.doc.apply_update(change.update)
        finally:
            watch.close()
        decoded = validate(change, watch.changed, watch.values) if validate is not None else {}
        self._record(loaded, change, watch.changed, decoded, local=False, envelope=envelope, clock=clock,
                     policy=policy)
        return True

    def carry(self, change: Change, envelope: bytes, policy: int) -> None:
        """Log an entry this office cannot read (`change` is its header's, with no update): it is
        kept, chained, acknowledged and passed on like any other, but nothing is applied, so no
        document, snapshot or report table ever holds anything of it."""
        carried = Change(change.doc, change.author, change.seq, log.CARRIED, change.deps)
        entry_id = log.append(self.session, carried, local=False, envelope=envelope, clock=0, policy=policy)
        self.logged.append((entry_id, change.doc, change.author, change.seq, 0, envelope))
        self._count(change)

    def _log(self, loaded: LoadedDoc, change: Change, vouchers: int, *, local: bool, envelope: bytes | None,
             clock: int, policy: int) -> None:
        loaded.upto = log.append(self.session, change, local=local, envelope=envelope, clock=clock, policy=policy,
                                 vouchers=vouchers)
        self.logged.append((loaded.upto, change.doc, change.author, change.seq, vouchers, envelope))
        self._count(change)
        loaded.entries += 1

    def _record(self, loaded: LoadedDoc, change: Change, changed: Changed, decoded: dict[str, Revision], *,
                local: bool, envelope: bytes | None = None, clock: int = -1, policy: int = 0) -> None:
        vouchers = sum(1 for action in changed.get(schema.REVISIONS, {}).values() if action == "add")
        self._log(loaded, change, vouchers, local=local, envelope=envelope, clock=clock, policy=policy)
        if schema.parse_doc_name(change.doc).is_masters:
            if changed:
                materialize.masters(self.session, loaded.doc)
        elif changed.get(schema.REVISIONS):
            keys = changed[schema.REVISIONS]
            missing = [key for key in keys if key not in decoded]  # none, unless a caller did not say
            revisions = [decoded[key] for key in keys if key in decoded]
            if missing:
                revisions += schema.read_revisions(loaded.doc, missing)
            materialize.vouchers(self.session, change.doc, revisions, self._read)
        self.changes.append(change)

    def save_due_snapshots(self) -> None:
        for name in self._touched:
            loaded = self.store._docs.get(name)
            if loaded is not None and docs.snapshot_due(loaded):
                docs.save_snapshot(self.session, loaded)

