"""The relay's store on PostgreSQL, shared by several relay processes behind one address.

Two PostgreSQL facilities make the processes act as one relay:

- A transaction-scoped advisory lock per organisation around every write. Writers to one
  organisation take their arrival ids and commit one after another, so a reader always sees a
  prefix of that organisation's arrivals: a member's cursor (the last arrival id it was sent) never
  skips an entry that another process had numbered but not yet committed.
- LISTEN/NOTIFY. A write that stored entries notifies on `CHANNEL` as it commits; every process
  listens on one connection of its own and wakes its members of that organisation, which then read
  what is new from the store after their cursor. A notification carries no entry, so one lost with
  a dropped listening connection costs nothing: on reconnecting, every member is woken once.

Needs the `postgres` extra (the psycopg 3 driver).
"""

from __future__ import annotations

import logging
import secrets
import threading
from contextlib import nullcontext

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session

from p2psync.errors import StoreError
from p2psync.relay.store import OnChange, SqlRelayStore

try:
    import psycopg
except ImportError:  # pragma: no cover - depends on the installed extras
    psycopg = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

CHANNEL = "p2psync_relay"
#: The advisory lock key held while the schema is created or upgraded (any constant of our own).
SCHEMA_LOCK = 0x7032_7073_796E_6301
LISTEN_POLL = 0.5  # seconds between looks at the stop flag while no notification comes
RECONNECT_MAX = 30.0


def engine_url(location: str) -> URL:
    """``postgresql://`` (as operators write it) as SQLAlchemy's URL for the psycopg 3 driver."""
    try:
        url = make_url(location)
    except ArgumentError:
        raise StoreError(f"not a database URL: {location!r}") from None
    if url.get_backend_name() != "postgresql" or url.get_driver_name() not in ("psycopg", "psycopg2", ""):
        raise StoreError(f"not a postgresql:// URL: {url.render_as_string(hide_password=True)}")
    return url.set(drivername="postgresql+psycopg")


class PostgresRelayStore(SqlRelayStore):
    """Every organisation's entries in one PostgreSQL database, written by any number of relay processes."""

    shared = True

    def __init__(self, location: str, pool_size: int = 8) -> None:
        if psycopg is None:
            raise StoreError("PostgreSQL support is not installed: pip install 'p2psync[postgres]'")
        url = engine_url(location)
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        #: Our own notifications carry this, so we do not wake our members twice.
        self._token = secrets.token_hex(8)
        self._listener: Listener | None = None
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True,
                               connect_args={"connect_timeout": 10})
        # Writers need no lock in this process: `_lock_org` keeps them apart in the database.
        super().__init__(engine, url.set(drivername="postgresql").render_as_string(hide_password=True), nullcontext())

    def _lock_schema(self, session: Session) -> None:
        session.exec(text("SELECT pg_advisory_xact_lock(:key)"), params={"key": SCHEMA_LOCK})  # type: ignore[call-overload]

    def _lock_org(self, session: Session, org: str) -> None:
        session.exec(text("SELECT pg_advisory_xact_lock(hashtextextended(:org, 0))"),  # type: ignore[call-overload]
                     params={"org": org})

    def _announce(self, session: Session, org: str) -> None:
        session.exec(text("SELECT pg_notify(:channel, :payload)"),  # type: ignore[call-overload]
                     params={"channel": CHANNEL, "payload": f"{self._token} {org}"})

    def watch(self, on_change: OnChange) -> None:
        """Listen from now on (the first LISTEN is in place when this returns), in a thread of its own."""
        if self._listener is None:
            self._listener = Listener(self._dsn, self._token, on_change, self.where)
            self._listener.start()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        super().close()


class Listener:
    """One LISTEN connection that calls `on_change(org)` for every other process's write, and
    reconnects (then calls `on_change(None)`: anything may have changed meanwhile) when it drops."""

    def __init__(self, dsn: str, own: str, on_change: OnChange, where: str) -> None:
        self.dsn, self.own, self.on_change, self.where = dsn, own, on_change, where
        self._stop = threading.Event()
        self._conn = self._connect()  # in the caller: the first LISTEN is active before anyone syncs
        self._thread = threading.Thread(target=self._run, name="relay-listen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=10)
            conn.execute(f"LISTEN {CHANNEL}")
        except psycopg.Error as exc:
            raise StoreError(f"cannot listen on relay database {self.where}: {str(exc).strip()}") from None
        return conn

    def _run(self) -> None:
        delay = LISTEN_POLL
        while not self._stop.is_set():
            try:
                if self._conn.closed:
                    self._conn = self._connect()
                    self.on_change(None)
                    delay = LISTEN_POLL
                self._listen()
            except (psycopg.Error, StoreError) as exc:
                logger.warning("relay database notifications interrupted (%s); reconnecting", str(exc).strip())
                self._conn.close()
                self._stop.wait(delay)
                delay = min(delay * 2, RECONNECT_MAX)
        self._conn.close()

    def _listen(self) -> None:
        while not self._stop.is_set():
            for note in self._conn.notifies(timeout=LISTEN_POLL):
                token, _, org = note.payload.partition(" ")
                if token != self.own:
                    self.on_change(org)
