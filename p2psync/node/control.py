"""The local control channel: how ``status``, ``sync``, ``restart`` and ``dashboard`` reach the running
node, and the book writes a command hands to it (`delegated`). One JSON request per line (a command,
and an object of arguments where it takes some), one JSON reply per line.

Where Unix sockets work (Linux, macOS) it is a socket in the home, usable only by the node's own user
(the home is mode 0700, the socket 0600). Where they do not (Windows: asyncio serves no Unix socket
there) it is a TCP listener on 127.0.0.1 at a free port. Any local user can connect to that, so every
request must carry a random secret the node makes at each start and writes, with the port, to
``control.port`` in the home, a file only the node's user can read: the same footing as the home's
keys. ``P2PSYNC_CONTROL=tcp`` (or ``unix``) forces a channel; clients follow whatever file the
running node left.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import getpass
import hashlib
import hmac
import json
import os
import secrets
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from p2psync.canonical import loads
from p2psync.errors import P2PSyncError

SOCKET_NAME = "control.sock"
PORT_FILE = "control.port"
CHANNEL_ENV = "P2PSYNC_CONTROL"
LOOPBACK = "127.0.0.1"
MAX_REQUEST = 64 * 1024
#: What the channel itself answers (no handler runs): how a starting node tells a live node from a
#: stale port file whose port another program now holds.
PING = "ping"
#: How long a starting node waits for an earlier node to answer.
PROBE_SECONDS = 3.0
REFUSED = "wrong or missing control secret"
#: How a request that reached a node and got no (usable) answer begins its error.
NO_ANSWER = "the running node did not answer"
Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


#: Unix socket paths are limited to about 100 bytes; a deeper home gets its socket in the temp folder.
MAX_SOCKET_PATH = 100


def unix_sockets() -> bool:
    """Whether this system serves the Unix-socket channel (asyncio has no Unix server on Windows)."""
    return sys.platform != "win32" and hasattr(socket, "AF_UNIX")


def channel_kind() -> str:
    """``unix`` or ``tcp``: forced by ``$P2PSYNC_CONTROL``, else the Unix socket wherever it works."""
    forced = os.environ.get(CHANNEL_ENV, "").strip().lower()
    if forced not in ("", "unix", "tcp"):
        raise P2PSyncError(f"{CHANNEL_ENV} must be 'unix' or 'tcp', not {forced!r}")
    if forced == "unix" and not unix_sockets():
        raise P2PSyncError(f"{CHANNEL_ENV}=unix: this system has no Unix sockets; use tcp")
    return forced or ("unix" if unix_sockets() else "tcp")


def socket_path(home: Path) -> Path:
    """In the home; for a home too deep for a socket path, a per-user name in the temp folder."""
    path = home.resolve() / SOCKET_NAME
    if len(str(path).encode()) < MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"p2psync-{_user_tag()}-{digest}.sock"


def port_file(home: Path) -> Path:
    return home.resolve() / PORT_FILE


def _user_tag() -> str:
    getuid = getattr(os, "getuid", None)
    return str(getuid()) if getuid is not None else getpass.getuser()


class Channel(asyncio.AbstractServer):
    """The listening channel; closing it also removes what told clients where it was."""

    def __init__(self, server: asyncio.Server, forget: Callable[[], None]) -> None:
        self.server = server
        self._forget = forget

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self.server.sockets)

    def close(self) -> None:
        self.server.close()
        self._forget()

    async def wait_closed(self) -> None:
        await self.server.wait_closed()

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self.server.get_loop()

    def is_serving(self) -> bool:
        return self.server.is_serving()

    async def start_serving(self) -> None:
        await self.server.start_serving()

    async def serve_forever(self) -> None:
        await self.server.serve_forever()


async def serve(home: Path, handle: Handler) -> asyncio.AbstractServer:
    """Listen for requests; refuses when another node already answers on this home."""
    kind = channel_kind()
    if await _answers_unix(socket_path(home)) or await _answers_tcp(port_file(home)):
        raise P2PSyncError(f"a node is already running on {home}; stop it first")
    _remove(socket_path(home))  # left by a node that was killed
    _remove(port_file(home))
    if kind == "unix":
        return await _serve_unix(home, handle)
    return await _serve_tcp(home, handle)


async def _serve_unix(home: Path, handle: Handler) -> Channel:
    path = socket_path(home)
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(_on_client(handle, None), path=str(path), limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)
    return Channel(server, lambda: _remove(path))


async def _serve_tcp(home: Path, handle: Handler) -> Channel:
    """Loopback only, a free port, and a fresh secret in an owner-only file beside the keys."""
    from p2psync.trust.keys import write_private_file  # the node's side: a command asking loads no cryptography

    secret = secrets.token_urlsafe(32)
    server = await asyncio.start_server(_on_client(handle, secret), host=LOOPBACK, port=0, limit=MAX_REQUEST)
    port = int(server.sockets[0].getsockname()[1])
    path = port_file(home)
    written = json.dumps({"port": port, "secret": secret}).encode()
    try:
        write_private_file(path, written)
    except OSError as exc:
        server.close()
        raise P2PSyncError(f"cannot write {path}: {exc.strerror or exc}") from None
    return Channel(server, lambda: _remove(path, only_if=written))


def _remove(path: Path, only_if: bytes | None = None) -> None:
    """Delete `path`; with `only_if`, only while it still holds those bytes (not a newer node's)."""
    with contextlib.suppress(OSError):
        if only_if is None or path.read_bytes() == only_if:
            path.unlink()


def _on_client(handle: Handler, secret: str | None) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                                Awaitable[None]]:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = _read_request(await asyncio.wait_for(reader.readline(), 10))
            reply = await _answer(request, handle, secret)
        except (ValueError, TimeoutError):
            reply = {"error": "malformed request"}
        except P2PSyncError as exc:
            reply = {"error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return on_client


async def _answer(request: dict[str, Any], handle: Handler, secret: str | None) -> dict[str, Any]:
    if secret is not None and not secret_matches(request.get("secret"), secret):
        return {"refused": REFUSED}
    command = _command(request)
    return {"ok": True} if command == PING else await handle(command, _args(request))


def secret_matches(given: object, secret: str) -> bool:
    """Compared in constant time, so the time of a refusal says nothing of how much was right."""
    return isinstance(given, str) and hmac.compare_digest(given.encode(), secret.encode())


def decode_request(line: bytes) -> str:
    """The command a request line asks for; `ValueError` if the line is not a request."""
    return _command(_read_request(line))


def _read_request(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        raise ValueError("request too long")
    request = loads(line or b"{}")
    if not isinstance(request, dict):
        raise ValueError("request is not an object")
    return request


def _command(request: dict[str, Any]) -> str:
    command = request.get("command", "")
    if not isinstance(command, str):
        raise ValueError("command is not text")
    return command


def _args(request: dict[str, Any]) -> dict[str, Any]:
    args = request.get("args", {})
    if not isinstance(args, dict):
        raise ValueError("args is not an object")
    return args


async def _answers_unix(path: Path) -> bool:
    if not unix_sockets() or not path.exists():
        return False
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), PROBE_SECONDS)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _answers_tcp(path: Path) -> bool:
    """Whether a node answers at the port `path` names (a stale file's port may be another program's)."""
    address = _read_port_file(path)
    if address is None:
        return False
    try:
        reply = await _exchange(address, PING, PROBE_SECONDS)
    except (OSError, TimeoutError, ValueError):
        return False
    return isinstance(reply, dict)


