"""The node's websocket server: one endpoint, dispatching on the first message of a connection."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from p2psync.trust.enroll import MAX_MESSAGE, refusal

logger = logging.getLogger(__name__)

FIRST_MESSAGE_TIMEOUT = 15.0
#: Handles an enrollment request (blocking: it writes the database); returns the reply.
EnrollHandler = Callable[[bytes], bytes]


async def _handle(ws: ServerConnection, enroll: EnrollHandler | None) -> None:
    try:
        first = await asyncio.wait_for(ws.recv(), FIRST_MESSAGE_TIMEOUT)
    except (TimeoutError, ConnectionClosed):
        return
    raw = first.encode() if isinstance(first, str) else first
    kind = _kind(raw)
    if kind == "enroll" and enroll is not None:
        reply = await asyncio.to_thread(enroll, raw)
    elif kind == "enroll":
        reply = refusal("this node is not a head office; enroll with the head office")
    else:
        reply = refusal("unknown or malformed first message")
    try:
        await ws.send(reply)
    except ConnectionClosed:
        pass


def _kind(raw: bytes) -> str:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(data.get("type", "")) if isinstance(data, dict) else ""


def start(host: str, port: int, enroll: EnrollHandler | None) -> Awaitable[Server]:
    return serve(lambda ws: _handle(ws, enroll), host, port, max_size=MAX_MESSAGE, compression=None)
