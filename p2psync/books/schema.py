"""The CRDT layout of the books: which pycrdt documents exist and what their maps hold.

* ``masters``: maps ``offices`` (code -> office), ``groups`` and ``ledgers`` (``name@office`` ->
  record), ``openings`` (``ledger@office`` -> opening balance).
* ``vouchers/<OFFICE>/<YYYY-MM>``: map ``revisions`` (revision id -> one whole revision).

Every value is a canonical JSON string written once and never changed in place, except an
office's own opening balance. Keys carry the creating office, so the same ledger created at two
offices concurrently is two records (resolved deterministically and listed when they disagree)
rather than one record silently overwriting the other, which is what Yjs does for concurrent writes
to one map key.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from pycrdt import Doc, Map

from p2psync.books.groups import Group, GroupTree, Nature, group_key
from p2psync.books.interoffice import Dispute, decode_dispute, encode_dispute
from p2psync.books.model import (
    GroupDef,
    LedgerDef,
    Office,
    Opening,
    Revision,
    decode_group,
    decode_ledger,
    decode_office,
    decode_opening,
    decode_revision,
    encode_group,
    encode_ledger,
    encode_office,
    encode_opening,
    encode_revision,
)
from p2psync.books.rules import Chart
from p2psync.errors import InvalidInput

MASTERS = "masters"
OFFICES, GROUPS, LEDGERS, OPENINGS, REVISIONS = "offices", "groups", "ledgers", "openings", "revisions"
#: An office's disputes of other offices' vouchers that touch its inter-office account with them.
DISPUTES = "disputes"
MASTERS_MAPS = (OFFICES, GROUPS, LEDGERS, OPENINGS, DISPUTES)
_VOUCHER_DOC = re.compile(r"^(?P<kind>vouchers|local)/(?P<office>[A-Z0-9][A-Z0-9_-]{0,15})/(?P<month>\d{4}-\d{2})$")


@dataclass(frozen=True)
class DocName:
    """A parsed document name: the masters, or one office's vouchers for one month."""

    name: str
    office: str | None = None
    month: str | None = None
    #: A local document holds vouchers dated before the sync-after date: never sealed nor shared.
    local: bool = False

    @property
    def is_masters(self) -> bool:
        return self.name == MASTERS


def voucher_doc(office: str, date: dt.date, local: bool = False) -> str:
    return f"{'local' if local else 'vouchers'}/{office}/{date:%Y-%m}"


@lru_cache(maxsize=4096)
def parse_doc_name(name: str) -> DocName:
    """The parsed name (frozen, so one per name is kept: an entry's path through the store asks
    five to seven times, at 2-5 µs each); raises `InvalidInput` for a name that is not one."""
    if name == MASTERS:
        return DocName(name)
    match = _VOUCHER_DOC.match(name)
    if not match:
        raise InvalidInput(f"unknown document name {name[:80]!r}")
    month = match.group("month")
    if not 1 <= int(month[5:]) <= 12:
        raise InvalidInput(f"unknown document name {name[:80]!r}")
    return DocName(name, match.group("office"), month, match.group("kind") == "local")


def maps_of(name: str) -> tuple[str, ...]:
    """The root maps of a document: the only root types it may hold."""
    return MASTERS_MAPS if parse_doc_name(name).is_masters else (REVISIONS,)


def client_id(node_id: str) -> int:
    """A node's Yjs client id, the same at every replica: the only one its updates may write under,
    so that its own history is whole in its own chain of entries."""
    try:
        return int(node_id[:8], 16) or 1
    except ValueError:
        return 0  # not a node id: matches no struct, so such an author's updates are all refused


def new_doc(name: str, client_id: int | None = None) -> Doc:
    """An empty document with its root maps declared, so observers can attach before updates."""
    doc = Doc(client_id=client_id)
    for map_name in maps_of(name):
        doc.get(map_name, type=Map)
    return doc


def root(doc: Doc, map_name: str) -> Map:
    return doc.get(map_name, type=Map)


def record_key(name: str, office: str) -> str:
    return f"{group_key(name)}@{office}"


# ---------------------------------------------------------------- writes (inside a transaction)


def put_office(doc: Doc, office: Office) -> None:
    root(doc, OFFICES)[office.code] = encode_office(office)


def put_group(doc: Doc, group: GroupDef) -> None:
    root(doc, GROUPS)[record_key(group.name, group.office)] = encode_group(group)


def put_ledger(doc: Doc, ledger: LedgerDef) -> None:
    root(doc, LEDGERS)[record_key(ledger.name, ledger.office)] = encode_ledger(ledger)


