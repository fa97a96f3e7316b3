"""Helpers shared by the tests: nodes with a standard chart of accounts, report builders, and
whole-node state captures used to prove that refused operations change nothing."""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

from pycrdt import Doc
from sqlmodel import select

from p2psync.books import reports, schema
from p2psync.books.change import Change
from p2psync.books.drafts import Draft, make_draft
from p2psync.books.groups import group_key
from p2psync.books.model import Action, Line, Revision, VoucherContent, VoucherType, decode_revision
from p2psync.canonical import utc_now
from p2psync.node import registrar
from p2psync.node.home import DB_FILE, KEYS_DIR
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.store.tables import Entry, Pending
from p2psync.trust import enroll
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import NodeKeys
from p2psync.trust.policy import Authority, Policy
from p2psync.trust.scopes import scope_of

COMPANY = "Acme Traders"
OFFICES = ("HO", "BR1", "BR2")

#: The standard chart: ledger name -> group. One ledger per kind the voucher rules care about.
LEDGERS: dict[str, str] = {
    "Cash": "Cash-in-Hand",
    "Bank": "Bank Accounts",
    "Sales": "Sales Accounts",
    "Purchases": "Purchase Accounts",
    "Freight": "Direct Expenses",
    "Commission": "Direct Incomes",
    "Rent": "Indirect Expenses",
    "Interest": "Indirect Incomes",
    "Capital": "Capital Account",
    "Debtors": "Sundry Debtors",
    "Creditors": "Sundry Creditors",
    "Furniture": "Fixed Assets",
    "Loan": "Secured Loans",
}


def draft(kind: str, date: str, dr: dict[str, str], cr: dict[str, str], narration: str = "") -> Draft:
    """A draft from {ledger: amount} on each side."""
    return make_draft(kind, date, [f"{k}={v}" for k, v in dr.items()], [f"{k}={v}" for k, v in cr.items()],
                      narration)


# ---------------------------------------------------------------- offices and exchange
# Every call that creates a node or moves entries between nodes is here, so that the tests follow
# the node's API in one place.


#: The tests' vouchers carry fixed dates from 2024 on. Their offices say their books begin here, as an
#: office that keeps old years does, so that the default window (eight financial years back from
#: today) never refuses them as the years pass.
BOOKS_BEGIN = "2020-04-01"


def begin_books(node: Node) -> Node:
    """`node`, its books beginning on `BOOKS_BEGIN` (``p2psync settings --books-begin``)."""
    node.set_local(books_begin=BOOKS_BEGIN)
    return node


@contextmanager
def before_read_scopes() -> Iterator[None]:
    """Organisations created inside are made as versions before read scopes made them: one key per
    epoch for everything (`scoped_from` 0, no grants), for the tests of upgrading one."""
    genesis = Authority.genesis

    def old(self: Authority, org: str, head_der: bytes, scoped: bool = True,
            grants: Mapping[str, Iterable[str]] | None = None) -> Policy:
        return genesis(self, org, head_der, scoped=False)

    with mock.patch.object(Authority, "genesis", old):
        yield


def setup_head(home: Path, read_all: bool = True) -> Node:
    """A head office with BR1, BR2 and the standard ledgers. `read_all`: every office reads every
    office's books (``init --open-books``; most tests check what readers agree on); else the default
    read scopes."""
    head = begin_books(Node.create_head(home, COMPANY, "HO", "Head Office", open_books=read_all))
    head.add_office("BR1", "Branch One")
    head.add_office("BR2", "Branch Two")
    for name, group in LEDGERS.items():
        head.add_ledger(name, group)
    return head


def home_bytes(home: Path) -> bytes:
    """Every file of a home, as bytes (database, its write-ahead log, the log file): where a canary of
    books an office may not read must not be."""
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


@contextmanager
def scoped_offices(base: Path) -> Iterator[dict[str, Node]]:
    """HO, RO1, BR1 and BR2 under the default read scopes: each branch reads the masters and its own
    books only."""
    head = setup_head(base / "HO", read_all=False)
    head.add_office("RO1", "Regional Office")
    nodes = {"HO": head, **{code: setup_branch(base / code, code, head) for code in ("RO1", "BR1", "BR2")}}
    try:
        yield nodes
    finally:
        for node in nodes.values():
            node.close()


