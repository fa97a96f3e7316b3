"""The node database's tables.

`Entry` is the append-only source of truth. `Snapshot` is a cache of document states rebuilt from the
log whenever it is missing or damaged. Every table below the marker is materialized from documents by
`p2psync.store.materialize` and can be dropped and rebuilt at any time.
"""

from __future__ import annotations

from sqlmodel import Field, Index, SQLModel, UniqueConstraint


class Setting(SQLModel, table=True):
    key: str = Field(primary_key=True)
    value: str


class Entry(SQLModel, table=True):
    """One change to one document by one author: the unit that is logged, signed and synced."""

    __table_args__ = (
        UniqueConstraint("doc", "author", "seq"),
        Index("ix_entry_doc_id", "doc", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    doc: str
    author: str
    seq: int
    deps: str  # canonical JSON: {"doc": {"author": seq}}
    update: bytes
    envelope: bytes | None = None  # the signed, encrypted form once trust is set up
    local: bool = True
    received_at: str
    #: The author's Yjs clock in the document after this entry: how far a later entry that depends on
    #: this one may refer to the author's items (-1 until an upgraded home has replayed its log).
    clock: int = -1
    #: The policy version the entry cited (0 for local books): an author's later entries and those
    #: depending on this one may not cite an older one.
    policy: int = 0
    #: The head of the author's chain in this document up to this entry: SHA-256 of the previous
    #: entry's chain and of this sealed entry (`log.chain_link`); None for local books. Two holders of
    #: different entries at one position have different chains from there on, which links compare.
    chain: bytes | None = None
    #: Voucher revisions (posts, amendments, cancellations) the entry carries: its header does not say
    #: (entries are encrypted), so it is counted where the entry was made or applied, for the counts
    #: a link shows in vouchers (0 for entries logged before it was kept).
    vouchers: int = 0


class Snapshot(SQLModel, table=True):
    doc: str = Field(primary_key=True)
    state: bytes
    upto: int  # the highest Entry.id of this document the state contains
    entries: int  # how many entries the state contains, to tell when a new snapshot pays off
    checksum: str


# ---------------------------------------------------------------- materialized (rebuildable)


class OfficeRow(SQLModel, table=True):
    code: str = Field(primary_key=True)
    name: str
    role: str


class GroupRow(SQLModel, table=True):
    key: str = Field(primary_key=True)
    name: str
    parent: str | None = None
    nature: str
    primary: str
    direct: bool
    predefined: bool


class LedgerRow(SQLModel, table=True):
    key: str = Field(primary_key=True)
    name: str
    group_key: str
    office: str  # where it was first created
    created_at: str


class OfficeLedgerRow(SQLModel, table=True):
    """How one office's books classify a ledger, where that differs from `LedgerRow` and its group:
    an office's own record of a name (or its groups') decides its books (`schema.effective`)."""

    office: str = Field(primary_key=True)
    ledger_key: str = Field(primary_key=True)
    group: str
    primary: str
    nature: str
    direct: bool


class OpeningRow(SQLModel, table=True):
    ledger_key: str = Field(primary_key=True)
    office: str = Field(primary_key=True)
    paise: int


class VoucherRow(SQLModel, table=True):
    __table_args__ = (Index("ix_voucher_office_date", "office", "date"),
                      Index("ix_voucher_series", "office", "type", "series", "seq"))
    number: str = Field(primary_key=True)
    doc: str
    office: str
    type: str
    date: str
    narration: str
    amount: int  # total of the debit side, paise
    cancelled: bool
    reason: str
    current: str  # id of the current revision
    revisions: int
    #: Where each of its revisions is, document and id (`materialize.refs_text`): the revisions
    #: themselves are read from the documents, which hold them anyway.
    revision_refs: str
    conflicts: int
    series: int  # which of the office's machines numbered it (1 for the first)
    seq: int  # position in that series for this type, for numbering


class LineRow(SQLModel, table=True):
    """Postings of current, not-cancelled revisions: what every report sums. A voucher's lines are
    found through its row's office, date and number (one index serves that and the per-office
    reports, one B-tree fewer to write per line than an index on the number beside it). The ledger
    index carries the amount, so that the trial balance reads that index alone: without it, a head
    office of 2,000,000 lines fetched every line's row, out of order (17-33 s cold, 0.7 s with it)."""

    __table_args__ = (
        Index("ix_line_ledger_date_paise", "ledger_key", "date", "paise"),
        Index("ix_line_office_date_number", "office", "date", "number"),
    )
    id: int | None = Field(default=None, primary_key=True)
    number: str
    idx: int
    office: str
    date: str
    ledger_key: str
    paise: int  # debit positive, credit negative


class LedgerMonthRow(SQLModel, table=True):
    """Per ledger, month ("YYYY-MM") and office, the debits and credits of its lines, kept with
    `LineRow` as lines are written and removed: a trial balance reads a row per ledger, office and
    month (some thousands at a head office of 50 offices) instead of every line (2,000,000 at
    1,000,000 vouchers), and only the lines of a period's first and last month."""

    ledger_key: str = Field(primary_key=True)
    month: str = Field(primary_key=True)
    office: str = Field(primary_key=True)
    debit: int  # paise
    credit: int  # paise


class ConflictRow(SQLModel, table=True):
    """A concurrent edit that lost: kept in its document, listed here until resolved."""

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # "voucher", "ledger" or "group"
    subject: str = Field(index=True)  # voucher number or name key
    winner: str
    loser: str
    detail: str


class Pending(SQLModel, table=True):
    """A received change waiting for what it depends on; applied as soon as that arrives."""

    __table_args__ = (UniqueConstraint("doc", "author", "seq"),)
    id: int | None = Field(default=None, primary_key=True)
    doc: str
    author: str
    seq: int
    deps: str
    update: bytes
    envelope: bytes | None = None
    policy: int = 1  # the policy version its author cited
    received_at: str


class Quarantine(SQLModel, table=True):
    """A received entry that was refused, kept with the reason: nothing of it was applied."""

    id: int | None = Field(default=None, primary_key=True)
    received_at: str
    doc: str
    author: str
    seq: int
    reason: str
    envelope: bytes
    retryable: bool = False  # refused for want of a policy or key that may still arrive
    #: SHA-256 of the envelope: one row per distinct refused entry, however often it is sent again.
    digest: str | None = Field(default=None, index=True, unique=True)
    #: How many refused entries of this author this row stands for: 1, or more for the summary row
    #: (`seq` 0, no envelope) that counts what arrived after the author's quarantine was full.
    count: int = 1


class Equivocation(SQLModel, table=True):
    """An author found signing two different entries for one position of its chain: the entry held
    here and the other (or, when a link found it by comparing chains, the other's SHA-256). Two signed
    entries for one position are proof on their own."""

    doc: str = Field(primary_key=True)
    author: str = Field(primary_key=True)
    seq: int = Field(primary_key=True)
    found_at: str
    held: bytes | None = None
    other: bytes | None = None
    other_hash: bytes | None = None


class Invite(SQLModel, table=True):
    """A one-time code issued by the head office for one branch."""

    invite_id: str = Field(primary_key=True)  # hex
    office: str
    secret: bytes
    pin: bytes
    created_at: str
    expires_at: str
    attempts: int = 0  # no longer counted (wrong tries lock nothing); kept so older databases still load
    used_by: str | None = None  # node id enrolled with it
    response: bytes | None = None  # the reply sent, resent if the branch retries


class PeerRow(SQLModel, table=True):
    """A peer or relay this node has talked to: what `status` shows when the node is not running."""

    key: str = Field(primary_key=True)  # peer node id, or the relay's address
    kind: str  # "node" or "relay"
    office: str = ""
    address: str = ""
    last_seen: str = ""
    last_sync: str = ""
    sent: int = 0  # entries
    received: int = 0
    sent_vouchers: int = 0
    received_vouchers: int = 0
    last_error: str = ""  # in plain words
    last_error_detail: str = ""  # the technical reason, for --json and the log


class SyncLogRow(SQLModel, table=True):
    """What was sent to and received from whom, and when."""

    id: int | None = Field(default=None, primary_key=True)
    at: str = Field(index=True)
    peer: str
    office: str = ""
    direction: str  # "sent" or "received"
    entries: int
    vouchers: int = 0
