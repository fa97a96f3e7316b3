"""A throwaway PostgreSQL server on a free loopback port, in a temporary folder of its own.

Debian's `postgresql` package provides the binaries (under /usr/lib/postgresql/VERSION/bin); the
server is initialised and run as the `postgres` user when we are root (PostgreSQL refuses root),
with trust authentication on 127.0.0.1 only. The benchmarks use it too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import closing
from pathlib import Path

import psycopg

USER = "p2psync"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder, if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def missing() -> str | None:
    """Why no server can be started here, or None."""
    if binaries() is None:
        return "PostgreSQL is not installed (Debian package 'postgresql')"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "no 'postgres' user to run PostgreSQL as (root may not)"
    return None


def _free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl in a temporary folder; `stop` removes everything."""

    def __init__(self, durable: bool = False) -> None:
        bindir = binaries()
        assert bindir is not None, missing()
        self.bindir = bindir
        self.base = Path(tempfile.mkdtemp(prefix="p2psync-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.durable = durable
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        else:
            self._as = []

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self._as, str(self.bindir / tool), *args], capture_output=True, text=True,
                                timeout=120, check=False, cwd=self.base)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")

    def start(self) -> PostgresServer:
        self._run("initdb", "-D", str(self.data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync",
                  "--no-instructions")
        options = [f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.base}",
                   "-c max_connections=200"]
        if not self.durable:  # tests: nothing here has to survive a crash of the machine
            options.append("-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.base / "server.log"),
                  "-o", " ".join(options))
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"relay_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
