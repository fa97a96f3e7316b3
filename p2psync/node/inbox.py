"""Receiving entries: verify each, hold it until what it depends on is applied, check it keeps the
books valid, then apply it; anything refused goes to the quarantine with its reason.

An entry of a read scope this office holds no key of is carried, as a relay carries it: its
signature, author, write scope (the document's office), cited policy, sequence and chain are checked
without its content, and it is logged unread (`Batch.carry`), acknowledged and passed on. So is an
entry that stands on one carried here (its author's previous entry, or one it depends on in its
document): this office never applies an update whose ground it has not seen. When a key arrives
(a grant, or the policy that brings it), the carried entries are received again (`open_carried`).

Every step runs in one write transaction, and a refused entry leaves no trace but its quarantine row:
its in-memory document is dropped and reloaded from the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pycrdt import Doc
from sqlmodel import Session, select

from p2psync.books import admit, schema, yupdate
from p2psync.books.change import Change, unmet
from p2psync.books.model import GroupDef, LedgerDef, Revision
from p2psync.books.rules import Chart
from p2psync.errors import P2PSyncError, RuleViolation
from p2psync.node import forks, linked, quarantine
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError, Unreadable
from p2psync.store import log, pending
from p2psync.store.books import Batch, Changed, Values
from p2psync.store.tables import Quarantine

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)


@dataclass
class Received:
    applied: int = 0
    #: Voucher revisions in the applied entries (what a link counts as vouchers received).
    vouchers: int = 0
    duplicates: int = 0
    #: Entries logged unread: this office may not read them, but keeps and passes them on.
    carried: int = 0
    waiting: int = 0
    quarantined: list[str] = field(default_factory=list)
    #: The version vectors of the documents the caller asked about, as of this receive's commit.
    vectors: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class _Candidate:
    """A verified entry waiting to be applied; `row` is set when it waits in the `pending` table."""

    change: Change
    blob: bytes
    policy: int
    row: int | None = None
    #: This office cannot open it: it is only carried (its `change` has the header's fields, no update).
    unread: bool = False
    #: What this office reads of a carried entry through a link (`entry.LinkedOnly`), as opened when
    #: it was verified; a parked one is opened again when it is carried.
    through_link: Change | None = None

    @property
    def order(self) -> tuple[str, str, int]:
        return self.change.key


def receive(node: Node, blobs: Iterable[bytes], vectors_of: Iterable[str] = ()) -> Received:
    """`vectors_of`: documents whose vectors to read in the same transaction (for an acknowledgement,
    without a read of its own)."""
    result = Received()
    with node.store.transaction() as batch:
        _receive_in(node, batch, blobs, result)
        result.waiting = pending.count(batch.session)
        result.vectors = node.shared_vectors(batch.session, sorted(set(vectors_of)), batch.vector)
    return result


def _receive_in(node: Node, batch: Batch, blobs: Iterable[bytes], result: Received) -> None:
    fresh: dict[tuple[str, str, int], _Candidate] = {}
    for blob in blobs:
        candidate = _admit_one(node, batch, blob, result, fresh)
        if candidate is not None:
            fresh[candidate.order] = candidate
    _apply_ready(node, batch, result, list(fresh.values()))


def open_carried(node: Node) -> Received:
    """Receive again, in one transaction, the chains this office carried unread and now holds the key
    of (taken out of the log first: an entry is logged once)."""
    result = Received()
    with node.db.read() as session:
        if not log.carried_docs(session):
            return result
    with node.store.transaction() as batch:
        blobs: list[bytes] = []
        for doc, author, seq, blob in log.carried(batch.session):
            if _readable(node, blob):
                blobs += [envelope for _seq, envelope in log.drop_from(batch.session, doc, author, seq)]
        _receive_in(node, batch, blobs, result)
    return result


def _readable(node: Node, blob: bytes) -> bool:
    header = entry.peek(blob)
    try:
        if header.scope is None:
            node.trust.epoch_key(header.epoch)
        else:
            node.trust.scope_key(header.scope, header.epoch)
    except EntryError:
        return False
    return True


def _admit_one(node: Node, batch: Batch, blob: bytes, result: Received,
               fresh: dict[tuple[str, str, int], _Candidate]) -> _Candidate | None:
    """Verify one entry; it then waits (in memory, or in `pending` past this call) for what it needs."""
    session = batch.session
    try:
        framed = entry.frame(blob)
    except EntryError as exc:
        _quarantine(session, blob, "?", "?", 0, str(exc), result)
        return None
    header = framed[0]
    key = (header.doc, header.author, header.seq)
    held = log.envelope(session, *key)
    if held is not None or key in fresh or pending.is_parked(session, *key):
        if held is not None and held != blob:
            _collide(node, session, blob, held, key, result)
        else:
            result.duplicates += 1
        return None
    unread, through_link = False, None
    try:
        change, _member = node.trust.open(framed)
    except Unreadable as exc:  # its signature, author and revocation cut-off were checked before its key
        change, unread = Change(header.doc, header.author, header.seq, log.CARRIED, header.deps,
                                header.to if header.scope is not None else None), True
        through_link = exc.change if isinstance(exc, entry.LinkedOnly) else None
    except EntryError as exc:
        _quarantine(session, blob, header.doc, _signer(node, framed, header.author), header.seq, str(exc), result,
                    retryable=exc.retryable)
        return None
    if schema.parse_doc_name(change.doc).local:
        _quarantine(session, blob, change.doc, change.author, change.seq, "local books are never shared", result)
        return None
    if unread:
        try:
            admit.check_document(change.doc, _author(node, change.author))
        except RuleViolation as exc:
            _quarantine(session, blob, change.doc, change.author, change.seq, str(exc), result)
            return None
    if header.policy > node.trust.policy.version:
        _quarantine(session, blob, change.doc, change.author, change.seq,
                    f"entry cites policy version {header.policy}, newer than version {node.trust.policy.version} "
                    "held here", result, retryable=True)
        return None
    return _Candidate(change, blob, header.policy, unread=unread, through_link=through_link)


def _collide(node: Node, session: Session, blob: bytes, held: bytes, key: tuple[str, str, int],
             result: Received) -> None:
    """A different entry under a held (document, author, sequence). Only if its author really signed
    it is it the author's equivocation (both entries are kept as proof); anything else was forged or
    damaged on the way (by a relay, say), and the author must not be blamed for it. The held entry
    stays applied: which of the two every office keeps is settled where the first position at which
    two chains part is known, when links compare them (`forks.settle`)."""
    doc, author, seq = key
    try:
        node.trust.open(blob)
    except Unreadable:
        pass  # its author's signature verified: a carrier keeps the proof as a reader does
    except EntryError as exc:
        _quarantine(session, blob, doc, _signer(node, entry.frame(blob), author), seq, str(exc), result)
        return
    forks.record(session, doc, author, seq, held, blob)
    _quarantine(session, blob, doc, author, seq, forks.HELD.format(seq=seq), result)


def _apply_ready(node: Node, batch: Batch, result: Received, fresh: list[_Candidate]) -> None:
    creators = _Creators(batch.session)
    charts = _SeenCharts(batch, creators, lambda office: node.chart(batch.session, office))
    """Apply, in dependency order, every candidate whose dependencies are met: those received now
    and those waiting from earlier calls. What still waits afterwards is kept in `pending`."""
    session = batch.session
    vectors: dict[str, dict[str, int]] = {}

    def applied(doc: str, author: str) -> int:
        if doc not in vectors:
            vectors[doc] = batch.vector(doc)
        return vectors[doc].get(author, 0)

    parked = [_Candidate(replace(row.change, to=entry.declared_links(row.envelope)), row.envelope, row.policy, row.id,
                         unread=row.change.update == log.CARRIED)
              for row in pending.parked(session)]
    waiting = sorted(fresh + parked, key=lambda c: c.order)
    progress = True
    while progress and waiting:
        progress = False
        still: list[_Candidate] = []
        for candidate in waiting:
            if unmet(candidate.change, applied):
                still.append(candidate)
                continue
            if candidate.row is not None:
                pending.unpark(session, candidate.row)
            if candidate.unread or _stands_on_carried(session, candidate.change):
                done = _carry(node, batch, candidate, result)
            else:
                done = _apply(node, batch, candidate.change, candidate.blob, candidate.policy, result, creators, charts)
            if done:
                vectors.setdefault(candidate.change.doc, {})[candidate.change.author] = candidate.change.seq
                progress = True
        waiting = still
    for candidate in waiting:
        if candidate.row is None:
            pending.park(session, candidate.change, candidate.blob, candidate.policy)


def _stands_on_carried(session: Session, change: Change) -> bool:
    """Whether the entry's author's previous entry, or one it depends on in its document, is carried
    unread here: then its update cannot be checked against what it builds on, and it is carried too."""
    links = [(change.author, change.seq - 1)] if change.seq > 1 else []
    links += list(change.deps.get(change.doc, {}).items())
    return any(log.is_carried(session, change.doc, author, seq) for author, seq in links)


def _carry(node: Node, batch: Batch, candidate: _Candidate, result: Received) -> bool:
    """Log an entry unread after the checks its header allows (its cited policy against its chain
    and dependencies, as a reader checks it); the relay's checks, plus those."""
    change = candidate.change
    try:
        _check_cited_policy(batch.session, change, candidate.policy)
    except RuleViolation as exc:
        _quarantine(batch.session, candidate.blob, change.doc, change.author, change.seq, str(exc), result)
        return False
    batch.carry(change, candidate.blob, candidate.policy)
    result.carried += 1
    through_link = candidate.through_link
    if through_link is None and candidate.row is not None and change.to:  # parked: opened again
        through_link = _through_link(node, candidate.blob)
    if through_link is not None:  # sealed for this office through a link: its vouchers are noted
        linked.note(batch.session, through_link, _author(node, change.author).client)
    return True


