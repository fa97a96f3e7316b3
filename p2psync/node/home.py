"""Where a node keeps its data: ``--home``, else ``$P2PSYNC_HOME``, else the per-user data dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import platformdirs

from p2psync.errors import InvalidInput, P2PSyncError

DB_FILE = "p2psync.db"
LOG_FILE = "p2psync.log"
KEYS_DIR = "keys"
#: The organisation's root key, at the head office only: losing it is total compromise.
ROOT_KEY_FILE = "root.pem"
#: The files in `KEYS_DIR` that must stay private (the certificate beside them is public).
PRIVATE_KEY_FILES = ("node-signing.pem", "node-sealing.pem", ROOT_KEY_FILE)


def resolve_home(given: str | os.PathLike[str] | None) -> Path:
    if given:
        return Path(given).expanduser()
    env = os.environ.get("P2PSYNC_HOME")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("p2psync", appauthor=False))


def ensure_private_dir(path: Path) -> None:
    """Create the home readable by its owner only: it will hold the node's keys."""
    path.mkdir(parents=True, exist_ok=True)
    try:
        path.chmod(0o700)
    except OSError:
        pass


def check_new_home(home: Path) -> None:
    """Refuse a folder that cannot become a new office's home, before anything is asked of anyone:
    ``join`` spends a one-time code at the head office, so every reason to fail that can be seen here
    must be seen first."""
    if home.exists() and not home.is_dir():
        raise InvalidInput(f"{home} is a file, not a folder; give another --home")
    if (home / DB_FILE).exists():
        raise InvalidInput(f"{home} already holds a p2psync node; use another --home")
    existing = next(p for p in (home, *home.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidInput(f"cannot create the home in {existing}: no permission to write there; give another --home")


def check_private_keys(home: Path) -> None:
    """Refuse a home whose key files other users could read or replace: a copied, unpacked or shared
    folder often loses its owner-only modes, and a node must not go on signing with leaked keys.

    Checked where POSIX modes mean something; on Windows the home's protection is the user profile's
    access list (docs/security.md), which this does not read."""
    if os.name != "posix":
        return
    keys = home / KEYS_DIR
    if not keys.is_dir():
        return
    _check_owned(keys, 0o022, "other users can write in it")
    for name in PRIVATE_KEY_FILES:
        if (keys / name).is_file():
            _check_owned(keys / name, 0o077, "other users can read or change it")


def _check_owned(path: Path, forbidden: int, why: str) -> None:
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise P2PSyncError(f"{path} belongs to another user; run the node as the user who owns its home")
    if stat.S_IMODE(info.st_mode) & forbidden:
        fix = "chmod 700" if path.is_dir() else "chmod 600"
        raise P2PSyncError(f"{path} is not private ({why}): run '{fix} {path}'; if someone else may have "
                           "copied the keys, replace this machine (operations guide)")
