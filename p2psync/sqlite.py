"""SQLite as every database here uses it: WAL mode, full fsync on commit, writers that take the lock
up front, database errors as one line, and the raw connection for the hot paths.

Below every layer (like `errors` and `canonical`): the node's store and the relay's both open their
files this way, and the relay must not depend on the node's store to do so.

SQLAlchemy is imported by the functions that use it, not with this module: a read-only command
(`read_only`) then starts without it, and it costs more to import than such a command takes to run.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2psync.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.exc import DatabaseError
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
        immediate = conn.get_execution_options().get("immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


@contextmanager
def write_transaction(engine: Engine, describe: Callable[[DatabaseError], str]) -> Iterator[Session]:
    """A write transaction holding the write lock from its start (BEGIN IMMEDIATE), committed on
    normal exit and rolled back on any exception; database errors become one `StoreError` line."""
    from sqlalchemy.exc import DatabaseError, IntegrityError
    from sqlmodel import Session

    connection = engine.connect().execution_options(immediate=True)
    try:
        with Session(bind=connection, expire_on_commit=False) as session:
            try:
                # BEGIN IMMEDIATE now, and the SQLite connection looked up once: the hot paths ask
                # for it a dozen times per change, at some 40 µs of SQLAlchemy each
                session.info[_RAW] = session.connection().connection.driver_connection
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
    except (IntegrityError, sqlite3.IntegrityError):
        raise  # a bug, not a state of the disk
    except DatabaseError as exc:  # full, locked, damaged...
        raise StoreError(describe(exc)) from None
    except sqlite3.DatabaseError as exc:  # the same from the hot paths' raw connection (`raw_connection`)
        raise StoreError(describe(DatabaseError(None, None, exc))) from None
    finally:
        connection.close()


#: `Session.info` key of the SQLite connection a write transaction holds for its whole life.
_RAW = "p2psync.sqlite3"


def raw_connection(session: Session) -> sqlite3.Connection:
    """The SQLite connection under a session, inside its transaction: for the hot paths, where
    building SQLAlchemy statements costs many times what SQLite takes to run them."""
    held = session.info.get(_RAW)
    if held is not None:  # a write transaction: bound to one connection, already begun
        return held  # type: ignore[no-any-return]
    return session.connection().connection.driver_connection  # type: ignore[return-value]