def _through_link(node: Node, blob: bytes) -> Change | None:
    """What this office reads of an entry only through a link; None if it reads it otherwise, or not."""
    try:
        node.trust.open(blob)
    except entry.LinkedOnly as linked_only:
        return linked_only.change
    except EntryError:
        pass
    return None


def _author(node: Node, node_id: str) -> admit.Author:
    member = node.trust.author(node_id)
    return admit.Author(member.office, member.is_head, member.series, node_id)


def _apply(node: Node, batch: Batch, change: Change, blob: bytes, policy: int, result: Received,
           creators: _Creators, charts: _SeenCharts) -> bool:
    author = _author(node, change.author)
    sync_after = node.trust.policy.sync_after_for(change.doc, change.author, change.seq, policy)
    lock_until = node.trust.policy.lock_until_for(change.doc, change.author, change.seq, policy)

    def inspect(c: Change, state: dict[int, int]) -> int:
        _check_cited_policy(batch.session, c, policy)
        return admit.check_update(c.doc, c.update, author, state, _seen_clocks(batch.session, c))

    def validate(c: Change, changed: Changed, values: Values) -> dict[str, Revision]:
        chart = node.chart(batch.session)
        doc = batch.doc(c.doc)
        masters = batch.doc(schema.MASTERS)
        heads = schema.head_offices(masters) if c.doc == schema.MASTERS else frozenset()
        seen = c.deps.get(schema.MASTERS, {})
        position = admit.Position(c.doc, c.author, c.seq, c.deps, lambda map_name: _records(masters, map_name),
                                  creators, heads, _per_change(lambda office: charts(office, seen)))
        earlier = schema.revision_reader(doc)
        decoded = admit.check_change(c.doc, changed, values, chart, author, sync_after, earlier, position, lock_until)
        admit.check_links(c, decoded, earlier)
        return decoded

    try:
        batch.receive(change, inspect, validate, envelope=blob, policy=policy)
    except P2PSyncError as exc:
        batch.forget(change.doc)
        _quarantine(batch.session, blob, change.doc, change.author, change.seq, str(exc), result)
        return False
    except Exception as exc:  # pycrdt refuses undecodable updates with bare exceptions
        batch.forget(change.doc)
        _quarantine(batch.session, blob, change.doc, change.author, change.seq,
                    f"update cannot be applied: {type(exc).__name__}", result)
        return False
    result.applied += 1
    result.vouchers += batch.logged[-1][4]
    return True


