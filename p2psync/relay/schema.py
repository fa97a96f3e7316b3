"""The relay's tables and the ordered migrations that bring an older relay database up to date.

The same tables serve SQLite and PostgreSQL. Migrations are a short ordered list of functions, one
per version step, run in the opening transaction (both engines have transactional DDL), so a
database is either upgraded whole or left as it was. Alembic would add its own version table,
environment and script folder for what is, per step, one or two DDL statements on four tables; the
list keeps upgrades inside the package and testable like any other code.

Its tables live in their own SQLModel registry, so they never mix with a node's tables.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import BigInteger, Connection, Index, Integer, LargeBinary, UniqueConstraint, inspect, text
from sqlalchemy.orm import registry
from sqlmodel import Column, Field, SQLModel

from p2psync.errors import StoreError

SCHEMA_VERSION = "3"

#: Arrival ids: 64-bit on PostgreSQL (one sequence for every organisation); SQLite's INTEGER is already.
ArrivalId = BigInteger().with_variant(Integer, "sqlite")


class RelayModel(SQLModel, registry=registry()):
    """Base of the relay's tables: a metadata of their own, apart from a node's."""


class RelayEntry(RelayModel, table=True):
    __tablename__ = "relay_entry"
    __table_args__ = (
        UniqueConstraint("org", "doc", "author", "seq"),
        Index("ix_relay_entry_arrival", "org", "id"),
        Index("ix_relay_entry_stored_at", "stored_at"),
        {"sqlite_autoincrement": True},  # arrival ids are never reused
    )

    id: int | None = Field(default=None, sa_column=Column(ArrivalId, primary_key=True, autoincrement=True))
    org: str
    doc: str
    author: str
    seq: int
    size: int
    #: When the relay stored it (seconds since the epoch): retention counts from here.
    stored_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    #: The author's chain head in this document up to this entry (`p2psync.chain`); None where the
    #: chain is not whole here (entries stored before version 3, or after an expired one).
    chain: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class RelayFloor(RelayModel, table=True):
    """Per author and document, the highest sequence the relay held and has since let expire: it
    still counts as held (in vectors, against gaps and re-uploads), so expiry never makes the relay
    ask for an entry again or refuse the author's next one as a gap."""

    __tablename__ = "relay_floor"

    org: str = Field(primary_key=True)
    doc: str = Field(primary_key=True)
    author: str = Field(primary_key=True)
    seq: int


class RelayPolicy(RelayModel, table=True):
    __tablename__ = "relay_policy"

    org: str = Field(primary_key=True)
    version: int
    blob: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RelayUsage(RelayModel, table=True):
    __tablename__ = "relay_usage"

    org: str = Field(primary_key=True)
    bytes: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    entries: int = 0


class RelayMeta(RelayModel, table=True):
    __tablename__ = "relay_meta"

    key: str = Field(primary_key=True)
    value: str


# ---------------------------------------------------------------- migrations


def _v1_to_v2(connection: Connection) -> None:
    """Arrival times for retention (entries already held count from the upgrade, so none expires
    sooner than an operator expects) and the floors that expired entries leave behind."""
    now = int(time.time())
    connection.execute(text(f"ALTER TABLE relay_entry ADD COLUMN stored_at BIGINT NOT NULL DEFAULT {now}"))
    connection.execute(text("CREATE INDEX ix_relay_entry_stored_at ON relay_entry (stored_at)"))
    RelayFloor.__table__.create(connection)  # type: ignore[attr-defined]


def _v2_to_v3(connection: Connection) -> None:
    """Chain heads, so that the relay can tell a member which entries it holds in one hash per chain
    (equivocation found through the relay). Entries already held have none: their chains are not
    compared."""
    blob = "BYTEA" if connection.dialect.name == "postgresql" else "BLOB"
    connection.execute(text(f"ALTER TABLE relay_entry ADD COLUMN chain {blob}"))


#: MIGRATIONS[n - 1] upgrades a database from version n to n + 1.
MIGRATIONS: list[Callable[[Connection], None]] = [_v1_to_v2, _v2_to_v3]
assert len(MIGRATIONS) == int(SCHEMA_VERSION) - 1


def prepare(connection: Connection, where: str) -> str | None:
    """Create the relay's tables in an empty database, or upgrade an older one in place, inside the
    caller's transaction. Returns the version it upgraded from, if it did; refuses a newer one."""
    if not inspect(connection).has_table(RelayMeta.__tablename__):
        RelayModel.metadata.create_all(connection)
        _set_version(connection, SCHEMA_VERSION, insert=True)
        return None
    held = connection.execute(text("SELECT value FROM relay_meta WHERE key = 'schema_version'")).scalar()
    if held == SCHEMA_VERSION:
        return None
    if held is None or not held.isdigit() or not 1 <= int(held) < int(SCHEMA_VERSION):
        raise StoreError(f"{where} has relay schema version {held!r}; this p2psync reads versions 1 to "
                         f"{SCHEMA_VERSION} (a newer p2psync wrote it?)")
    for step in MIGRATIONS[int(held) - 1:]:
        step(connection)
    _set_version(connection, SCHEMA_VERSION, insert=False)
    return held


def _set_version(connection: Connection, version: str, *, insert: bool) -> None:
    sql = ("INSERT INTO relay_meta (key, value) VALUES ('schema_version', :v)" if insert
           else "UPDATE relay_meta SET value = :v WHERE key = 'schema_version'")
    connection.execute(text(sql), {"v": version})
