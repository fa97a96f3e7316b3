"""One office's node: its identity, its books on disk, and the operations a user performs on them."""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlmodel import Session, select

from p2psync.books import admit, schema
from p2psync.books.change import Change
from p2psync.books.drafts import Draft, resolve_names
from p2psync.books.groups import CASH_IN_HAND, GroupTree, group_key
from p2psync.books.importer import ImportedDraft
from p2psync.books.interoffice import linked_offices
from p2psync.books.model import (
    MAX_NARRATION,
    Action,
    GroupDef,
    LedgerDef,
    Office,
    Opening,
    Revision,
    VoucherContent,
    VoucherState,
    check_name,
    check_office_code,
    voucher_number,
)
from p2psync.books.money import format_indian, parse_amount
from p2psync.books.posting import POSTING_SETTINGS, UNLOCK_HINT, DateWindow
from p2psync.books.resolve import heads, resolve
from p2psync.books.rules import Chart, validate_voucher
from p2psync.canonical import utc_now
from p2psync.deps import Deps
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.net.tls import write_cert_files
from p2psync.node import held_back, inbox
from p2psync.node.home import (
    DB_FILE,
    KEYS_DIR,
    ROOT_KEY_FILE,
    check_new_home,
    check_private_keys,
    ensure_private_dir,
)
from p2psync.node.membership import Membership
from p2psync.protocol import entry
from p2psync.store import log, queries
from p2psync.store.books import Batch, BookStore
from p2psync.store.db import CATCHING_UP_KEY, Database, get_setting, get_settings, set_setting
from p2psync.store.tables import Entry, Quarantine
from p2psync.trust.certs import issue_node_cert, make_root_cert, root_public_from_cert, to_der
from p2psync.trust.enroll import Enrollment
from p2psync.trust.keys import NodeKeys, b64, org_id, registration_id, unb64, write_private
from p2psync.trust.policy import Authority, StalePolicy
from p2psync.trust.policy import sign as sign_policy
from p2psync.trust.policy import verify as verify_policy
from p2psync.trust.scopes import EVERY_OFFICE

#: Settings that belong to this node alone (the shared ones live in the signed policy): how it syncs,
#: how it writes dates (`p2psync.localtime.DATE_FORMATS`), and what it lets be posted.
LOCAL_SETTINGS: dict[str, str | None] = {"mode": "auto", "interval": "5", "date_format": "dd-mm-yyyy",
                                         **POSTING_SETTINGS}
_CASH = frozenset({group_key(CASH_IN_HAND)})

logger = logging.getLogger(__name__)

#: What refuses one post of a group commit without failing the others: the draft's own fault.
RULE_ERRORS = (InvalidInput, RuleViolation, NotFound)
RuleError = InvalidInput | RuleViolation | NotFound

#: What a restored office must do before it may write again (see `node.recovery`).
CATCHING_UP_FIX = "run 'p2psync sync --peer wss://HOST:PORT' (or keep the node running) until it says caught up"
#: What `status` and the dashboard say while a restored office catches up.
CATCHING_UP_NOTICE = f"This office is catching up after a restore and refuses to post until then: {CATCHING_UP_FIX}."


class CatchingUp(RuleViolation):
    """A change refused because the office has not caught up with its own entries after a restore:
    it would reuse sequence numbers the other offices already hold with other content."""

    def __init__(self) -> None:
        super().__init__(f"this office is catching up after a restore: {CATCHING_UP_FIX}")


@dataclass(frozen=True)
class Identity:
    company: str
    office: str
    role: str  # "head" or "branch"
    node_id: str

    @property
    def is_head(self) -> bool:
        return self.role == "head"

    def may_write(self, office: str) -> bool:
        """Whether this office may change `office`'s vouchers: its own, or any at the head office
        (every receiver checks the same rule, so offering more would only be refused there)."""
        return self.is_head or office == self.office