def _per_change(chart_at: Callable[[str], Chart]) -> Callable[[str], Chart]:
    """`chart_at`, asked once per office for one change: every voucher of an entry is judged by the
    chart its one author had (the same dependencies), and asking again per voucher read the masters'
    vector and the log once more for each, the largest per-voucher cost of a first sync's checks."""
    found: dict[str, Chart] = {}

    def chart(office: str) -> Chart:
        if office not in found:
            found[office] = chart_at(office)
        return found[office]
    return chart


def _signer(node: Node, framed: entry.Framed, claimed: str) -> str:
    """Whom a refused entry's quarantine row is charged to: the author its header names only if the
    author really signed it; else nobody ("?"), so that a forger cannot spend a member's share of the
    quarantine, nor get a share of its own by claiming made-up authors."""
    try:
        entry.check_signature(framed, node.trust)
    except EntryError:
        return "?"
    return claimed


def _check_cited_policy(session: Session, change: Change, policy: int) -> None:
    """An author's cited policy version never goes down along its chain, and is at least that of
    every entry it depends on (which its author had applied, so held a policy at least as new): a
    branch that has seen a sync-after or lock date cannot post under an older policy without it."""
    links = [(change.doc, change.author, change.seq - 1)] if change.seq > 1 else []
    links += [(doc, author, seq) for doc, vector in change.deps.items() for author, seq in vector.items()]
    floor = max((held[1] for key in links if (held := log.link(session, *key)) is not None), default=0)
    if policy < floor:
        raise RuleViolation(f"entry cites policy version {policy}, older than version {floor} that its author "
                            "had already cited or depends on")


