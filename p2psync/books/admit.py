"""Whether a change received from another node keeps the books valid.

Run after the change was applied to the in-memory document and before anything is written; a
refusal raises `RuleViolation` and the caller drops the document and writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from p2psync.books import schema, yupdate
from p2psync.books.change import Change
from p2psync.books.interoffice import check_mirror, decode_dispute, linked_offices
from p2psync.books.model import (
    Action,
    GroupDef,
    LedgerDef,
    Opening,
    Revision,
    decode_group,
    decode_ledger,
    decode_office,
    decode_opening,
    decode_revision,
    number_series,
)
from p2psync.books.money import MAX_PAISE, format_paise
from p2psync.books.rules import Chart, check_balanced, check_type_rule, inter_office_code
from p2psync.errors import P2PSyncError, RuleViolation

#: Maps whose values may be replaced after they were first written.
_REWRITABLE = {schema.OPENINGS, schema.OFFICES}


@dataclass(frozen=True)
class Author:
    """Who made a change, as their certificate says."""

    office: str
    is_head: bool
    series: int = 1
    #: The author's node id: the `author` every record it writes must carry.
    node: str = ""

    @property
    def client(self) -> int:
        """The author's own Yjs client id: the only one its updates may write under."""
        return schema.client_id(self.node)


#: Struct kinds an update of the books may hold: a map value (one JSON string), or a value of the
#: same transaction already overwritten (Yjs encodes it as deleted content).
_ALLOWED_KINDS = {yupdate.ANY, yupdate.DELETED}


def check_update(doc_name: str, update: bytes, author: Author, state: dict[int, int],
                 held: dict[int, int]) -> int:
    """Refuse an update that does more than write its author's own records, before pycrdt sees it;
    returns the author's clock after it. `state` is the document's state vector here (client -> next
    clock); `held` bounds, for every other client, the clocks the author had seen (as its
    dependencies say): an update may name another client's items (to replace a value it may write)
    only below that bound, so it means the same at every replica whatever else has arrived, and never
    reaches items that do not exist yet.

    The rules (docs/protocol.md, "What an update may hold"): every struct is under the author's own
    client id; the clocks continue exactly from the author's clock here; a struct names as parent only
    a root map of this document and a key the author may write, or inherits them from an origin it may
    see; no right origins, nested types, or content other than one JSON string per value; the delete
    set covers only the author's own clocks below its new clock, or another client's below `held`."""
    try:
        decoded = yupdate.decode_update(update)
    except yupdate.UpdateError as exc:
        raise RuleViolation(f"{doc_name}: {exc}") from None
    own = author.client
    clock = state.get(own, 0)
    maps = set(schema.maps_of(doc_name))
    for item in decoded.items:
        if item.client != own:
            raise RuleViolation(f"{doc_name}: update writes under client id {item.client}, not its author's {own}")
        if item.clock != clock:
            raise RuleViolation(f"{doc_name}: update's clock {item.clock} does not continue its author's clock "
                                f"{clock} here")
        clock += item.length
        _check_item(doc_name, item, author, maps, own, held)
    for client, ranges in decoded.deletes.items():
        bound = clock if client == own else held.get(client, 0)
        for start, length in ranges:
            if length <= 0 or start + length > bound:
                raise RuleViolation(f"{doc_name}: update deletes items {client}:{start}+{length}, which its "
                                    "author never wrote or saw")
    return clock


def _check_item(doc_name: str, item: yupdate.Item, author: Author, maps: set[str], own: int,
                held: dict[int, int]) -> None:
    if item.kind not in _ALLOWED_KINDS or item.right_origin is not None or item.parent_id is not None:
        raise RuleViolation(f"{doc_name}: update holds a struct the books never write (kind {item.kind})")
    if item.kind == yupdate.ANY and (len(item.values) != 1 or not isinstance(item.values[0], str)):
        raise RuleViolation(f"{doc_name}: a value of the books is one JSON string")
    if item.origin is not None:
        client, origin_clock = item.origin
        if origin_clock >= (item.clock if client == own else held.get(client, 0)):
            raise RuleViolation(f"{doc_name}: update refers to item {client}:{origin_clock}, which its author "
                                "never wrote or saw")
        return  # it replaces the value at the origin's key: the map event names the key, checked there
    if item.parent not in maps or item.key is None:
        raise RuleViolation(f"{doc_name}: update writes outside the document's maps "
                            f"({str(item.parent)[:40]!r})")
    _check_scope(item.parent, item.key, author)


