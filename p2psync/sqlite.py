"""SQLite as every database here uses it: WAL mode, full fsync on commit, writers that take the lock
up front, database errors as one line, and the raw connection for the hot paths.

Below every layer (like `errors` and `canonical`): the node's store and the relay's both open their
files this way, and the relay must not depend on the node's store to do so.

SQLAlchemy is imported by the functions that use it, not with this module: a read-only command
(`read_only`) then starts without it, and it costs more to import than such a command takes to run.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from p2psync.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine
    from sqlalchemy.exc import DatabaseError
    from sqlalchemy.pool import PoolProxiedConnection
    from sqlmodel import Session

#: How long a statement waits for another process's lock before it fails as busy.
BUSY_TIMEOUT_MS = 15000


def sqlite_engine(path: Path, **options: Any) -> Engine:
    """An engine on a SQLite file in WAL mode with full fsync on commit, where a connection with the
    execution option ``immediate=True`` begins its transactions with BEGIN IMMEDIATE (the write lock
    up front). Shared by the node's database and the relay's."""
    from sqlmodel import create_engine

    engine = create_engine(f"sqlite:///{path}", **options)
    _configure(engine)
    return engine


def read_only(path: Path) -> sqlite3.Connection:
    """A plain `sqlite3` connection that only reads an existing file (never creates one, refuses
    every write), waiting for locks as the engine's connections do: for read-only commands, which
    need none of SQLAlchemy. `sqlite3.Error` if the file cannot be opened."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    connection.execute("PRAGMA query_only=ON")
    return connection


def _configure(engine: Engine) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable before acknowledged
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA cache_size=-32768")  # 32 MiB: bulk receives insert into several indexes
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        options = conn.get_execution_options()
        if options.get(_BEGUN):  # begun on the driver's connection already (`Held`)
            return
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("immediate", False) else "BEGIN")


#: Execution option of an SQLAlchemy connection whose SQLite transaction `Held` began itself.
_BEGUN = "p2psync_begun"


class Kept:
    """One pooled connection kept checked out for write transactions: taking a connection from
    SQLAlchemy's pool and giving it back cost 30-40 µs of CPU per transaction in a live loop (some
    fifty Python calls, cold), as much as the transaction's own `BEGIN` and `COMMIT`. A write that
    finds it in use (another thread's) takes one from the pool as before. `drop` before the engine
    is disposed, so that no connection outlives it."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._pooled: PoolProxiedConnection | None = None

    def take(self) -> PoolProxiedConnection | None:
        """The kept connection, now this caller's until `give_back`; None if another holds it."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._pooled is None:
                self._pooled = self._engine.raw_connection()
        except BaseException:
            self._lock.release()
            raise
        return self._pooled

    def give_back(self, returned: bool = False) -> None:
        """`returned`: the connection went back to the pool meanwhile (an ORM session's connection
        closes it); the next `take` checks one out again."""
        if returned:
            self._pooled = None
        self._lock.release()

    def drop(self) -> None:
        """Give the connection back to the pool (waiting for a write that holds it to end)."""
        with self._lock:
            if self._pooled is not None:
                self._pooled.close()
                self._pooled = None


