"""Where a node keeps its data: ``--home``, else ``$P2PSYNC_HOME``, else the per-user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

from p2psync.errors import InvalidInput

DB_FILE = "p2psync.db"
LOG_FILE = "p2psync.log"
KEYS_DIR = "keys"
#: The organisation's root key, at the head office only: losing it is total compromise.
ROOT_KEY_FILE = "root.pem"


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