#: Reads a revision already in the document being changed (None if it holds none with that id).
RevisionReader = Callable[[str], "Revision | None"]


#: The ledger or group records of one root map of the masters as the document now holds them.
RecordReader = Callable[[str], "list[LedgerDef] | list[GroupDef]"]


#: (document, author, key) -> the sequence of the author's entry in that document that created the key.
CreatorFinder = Callable[[str, str, str], "int | None"]


@dataclass(frozen=True)
class Position:
    """Where a change sits: its document, author and sequence, what its author had seen (its
    dependencies), the masters' records, and how to find the entry that created a key. A verdict that
    turns on another record must turn on whether the author had seen it, never on whether it has
    arrived here yet: causal order makes the first the same at every replica, arrival makes the
    second differ."""

    doc: str
    author: str
    seq: int
    deps: dict[str, dict[str, int]]
    records: RecordReader
    created: CreatorFinder
    #: The codes of the head offices (whose records are in force for every office's books).
    heads: frozenset[str] = frozenset()
    #: The chart of an office's books as the change's author had it: the masters records its
    #: dependencies show it had seen (`inbox._SeenCharts`). None: the type rules are not judged.
    chart_at: Callable[[str], Chart] | None = None

    def seen_of(self, doc: str, author: str) -> int:
        """The highest sequence of `author`'s in `doc` that the change's author had seen (its own chain
        in its own document included)."""
        if doc == self.doc and author == self.author:
            return self.seq - 1
        return self.deps.get(doc, {}).get(author, 0)

    def saw(self, doc: str, author: str, key: str, seq: int = 0) -> bool:
        """Whether the author had seen `key`, created by `author`'s entry `seq` in `doc` (0: look it up)."""
        seq = seq or self.created(doc, author, key) or 0
        return seq > 0 and self.seen_of(doc, author) >= seq


def check_document(doc_name: str, author: Author) -> None:
    """The part of the write scope a document's name decides: what an office that cannot read an
    entry (it carries it unread) checks, as every reader does."""
    _document(doc_name, author)


def _document(doc_name: str, author: Author) -> schema.DocName:
    name = schema.parse_doc_name(doc_name)
    if name.local:
        raise RuleViolation(f"{doc_name} is a local book and is never shared")
    if not name.is_masters and name.office != author.office and not author.is_head:
        raise RuleViolation(f"office {author.office} may not write office {name.office}'s books ({doc_name})")
    return name