class Held:
    """One transaction on one pooled connection, as its callers see it: a `Session` in all but name.
    The hot paths use only SQLite's own connection (`raw_connection`), and SQLAlchemy's session,
    connection and transaction around it cost some 90-130 µs of CPU per transaction (against 25-30
    µs without them), more than all the statements of a live receive. So on SQLite the connection
    is taken (from `kept`, or the pool) and begun directly, and the ORM session is made only when a
    caller uses it (any attribute but `info`), on that connection and inside that transaction.
    Another database (the relay's PostgreSQL) gets the ORM session at once, begun as SQLAlchemy
    begins it."""

    def __init__(self, engine: Engine, begin: str, kept: Kept | None = None, **options: Any) -> None:
        self.info: dict[str, Any] = {}
        self._engine, self._begin, self._options = engine, begin, options
        self._sqlite = engine.dialect.name == "sqlite"
        self._kept = kept if self._sqlite else None
        self._keeping = False  # `_pooled` is `_kept`'s
        self._pooled: PoolProxiedConnection | None = None
        self._connection: Connection | None = None
        self._session: Session | None = None

    def driver(self) -> Any:
        """The driver's connection, checked out and begun on first use."""
        raw = self.info.get(_RAW)
        if raw is None:
            if not self._sqlite:
                self.orm()
                return self.info[_RAW]
            if self._kept is not None:
                self._pooled = self._kept.take()
                self._keeping = self._pooled is not None
            if self._pooled is None:
                self._pooled = self._engine.raw_connection()
            self._pooled.driver_connection.execute(self._begin)  # type: ignore[union-attr]
            raw = self.info[_RAW] = self._pooled.driver_connection
        return raw

    def orm(self) -> Session:
        """The SQLAlchemy session on the same connection and transaction, made on first use."""
        if self._session is None:
            from sqlalchemy.engine import Connection
            from sqlmodel import Session

            if self._sqlite:
                self.driver()
                self._connection = Connection(self._engine, self._pooled).execution_options(**{_BEGUN: True})
            else:
                self._connection = self._engine.connect()
            self._session = Session(bind=self._connection, **self._options)
            if not self._sqlite:
                self.info[_RAW] = self._session.connection().connection.driver_connection
            self._session.info[_RAW] = self.info[_RAW]
        return self._session

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # not set yet (or not a Session's public attribute)
            raise AttributeError(name)
        return getattr(self.orm(), name)

    def finish(self) -> None:
        """Commit (flushing what the ORM session holds, if one was made)."""
        if self._session is not None:
            self._session.commit()
        elif self._pooled is not None:
            self.info[_RAW].execute("COMMIT")

    def release(self) -> None:
        """Roll back whatever is not committed, and give the connection back (to the pool, or kept)."""
        if self._connection is not None:
            try:
                if self._session is not None:
                    self._session.close()  # rolls back what it began
            finally:
                try:
                    self._connection.close()  # and gives the pooled connection back
                finally:
                    if self._keeping:
                        self._kept.give_back(returned=True)  # type: ignore[union-attr]
        elif self._pooled is not None:
            try:
                raw = self._pooled.driver_connection
                if raw.in_transaction:  # type: ignore[union-attr]
                    raw.rollback()  # type: ignore[union-attr]
            finally:
                if self._keeping:
                    self._kept.give_back()  # type: ignore[union-attr]
                else:
                    self._pooled.close()


def read_transaction(engine: Engine) -> Held:
    """A read transaction (a deferred BEGIN on first use); the caller ends it with `release`."""
    return Held(engine, "BEGIN")


@contextmanager
def write_transaction(engine: Engine, describe: Callable[[DatabaseError], str],
                      kept: Kept | None = None) -> Iterator[Session]:
    """A write transaction holding the write lock from its start (BEGIN IMMEDIATE), committed on
    normal exit and rolled back on any exception; database errors become one `StoreError` line.
    `kept`: the connection to use when it is free (see `Kept`)."""
    from sqlalchemy.exc import DatabaseError, IntegrityError

    held = Held(engine, "BEGIN IMMEDIATE", kept, expire_on_commit=False)
    try:
        try:
            held.driver()  # BEGIN IMMEDIATE now: the write lock is taken as the transaction opens
            yield cast("Session", held)
            held.finish()
        finally:
            held.release()
    except (IntegrityError, sqlite3.IntegrityError):
        raise  # a bug, not a state of the disk
    except DatabaseError as exc:  # full, locked, damaged...
        raise StoreError(describe(exc)) from None
    except sqlite3.DatabaseError as exc:  # the same from the hot paths' raw connection (`raw_connection`)
        raise StoreError(describe(DatabaseError(None, None, exc))) from None


#: `Session.info` key of the SQLite connection a transaction holds for its whole life.
_RAW = "p2psync.sqlite3"


def raw_connection(session: Session) -> sqlite3.Connection:
    """The SQLite connection under a session, inside its transaction: for the hot paths, where
    building SQLAlchemy statements costs many times what SQLite takes to run them."""
    held = session.info.get(_RAW)
    if held is not None:  # bound to one connection, already begun
        return held  # type: ignore[no-any-return]
    if isinstance(session, Held):
        return session.driver()
    return session.connection().connection.driver_connection  # type: ignore[return-value]