class Node:
    """A node's books. Every write goes through `BookStore.transaction`, so it is atomic."""

    def __init__(self, home: Path, db: Database, identity: Identity, membership: Membership) -> None:
        self.home = home
        self.db = db
        self.identity = identity
        self.trust = membership
        self.store = BookStore(db, identity.node_id, schema.client_id(identity.node_id), seal=self._seal,
                               policy=lambda: self.trust.policy.version)
        #: Stamps this office's records (`at`): decides concurrent amendments and duplicate ledgers.
        self.clock: Callable[[], str] = utc_now
        #: Today's date, for the dates this office accepts on the vouchers it enters.
        self.today: Callable[[], dt.date] = dt.date.today
        self._charts: dict[str, Chart] = {}  # by office, for the masters as of `_charts_of`
        self._charts_of: tuple[int, int] | None = None
        #: Restored from a backup and not yet caught up with its own entries: every change is refused.
        self.catching_up = False

    # ------------------------------------------------------------ lifecycle

    @classmethod
    def create_head(cls, home: Path, company: str, office: str = "HO", office_name: str = "Head Office",
                    open_books: bool = False) -> Node:
        """A new organisation: its root key, the head office's node, certificate and first policy, with
        read scopes from the start (the head office reads every office's books, every other office the
        masters and its own). `open_books`: every office reads every office's books, including those
        of offices added later, as in versions before read scopes (the grant of every office's books
        to every branch office, which the head office can take back)."""
        company = check_name(company, "company")
        code = check_office_code(office)
        office_name = check_name(office_name or code, "office")
        _claim_home(home)
        root = Ed25519PrivateKey.generate()
        keys = NodeKeys.generate()
        write_private(home / KEYS_DIR / ROOT_KEY_FILE, root)
        keys.save(home / KEYS_DIR)
        root_cert = make_root_cert(root)
        cert = to_der(issue_node_cert(root, root_cert, keys.signing.public_key(), keys.sealing.public_key(),
                                      code, "head"))
        grants = {EVERY_OFFICE: [EVERY_OFFICE]} if open_books else None
        policy = Authority(root, {}).genesis(org_id(root.public_key()), cert, scoped=True, grants=grants)
        node = cls._install(home, keys, Identity(company, code, "head", keys.node_id), to_der(root_cert), cert,
                            sign_policy(policy, root))
        node._put_office(Office(code, office_name, "head"))
        return node

    @classmethod
    def join(cls, home: Path, enrollment: Enrollment, keys: NodeKeys) -> Node:
        """A new branch from a verified enrollment; its books arrive with the first sync."""
        _claim_home(home)
        keys.save(home / KEYS_DIR)
        grant = enrollment.grant
        identity = Identity(grant.company, grant.office, "branch", keys.node_id)
        return cls._install(home, keys, identity, grant.root_cert, grant.cert, grant.policy)

    @classmethod
    def _install(cls, home: Path, keys: NodeKeys, identity: Identity, root_cert: bytes, cert: bytes,
                 policy: bytes) -> Node:
        db = Database(home / DB_FILE)
        db.create()
        with db.write() as session:
            for key, value in vars(identity).items():
                set_setting(session, key, value)
            set_setting(session, "root_cert", b64(root_cert))
            set_setting(session, "cert", b64(cert))
            set_setting(session, "policy", policy.decode())
        write_cert_files(home / KEYS_DIR, cert)
        return cls.open(home)

    @classmethod
    def open(cls, home: Path) -> Node:
        db = Database(home / DB_FILE)
        db.check()
        with db.read() as session:
            values = {k: get_setting(session, k) for k in ("company", "office", "role", "node_id")}
            root_cert, policy_blob = get_setting(session, "root_cert"), get_setting(session, "policy")
            catching_up = get_setting(session, CATCHING_UP_KEY) is not None
        if not all(values.values()) or not root_cert or not policy_blob:
            raise P2PSyncError(f"{home} holds an incomplete p2psync node; set it up again in an empty --home")
        check_private_keys(home)
        keys = NodeKeys.load(home / KEYS_DIR)
        if keys.node_id != values["node_id"]:
            raise P2PSyncError(f"the keys in {home / KEYS_DIR} do not belong to this node")
        root = root_public_from_cert(unb64(root_cert))
        policy = verify_policy(policy_blob.encode(), root, org_id(root))
        node = cls(home, db, Identity(**values), Membership(root, policy, keys))  # type: ignore[arg-type]
        node.catching_up = catching_up
        node.store.link_log(lambda blob: entry.peek(blob).policy)
        node.store.check_snapshots()
        node.store.check_reports()
        return node

    def close(self) -> None:
        try:
            self.store.write_snapshots()
        finally:
            self.db.dispose()

    def _seal(self, change: Change) -> bytes | None:
        """Sealed entries for shared documents; local books are never sealed or sent. Every shared
        change passes here, so no entry of a restored office can take a number it used before."""
        if self.catching_up:
            raise CatchingUp()
        return None if schema.parse_doc_name(change.doc).local else self.trust.seal(change)

    @property
    def series(self) -> int:
        """This machine's voucher number series within its office, from its certificate."""
        return self.trust.author(self.identity.node_id).series

    @property
    def registration_id(self) -> str:
        return registration_id(self.trust.org)

    def settings(self) -> dict[str, str | None]:
        with self.db.read() as session:
            return get_settings(session, LOCAL_SETTINGS)

    def set_local(self, **values: str) -> None:
        unknown = set(values) - set(LOCAL_SETTINGS)
        if unknown:
            raise InvalidInput(f"unknown setting {sorted(unknown)[0]!r}")
        with self.db.write() as session:
            for key, value in values.items():
                set_setting(session, key, value)

    def adopt_policy(self, blob: bytes) -> bool:
        """Take a newer valid policy from anyone; False if it is not newer. Raises on forgeries."""
        before = self.trust.policy
        try:
            self.trust.accept(blob)
        except StalePolicy:
            return False
        with self.db.write() as session:
            set_setting(session, "policy", blob.decode())
        held_back.withdraw(self, before)
        inbox.retry_quarantined(self)
        inbox.open_carried(self)
        return True

    def policy_blob(self) -> bytes:
        with self.db.read() as session:
            return (get_setting(session, "policy") or "").encode()

    # ------------------------------------------------------------ masters

    def chart(self, session: Session | None = None, office: str | None = None) -> Chart:
        """The ledgers and groups in force for `office`'s books (this office's by default), decoded once
        per change of the masters document."""
        if session is None:
            with self.db.read() as own:
                return self.chart(own, office)
        office = office or self.identity.office
        loaded = self.store.loaded(session, schema.MASTERS)
        version = (id(loaded), loaded.upto)
        if self._charts_of != version:
            self._charts, self._charts_of = {}, version
        if office not in self._charts:
            self._charts[office] = schema.read_chart(loaded.doc, office)
        return self._charts[office]

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
        with self.store.transaction() as batch:
            self._adopt(batch, self.identity.office, groups=[parent_group.name])
            record = GroupDef(name, parent_group.name, self.identity.office, self.identity.node_id, self.clock(),
                              self._next_masters_seq(batch.session))
            batch.change(schema.MASTERS, lambda doc: schema.put_group(doc, record))
        return record

    def _next_masters_seq(self, session: Session) -> int:
        """The sequence number of this node's next masters entry, which a new record carries."""
        return log.last_seq(session, schema.MASTERS, self.identity.node_id) + 1

    def add_ledger(self, name: str, group: str, opening: str | None = None) -> LedgerDef:
        name = check_name(name, "ledger")
        chart = self.chart()
        existing = chart.ledger(name)
        if existing is not None:
            raise InvalidInput(f"ledger {name!r} already exists as {existing.name!r} (names ignore case)")
        group_def = chart.groups.get(group)
        if group_def is None:
            raise NotFound(f"unknown group {group!r}; see 'p2psync group list'")
        balance = self._opening_paise(opening, group_def.name, chart.groups) if opening else None
        with self.store.transaction() as batch:
            self._adopt(batch, self.identity.office, groups=[group_def.name])
            record = LedgerDef(name, group_def.name, self.identity.office, self.identity.node_id, self.clock(),
                               self._next_masters_seq(batch.session))

            def mutate(doc):  # type: ignore[no-untyped-def]
                schema.put_ledger(doc, record)
                if balance:
                    schema.put_opening(doc, Opening(name, self.identity.office, balance,
                                                    self.identity.node_id, self.clock()))

            batch.change(schema.MASTERS, mutate)
        return record

    def set_opening(self, ledger: str, amount: str, office: str | None = None) -> Opening:
        chart = self.chart()
        target = self._writable_office(office)
        found = chart.ledger(ledger)
        if found is None:
            raise NotFound(f"unknown ledger {ledger!r}")
        if not found.author:
            raise InvalidInput(f"{found.name} is an inter-office account: it has no opening balance of its own")
        opening = Opening(found.name, target, self._opening_paise(amount, found.group, chart.groups),
                          self.identity.node_id, self.clock())
        with self.store.transaction() as batch:
            self._adopt(batch, target, ledgers=[found.name])
            batch.change(schema.MASTERS, lambda doc: schema.put_opening(doc, opening))
        return opening

    @staticmethod
    def _opening_paise(text: str, group: str, tree: GroupTree) -> int:
        """``5000`` (on the group's usual side), ``5000 Dr`` or ``5000 Cr``; debit positive."""
        words = text.split()
        side = words[-1].lower() if len(words) == 2 else ""
        if len(words) not in (1, 2) or side not in ("", "dr", "cr"):
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
        self._may_post()
        with self.store.transaction() as batch:
            posted = self._post_in(batch, drafts, get_settings(batch.session, LOCAL_SETTINGS), progress)
        if progress:
            progress(len(drafts))
        return posted

    def post_group(self, drafts: list[Draft]) -> list[Revision | RuleError]:
        """Post each draft as a voucher of its own, all in one durable commit: group commit, where
        posts that queued while the previous commit was going to disk share the next one's fsync. A
        draft refused by a rule undoes only itself; the result is, in order, each draft's revision or
        the error that refused it. Any other failure (the disk) fails them all. The posts of a group
        that fall in one month are one entry (`Batch.coalescing`), as a batch posted together is."""
        self._may_post()
        results: list[Revision | RuleError] = []
        with self.store.transaction() as batch, batch.coalescing():
            settings = get_settings(batch.session, LOCAL_SETTINGS)  # in the write: a read of its own cost more
            for draft in drafts:
                try:
                    with batch.part():
                        results.extend(self._post_in(batch, [ImportedDraft("", draft)], settings))
                except RULE_ERRORS as exc:
                    results.append(exc)
        return results

    def _may_post(self) -> None:
        if self.catching_up:  # local books too: their voucher numbers share the office's series
            raise CatchingUp()

    def _post_in(self, batch: Batch, drafts: list[ImportedDraft], settings: dict[str, str | None],
                 progress: Callable[[int], None] | None = None) -> list[Revision]:
        """The drafts' revisions written in `batch`. They are checked against the masters as the write
        transaction that commits them finds them (reading them in a transaction of their own cost a
        live post about a sixth of its time)."""
        office, author, series = self.identity.office, self.identity.node_id, self.series
        window, refuse_cash = self.date_window(settings), settings["negative_cash"] == "refuse"
        chart = self.chart(batch.session)
        contents = []
        for done, item in enumerate(drafts, start=1):
            contents.append(_checked(item, chart, window, office))
            if progress and done % 500 == 0:
                progress(done)
        ids = secrets.token_hex(12 * len(contents))  # 24 hex digits a voucher, as token_hex(12) each
        at = self.clock()  # the moment of the batch, which is posted whole or not at all
        doc_of: dict[dt.date, str] = {}  # a batch's vouchers fall on far fewer dates
        counters: dict[str, int] = {}
        posted: list[Revision] = []
        #: Vouchers that other offices must read (they touch their inter-office accounts) go in entries
        #: of their own, one for each set of such offices, so that none is sealed for more than it concerns.
        by_doc: dict[tuple[str, tuple[str, ...]], list[Revision]] = {}
        for n, content in enumerate(contents):
            kind = content.type.value
            position = counters.get(kind)
            if position is None:
                position = queries.next_in_series(batch.session, office, kind, series)
            counters[kind] = position + 1
            rev = Revision(ids[24 * n:24 * n + 24], voucher_number(office, content.type, series, position), office,
                           content, Action.POST, (), 1, author, at)
            doc_name = doc_of.get(content.date)
            if doc_name is None:
                doc_name = doc_of[content.date] = schema.voucher_doc(office, content.date,
                                                                     self._is_local(content.date))
            by_doc.setdefault((doc_name, linked_offices([rev], _no_earlier)), []).append(rev)
            posted.append(rev)
        for (doc_name, _to), revs in by_doc.items():
            batch.change(doc_name, lambda doc, revs=revs: schema.put_revisions(doc, revs),
                         self._masters_deps(batch, revs), revs)
        if refuse_cash:
            _refuse(self.cash_shortfalls(posted, batch.session, chart))
        return posted

    def amend(self, number: str, draft: Draft) -> Revision:
        with self.db.read() as session:
            row = queries.voucher(session, number.strip().upper())
            chart = self.chart(session, row.office if row is not None else None)
        content = _checked(ImportedDraft("", draft), chart, self.date_window(),
                           row.office if row is not None else self.identity.office)
        return self._revise(number, Action.AMEND, content, "", chart)

    def cancel(self, number: str, reason: str) -> Revision:
        if not reason.strip():
            raise InvalidInput("give the reason for cancelling with --reason")
        return self._revise(number, Action.CANCEL, None, reason.strip(), self.chart())

    def _revise(self, number: str, action: Action, content: VoucherContent | None, reason: str,
                chart: Chart) -> Revision:
        if self.catching_up:
            raise CatchingUp()
        number = number.strip().upper()
        refuse_cash = self.settings()["negative_cash"] == "refuse"
        with self.store.transaction() as batch:
            row = queries.voucher(batch.session, number)
            if row is None:
                raise NotFound(f"no voucher numbered {number}")
            if not self.identity.may_write(row.office):
                raise RuleViolation(f"voucher {number} belongs to office {row.office}; only it or the head office may change it")
            revs = batch.revisions(number)
            state = resolve(revs)
            if state.current.cancelled:
                verb = "cancelled again" if action is Action.CANCEL else "amended"
                raise RuleViolation(f"voucher {number} is cancelled; a cancelled voucher cannot be {verb}")
            if (content is not None and not schema.parse_doc_name(row.doc).local
                    and self._is_local(content.date)):
                raise RuleViolation(f"voucher {number} is shared; it cannot be dated before the sync-after date "
                                    f"{self.trust.policy.sync_after}")
            if content is not None and content.type is not state.current.content.type:
                raise RuleViolation(f"voucher {number} is a {state.current.content.type.label}; an amendment keeps its type")
            parents = tuple(heads(revs))
            generation = max(r.generation for r in revs if r.id in parents) + 1
            rev = Revision(secrets.token_hex(12), number, row.office, content or state.current.content, action,
                           parents, generation, self.identity.node_id, self.clock(), reason)
            self._check_unlocked(rev, revs)
            batch.change(row.doc, lambda doc: schema.put_revisions(doc, [rev]), self._masters_deps(batch, [rev]),
                         [rev])
            if refuse_cash:
                _refuse(self.cash_shortfalls([rev, state.current], batch.session, chart))
        return rev

    def settle(self, number: str, restore: str | None = None) -> list[Revision]:
        """Settle the conflict of voucher `number` in a way every office decides identically, with no
        receiver rule changed: the versions that lost are replaced by a cancellation of their own
        (concurrent cancellations are no conflict, `resolve`), or, with `restore`, the version named
        is kept (`_restore`). Returns the revisions made."""
        number = number.strip().upper()
        settings = self.settings()
        window, refuse_cash = self.date_window(settings), settings["negative_cash"] == "refuse"
        with self.store.transaction() as batch:
            row = queries.voucher(batch.session, number)
            if row is None:
                raise NotFound(f"no voucher numbered {number}")
            if not self.identity.may_write(row.office):
                raise RuleViolation(f"voucher {number} belongs to office {row.office}; only it or the head office "
                                    "may settle its conflict")
            state = resolve(batch.revisions(number))
            if not state.conflicts:
                raise RuleViolation(f"voucher {number} has no conflict to settle")
            chart = self.chart(batch.session, row.office)
            if restore is None:
                if not state.current.cancelled:
                    raise RuleViolation(f"voucher {number} is not cancelled: settle it with --restore REVISION "
                                        "(see 'p2psync conflicts'), or amend it")
                made = [self._cancel_losers(batch, chart, row.doc, state, "the cancellation is kept")]
            else:
                made = self._restore(batch, chart, row.doc, state, _pick(state, restore), window)
            if refuse_cash:
                _refuse(self.cash_shortfalls(made, batch.session, chart))
        return made

    def _cancel_losers(self, batch, chart: Chart, doc: str, state: VoucherState, why: str,  # type: ignore[no-untyped-def]
                       deps: Deps | None = None) -> Revision:
        """A cancellation replacing every amendment that lost to the voucher's cancellation: its parents
        are amendments, never a cancellation, so every receiver admits it (`admit._check_lineage`)."""
        losers = [r for r in state.conflicts if not r.cancelled]
        rev = Revision(secrets.token_hex(12), state.number, state.current.office, state.current.content,
                       Action.CANCEL, tuple(sorted(r.id for r in losers)), max(r.generation for r in losers) + 1,
                       self.identity.node_id, self.clock(), f"conflict settled: {why} ({state.current.reason})")
        self._check_unlocked(rev, losers)
        all_deps = {**self._masters_deps(batch, [rev]), **(deps or {})}
        batch.change(doc, lambda d: schema.put_revisions(d, [rev]), all_deps, [rev])
        return rev

    def _restore(self, batch, chart: Chart, doc: str, state: VoucherState, chosen: Revision,  # type: ignore[no-untyped-def]
                 window: DateWindow) -> list[Revision]:
        """Keep version `chosen`. Between amendments, that is one more amendment replacing every head.
        Against a cancellation it cannot be: a cancelled voucher stays cancelled everywhere. So the
        amendments that lost are cancelled too, and `chosen` is posted again as a new voucher of this
        office, its narration naming the old number; the cancellation depends on the new voucher's entry,
        so no office holds the one without the other."""
        validate_voucher(chosen.content, chart, chosen.office)
        window.check(chosen.content.date)
        if not state.current.cancelled:
            parents = tuple(sorted(r.id for r in [state.current, *state.conflicts]))
            generation = max(r.generation for r in [state.current, *state.conflicts]) + 1
            rev = Revision(secrets.token_hex(12), state.number, state.current.office, chosen.content, Action.AMEND,
                           parents, generation, self.identity.node_id, self.clock(), "")
            self._check_unlocked(rev, [state.current, *state.conflicts])
            batch.change(doc, lambda d: schema.put_revisions(d, [rev]), self._masters_deps(batch, [rev]), [rev])
            return [rev]
        office = self.identity.office
        if state.current.office != office:
            raise RuleViolation(f"only office {state.current.office} can restore its cancelled voucher {state.number} "
                                "as a new voucher in its own series; settle with --keep-cancellation here")
        if self._is_local(chosen.content.date):
            raise RuleViolation(f"the restored version is dated before the sync-after date "
                                f"{self.trust.policy.sync_after}; it would never reach the other offices")
        content = msgspec.structs.replace(chosen.content, narration=_restored_narration(chosen, state.number))
        position = queries.next_in_series(batch.session, office, content.type.value, self.series)
        post = Revision(secrets.token_hex(12), voucher_number(office, content.type, self.series, position), office,
                        content, Action.POST, (), 1, self.identity.node_id, self.clock())
        new_doc = schema.voucher_doc(office, content.date)
        change = batch.change(new_doc, lambda d: schema.put_revisions(d, [post]),
                              self._masters_deps(batch, [post]), [post])
        deps = {new_doc: {self.identity.node_id: change.seq}} if change is not None and new_doc != doc else None
        cancel = self._cancel_losers(batch, chart, doc, state, f"version {chosen.id[:8]} restored as {post.number}",
                                     deps)
        return [post, cancel]

    def _masters_deps(self, batch, revs: Iterable[Revision]) -> Deps:  # type: ignore[no-untyped-def]
        """A voucher depends on everything this node holds of the masters: receivers judge its type's
        rule with the chart those entries make (`admit._check_type`), the one it was posted under.
        What another branch made is first recorded as its office's own (`_adopt`)."""
        names: dict[str, set[str]] = defaultdict(set)
        for rev in revs:
            names[rev.office].update(line.ledger for line in rev.content.lines)
        for office, used in names.items():
            self._adopt(batch, office, ledgers=used)
        return {schema.MASTERS: batch.vector(schema.MASTERS)}

    def _adopt(self, batch, office: str, ledgers: Iterable[str] = (),  # type: ignore[no-untyped-def]
               groups: Iterable[str] = ()) -> Chart:
        """Record as `office`'s own, in this batch, the ledger and group records these stand on that
        another branch made, and return `office`'s chart after. An office's own record of a name is in
        force for its books over any other branch's (`schema.effective`): without it, a branch that
        records the same name concurrently, or claims to have, could re-classify this office's books."""
        chart = self.chart(batch.session, office)
        borrowed = chart.borrowed(office, ledgers, groups)
        if not borrowed:
            return chart
        node, at, seq = self.identity.node_id, self.clock(), self._next_masters_seq(batch.session)

        def mutate(doc):  # type: ignore[no-untyped-def]
            for record in borrowed:
                if isinstance(record, LedgerDef):
                    schema.put_ledger(doc, LedgerDef(record.name, record.group, office, node, at, seq))
                else:
                    schema.put_group(doc, GroupDef(record.name, record.parent, office, node, at, seq))

        batch.change(schema.MASTERS, mutate)
        return self.chart(batch.session, office)

    def date_window(self, settings: dict[str, str | None] | None = None) -> DateWindow:
        """The dates this office accepts on a voucher it enters (its own setting: see `posting`), and
        none in the period the head office locked."""
        window = DateWindow.from_settings(settings or self.settings(), self.today())
        return replace(window, locked_until=self.trust.policy.lock_until_date)

    def _check_unlocked(self, rev: Revision, replaced: Iterable[Revision]) -> None:
        """The period lock every receiver applies (`admit.check_unlocked`), checked before anything is
        written, for a revision replacing others: the old date counts as much as the new one."""
        known = {r.id: r for r in replaced}
        try:
            admit.check_unlocked(rev, self.trust.policy.lock_until_date, known.get)
        except RuleViolation as exc:
            raise RuleViolation(f"{exc}; {UNLOCK_HINT}") from None

    def cash_shortfalls(self, revs: Iterable[Revision], session: Session | None = None,
                        chart: Chart | None = None) -> list[str]:
        """A line for each Cash-in-Hand ledger these revisions touch whose balance at their office now
        goes below zero on some day from their date on: cash in a drawer cannot be a credit balance,
        so it is nearly always a slip (a bank overdraft is normal, so banks are not checked)."""
        if session is None:
            with self.db.read() as own:
                return self.cash_shortfalls(revs, own, chart)
        chart = chart or self.chart(session)
        by_office: dict[str, tuple[dt.date, set[str]]] = {}
        for rev in revs:
            cash = {chart.key(ln.ledger) for ln in rev.content.lines
                    if (led := chart.ledger(ln.ledger)) is not None and chart.groups.is_under(led.group, _CASH)}
            if cash:
                since, keys = by_office.get(rev.office, (rev.content.date, set()))
                by_office[rev.office] = (min(since, rev.content.date), keys | cash)
        found = []
        for office, (since, keys) in sorted(by_office.items()):
            for key, (day, paise) in sorted(queries.lowest_balances(session, office, sorted(keys), since).items()):
                if paise < 0:
                    found.append(f"{chart.ledgers[key].name} stands at {format_indian(-paise)} Cr at {office} on "
                                 f"{day}: cash in hand cannot be below zero")
        return found

    def _is_local(self, date: dt.date) -> bool:
        sync_after = self.trust.policy.sync_after_date
        return sync_after is not None and date < sync_after

    def _writable_office(self, office: str | None) -> str:
        code = check_office_code(office) if office else self.identity.office
        if code != self.identity.office and not self.identity.is_head:
            raise RuleViolation(f"this node belongs to office {self.identity.office}; it may not write office {code}'s books")
        if code != self.identity.office:
            with self.db.read() as session:
                if code not in {o.code for o in queries.offices(session)}:
                    raise NotFound(f"office {code} is not in the branch master")
        return code

    # ------------------------------------------------------------ replication

    def vectors(self, docs: Iterable[str] | None = None) -> dict[str, dict[str, int]]:
        """Per shared document (all, or those named), each author's highest sequence held here."""
        with self.db.read() as session:
            return self.shared_vectors(session, log.documents(session) if docs is None else sorted(set(docs)))

    @staticmethod
    def shared_vectors(session: Session, names: Iterable[str],
                       vector: Callable[[str], dict[str, int]] | None = None) -> dict[str, dict[str, int]]:
        """The non-empty vectors of the shared documents among `names` (read by `vector` if given: a
        batch's own, which it keeps)."""
        read = vector or (lambda doc: log.vector(session, doc))
        return {doc: held for doc in names if not schema.parse_doc_name(doc).local and (held := read(doc))}

    def entries_since(self, after_id: int, limit: int = 2000) -> list[tuple[int, str, str, int, int, bytes]]:
        """Sealed entries logged after `after_id`, oldest first: (id, doc, author, seq, vouchers, entry)."""
        with self.db.read() as session:
            return log.shared_after(session, after_id, limit)

    def last_entry_id(self) -> int:
        """The newest logged entry that is shared (local books never leave the node)."""
        with self.db.read() as session:
            return log.last_shared(session)

    def quarantined(self) -> list[dict[str, object]]:
        """Refused entries ("failed to import"), oldest first, each with its reason."""
        with self.db.read() as session:
            return [{"at": q.received_at, "document": q.doc, "author": q.author, "seq": q.seq, "reason": q.reason,
                     "count": q.count} for q in session.exec(select(Quarantine).order_by(Quarantine.id))]

    def entries(self, after: dict[str, dict[str, int]] | None = None) -> list[bytes]:
        """Sealed entries the holder of version vectors `after` lacks, in an order that respects
        every dependency (the order they were applied here)."""
        after = after or {}
        with self.db.read() as session:
            rows = session.exec(select(Entry).where(Entry.envelope != None).order_by(Entry.id))  # noqa: E711
            return [r.envelope for r in rows if r.envelope and r.seq > after.get(r.doc, {}).get(r.author, 0)]

    def receive(self, blobs: Iterable[bytes], vectors_of: Iterable[str] = ()) -> inbox.Received:
        """Verify, order and apply entries from anyone; refused ones go to the quarantine. The result
        holds the vectors of the documents `vectors_of` names, as of its commit."""
        return inbox.receive(self, blobs, vectors_of)