def setup_branch(home: Path, code: str, head: Node) -> Node:
    """A branch enrolled with a one-time code, holding the head office's masters."""
    text, _expires = registrar.invite(head, code)
    invite = InviteCode.parse(text)
    keys = NodeKeys.generate()
    request = enroll.request(invite, keys)
    enrollment = enroll.read_reply(registrar.handle_enroll(head, request), invite, request, keys)
    branch = begin_books(Node.join(home, enrollment, keys))
    send(head, branch)
    return branch


def outgoing(source: Node, target: Node | None = None) -> list[bytes]:
    """The entries `source` holds, all of them or only those `target` lacks, in dependency order."""
    return source.entries(target.vectors() if target is not None else None)


def deliver(target: Node, items: list[bytes], policy_from: Node | None = None) -> int:
    """Hand `target` entries (any order, duplicates allowed); returns how many it applied. The
    signed policy travels first, as in a real exchange, so that new members are known."""
    if policy_from is not None:
        target.adopt_policy(policy_from.policy_blob())
    result = target.receive(items)
    assert not result.quarantined, result.quarantined
    return result.applied


def send(source: Node, target: Node) -> int:
    return deliver(target, outgoing(source, target), policy_from=source)


def sync(*nodes: Node) -> None:
    """Every node receives every other node's entries (twice round, so relayed entries arrive too)."""
    for _ in range(2):
        for target in nodes:
            for source in nodes:
                if source is not target:
                    send(source, target)


def refused_everywhere(blob: bytes, receivers: list[Node], reason: str) -> None:
    """Every receiver quarantines `blob` with a reason containing `reason` and changes nothing: its
    log, documents, vouchers, conflicts and reports stay as they were."""
    for node in receivers:
        before = state(node)
        result = node.receive([blob])
        assert (result.applied, result.waiting, result.duplicates) == (0, 0, 0), node.identity.office
        assert len(result.quarantined) == 1 and reason in result.quarantined[0], result.quarantined
        assert node.quarantined()[-1]["reason"] == result.quarantined[0]
        assert state(node) == before, f"a refused entry changed {node.identity.office}'s books"


def exchange(*homes: Path) -> None:
    """Every office of these closed homes receives every other's entries, as one full sync does."""
    nodes = [Node.open(home) for home in homes]
    try:
        sync(*nodes)
    finally:
        for node in nodes:
            node.close()


def copy_home(src: Path, dst: Path) -> None:
    """A consistent copy of a closed node: its database (through the sqlite backup API) and keys."""
    dst.mkdir(parents=True)
    shutil.copytree(src / KEYS_DIR, dst / KEYS_DIR)
    source, target = sqlite3.connect(src / DB_FILE), sqlite3.connect(dst / DB_FILE)
    try:
        source.backup(target)
    finally:
        source.close()
        target.close()


def open_trio(template: Path, where: Path) -> list[Node]:
    """Fresh copies of the template trio, opened: [HO, BR1, BR2]."""
    nodes = []
    for code in OFFICES:
        copy_home(template / code, where / code)
        nodes.append(Node.open(where / code))
    return nodes


# ---------------------------------------------------------------- reports


def day_book(node: Node, office: str | None = None) -> dict[str, Any]:
    with node.db.read() as session:
        vouchers = queries.vouchers(session, office)
        lines = queries.lines_of(session, [v.number for v in vouchers])
        return reports.day_book(vouchers, lines, office or "consolidated")


def statement(node: Node, ledger: str, office: str | None = None, start: Any = None) -> dict[str, Any]:
    key = group_key(ledger)
    with node.db.read() as session:
        return reports.ledger_statement(ledger, queries.opening_of(session, key, office),
                                        queries.postings(session, key, office), office or "consolidated",
                                        start)


def all_reports(node: Node, offices: tuple[str | None, ...] = (None, *OFFICES)) -> dict[str, Any]:
    """Every report, consolidated and per office (ledger statements consolidated), as plain values."""
    out: dict[str, Any] = {}
    for office in offices:
        scope = office or "consolidated"
        with node.db.read() as session:
            balances = queries.balances(session, office)
        out[f"trial-balance/{scope}"] = reports.trial_balance(balances, scope)
        out[f"profit-loss/{scope}"] = reports.profit_and_loss(balances, scope)
        out[f"balance-sheet/{scope}"] = reports.balance_sheet(balances, scope)
        out[f"day-book/{scope}"] = day_book(node, office)
    for ledger in LEDGERS:
        out[f"ledger/{ledger}"] = statement(node, ledger)
    return out