def put_opening(doc: Doc, opening: Opening) -> None:
    root(doc, OPENINGS)[record_key(opening.ledger, opening.office)] = encode_opening(opening)


def put_dispute(doc: Doc, dispute: Dispute) -> None:
    root(doc, DISPUTES)[dispute.key] = encode_dispute(dispute)


def read_disputes(doc: Doc) -> list[Dispute]:
    return [decode_dispute(value) for value in root(doc, DISPUTES).values()]


def put_revisions(doc: Doc, revisions: Iterable[Revision]) -> None:
    """Write revisions, encoded, into the document (one transaction, not one a key)."""
    root(doc, REVISIONS).update({rev.id: encode_revision(rev) for rev in revisions})


# ---------------------------------------------------------------- reads


def read_offices(doc: Doc) -> dict[str, Office]:
    return {code: decode_office(value) for code, value in root(doc, OFFICES).items()}


def read_group_defs(doc: Doc) -> list[GroupDef]:
    return [decode_group(value) for value in root(doc, GROUPS).values()]


def read_ledger_defs(doc: Doc) -> list[LedgerDef]:
    return [decode_ledger(value) for value in root(doc, LEDGERS).values()]


def read_openings(doc: Doc) -> list[Opening]:
    return [decode_opening(value) for value in root(doc, OPENINGS).values()]


def read_revisions(doc: Doc, rev_ids: Iterable[str]) -> list[Revision]:
    """The named revisions, decoded."""
    revisions = root(doc, REVISIONS)
    return [decode_revision(revisions[rev_id]) for rev_id in rev_ids]


def revision_reader(doc: Doc) -> Callable[[str], Revision | None]:
    """Reads one revision of the document by id (None if it holds none with that id)."""
    revisions = root(doc, REVISIONS)

    def read(rev_id: str) -> Revision | None:
        return decode_revision(revisions[rev_id]) if rev_id in revisions else None
    return read


def effective(records: list[LedgerDef] | list[GroupDef], heads: frozenset[str] = frozenset(),
              office: str | None = None) -> dict[str, list]:
    """Group records by name key, the one in force first, the rest are duplicates.

    Which one is in force never depends on a stamped time (`at` is only the author's claim: a record
    stamped 1970 must not take a ledger over), and for an office's books never on another branch:
    the head office's record comes first (it is the authority over the chart), then, when `office`
    is given, that office's own record, then the rest by office code and author. A record of a name
    its author had seen recorded by its own office or a head office is refused (`admit`), so these
    are only ever concurrent; an office that uses another branch's ledger records its own copy first
    (`Node.adopt`), so a third branch cannot re-classify that office's books."""
    by_key: dict[str, list] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.office not in heads, r.office != office, r.office, r.author)):
        by_key[record.key].append(record)
    return dict(by_key)


def head_offices(doc: Doc) -> frozenset[str]:
    """The codes of the offices the masters record as head offices."""
    return frozenset(code for code, office in read_offices(doc).items() if office.role == "head")


def read_chart(doc: Doc, office: str | None = None) -> Chart:
    """The ledgers and groups in force for `office`'s books (None: the organisation's default, which
    reports use for offices with no record of their own)."""
    return chart_of(read_group_defs(doc), read_ledger_defs(doc), head_offices(doc), office,
                    frozenset(read_offices(doc)))


def chart_of(group_records: list[GroupDef], ledger_records: list[LedgerDef], heads: frozenset[str],
             office: str | None = None, offices: frozenset[str] = frozenset()) -> Chart:
    """The chart these records make for `office`'s books (see `effective`)."""
    group_defs = effective(group_records, heads, office)
    tree = GroupTree(
        [
            Group(defs[0].name, _nature_of(defs[0].parent, group_defs), defs[0].parent, predefined=False)
            for defs in group_defs.values()
        ]
    )
    ledgers = {key: defs[0] for key, defs in effective(ledger_records, heads, office).items()}
    return Chart(ledgers=ledgers, groups=tree, group_defs={key: defs[0] for key, defs in group_defs.items()},
                 heads=heads, offices=offices)


_BASE = GroupTree()


def _nature_of(parent: str, group_defs: dict[str, list[GroupDef]]) -> Nature:
    """A sub-group takes the nature of its primary group; walks user sub-groups, cycle-safe."""
    seen: set[str] = set()
    while (base := _BASE.get(parent)) is None:
        key = group_key(parent)
        if key in seen or key not in group_defs:
            return Nature.LIABILITY  # an orphan can only come from forged data: park it like Suspense
        seen.add(key)
        parent = group_defs[key][0].parent
    return base.nature
