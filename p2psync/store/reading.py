"""The node's database read with the standard library's `sqlite3` alone, for read-only commands: a
report on small books takes a few milliseconds of SQLite, and importing SQLAlchemy and SQLModel
(`store.db`) half a second. Only a database this code can read as it stands is opened this way;
anything to do first (an upgrade, report tables of another version, a log to replay) is left to
`Node.open`, which does it.

The versions of the database's layout live here, below `store.db`, so that both read them from one
place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2psync.sqlite import read_only

#: 1 had no per-entry clock and policy; 2 adds them (`upgrade`), filled in by replaying the log.
SCHEMA_VERSION = "2"
#: The version of the report tables (`materialize.TABLES`), caches of the documents: a home whose
#: tables are of another version has them rebuilt when it is opened (`BookStore.check_reports`).
#: 1 (no setting) held each revision's JSON in `revisionrow`; 2 keeps where each revision is, and
#: finds a voucher's lines by office, date and number; 3 carries the amount in the ledger index of
#: lines, which the trial balance then reads alone; 4 classifies a ledger per office where an
#: office's own record of it differs (`OfficeLedgerRow`); 5 holds a ledger row for each office's
#: inter-office account (`@CODE`); 6 keeps each ledger's debits and credits per month and office
#: (`LedgerMonthRow`), which the trial balance reads instead of every line.
REPORTS_VERSION = "6"
#: The version whose tables version 6 extends by `LedgerMonthRow` alone: filled from the lines, not rebuilt.
MONTHS_ADDED_AFTER = "5"
REPORTS_VERSION_KEY = "reports_version"
#: Set while an upgraded home has entries whose clock and policy are not recorded yet.
UNLINKED_KEY = "unlinked"
#: Set by `p2psync restore` until the office has caught up with its own entries (`node.recovery`).
CATCHING_UP_KEY = "catching_up"


def setting(connection: sqlite3.Connection, key: str) -> str | None:
    row = connection.execute("SELECT value FROM setting WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def open_as_is(path: Path) -> sqlite3.Connection | None:
    """A read-only connection to the database at `path` when its tables can be read as they are;
    None when it must go through `Node.open` first: missing or empty (which explains), of another
    schema or report tables' version, or upgraded with its log not replayed yet (which it mends).
    A file SQLite cannot read at all is None too, for `Node.open` to describe."""
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        connection = read_only(path)
    except sqlite3.Error:
        return None
    try:
        if (setting(connection, "schema_version") == SCHEMA_VERSION
                and (setting(connection, REPORTS_VERSION_KEY) or "1") == REPORTS_VERSION
                and setting(connection, UNLINKED_KEY) is None):
            return connection
    except sqlite3.Error:
        pass
    connection.close()
    return None