# ---------------------------------------------------------------- whole-node state


def doc_contents(node: Node) -> dict[str, dict[str, dict[str, Any]]]:
    """Every document's root maps, decoded to plain dicts."""
    out = {}
    for name in sorted(node.vectors()):
        doc = node.store.read_doc(name)
        maps = schema.MASTERS_MAPS if schema.parse_doc_name(name).is_masters else (schema.REVISIONS,)
        out[name] = {m: dict(schema.root(doc, m).items()) for m in maps}
    return out


def entries(node: Node) -> set[tuple[str, str, int, bytes]]:
    with node.db.read() as session:
        return {(e.doc, e.author, e.seq, e.update) for e in session.exec(select(Entry))}


def assert_log_whole(node: Node) -> None:
    """Each author's sequence in each document runs 1..n: nothing applied out of its author's order."""
    seqs: dict[tuple[str, str], list[int]] = {}
    with node.db.read() as session:
        for doc, author, seq in session.exec(select(Entry.doc, Entry.author, Entry.seq).order_by(Entry.id)):
            seqs.setdefault((doc, author), []).append(seq)
    for key, got in seqs.items():
        assert got == list(range(1, len(got) + 1)), key


def pending_count(node: Node) -> int:
    with node.db.read() as session:
        return len(list(session.exec(select(Pending))))


def revisions(node: Node) -> list[Revision]:
    """Every voucher revision held in the node's documents (not in its materialized tables)."""
    out = []
    for name, maps in doc_contents(node).items():
        if not schema.parse_doc_name(name).is_masters:
            out.extend(decode_revision(value) for value in maps[schema.REVISIONS].values())
    return out


def voucher_rows(node: Node) -> list[dict[str, Any]]:
    with node.db.read() as session:
        return [row._asdict() for row in queries.vouchers(session)]


def conflict_rows(node: Node) -> set[tuple[str, str, str, str]]:
    with node.db.read() as session:
        return {(c.kind, c.subject, c.winner, c.loser) for c in queries.conflicts(session)}


def state(node: Node) -> dict[str, Any]:
    """Everything observable about a node's books, for before/after comparisons."""
    return {
        "vectors": node.vectors(),
        "docs": doc_contents(node),
        "vouchers": voucher_rows(node),
        "conflicts": conflict_rows(node),
        "reports": all_reports(node),
    }


# ---------------------------------------------------------------- forged entries


def forged_revision(office: str, number: str, lines: tuple[Line, ...], action: Action = Action.POST,
                    author: str = "forged") -> Revision:
    content = VoucherContent(VoucherType.JOURNAL, dt.date(2026, 4, 1), lines)
    return Revision(secrets.token_hex(12), number, office, content, action, (), 1, author, utc_now(), "")


class _SignedAs:
    """A revisions map that fills the placeholder author of `forged_revision` with the signer, as a member
    forging with its own keys would (receivers refuse a record whose author is not its signer)."""

    def __init__(self, revisions: Any, node_id: str) -> None:
        self._map, self._node_id = revisions, node_id

    def __setitem__(self, key: str, value: Any) -> None:
        placeholder = '"author":"forged"'
        if isinstance(value, str) and placeholder in value:
            value = value.replace(placeholder, f'"author":"{self._node_id}"')
        self._map[key] = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._map, name)


def forge_entry(author: Node, doc_name: str, mutate: Any, to: tuple[str, ...] | None = None) -> bytes:
    """An entry sealed with a real member's key whose update does `mutate` to the document as the
    author holds it: a buggy or compromised member, not an outsider. `to`: the offices it is sealed
    for through links (none unless given)."""
    held = author.store.read_doc(doc_name)
    doc = Doc(client_id=schema.client_id(author.identity.node_id))  # its own id: anything else is refused first
    doc.apply_update(held.get_update())
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    with doc.transaction():
        mutate(_SignedAs(schema.root(doc, schema.REVISIONS), author.identity.node_id))
    seq = author.vectors().get(doc_name, {}).get(author.identity.node_id, 0) + 1
    vectors = author.vectors()
    vector = {a: s for a, s in vectors.get(doc_name, {}).items() if a != author.identity.node_id}
    deps = {doc_name: vector} if vector else {}
    if doc_name != schema.MASTERS and vectors.get(schema.MASTERS):  # it saw the masters it holds, as posts say
        deps[schema.MASTERS] = vectors[schema.MASTERS]
    change = Change(doc_name, author.identity.node_id, seq, updates[-1], deps, to)
    return author.trust.seal(change)