def check_change(doc_name: str, changed: dict[str, dict[str, str]], values: dict[str, dict[str, object]],
                 chart: Chart, author: Author, sync_after: dt.date | None = None,
                 held: RevisionReader | None = None, position: Position | None = None,
                 lock_until: dt.date | None = None) -> dict[str, Revision]:
    """Refuse writes outside the author's office, deletions, rewrites of write-once records,
    unbalanced vouchers or ones naming unknown ledgers, vouchers dated before the sync-after date, and
    revisions that change the books on or before the lock date.
    `changed` holds the action of each key the change touched per root map, `values` the values it
    left at those it added or updated. Returns the voucher revisions it decoded, by key, so that
    materializing them decodes none again.

    Every check gives the same answer on every replica, whatever else it has received: otherwise one
    replica would apply what another refuses and the books would diverge. That is why the voucher
    type's rule, which depends on ledger groups, is judged against the chart the author had (the
    records its dependencies show it had seen, `Position.chart_at`), not the one this replica holds
    now, and why `sync_after` and `lock_until` are the dates the entry is judged by
    (`policy.DatedRule.judging`), not the newest."""
    name = _document(doc_name, author)
    revisions: dict[str, Revision] = {}
    ledgers_seen: set[str] = set()
    for map_name, keys in sorted(changed.items()):  # in one order everywhere, so every replica gives one reason
        new_values = values[map_name]
        for key, action in sorted(keys.items()):
            _check_scope(map_name, key, author)
            if action == "delete" or (action == "update" and map_name not in _REWRITABLE):
                raise RuleViolation(f"{doc_name}: {action} of {map_name}/{key[:60]} is not allowed; "
                                    "records are never deleted or overwritten")
            try:
                value = new_values[key]
                if name.is_masters:
                    _check_master(map_name, key, value, author, position)
                else:
                    revisions[key] = _check_revision(name, key, value, chart, sync_after, author)
                    if position is not None:
                        _check_lineage(revisions[key], held or (lambda _id: None), position)
                        _check_ledgers_seen(revisions[key], chart, position, ledgers_seen)
                        _check_type(revisions[key], name, position)
                    check_unlocked(revisions[key], lock_until, held or (lambda _id: None))
            except RuleViolation:
                raise
            except P2PSyncError as exc:
                raise RuleViolation(f"{doc_name}: {exc}") from None
    return revisions


def _check_master(map_name: str, key: str, value: object, author: Author, position: Position | None) -> None:
    if map_name == schema.OFFICES:
        office = decode_office(value)
        if office.code != key:
            raise RuleViolation(f"office record {key!r} names office {office.code!r}")
        return
    if map_name == schema.DISPUTES:
        _check_dispute(key, value, author)
        return
    decoder = {schema.LEDGERS: decode_ledger, schema.GROUPS: decode_group, schema.OPENINGS: decode_opening}[map_name]
    record = decoder(value)
    name = getattr(record, "name", None) or record.ledger
    if schema.record_key(name, record.office) != key:
        raise RuleViolation(f"{map_name} record {key[:60]!r} is filed under the wrong key")
    if "@" in name:  # `@CODE` is an inter-office account, which no record may claim
        raise RuleViolation(f"{map_name} record {key[:60]!r}: a name may not contain '@'")
    if author.node and record.author != author.node:
        raise RuleViolation(f"{map_name} record {key[:60]!r} claims author {record.author[:16]}, not its signer")
    if isinstance(record, Opening) and abs(record.paise) > MAX_PAISE:
        raise RuleViolation(f"opening balance of {record.ledger[:60]!r} exceeds {format_paise(MAX_PAISE)}")
    if isinstance(record, (LedgerDef, GroupDef)) and position is not None:
        _check_not_a_known_name(map_name, key, record, position)


def check_links(change: Change, revisions: dict[str, Revision], earlier: RevisionReader) -> None:
    """A scoped entry is sealed for exactly the offices whose inter-office accounts its vouchers, or
    the revisions they replace, touch (`linked_offices`): sealed for fewer, an office could not see
    a voucher against it; for more, an office would read books it may not."""
    if change.to is None:
        return  # sealed under an organisation-wide key: every office reads it
    needed = linked_offices(revisions.values(), earlier)
    if needed != change.to:
        raise RuleViolation(f"{change.doc}: entry is sealed for {', '.join(change.to) or 'no other office'}, but its "
                            f"vouchers concern {', '.join(needed) or 'no other office'}")


def _check_dispute(key: str, value: object, author: Author) -> None:
    """A dispute is its office's own say about another office's voucher: filed under its key, signed by
    its author, and written by that office alone (a head office included: it writes no other office's)."""
    dispute = decode_dispute(value)
    if dispute.key != key:
        raise RuleViolation(f"dispute {key[:60]!r} is filed under the wrong key")
    if dispute.office != author.office:
        raise RuleViolation(f"office {author.office} may not dispute on behalf of office {dispute.office[:16]}")
    if author.node and dispute.author != author.node:
        raise RuleViolation(f"dispute {key[:60]!r} claims author {dispute.author[:16]}, not its signer")


