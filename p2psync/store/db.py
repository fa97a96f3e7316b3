"""The node's SQLite database: WAL mode, full fsync on commit, serialized writers (`p2psync.sqlite`,
shared with the relay), its schema version and settings."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import cast

from sqlalchemy import event
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlmodel import Session, SQLModel

from p2psync.errors import StoreError
from p2psync.sqlite import Kept, raw_connection, read_transaction, sqlite_engine, write_transaction
from p2psync.store import health, tables
from p2psync.store.reading import (  # noqa: F401 (the layout's versions, also imported from here)
    CATCHING_UP_KEY,
    MONTHS_ADDED_AFTER,
    REPORTS_VERSION,
    REPORTS_VERSION_KEY,
    SCHEMA_VERSION,
    UNLINKED_KEY,
)
from p2psync.store.tables import Setting


class Database:
    """One node's database file. Writers take the lock up front (BEGIN IMMEDIATE) so that two
    processes on one home can never interleave a read-modify-write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.engine = sqlite_engine(path, pool_size=2, max_overflow=4, pool_pre_ping=False)
        self._autocheckpoint = True
        #: The connection write transactions use when it is free.
        self._writer = Kept(self.engine)

        @event.listens_for(self.engine, "connect")
        def _checkpointing(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            if not self._autocheckpoint:
                dbapi_conn.execute("PRAGMA wal_autocheckpoint=0")

    def defer_checkpoints(self) -> None:
        """Stop commits from copying the write-ahead log back into the database file when it passes
        1,000 pages (SQLite's default, some 50 posts here): the commit that crosses it pays tens of
        milliseconds. A running node calls `checkpoint` when idle instead. Other processes on the
        same home keep the default."""
        self._autocheckpoint = False
        self.dispose()  # connections opened from now on have it off

    def checkpoint(self) -> None:
        """Copy what the write-ahead log holds back into the database file, as far as readers allow
        (durability does not depend on it: every commit is already fsync'd in the log)."""
        with self.engine.connect() as connection:  # outside any transaction: the driver's own call
            connection.connection.driver_connection.execute("PRAGMA wal_checkpoint(PASSIVE)")  # type: ignore[union-attr]

    def create(self) -> None:
        try:
            SQLModel.metadata.create_all(self.engine, tables=_all_tables())
        except OperationalError as exc:
            raise StoreError(f"cannot create database {self.path}: {exc.orig}") from None
        with self.write() as session:
            set_setting(session, "schema_version", SCHEMA_VERSION)
            set_setting(session, REPORTS_VERSION_KEY, REPORTS_VERSION)

    def check(self) -> None:
        """Refuse a file that is not a p2psync database of a version this code understands."""
        if not self.path.exists():
            raise StoreError(f"no p2psync data at {self.path.parent}; run 'p2psync init' first, or put a backup "
                             "back with 'p2psync restore FILE'")
        if self.path.stat().st_size == 0:  # before SQLite, which would take an empty file for a new database
            raise StoreError(health.FileState("empty", "is empty (0 bytes), not a p2psync database").problem(self.path))
        try:
            with self.read() as session:  # a file that is not a database: StoreError, see `describe`
                if not raw_connection(session).execute("SELECT 1 FROM sqlite_master WHERE name = 'setting'").fetchone():
                    raise StoreError(health.inspect(self.path, deep=False).problem(self.path))
                version = get_setting(session, "schema_version")
        except StoreError:
            # Only now read the file's header ourselves: opening and closing the file outside SQLite drops
            # every lock this process's other connections hold on it, which can corrupt a database in use.
            self.dispose()
            found = health.header_state(self.path)
            if found is not None:
                raise StoreError(found.problem(self.path)) from None
            raise
        if version == "1":
            self.upgrade()
        elif version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema version {version!r}; this p2psync needs {SCHEMA_VERSION}")
        else:
            self._add_columns()

    def upgrade(self) -> None:
        """Version 1 to 2, in one transaction: the entry log gains each entry's clock, cited policy and
        chain, unknown (-1) until the node replays its log (`BookStore.link_log`); the quarantine keeps
        one row per distinct entry."""
        SQLModel.metadata.create_all(self.engine, tables=_all_tables())  # the tables it lacks
        with self.write() as session:
            connection = raw_connection(session)
            connection.execute("ALTER TABLE entry ADD COLUMN clock INTEGER NOT NULL DEFAULT -1")
            connection.execute("ALTER TABLE entry ADD COLUMN policy INTEGER NOT NULL DEFAULT 0")
            connection.execute("ALTER TABLE entry ADD COLUMN chain BLOB")
            _upgrade_quarantine(connection)
            add_link_columns(connection)
            set_setting(session, "schema_version", SCHEMA_VERSION)
            set_setting(session, UNLINKED_KEY, "1")

    def _add_columns(self) -> None:
        """Columns added within schema 2 (see `add_link_columns`), for a home made before them; one
        read when there is nothing to add."""
        with self.read() as session:
            if not _missing_link_columns(raw_connection(session)):
                return
        with self.write() as session:
            add_link_columns(raw_connection(session))

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read transaction: one snapshot of the database, begun on its first statement."""
        held = read_transaction(self.engine)
        try:
            try:
                yield cast(Session, held)
            finally:
                held.release()
        except (IntegrityError, sqlite3.IntegrityError):
            raise
        except DatabaseError as exc:
            raise StoreError(self.describe(exc)) from None
        except sqlite3.DatabaseError as exc:  # the same from the queries' plain SQL (`store.queries`)
            raise StoreError(self.describe(DatabaseError(None, None, exc))) from None

    def write(self) -> AbstractContextManager[Session]:
        """A write transaction, committed on normal exit and rolled back on any exception."""
        return write_transaction(self.engine, self.describe, self._writer)

    def recreate(self, models: list[type[SQLModel]], obsolete: tuple[str, ...] = ()) -> None:
        """Empty tables holding caches by dropping and creating them again, even when their pages are
        damaged (a torn write): their entries are removed from the schema without reading a page of
        theirs, and VACUUM then writes a file without them. Tables named in `obsolete`, which an older
        p2psync made, are dropped the same way."""
        names = [model.__tablename__ for model in models] + list(obsolete)  # type: ignore[attr-defined]
        self.dispose()
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            (version,) = conn.execute("PRAGMA schema_version").fetchone()
            conn.execute("PRAGMA writable_schema=ON")
            conn.execute(f"DELETE FROM sqlite_master WHERE tbl_name IN ({','.join('?' * len(names))})", names)
            conn.execute(f"PRAGMA schema_version={int(version) + 1}")  # other connections re-read the schema
            conn.execute("PRAGMA writable_schema=OFF")
            conn.execute("COMMIT")
            conn.execute("VACUUM")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot rebuild the caches in {self.path}: {exc}; {health.RESTORE_HINT}") from None
        finally:
            conn.close()
        self.add_tables(models)

    def add_tables(self, models: list[type[SQLModel]]) -> None:
        """Create the tables of `models` that the database lacks."""
        SQLModel.metadata.create_all(self.engine, tables=[model.__table__ for model in models])  # type: ignore

    def describe(self, exc: DatabaseError) -> str:
        """One line for a database error, saying what the user can do about it."""
        text = str(exc.orig)
        if "full" in text or (("I/O error" in text or "unable to open" in text) and _no_space(self.path)):
            # SQLite also reports a full disk as an I/O error when it cannot grow its shared-memory file
            return "the disk is full; nothing was written"
        if "locked" in text or "busy" in text:
            return "the database is busy (another p2psync command is writing); try again"
        if "not a database" in text:
            return f"{self.path} is not a usable p2psync database ({text}): {health.RESTORE_HINT}"
        if "malformed" in text:
            return self._damaged(text)
        return f"database error: {text}"

    def _damaged(self, text: str) -> str:
        """Name the command that mends this damage: `rebuild` when only caches are hit (it drops them
        without reading their pages), else `restore`, since `rebuild` would fail the same way."""
        found = health.inspect(self.path)
        if found.kind in ("caches", "ok"):  # ok: the damage is in the write-ahead log's pages in memory
            return f"the database file is damaged ({text}); {health.REBUILD_HINT}"
        return found.problem(self.path)

    def dispose(self) -> None:
        """Close every connection (the kept writer's first: it is checked out, and would outlive it)."""
        self._writer.drop()
        self.engine.dispose()


#: Columns added to schema 2 tables since it first shipped: counts in vouchers beside entries, and
#: the technical reason of a link's last error beside the plain one. All have defaults, so older
#: code reading a home that has them is not disturbed.
LINK_COLUMNS = (("entry", "vouchers", "INTEGER NOT NULL DEFAULT 0"),
                ("peerrow", "sent_vouchers", "INTEGER NOT NULL DEFAULT 0"),
                ("peerrow", "received_vouchers", "INTEGER NOT NULL DEFAULT 0"),
                ("peerrow", "last_error_detail", "VARCHAR NOT NULL DEFAULT ''"),
                ("synclogrow", "vouchers", "INTEGER NOT NULL DEFAULT 0"))


def _missing_link_columns(connection: sqlite3.Connection) -> list[tuple[str, str, str]]:
    have: dict[str, set[str]] = {}
    for table in {table for table, _c, _d in LINK_COLUMNS}:
        have[table] = {row[1] for row in connection.execute(f"PRAGMA table_info({table})")}
    return [(t, c, d) for t, c, d in LINK_COLUMNS if have[t] and c not in have[t]]


def add_link_columns(connection: sqlite3.Connection) -> None:
    """Add the `LINK_COLUMNS` a table lacks; idempotent (a table not created yet gets them when it is)."""
    for table, column, declaration in _missing_link_columns(connection):
        connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")


def _upgrade_quarantine(connection: sqlite3.Connection) -> None:
    """Give each quarantined entry its digest, keeping the first row of entries refused repeatedly."""
    connection.execute("ALTER TABLE quarantine ADD COLUMN digest VARCHAR")
    connection.execute("ALTER TABLE quarantine ADD COLUMN count INTEGER NOT NULL DEFAULT 1")
    seen: set[str] = set()
    for row_id, envelope in connection.execute("SELECT id, envelope FROM quarantine ORDER BY id").fetchall():
        digest = hashlib.sha256(envelope).hexdigest()
        if digest in seen:
            connection.execute("DELETE FROM quarantine WHERE id = ?", (row_id,))
        else:
            seen.add(digest)
            connection.execute("UPDATE quarantine SET digest = ? WHERE id = ?", (digest, row_id))
    connection.execute("CREATE UNIQUE INDEX ix_quarantine_digest ON quarantine (digest)")


def _no_space(path: Path) -> bool:
    try:
        return shutil.disk_usage(path.parent).free < 64 * 1024
    except OSError:
        return False


def _all_tables() -> list:
    return [
        model.__table__  # type: ignore[attr-defined]
        for model in vars(tables).values()
        if isinstance(model, type) and issubclass(model, SQLModel) and hasattr(model, "__table__")
    ]


def get_setting(session: Session, key: str, default: str | None = None) -> str | None:
    row = session.get(Setting, key)
    return row.value if row else default


def get_settings(session: Session, defaults: dict[str, str | None]) -> dict[str, str | None]:
    """Several settings in one statement, each its default when unset: every post reads the local
    settings, and one ORM lookup per key cost some 0.3 ms."""
    keys = list(defaults)
    found = dict(raw_connection(session).execute(
        f"SELECT key, value FROM setting WHERE key IN ({', '.join('?' * len(keys))})", keys).fetchall())
    return {key: found.get(key, default) for key, default in defaults.items()}


def set_setting(session: Session, key: str, value: str) -> None:
    row = session.get(Setting, key)
    if row:
        row.value = value
    else:
        session.add(Setting(key=key, value=value))