# ---------------------------------------------------------------- raw Yjs v1 updates
# A hostile member need not go through pycrdt: these write the bytes of an update directly (lib0 and
# Yjs ``encoding.js``), so tests can send what no honest map write produces.

#: Struct kinds and info bits of the Yjs v1 encoding.
Y_DELETED, Y_JSON, Y_STRING, Y_TYPE, Y_ANY = 1, 2, 4, 7, 8
Y_ORIGIN, Y_RIGHT_ORIGIN, Y_PARENT_SUB = 0x80, 0x40, 0x20


def varuint(value: int) -> bytes:
    """lib0 ``writeVarUint``: seven bits a byte, low first, high bit set on all but the last."""
    assert value >= 0
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def varstring(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return varuint(len(data)) + data


def y_any_string(*values: str) -> bytes:
    """ContentAny holding strings: ``varuint count, (0x77 varstring)*``; its length is the count."""
    return varuint(len(values)) + b"".join(b"\x77" + varstring(v) for v in values)


def y_item(value: str | None = None, *, parent: str | None = None, key: str | None = None,
           origin: tuple[int, int] | None = None, right_origin: tuple[int, int] | None = None,
           parent_id: tuple[int, int] | None = None, kind: int = Y_ANY, content: bytes | None = None) -> bytes:
    """One Item: info byte, origins, parent (a root name ``01 varstring`` or an item ``00 client clock``)
    and key when it has no origin, then its content (one JSON string unless `content` is given)."""
    info = kind | (Y_ORIGIN if origin else 0) | (Y_RIGHT_ORIGIN if right_origin else 0)
    info |= Y_PARENT_SUB if key is not None else 0
    out = bytearray([info])
    for ident in (origin, right_origin):
        if ident is not None:
            out += varuint(ident[0]) + varuint(ident[1])
    if origin is None and right_origin is None:
        if parent_id is not None:
            out += varuint(0) + varuint(parent_id[0]) + varuint(parent_id[1])
        else:
            out += varuint(1) + varstring(parent or "")
        if key is not None:
            out += varstring(key)
    out += content if content is not None else y_any_string(value or "")
    return bytes(out)


def y_update(groups: list[tuple[int, int, list[bytes]]],
             deletes: dict[int, list[tuple[int, int]]] | None = None) -> bytes:
    """An update: ``varuint groups, {varuint structs, client, first clock, structs}*`` and the delete
    set ``varuint clients, {client, varuint ranges, {clock, length}*}*``."""
    out = bytearray(varuint(len(groups)))
    for client, clock, items in groups:
        out += varuint(len(items)) + varuint(client) + varuint(clock) + b"".join(items)
    deletes = deletes or {}
    out += varuint(len(deletes))
    for client, ranges in deletes.items():
        out += varuint(client) + varuint(len(ranges))
        for clock, length in ranges:
            out += varuint(clock) + varuint(length)
    return bytes(out)


def seal_raw(author: Node, doc_name: str, update: bytes, deps: dict[str, dict[str, int]] | None = None,
             seq: int | None = None, policy: int | None = None) -> bytes:
    """`update` sealed and signed with `author`'s real keys as its next entry in `doc_name` (or entry
    `seq`), citing its policy (or version `policy`): what a member that bypasses its own node can send.
    Deps default to everything the author holds of that document from others."""
    from p2psync.protocol import entry as entry_format

    vector = author.vectors().get(doc_name, {})
    me = author.identity.node_id
    if seq is None:
        seq = vector.get(me, 0) + 1
    if deps is None:
        others = {a: s for a, s in vector.items() if a != me}
        deps = {doc_name: others} if others else {}
    change = Change(doc_name, me, seq, update, deps)
    if policy is None:
        return author.trust.seal(change)
    trust = author.trust
    epoch = trust.policy.epoch
    if not trust.policy.is_scoped(epoch):
        return entry_format.seal(change, trust.org, epoch, trust.epoch_key(epoch), trust.keys.signing, policy)
    scope = scope_of(doc_name)
    return entry_format.seal(change, trust.org, epoch, trust.scope_key(scope, epoch), trust.keys.signing, policy, scope)