def _check_ledgers_seen(rev: Revision, chart: Chart, position: Position, passed: set[str]) -> None:
    """Every ledger a voucher names was created by an entry its author had seen: otherwise a replica
    that happened to hold the ledger would accept what one that did not yet would refuse. `passed`:
    the names already found seen for this change (the verdict depends only on the name, the chart and
    the change's position, so a name the entry's vouchers use again is not looked up again)."""
    for line in rev.content.lines:
        if line.ledger in passed:
            continue
        code = inter_office_code(line.ledger)
        if code is not None:
            _check_office_seen(rev, code, position)
            passed.add(line.ledger)
            continue
        ledger = chart.ledger(line.ledger)
        if ledger is not None and _ledger_seen(ledger, position):
            passed.add(line.ledger)
            continue
        key = chart.key(line.ledger)
        if not any(other.key == key and _ledger_seen(other, position) for other in position.records(schema.LEDGERS)):
            raise RuleViolation(f"voucher {rev.number[:40]} names ledger {line.ledger[:60]!r}, which its author had "
                                "not seen created (its entry does not depend on it)")
        passed.add(line.ledger)


def _check_office_seen(rev: Revision, code: str, position: Position) -> None:
    """An inter-office account `@code` stands on office `code`'s record, which only a head office
    writes: its author must have seen the entry that created it (offices are never removed)."""
    if not any(position.saw(schema.MASTERS, author, code) for author in sorted(position.deps.get(schema.MASTERS, {}))):
        raise RuleViolation(f"voucher {rev.number[:40]} names inter-office account @{code}, whose office its "
                            "author had not seen created (its entry does not depend on it)")


def _check_type(rev: Revision, name: schema.DocName, position: Position) -> None:
    """The voucher type's rule (a Payment pays out of cash or bank, …), with the groups its office's
    books had for its author. A cancellation keeps the content it cancels and is never refused for it:
    a voucher that is wrong must stay cancellable."""
    if rev.action is Action.CANCEL or position.chart_at is None or name.office is None:
        return
    try:
        check_type_rule(rev.content, position.chart_at(name.office))
    except RuleViolation as exc:
        raise RuleViolation(f"voucher {rev.number[:40]}: {exc}") from None


def _ledger_seen(ledger: LedgerDef, position: Position) -> bool:
    key = schema.record_key(ledger.name, ledger.office)
    return position.saw(schema.MASTERS, ledger.author, key, ledger.seq)


def _check_not_a_known_name(map_name: str, key: str, record: LedgerDef | GroupDef, position: Position) -> None:
    """Masters take effect by causal order: a record of a name its author had already seen recorded
    for the same office or by a head office (as its dependencies say) is refused, so the records that
    decide one office's chart are only ever concurrent and none takes over another by a stamped time.
    A name seen only in other branches' records may be recorded: that is how an office adopts another
    branch's ledger before using it, so that no third branch can re-classify its books. A record carries
    its entry's sequence (0: an older version made it, and it counts as seen by no one)."""
    if record.seq not in (0, position.seq):
        raise RuleViolation(f"{map_name} record {key[:60]!r} names entry {record.seq}, not the entry {position.seq} "
                            "that carries it")
    for other in position.records(map_name):
        if other.key != record.key or schema.record_key(other.name, other.office) == key or not other.seq:
            continue
        if other.office not in (record.office, *position.heads):
            continue
        if position.saw(schema.MASTERS, other.author, schema.record_key(other.name, other.office), other.seq):
            raise RuleViolation(f"{map_name[:-1]} {record.name[:60]!r} already exists (office {other.office}); its "
                                "author had seen it")


