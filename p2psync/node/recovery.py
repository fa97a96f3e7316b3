"""Recovery of an office's home: an online backup of its database, restoring one, the catching up
that must follow a restore before the office may write, and `doctor`'s findings.

Why catching up: an office numbers its entries per document (its chain). A restored database has
forgotten the numbers it used after the backup; an entry made now would reuse one with different
content, which every other office takes for equivocation and settles against this office. So a
restored home refuses every change until one complete exchange showed that the peer holds nothing
of this office's own beyond what it holds here."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from p2psync.canonical import utc_now
from p2psync.deps import Deps
from p2psync.errors import InvalidInput, P2PSyncError, StoreError
from p2psync.node import control
from p2psync.node.home import DB_FILE, KEYS_DIR, ensure_private_dir
from p2psync.node.office import Node
from p2psync.store import health
from p2psync.store.db import CATCHING_UP_KEY, SCHEMA_VERSION, Database, get_setting, set_setting
from p2psync.trust.keys import NodeKeys

logger = logging.getLogger(__name__)

KEY_FILES = ("node-signing.pem", "node-sealing.pem", "node-cert.pem")


# ---------------------------------------------------------------- backup


def backup(home: Path, target: Path, force: bool = False) -> health.FileState:
    """Copy the database to `target` in one read transaction (SQLite's backup API), so a running
    node keeps writing meanwhile and the copy is one consistent moment. Written beside `target` and
    renamed into place, so a failed backup never leaves a half file under the name."""
    if target.exists() and not force:
        raise InvalidInput(f"{target} already exists; give --force to replace it")
    source = home / DB_FILE
    found = health.header_state(source)
    if found is not None:
        raise StoreError(found.problem(source))
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        _copy_database(source, partial)
        copied = health.inspect(partial)
        if not copied.usable or "node_id" not in copied.settings:
            raise StoreError(f"the database in {home} {copied.detail}; nothing was backed up "
                             "('p2psync doctor' says what to do)")
        _fsync(partial)
        os.replace(partial, target)
        _fsync(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return copied


def _copy_database(source: Path, target: Path) -> None:
    """The whole database in one step of the backup API (one read transaction), as one file
    (rollback journal mode: a backup needs no write-ahead log beside it)."""
    try:
        with closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=15)) as src, \
                closing(sqlite3.connect(target)) as dst:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot back up {source}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot write {target}: {exc.strerror or exc}") from None


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- restore


@dataclass(frozen=True)
class Restored:
    identity: dict[str, str]
    kept_aside: Path | None


def restore(home: Path, file: Path, keys: Path | None = None, force: bool = False) -> Restored:
    """Put the backup `file` into `home` as its database, marked as catching up. Refuses a home
    whose node runs, a file that is not a backup of the node whose keys are at hand, and (without
    `force`) a home whose database is whole; a database it replaces is kept aside, never deleted."""
    if control.request(home, "status") is not None:
        raise P2PSyncError(f"a node is running on {home}; stop it first (restore replaces its database)")
    if not file.is_file():
        raise InvalidInput(f"no backup file at {file}")
    ensure_private_dir(home)
    staged = home / f"{DB_FILE}.restoring"
    staged.unlink(missing_ok=True)
    try:
        shutil.copyfile(file, staged)
        state = _check_backup(file, staged)
        _check_keys(home, keys, state.settings)
        aside = _set_aside(home, force)
        os.replace(staged, home / DB_FILE)
    finally:
        staged.unlink(missing_ok=True)
    _mark_catching_up(home, file)
    if keys is not None and keys.resolve() != (home / KEYS_DIR).resolve():
        _copy_keys(keys, home / KEYS_DIR)
    node = Node.open(home)  # checks the keys against it and the policy against the root
    try:
        if state.kind == "caches":
            node.store.rebuild()
    finally:
        node.close()
    return Restored(state.settings, aside)


def _check_backup(file: Path, staged: Path) -> health.FileState:
    """The staged copy is a whole p2psync database of a version this p2psync reads."""
    state = health.inspect(staged)
    if not state.usable:
        raise InvalidInput(f"{file} {state.detail.replace(str(staged), str(file))}; nothing was restored")
    if not state.settings.get("node_id"):
        raise InvalidInput(f"{file} is not a backup of an office's node (it names no node); nothing was restored")
    version = state.settings.get("schema_version")
    if version not in ("1", SCHEMA_VERSION):
        raise InvalidInput(f"{file} has schema version {version!r}; this p2psync reads 1 to {SCHEMA_VERSION}: "
                           "restore it with the p2psync that wrote it")
    return state


def _check_keys(home: Path, keys: Path | None, settings: dict[str, str]) -> None:
    """The keys the restored node will sign with are the backup's node's own."""
    who = describe_identity(settings)
    held = home / KEYS_DIR
    if keys is not None and _has_keys(held) and _node_id(held) != _node_id(keys):
        raise InvalidInput(f"{held} holds another node's keys; restore into that node's own home")
    where = keys if keys is not None else held
    if not _has_keys(where):
        raise InvalidInput(f"no node keys in {where}: give the keys folder you backed up for {who} with --keys DIR")
    if _node_id(where) != settings["node_id"]:
        raise InvalidInput(f"the backup is of {who}, but the keys in {where} are of node {_node_id(where)[:16]}: "
                           "restore this node's own backup, or use its own keys")


def _has_keys(directory: Path) -> bool:
    return all((directory / name).is_file() for name in KEY_FILES[:2])


def _node_id(directory: Path) -> str:
    return NodeKeys.load(directory).node_id


def describe_identity(settings: dict[str, str]) -> str:
    """A node as people know it: office, company and the start of its node id."""
    return (f"office {settings.get('office', '?')} of {settings.get('company', '?')} "
            f"(node {settings.get('node_id', '?')[:16]})")


def _set_aside(home: Path, force: bool) -> Path | None:
    """Move the home's database (with its write-ahead log, which belongs to it alone) out of the way,
    under a name that says why; None when there was none."""
    current = home / DB_FILE
    companions = [home / f"{DB_FILE}{suffix}" for suffix in ("-wal", "-shm")]
    if not current.exists() and not any(p.exists() for p in companions):
        return None
    whole = current.exists() and health.inspect(current).kind == "ok"
    if whole and not force:
        raise InvalidInput(f"{current} is whole: restoring replaces it with the backup and loses what was done "
                           "since; give --force to do so (it is kept aside)")
    aside = home / f"{DB_FILE}.{'replaced' if whole else 'damaged'}-{utc_now()[:19].replace(':', '')}"
    for path, suffix in ((current, ""), (companions[0], "-wal"), (companions[1], "-shm")):
        if path.exists():
            os.replace(path, aside.with_name(aside.name + suffix))
    return aside


def _copy_keys(source: Path, target: Path) -> None:
    ensure_private_dir(target)
    for name in (*KEY_FILES, "root.pem"):
        if (source / name).is_file():
            shutil.copyfile(source / name, target / name)
            (target / name).chmod(0o600)


def _mark_catching_up(home: Path, file: Path) -> None:
    db = Database(home / DB_FILE)
    try:
        db.check()  # a version 1 backup is upgraded here
        with db.write() as session:
            set_setting(session, CATCHING_UP_KEY, json.dumps({"since": utc_now(), "backup": file.name}))
    finally:
        db.dispose()


# ---------------------------------------------------------------- catching up


def catching_up(db: Database) -> dict[str, str] | None:
    """The catching-up mark of a restored home (when and from which backup), or None."""
    with db.read() as session:
        value = get_setting(session, CATCHING_UP_KEY)
    return json.loads(value) if value else None


def behind(node: Node, peer_vectors: Deps) -> list[str]:
    """The documents in which the peer holds more of this node's own entries than it holds here."""
    me, held = node.identity.node_id, node.vectors()
    return sorted(doc for doc, vector in peer_vectors.items() if vector.get(me, 0) > held.get(doc, {}).get(me, 0))


def finish_catching_up(node: Node, peer_vectors: Deps, peer: str) -> bool:
    """After a complete exchange with `peer`, whose hello showed `peer_vectors`: lift the mark if
    this office now holds every entry of its own the peer had. Whether it is caught up."""
    if not node.catching_up:
        return True
    missing = behind(node, peer_vectors)
    if missing:
        logger.debug("still catching up after the restore: %s holds more of this office's entries in %s",
                     peer, ", ".join(missing[:3]))
        return False
    with node.db.write() as session:
        session.connection().exec_driver_sql("DELETE FROM setting WHERE key = ?", (CATCHING_UP_KEY,))
    node.catching_up = False
    logger.warning("caught up after the restore (with %s): this office may post again", peer)
    return True


# ---------------------------------------------------------------- doctor


@dataclass(frozen=True)
class Finding:
    """Something wrong with a home, and the command (or step) that mends it."""

    problem: str
    fix: str


def doctor(home: Path) -> list[Finding]:
    """Everything wrong with `home` that can be told without opening it as a node (which a damaged
    home cannot be): its database file, its keys, a catching-up mark. Read only."""
    if not home.is_dir():
        return [Finding(f"there is no p2psync home at {home}", SET_UP_FIX)]
    path = home / DB_FILE
    state = health.inspect(path)
    findings = _database_findings(home, state)
    if state.usable and state.settings.get("node_id"):
        findings += _key_findings(home, state.settings)
        if state.kind != "caches":
            findings += _catching_up_findings(path)
    return findings


SET_UP_FIX = ("p2psync init --head-office --company NAME (a new organisation), p2psync join CODE (a branch), "
              "or p2psync restore FILE --keys DIR (a backup)")
RESTORE_FIX = "p2psync restore FILE (your latest backup; the damaged file is kept aside), then let it catch up"


def _database_findings(home: Path, state: health.FileState) -> list[Finding]:
    path = home / DB_FILE
    if state.kind == "missing":
        if _has_keys(home / KEYS_DIR):
            return [Finding(f"the database {path} is missing (the keys are here)", RESTORE_FIX)]
        return [Finding(f"{home} holds no p2psync node", SET_UP_FIX)]
    if state.kind == "caches":
        return [Finding(f"the database's {state.detail} (the entry log is whole)",
                        "p2psync rebuild (with the node stopped)")]
    if not state.usable:
        return [Finding(f"the database {path} {state.detail}", RESTORE_FIX)]
    version = state.settings.get("schema_version")
    if not state.settings.get("node_id"):
        return [Finding(f"the database {path} is incomplete (it names no node)", RESTORE_FIX)]
    if version not in ("1", SCHEMA_VERSION):
        return [Finding(f"the database has schema version {version!r}; this p2psync reads 1 to {SCHEMA_VERSION}",
                        "use the p2psync version that wrote it, or p2psync restore FILE")]
    return []


def _key_findings(home: Path, settings: dict[str, str]) -> list[Finding]:
    keys = home / KEYS_DIR
    fix = f"copy the keys folder you backed up for this node to {keys}"
    missing = [name for name in KEY_FILES if not (keys / name).is_file()]
    if missing:
        return [Finding(f"key file {', '.join(missing)} missing from {keys}", fix)]
    try:
        held = _node_id(keys)
    except P2PSyncError as exc:
        return [Finding(str(exc), fix)]
    if held != settings["node_id"]:
        return [Finding(f"the keys in {keys} are of node {held[:16]}, not of this database's "
                        f"{describe_identity(settings)}", fix)]
    return []


def _catching_up_findings(path: Path) -> list[Finding]:
    db = Database(path)
    try:
        mark = catching_up(db)
    except StoreError as exc:
        return [Finding(str(exc), RESTORE_FIX)]
    finally:
        db.dispose()
    if mark is None:
        return []
    return [Finding(f"this office is catching up after the restore of {mark.get('backup', 'a backup')} "
                    f"({mark.get('since', '')[:19]}): posting, amending and cancelling are refused until then",
                    "p2psync sync --peer wss://HOST:PORT (or keep the node running: p2psync run) until it says "
                    "caught up")]
