"""Setting up an office from the page: create the organisation at the head office, or join it at
a branch with the one-time code (the same functions as ``p2psync init`` and ``p2psync join``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from p2psync.errors import P2PSyncError
from p2psync.node import joining, views
from p2psync.node.office import Node
from p2psync.web.api import body, optional_text, reply, text
from p2psync.web.state import DASHBOARD, Dashboard

routes = web.RouteTableDef()


@routes.post("/api/setup/head")
async def create_head(request: web.Request) -> web.Response:
    """`{company, office?, name?, open_books?}`: `open_books` true makes every office read every
    office's books (``init --open-books``); else the default read scopes."""
    data = await body(request)
    company, office = text(data, "company"), optional_text(data, "office") or "HO"
    name = optional_text(data, "name") or "Head Office"
    open_books = data.get("open_books") is True
    dashboard: Dashboard = request.app[DASHBOARD]
    return await _set_up(dashboard, lambda: asyncio.to_thread(Node.create_head, dashboard.home, company, office, name,
                                                              open_books))


@routes.post("/api/setup/join")
async def join(request: web.Request) -> web.Response:
    data = await body(request)
    code, via = text(data, "code"), optional_text(data, "via")
    dashboard: Dashboard = request.app[DASHBOARD]

    async def joined() -> Node:
        node, _name = await joining.join(dashboard.home, code, via)
        return node

    return await _set_up(dashboard, joined)


async def _set_up(dashboard: Dashboard, making: Callable[[], Awaitable[Node]]) -> web.Response:
    """One setup at a time, and only while the office has none; then the node starts serving."""
    async with dashboard.setup_lock:
        if dashboard.runtime is not None:
            raise P2PSyncError("this office is already set up")
        node = await making()
        dashboard.attach(await dashboard.start_node(node))
    return reply(views.identity(node), 201)
