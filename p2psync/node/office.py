"""One office's node: its identity, its books on disk, and the operations a user performs on them."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlmodel import Session, select

from p2psync.books import admit, schema
from p2psync.books.change import Change, Deps, decode_deps, encode_deps, unmet
from p2psync.books.drafts import Draft, resolve_names
from p2psync.books.groups import GroupTree
from p2psync.books.importer import ImportedDraft
from p2psync.books.model import (
    Action,
    GroupDef,
    LedgerDef,
    Office,
    Opening,
    Revision,
    VoucherContent,
    check_name,
    check_office_code,
    utc_now,
)
from p2psync.books.money import parse_amount
from p2psync.books.resolve import heads, resolve
from p2psync.books.rules import Chart, validate_voucher
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.node.home import DB_FILE, ensure_private_dir
from p2psync.store import log, queries
from p2psync.store.books import BookStore
from p2psync.store.db import Database, get_setting, set_setting
from p2psync.store.tables import Entry, Pending

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    company: str
    office: str
    role: str  # "head" or "branch"
    node_id: str

    @property
    def is_head(self) -> bool:
        return self.role == "head"


def _client_id(node_id: str) -> int:
    """A stable Yjs client id per node: our own history is always whole in our own log."""
    return int(node_id[:8], 16) or 1


class Node:
    """A node's books. Every write goes through `BookStore.transaction`, so it is atomic."""

    def __init__(self, home: Path, db: Database, identity: Identity) -> None:
        self.home = home
        self.db = db
        self.identity = identity
        self.store = BookStore(db, identity.node_id, _client_id(identity.node_id))
        self._chart: tuple[int, Chart] | None = None

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create(cls, home: Path, company: str, office: str, office_name: str, role: str = "head",
               node_id: str | None = None) -> Node:
        company = check_name(company, "company")
        code = check_office_code(office)
        office_name = check_name(office_name or code, "office")
        db_path = home / DB_FILE
        if db_path.exists():
            raise InvalidInput(f"{home} already holds a p2psync node; use another --home")
        ensure_private_dir(home)
        db = Database(db_path)
        db.create()
        identity = Identity(company, code, role, node_id or secrets.token_hex(16))
        with db.write() as session:
            for key, value in vars(identity).items():
                set_setting(session, key, value)
        node = cls(home, db, identity)
        if role == "head":
            node._put_office(Office(code, office_name, "head"))
        return node

    @classmethod
    def open(cls, home: Path) -> Node:
        db = Database(home / DB_FILE)
        db.check()
        with db.read() as session:
            values = {k: get_setting(session, k) for k in ("company", "office", "role", "node_id")}
        if not all(values.values()):
            raise P2PSyncError(f"{home} holds an incomplete p2psync node; run 'p2psync init' again elsewhere")
        return cls(home, db, Identity(**values))  # type: ignore[arg-type]

    def close(self) -> None:
        try:
            self.store.write_snapshots()
        finally:
            self.db.dispose()

    # ------------------------------------------------------------ masters

    def chart(self) -> Chart:
        with self.db.read() as session:
            loaded = self.store.loaded(session, schema.MASTERS)
            if self._chart is None or self._chart[0] != loaded.upto:
                self._chart = (loaded.upto, schema.read_chart(loaded.doc))
            return self._chart[1]

    def _put_office(self, office: Office) -> None:
        with self.store.transaction() as batch:
            batch.change(schema.MASTERS, lambda doc: schema.put_office(doc, office))

    def add_office(self, code: str, name: str) -> Office:
        """Branch master: only the head office admits offices."""
        if not self.identity.is_head:
            raise RuleViolation("only the head office can add branches")
        office = Office(check_office_code(code), check_name(name, "branch"), "branch")
        with self.db.read() as session:
            if any(o.code == office.code for o in queries.offices(session)):
                raise InvalidInput(f"office {office.code} already exists")
        self._put_office(office)
        return office

    def add_group(self, name: str, parent: str) -> GroupDef:
        name = check_name(name, "group")
        chart = self.chart()
        if name in chart.groups:
            raise InvalidInput(f"group {name!r} already exists")
        parent_group = chart.groups.get(parent)
        if parent_group is None:
            raise NotFound(f"unknown group {parent!r}")
        record = GroupDef(name, parent_group.name, self.identity.office, self.identity.node_id, utc_now())
        with self.store.transaction() as batch:
            batch.change(schema.MASTERS, lambda doc: schema.put_group(doc, record))
        return record

    def add_ledger(self, name: str, group: str, opening: str | None = None) -> LedgerDef:
        name = check_name(name, "ledger")
        chart = self.chart()
        existing = chart.ledger(name)
        if existing is not None:
            raise InvalidInput(f"ledger {name!r} already exists as {existing.name!r} (names ignore case)")
        group_def = chart.groups.get(group)
        if group_def is None:
            raise NotFound(f"unknown group {group!r}; see 'p2psync group list'")
        record = LedgerDef(name, group_def.name, self.identity.office, self.identity.node_id, utc_now())
        balance = self._opening_paise(opening, group_def.name, chart.groups) if opening else None

        def mutate(doc):  # type: ignore[no-untyped-def]
            schema.put_ledger(doc, record)
            if balance:
                schema.put_opening(doc, Opening(name, self.identity.office, balance,
                                                self.identity.node_id, utc_now()))

        with self.store.transaction() as batch:
            batch.change(schema.MASTERS, mutate)
        return record

    def set_opening(self, ledger: str, amount: str, office: str | None = None) -> Opening:
        chart = self.chart()
        target = self._writable_office(office)
        found = chart.ledger(ledger)
        if found is None:
            raise NotFound(f"unknown ledger {ledger!r}")
        opening = Opening(found.name, target, self._opening_paise(amount, found.group, chart.groups),
                          self.identity.node_id, utc_now())
        with self.store.transaction() as batch:
            batch.change(schema.MASTERS, lambda doc: schema.put_opening(doc, opening))
        return opening

    @staticmethod
    def _opening_paise(text: str, group: str, tree: GroupTree) -> int:
        """``5000`` (on the group's usual side), ``5000 Dr`` or ``5000 Cr``; debit positive."""
        words = text.split()
        side = words[-1].lower() if len(words) == 2 else ""
        if side not in ("", "dr", "cr"):
            raise InvalidInput(f"opening balance {text!r} must be AMOUNT, AMOUNT Dr or AMOUNT Cr")
        paise = parse_amount(words[0] if words else "", allow_zero=True)
        nature = tree.get(group)
        debit = side == "dr" or (not side and nature is not None and nature.nature.debit_normal)
        return paise if debit else -paise

    # ------------------------------------------------------------ vouchers

    def post(self, draft: Draft) -> Revision:
        return self.post_many([ImportedDraft("", draft)])[0]

    def post_many(self, drafts: list[ImportedDraft], progress: Callable[[int], None] | None = None) -> list[Revision]:
        """Post every draft or none; each error names where its draft came from."""
        chart = self.chart()
        office = self.identity.office
        contents = []
        for done, item in enumerate(drafts, start=1):
            contents.append((item.where, _checked(item, chart)))
            if progress and done % 500 == 0:
                progress(done)
        with self.store.transaction() as batch:
            counters: dict[str, int] = {}
            by_doc: dict[str, list[Revision]] = {}
            for _where, content in contents:
                kind = content.type.value
                if kind not in counters:
                    counters[kind] = queries.next_in_series(batch.session, office, kind)
                number = f"{office}/{content.type.prefix}/{counters[kind]:05d}"
                counters[kind] += 1
                rev = Revision(secrets.token_hex(12), number, office, content, Action.POST, (), 1,
                               self.identity.node_id, utc_now())
                by_doc.setdefault(schema.voucher_doc(office, content.date), []).append(rev)
            for doc_name, revs in by_doc.items():
                batch.change(doc_name, _put_all(revs), self._masters_deps(batch, chart, revs))
        if progress:
            progress(len(drafts))
        return [rev for revs in by_doc.values() for rev in revs]

    def amend(self, number: str, draft: Draft) -> Revision:
        chart = self.chart()
        content = _checked(ImportedDraft("", draft), chart)
        return self._revise(number, Action.AMEND, content, "", chart)

    def cancel(self, number: str, reason: str) -> Revision:
        if not reason.strip():
            raise InvalidInput("give the reason for cancelling with --reason")
        return self._revise(number, Action.CANCEL, None, reason.strip(), self.chart())

    def _revise(self, number: str, action: Action, content: VoucherContent | None, reason: str,
                chart: Chart) -> Revision:
        number = number.strip().upper()
        with self.store.transaction() as batch:
            row = queries.voucher(batch.session, number)
            if row is None:
                raise NotFound(f"no voucher numbered {number}")
            if row.office != self.identity.office and not self.identity.is_head:
                raise RuleViolation(f"voucher {number} belongs to office {row.office}; only it or the head office may change it")
            revs = queries.revisions(batch.session, number)
            state = resolve(revs)
            if state.current.cancelled:
                raise RuleViolation(f"voucher {number} is cancelled; a cancelled voucher cannot be {action.value}ed")
            if content is not None and content.type is not state.current.content.type:
                raise RuleViolation(f"voucher {number} is a {state.current.content.type.label}; an amendment keeps its type")
            parents = tuple(heads(revs))
            generation = max(r.generation for r in revs if r.id in parents) + 1
            rev = Revision(secrets.token_hex(12), number, row.office, content or state.current.content, action,
                           parents, generation, self.identity.node_id, utc_now(), reason)
            batch.change(row.doc, _put_all([rev]), self._masters_deps(batch, chart, [rev]))
        return rev

    def _masters_deps(self, batch, chart: Chart, revs: Iterable[Revision]) -> Deps:  # type: ignore[no-untyped-def]
        """A voucher depends on the masters entries that created its ledgers."""
        authors = {chart.ledger(line.ledger).author for rev in revs for line in rev.content.lines}  # type: ignore[union-attr]
        vector = log.vector(batch.session, schema.MASTERS)
        return {schema.MASTERS: {a: vector[a] for a in authors if a in vector}}

    def _writable_office(self, office: str | None) -> str:
        code = check_office_code(office) if office else self.identity.office
        if code != self.identity.office and not self.identity.is_head:
            raise RuleViolation(f"this node belongs to office {self.identity.office}; it may not write office {code}'s books")
        return code

    # ------------------------------------------------------------ replication

    def changes(self, after: dict[str, dict[str, int]] | None = None) -> list[Change]:
        """Changes the holder of version vectors `after` lacks, in the order they were applied here."""
        after = after or {}
        with self.db.read() as session:
            rows = session.exec(select(Entry).order_by(Entry.id))
            return [log.as_change(r) for r in rows if r.seq > after.get(r.doc, {}).get(r.author, 0)]

    def vectors(self) -> dict[str, dict[str, int]]:
        with self.db.read() as session:
            return {doc: log.vector(session, doc) for doc in log.documents(session)}

    def receive(self, changes: Iterable[Change]) -> int:
        """Apply received changes in causal order; ones still waiting are kept until they can be.
        Returns how many were applied."""
        applied = 0
        with self.store.transaction() as batch:
            for change in changes:
                if not log.has(batch.session, *change.key):
                    _park(batch.session, change)
            progress = True
            while progress:
                progress = False
                for waiting in list(batch.session.exec(select(Pending).order_by(Pending.id))):
                    change = Change(waiting.doc, waiting.author, waiting.seq, waiting.update, decode_deps(waiting.deps))
                    if log.has(batch.session, *change.key):
                        batch.session.delete(waiting)
                        continue
                    if unmet(change, lambda d, a: log.vector(batch.session, d).get(a, 0)):
                        continue
                    chart_doc = batch.doc(schema.MASTERS)
                    batch.receive(change, lambda c, doc, changed: admit.check_change(
                        c.doc, doc, changed, schema.read_chart(chart_doc)))
                    batch.session.delete(waiting)
                    batch.session.flush()
                    applied += 1
                    progress = True
        return applied


def _checked(item: ImportedDraft, chart: Chart) -> VoucherContent:
    try:
        content = resolve_names(item.draft, chart)
        validate_voucher(content, chart)
    except P2PSyncError as exc:
        if item.where:
            raise type(exc)(f"{item.where}: {exc}") from None
        raise
    return content


def _put_all(revs: list[Revision]):  # type: ignore[no-untyped-def]
    def mutate(doc):  # type: ignore[no-untyped-def]
        for rev in revs:
            schema.put_revision(doc, rev)
    return mutate


def _park(session: Session, change: Change) -> None:
    exists = session.exec(select(Pending.id).where(
        Pending.doc == change.doc, Pending.author == change.author, Pending.seq == change.seq)).first()
    if exists is None:
        session.add(Pending(doc=change.doc, author=change.author, seq=change.seq, deps=encode_deps(change.deps),
                            update=change.update, received_at=utc_now()))
        session.flush()


