"""What state a node's database file is in, found without changing it: so that every damaged-home
error names the one command that mends it (`p2psync rebuild` for caches, `p2psync restore FILE`
for anything else), and `p2psync doctor` and `p2psync restore` can say what a file is."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from p2psync.store import materialize
from p2psync.store.tables import Snapshot

SQLITE_MAGIC = b"SQLite format 3\x00"
#: Tables that hold caches, rebuilt from the entry log by `p2psync rebuild`; damage anywhere else
#: (the log, the settings, the sync state) needs a backup.
CACHE_TABLES = frozenset([Snapshot.__tablename__, *(m.__tablename__ for m in materialize.TABLES),  # type: ignore[attr-defined]
                          *materialize.OBSOLETE_TABLES])
#: The settings that say whose database it is.
IDENTITY_KEYS = ("company", "office", "role", "node_id", "schema_version")

RESTORE_HINT = "put a backup back with 'p2psync restore FILE' ('p2psync doctor' says more)"
REBUILD_HINT = "'p2psync rebuild' rebuilds its caches from the entry log"


@dataclass(frozen=True)
class FileState:
    """A database file as found: `kind` is ok, missing, empty, not-sqlite, truncated, foreign,
    unreadable, damaged (beyond its caches) or caches (only cache tables damaged)."""

    kind: str
    detail: str = ""
    settings: dict[str, str] = field(default_factory=dict)
    damaged: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.kind in ("ok", "caches")

    def problem(self, path: Path) -> str:
        """One line: what is wrong with the file, and the command that mends it."""
        if self.kind == "caches":
            return f"the database file is damaged ({self.detail}); {REBUILD_HINT}"
        return f"{path} {self.detail}: {RESTORE_HINT}"


def header_state(path: Path) -> FileState | None:
    """Cheap checks of the file alone (no SQLite): missing, empty, not SQLite, or shorter than its
    header says (truncated). None when the file looks whole from outside.

    Never call it in a process that holds SQLite connections to `path`: closing a file descriptor of
    it drops every POSIX lock the process holds on it, and another process may then write under
    those connections' feet (SQLite's "how to corrupt a database", §2.2)."""
    if not path.exists():
        return FileState("missing", "does not exist")
    size = path.stat().st_size
    if size == 0:
        return FileState("empty", "is empty (0 bytes), not a p2psync database")
    with path.open("rb") as f:
        head = f.read(100)
    if not head.startswith(SQLITE_MAGIC):
        return FileState("not-sqlite", f"is not a database (it starts with {head[:16]!r})")
    if len(head) < 100:
        return FileState("truncated", f"is truncated ({size} bytes, less than a database header)")
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    header_valid = head[24:28] == head[92:96] and pages > 0
    if page_size and (size % page_size or (header_valid and size < pages * page_size)):
        expected = f" of the {pages * page_size} its header gives" if header_valid else ""
        return FileState("truncated", f"is truncated ({size} bytes{expected})")
    return None


def inspect(path: Path, deep: bool = True) -> FileState:
    """The state of the database file at `path`; `deep` also checks every table's pages (reads the
    whole file: for errors, `doctor` and `restore`, not for every open)."""
    found = header_state(path)
    if found is not None:
        return found
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=15)) as conn:
            return _inspect_open(conn, deep)
    except sqlite3.DatabaseError as exc:
        return FileState("unreadable", f"cannot be read as a database ({exc})")


def _inspect_open(conn: sqlite3.Connection, deep: bool) -> FileState:
    try:
        names = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    except sqlite3.DatabaseError as exc:
        return FileState("damaged", f"is damaged: its list of tables cannot be read ({exc})")
    if "setting" not in names:
        return FileState("foreign", _foreign(names))
    try:
        rows = conn.execute(f"SELECT key, value FROM setting WHERE key IN ({','.join('?' * len(IDENTITY_KEYS))})",
                            IDENTITY_KEYS).fetchall()
    except sqlite3.DatabaseError as exc:
        return FileState("damaged", f"is damaged: its settings cannot be read ({exc})")
    settings = {str(k): str(v) for k, v in rows}
    if not deep:
        return FileState("ok", settings=settings)
    damaged = tuple(name for name in names if not _table_ok(conn, name))
    essential = [name for name in damaged if name not in CACHE_TABLES]
    if essential:
        return FileState("damaged", f"is damaged beyond its caches (table {', '.join(essential)})", settings, damaged)
    if damaged:
        return FileState("caches", f"cache table {', '.join(damaged)} damaged", settings, damaged)
    return FileState("ok", settings=settings)


def _table_ok(conn: sqlite3.Connection, name: str) -> bool:
    """SQLite's check of one table's pages and of its indexes."""
    try:
        return conn.execute(f'PRAGMA quick_check("{name}")').fetchall() == [("ok",)]
    except sqlite3.DatabaseError:
        return False


def _foreign(names: list[str]) -> str:
    """What a SQLite file without a node's settings is."""
    if not names:
        return "is an empty SQLite database, not a p2psync node's"
    if any(name.startswith("relay_") for name in names):
        return "is a p2psync relay's database, not an office's"
    shown = ", ".join(sorted(names)[:5])
    return f"is a SQLite database of another program (tables {shown}), not a p2psync node's"