def _read_port_file(path: Path) -> tuple[int, str] | None:
    """(port, secret) of the running node; None without a readable one (no node, or one killed
    mid-start)."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except PermissionError:
        raise P2PSyncError(f"cannot read {path}: run this as the user the node runs as") from None
    except (OSError, ValueError):
        return None
    port, secret = (data.get("port"), data.get("secret")) if isinstance(data, dict) else (None, None)
    if not isinstance(port, int) or not 0 < port < 65536 or not isinstance(secret, str):
        return None
    return port, secret


async def _exchange(address: Path | tuple[int, str], command: str, timeout: float,
                    args: dict[str, Any] | None = None) -> Any:
    """One request over either channel: a socket path, or a loopback port and its secret."""
    message: dict[str, Any] = {"command": command, **({"args": args} if args else {})}
    if isinstance(address, Path):
        opening = asyncio.open_unix_connection(str(address))
    else:
        opening = asyncio.open_connection(LOOPBACK, address[0])
        message["secret"] = address[1]
    reader, writer = await asyncio.wait_for(opening, timeout)
    try:
        writer.write(json.dumps(message).encode() + b"\n")
        await writer.drain()
        return json.loads(await asyncio.wait_for(reader.readline(), timeout))
    finally:
        writer.close()


def _run(exchange: Coroutine[Any, Any, Any]) -> Any:
    """Run one exchange to its end from synchronous code, also where this thread already runs an
    event loop (a caller embedding the commands, such as a notebook or a test driving a browser):
    asyncio runs no loop inside another, so the exchange then gets a thread of its own."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(exchange)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, exchange).result()


def request(home: Path, command: str, timeout: float = 30.0, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """Ask the running node; None when no node is running on this home (also when all that is left is
    the file of a node that was killed)."""
    for address in _addresses(home):
        try:
            reply = _run(_exchange(address, command, timeout, args))
        except (ConnectionRefusedError, FileNotFoundError):
            continue
        except (OSError, TimeoutError, ValueError) as exc:
            raise P2PSyncError(f"{NO_ANSWER}: {str(exc) or 'no reply in time'}") from None
        if not isinstance(reply, dict):
            raise P2PSyncError(f"{NO_ANSWER}: not a control reply")
        if "refused" in reply:
            raise P2PSyncError(f"the running node refused the request: {reply['refused']}")
        return reply
    return None


def _addresses(home: Path) -> list[Path | tuple[int, str]]:
    """Where a running node may listen, from the files it leaves in the home."""
    found: list[Path | tuple[int, str]] = []
    tcp = _read_port_file(port_file(home))
    if tcp is not None:
        found.append(tcp)
    path = socket_path(home)
    if unix_sockets() and path.exists():
        found.append(path)
    return found