def _pick(state: VoucherState, wanted: str) -> Revision:
    """The head version of a conflicted voucher named by its revision id or a prefix of at least 4."""
    wanted = wanted.strip().lower()
    found = [r for r in [state.current, *state.conflicts] if len(wanted) >= 4 and r.id.startswith(wanted)]
    if len(found) != 1:
        raise NotFound(f"no single version {wanted!r} among the conflicting versions of {state.number} "
                       "(see 'p2psync conflicts')")
    if found[0].cancelled:
        raise RuleViolation(f"version {wanted} is the cancellation; settle with --keep-cancellation")
    return found[0]


def _restored_narration(chosen: Revision, number: str) -> str:
    """The restored version's narration, naming the voucher it restores (within the narration limit)."""
    note = f"restores {number} (cancelled), version {chosen.id[:8]}"
    kept = chosen.content.narration[:MAX_NARRATION - len(note) - 3]
    return f"{kept} - {note}" if kept else note


def _no_earlier(_rev_id: str) -> None:
    """A new voucher replaces no revision."""
    return


def _refuse(shortfalls: list[str]) -> None:
    """Under the setting negative-cash 'refuse': undo the posting, saying why."""
    if shortfalls:
        raise RuleViolation(f"{shortfalls[0]} (this office refuses that: 'p2psync settings --negative-cash')")


def _checked(item: ImportedDraft, chart: Chart, window: DateWindow, office: str) -> VoucherContent:
    try:
        content = resolve_names(item.draft, chart)
        validate_voucher(content, chart, office)
        window.check(content.date)
    except P2PSyncError as exc:
        if item.where:
            raise type(exc)(f"{item.where}: {exc}") from None
        raise
    return content


def _claim_home(home: Path) -> None:
    check_new_home(home)
    ensure_private_dir(home)
