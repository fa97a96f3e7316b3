"""Enrollment over a websocket: the branch sends one request and reads one reply."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import connect
from websockets.exceptions import InvalidURI, WebSocketException
from websockets.uri import parse_uri

from p2psync.canonical import loads
from p2psync.errors import P2PSyncError
from p2psync.net.tls import enrollment_context
from p2psync.trust.enroll import MAX_MESSAGE

TIMEOUT = 20.0


def check_address(url: str) -> str:
    """`url` if it can name a head office (``ws://HOST:PORT`` or ``wss://HOST:PORT``), else a refusal:
    checked before the request is made, so that a mistyped address is caught here, not by a timeout."""
    try:
        parse_uri(url)
    except (InvalidURI, ValueError):
        raise P2PSyncError(f"{url!r} is not a head office's address; give it as ws://HOST:PORT or wss://HOST:PORT"
                           ) from None
    return url


async def exchange(url: str, request: bytes, timeout: float = TIMEOUT) -> bytes:
    """Send the enrollment request to `url` and return the head office's reply."""
    try:
        async with asyncio.timeout(timeout):
            context = enrollment_context() if url.startswith("wss://") else None
            async with connect(url, ssl=context, max_size=MAX_MESSAGE, compression=None,
                               open_timeout=timeout) as ws:
                await ws.send(request)
                reply = await ws.recv()
                if _is_challenge(reply):  # a relay greets every client first; it passes the request on
                    reply = await ws.recv()
    except TimeoutError:
        raise P2PSyncError(f"no answer from {url} within {timeout:.0f} s") from None
    except InvalidURI:
        raise P2PSyncError(f"{url!r} is not a ws:// or wss:// address") from None
    except (OSError, WebSocketException) as exc:
        raise P2PSyncError(f"cannot reach the head office at {url}: {exc}") from None
    return reply.encode() if isinstance(reply, str) else reply


def _is_challenge(message: str | bytes) -> bool:
    try:
        return loads(message).get("type") == "challenge"
    except (ValueError, AttributeError):
        return False