def _check_scope(map_name: str, key: str, author: Author) -> None:
    if author.is_head or map_name == schema.REVISIONS:
        return
    if map_name == schema.OFFICES:
        raise RuleViolation(f"only the head office may change the offices (office {author.office} tried)")
    owner = key.rpartition("@")[2]
    if owner != author.office:
        raise RuleViolation(f"office {author.office} may not write {map_name} records of office {owner}")


def _check_revision(name: schema.DocName, key: str, value: object, chart: Chart, sync_after: dt.date | None,
                    author: Author) -> Revision:
    rev = decode_revision(value)
    if rev.action is Action.POST and number_series(rev.number)[0] != author.series:
        raise RuleViolation(f"voucher {rev.number[:40]} is not in its author's number series {author.series}")
    check_sync_after(rev, sync_after)
    if rev.id != key:
        raise RuleViolation(f"revision {key[:40]!r} carries id {rev.id[:40]!r}")
    if rev.office != name.office or not rev.number.startswith(f"{rev.office}/"):
        raise RuleViolation(f"voucher {rev.number[:40]} of office {rev.office} filed in {name.name}")
    date = rev.content.date
    if rev.action is Action.POST and (rev.parents or f"{date.year:04d}-{date.month:02d}" != name.month):
        raise RuleViolation(f"voucher {rev.number} is not filed in its own month's document")
    if rev.action is not Action.POST and not rev.parents:
        raise RuleViolation(f"{rev.action.value} of voucher {rev.number} names no revision it replaces")
    if rev.action is Action.CANCEL and not rev.reason.strip():
        raise RuleViolation(f"cancellation of voucher {rev.number} gives no reason")
    if author.node and rev.author != author.node:
        raise RuleViolation(f"revision of voucher {rev.number[:40]} claims author {rev.author[:16]}, not its signer")
    check_balanced(rev.content, chart, rev.office)
    check_mirror(rev)
    return rev


def check_sync_after(rev: Revision, sync_after: dt.date | None) -> None:
    """Refuse a revision dated before the sync-after date: such vouchers are never exchanged."""
    if sync_after is not None and rev.content.date < sync_after:
        raise RuleViolation(f"voucher {rev.number} is dated {rev.content.date}, before the sync-after date {sync_after}")


def check_unlocked(rev: Revision, lock_until: dt.date | None, parent: RevisionReader) -> None:
    """Refuse a revision that changes the books on or before the lock date: a post dated then, or an
    amendment or cancellation of a voucher whose replaced revision is (moving a locked voucher to a
    later date still changes the locked period) or that would give it such a date. Run after the
    lineage check, so every parent read here is one every replica holds."""
    if lock_until is None:
        return
    dates = [rev.content.date, *(p.content.date for pid in rev.parents if (p := parent(pid)) is not None)]
    changed = min(dates)
    if changed > lock_until:
        return
    if rev.action is Action.POST:
        raise RuleViolation(f"voucher {rev.number[:40]} is dated {changed}, in the books locked up to {lock_until}")
    verb = "amended" if rev.action is Action.AMEND else "cancelled"
    raise RuleViolation(f"voucher {rev.number[:40]} cannot be {verb}: it would change {changed}, in the books "
                        f"locked up to {lock_until}")


def _check_lineage(rev: Revision, held: RevisionReader, position: Position) -> None:
    """A revision replaces only revisions of the same voucher in its own document that its author had
    seen (its entry depends on them, so every replica holds them when it is applied), and never a
    cancellation: a cancelled voucher stays cancelled, whoever amends it and whenever."""
    for parent_id in rev.parents:
        parent = held(parent_id)
        if parent is None or parent.number != rev.number or not position.saw(position.doc, parent.author, parent_id):
            raise RuleViolation(f"{rev.action.value} of voucher {rev.number[:40]} replaces revision "
                                f"{parent_id[:40]!r}, which is not a revision of it in this document that its "
                                "author had seen")
        if parent.action is Action.CANCEL:
            raise RuleViolation(f"voucher {rev.number[:40]} is cancelled; a cancelled voucher cannot be "
                                f"{'cancelled again' if rev.action is Action.CANCEL else 'amended'}")
