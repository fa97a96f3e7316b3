"""(3) The peer: pycrdt's own sync — `pycrdt.Provider` clients (over httpx-ws) against a
pycrdt-websocket server (`WebsocketServer` behind `ASGIServer`, served by hypercorn) on loopback, no
TLS, no encryption, no signatures, no database. One room per (office, month) document, holding the
same JSON values p2psync writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, closing
from dataclasses import dataclass
from typing import Any

from common import percentile
from httpx_ws import aconnect_ws
from hypercorn.asyncio import serve
from hypercorn.config import Config
from pycrdt import Doc, Map, Provider
from pycrdt.websocket import ASGIServer, WebsocketServer
from pycrdt.websocket.asgi_server import ASGIWebsocket
from pycrdt.websocket.websocket import HttpxWebsocket

from p2psync.books.schema import REVISIONS

MAX_MESSAGE = 512 * 1024 * 1024
logging.getLogger("hypercorn").setLevel(logging.ERROR)


# ---------------------------------------------------------------- byte counters


@dataclass
class PeerBytes:
    client_sent: int = 0
    server_sent: int = 0


BYTES = PeerBytes()
_client_send = HttpxWebsocket.send
_server_send = ASGIWebsocket.send


async def _count_client(self: HttpxWebsocket, message: bytes) -> None:
    if getattr(self, "counted", False):  # only the writer's channels: a reader echoes what it applies
        BYTES.client_sent += len(message)
    await _client_send(self, message)


async def _count_server(self: ASGIWebsocket, message: bytes) -> None:
    BYTES.server_sent += len(message)
    await _server_send(self, message)


HttpxWebsocket.send = _count_client  # type: ignore[method-assign]
ASGIWebsocket.send = _count_server  # type: ignore[method-assign]


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- server and clients


@contextlib.asynccontextmanager
async def server(seed: dict[str, bytes] | None = None, port: int = 0) -> AsyncIterator[tuple[int, WebsocketServer]]:
    """A pycrdt-websocket server on loopback; rooms optionally preloaded with document states.
    Rooms are kept when clients leave (a server that holds the books)."""
    port = port or free_port()
    async with WebsocketServer(auto_clean_rooms=False, log=logging.getLogger("peer")) as ws_server:
        for name, state in (seed or {}).items():
            room = await ws_server.get_room(f"/{name}")
            room.ydoc.apply_update(state)
        config = Config()
        config.bind = [f"127.0.0.1:{port}"]
        config.websocket_max_message_size = MAX_MESSAGE
        config.accesslog = None
        config.errorlog = logging.getLogger("hypercorn.error")
        stop = asyncio.Event()
        task = asyncio.create_task(serve(ASGIServer(ws_server), config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
        for _ in range(500):
            with contextlib.suppress(OSError), closing(socket.create_connection(("127.0.0.1", port), 0.2)):
                break
            await asyncio.sleep(0.01)
        try:
            yield port, ws_server
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)


@contextlib.asynccontextmanager
async def client(port: int, names: list[str], docs: dict[str, Doc] | None = None,
                 counted: bool = False) -> AsyncIterator[dict[str, Doc]]:
    """One `Provider` per document, each over its own websocket; yields once every one is synced."""
    docs = docs if docs is not None else {}
    async with AsyncExitStack() as stack:
        providers = []
        for name in names:
            doc = docs.setdefault(name, Doc())
            doc.get(REVISIONS, type=Map)
            ws = await stack.enter_async_context(
                aconnect_ws(f"http://127.0.0.1:{port}/{name}", max_message_size_bytes=MAX_MESSAGE,
                            keepalive_ping_interval_seconds=None, queue_size=4096))
            channel = HttpxWebsocket(ws, name)
            channel.counted = counted  # type: ignore[attr-defined]
            provider = Provider(doc, channel)
            await stack.enter_async_context(provider)
            providers.append(provider)
        for provider in providers:
            await asyncio.wait_for(provider.synced.wait(), 600)
        yield docs


def held(docs: dict[str, Doc]) -> int:
    return sum(len(doc.get(REVISIONS, type=Map)) for doc in docs.values())


async def wait_held(docs: dict[str, Doc], count: int, timeout: float = 600, interval: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while held(docs) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"peer client holds {held(docs)} of {count}")
        await asyncio.sleep(interval)


# ---------------------------------------------------------------- (3) bulk and live in one process


async def stream(docs_a: dict[str, Doc], docs_b: dict[str, Doc], values: list[tuple[str, str, str]]) -> dict[str, Any]:
    """One transaction per voucher, written back to back at A (each its own update message, as the
    provider sends it), until B holds them all: the peer's rate for vouchers posted one at a time."""
    base = held(docs_b)
    started = time.perf_counter()
    for name, key, value in values:
        doc = docs_a[name]
        with doc.transaction():
            doc.get(REVISIONS, type=Map)[key] = value
        await asyncio.sleep(0)  # the provider sends each update as it is made
    await wait_held(docs_b, base + len(values))
    elapsed = time.perf_counter() - started
    return {"vouchers": len(values), "seconds": elapsed, "vouchers_per_s": len(values) / elapsed}


async def bulk_and_live(values: dict[str, list[tuple[str, str]]], live_values: list[tuple[str, str, str]],
                        stream_values: list[tuple[str, str, str]], port: int | None = None) -> dict[str, Any]:
    """Writer A and reader B connected to one server (in this process, or another's on `port`). Bulk:
    one transaction per document at A (as `post_many`) until B's maps hold all N. Stream: N vouchers, one transaction each, back to back.
    Live: one voucher per transaction until B holds it."""
    names = sorted(set(values) | {name for name, _k, _v in [*live_values, *stream_values]})
    count = sum(len(v) for v in values.values())
    out: dict[str, Any] = {}
    async with AsyncExitStack() as stack:
        if port is None:
            port, _srv = await stack.enter_async_context(server())
        docs_a = await stack.enter_async_context(client(port, names, counted=True))
        docs_b = await stack.enter_async_context(client(port, names))
        BYTES.client_sent = BYTES.server_sent = 0
        started = time.perf_counter()
        for name, pairs in values.items():
            doc = docs_a[name]
            revisions = doc.get(REVISIONS, type=Map)
            with doc.transaction():
                for key, value in pairs:
                    revisions[key] = value
            await asyncio.sleep(0)
        await wait_held(docs_b, count)
        elapsed = time.perf_counter() - started
        out["bulk"] = {"vouchers": count, "seconds": elapsed, "vouchers_per_s": count / elapsed,
                       "ws_bytes_writer_sent": BYTES.client_sent,
                       "ws_bytes_per_voucher": BYTES.client_sent / count}
        out["stream"] = await stream(docs_a, docs_b, stream_values)
        latencies = []
        base = held(docs_b)
        BYTES.client_sent = BYTES.server_sent = 0
        for i, (name, key, value) in enumerate(live_values, start=1):
            started = time.perf_counter()
            doc = docs_a[name]
            with doc.transaction():
                doc.get(REVISIONS, type=Map)[key] = value
            await wait_held(docs_b, base + i, 60, 0.0002)
            latencies.append((time.perf_counter() - started) * 1000)
        if latencies:
            n = len(latencies)
            out["live"] = {"vouchers": n, "p50_ms": percentile(latencies, 50), "p90_ms": percentile(latencies, 90),
                           "p99_ms": percentile(latencies, 99), "max_ms": max(latencies),
                           "ws_bytes_per_voucher": BYTES.client_sent / n}
    return out
