"""The local control channel: a Unix socket in the node's home, usable only by the node's own user
(the home is mode 0700 and the socket 0600). One JSON request per line, one JSON reply per line."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from p2psync.canonical import loads
from p2psync.errors import P2PSyncError

SOCKET_NAME = "control.sock"
MAX_REQUEST = 64 * 1024
Handler = Callable[[str], Awaitable[dict[str, Any]]]


#: Unix socket paths are limited to about 100 bytes; a deeper home gets its socket in the temp folder.
MAX_SOCKET_PATH = 100


def socket_path(home: Path) -> Path:
    """In the home; for a home too deep for a socket path, a per-user name in the temp folder."""
    path = home.resolve() / SOCKET_NAME
    if len(str(path).encode()) < MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"p2psync-{os.getuid()}-{digest}.sock"


async def serve(home: Path, handle: Handler) -> asyncio.AbstractServer:
    """Listen for requests; refuses when another node already answers on this home."""
    path = socket_path(home)
    if await _answers(path):
        raise P2PSyncError(f"a node is already running on {home}; stop it first")
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a node that was killed

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = decode_request(await asyncio.wait_for(reader.readline(), 10))
            reply = await handle(command)
        except (ValueError, TimeoutError):
            reply = {"error": "malformed request"}
        except P2PSyncError as exc:
            reply = {"error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    old_umask = os.umask(0o177)
    try:
        server = await asyncio.start_unix_server(on_client, path=str(path), limit=MAX_REQUEST)
    finally:
        os.umask(old_umask)
    return server


def decode_request(line: bytes) -> str:
    """The command a request line asks for; `ValueError` if the line is not a request."""
    if len(line) > MAX_REQUEST:
        raise ValueError("request too long")
    request = loads(line or b"{}")
    if not isinstance(request, dict):
        raise ValueError("request is not an object")
    command = request.get("command", "")
    if not isinstance(command, str):
        raise ValueError("command is not text")
    return command


async def _answers(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


def request(home: Path, command: str, timeout: float = 30.0) -> dict[str, Any] | None:
    """Ask the running node; None when no node is running on this home."""
    path = socket_path(home)
    if not path.exists():
        return None

    async def ask() -> dict[str, Any]:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
        writer.write(json.dumps({"command": command}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        writer.close()
        return json.loads(line)

    try:
        return asyncio.run(ask())
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    except (OSError, TimeoutError, ValueError) as exc:
        raise P2PSyncError(f"the running node did not answer: {exc}") from None
