"""Live updates for the page as Server-Sent Events, from the runtime's own change notifications:
``books`` when entries or the policy change (the page reloads what it shows), ``status`` when the
status of a peer or relay changes, ``state`` when the office has just been set up. A stream ends
when the session that opened it does (it does not itself count as use)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from p2psync.canonical import report_json
from p2psync.web.guard import GUARD
from p2psync.web.state import DASHBOARD, Dashboard

routes = web.RouteTableDef()
#: How often status (peers online or offline, backlog) is compared with what the page was sent.
STATUS_SECONDS = 1.0


@routes.get("/api/events")
async def events(request: web.Request) -> web.StreamResponse:
    dashboard: Dashboard = request.app[DASHBOARD]
    guard = request.app[GUARD]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"})
    await response.prepare(request)
    with contextlib.suppress(ConnectionError):
        await _stream(dashboard, response, lambda: guard.signed_in(request))
    return response


async def _stream(dashboard: Dashboard, response: web.StreamResponse, signed_in: Callable[[], bool]) -> None:
    while dashboard.runtime is None:
        await _first(dashboard.closing.wait(), dashboard.ready.wait(), timeout=STATUS_SECONDS)
        if dashboard.closing.is_set() or not signed_in():
            return
    await _send(response, "state", "{}")
    runtime = dashboard.runtime
    seen: tuple[int, int] | None = None
    shown = ""
    while not dashboard.closing.is_set() and signed_in():
        if runtime.position != seen:
            seen = runtime.position
            await _send(response, "books", report_json({"entry": seen[0], "policy": seen[1]}))
        status = report_json(await runtime.status())
        if status != shown:
            shown = status
            await _send(response, "status", status)
        await _first(runtime.wait_for_change(*seen), dashboard.closing.wait(), timeout=STATUS_SECONDS)


async def _send(response: web.StreamResponse, event: str, data: str) -> None:
    await response.write(f"event: {event}\ndata: {data}\n\n".encode())


async def _first(*waits: Awaitable[object], timeout: float | None = None) -> object | None:
    """Wait until the first of `waits` ends (or `timeout`); cancel the others."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _pending = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next(iter(done)).result() if done else None