def _seen_clocks(session: Session, change: Change) -> dict[int, int]:
    """client -> the clock up to which the author had seen that client's items in this document, as
    its dependencies say (the same at every replica, whatever else has arrived there)."""
    seen: dict[int, int] = {}
    for author, seq in change.deps.get(change.doc, {}).items():
        held = log.link(session, change.doc, author, seq)
        if held is not None and author != change.author:
            seen[schema.client_id(author)] = held[0]
    return seen


class _Creators:
    """Which entry of an author created a key, read from the updates themselves (amendments' parents,
    and records of versions that did not say), each key looked up once per receive: a legacy ledger is
    named by every voucher line that uses it."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.found: dict[tuple[str, str, str], int | None] = {}

    def __call__(self, doc: str, author: str, key: str) -> int | None:
        if (doc, author, key) not in self.found:
            self.found[(doc, author, key)] = self._scan(doc, author, key)
        return self.found[(doc, author, key)]

    def _scan(self, doc: str, author: str, key: str) -> int | None:
        for seq, update in log.updates_of(self.session, doc, author):
            try:
                items = yupdate.decode_update(update).items
            except yupdate.UpdateError:
                continue
            if any(item.key == key for item in items):
                return seq
        return None


class _SeenCharts:
    """The chart of an office's books as an author had it when it wrote: the masters records within
    what its entry's masters dependencies show it had seen, and what those masters entries had seen
    in turn (a masters entry depends on everything its author held of the masters, so one step
    closes it). Causal, so the same at every replica; one per (office, dependencies) per receive.
    An entry whose author had seen every masters entry held here (an honest author cites all it
    holds) had the chart this node has now, which `current` keeps decoded between receives."""

    def __init__(self, batch: Batch, creators: _Creators, current: Callable[[str], Chart]) -> None:
        self.batch, self.creators, self.current = batch, creators, current
        self.found: dict[tuple[str, tuple[tuple[str, int], ...]], Chart] = {}

    def __call__(self, office: str, seen: dict[str, int]) -> Chart:
        held = self.batch.vector(schema.MASTERS)
        if all(seen.get(author, 0) >= seq for author, seq in held.items()):
            return self.current(office)
        key = (office, tuple(sorted(seen.items())))
        if key not in self.found:
            self.found[key] = self._build(office, seen)
        return self.found[key]

    def _build(self, office: str, seen: dict[str, int]) -> Chart:
        closed = dict(seen)
        for author, seq in seen.items():
            for other, upto in log.deps_of(self.batch.session, schema.MASTERS, author, seq).get(schema.MASTERS, {}).items():
                closed[other] = max(closed.get(other, 0), upto)
        masters = self.batch.doc(schema.MASTERS)

        def within(record: LedgerDef | GroupDef) -> bool:
            made = record.seq or self.creators(schema.MASTERS, record.author,
                                               schema.record_key(record.name, record.office))
            return made is not None and 0 < made <= closed.get(record.author, 0)

        return schema.chart_of([g for g in schema.read_group_defs(masters) if within(g)],
                               [r for r in schema.read_ledger_defs(masters) if within(r)],
                               schema.head_offices(masters), office, frozenset(schema.read_offices(masters)))


def _records(doc: Doc, map_name: str) -> list:
    return schema.read_ledger_defs(doc) if map_name == schema.LEDGERS else schema.read_group_defs(doc)


def _quarantine(session: Session, blob: bytes, doc: str, author: str, seq: int, reason: str, result: Received,
                retryable: bool = False) -> None:
    result.quarantined.append(reason)
    quarantine.keep(session, blob, doc, author, seq, reason, retryable)


def retry_quarantined(node: Node) -> Received:
    """Try again the entries refused for want of a policy or key, after a newer policy arrived."""
    with node.db.write() as session:
        rows = session.exec(select(Quarantine).where(Quarantine.retryable == True, Quarantine.seq > 0)).all()
        blobs = [row.envelope for row in rows]
        for row in rows:
            session.delete(row)
    return receive(node, blobs) if blobs else Received()
