"""Where a node keeps its data: ``--home``, else ``$P2PSYNC_HOME``, else the per-user data dir."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

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
