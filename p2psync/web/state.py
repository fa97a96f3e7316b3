"""What the dashboard's handlers share: the node's runtime once there is one, and how to get one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime


@dataclass
class Dashboard:
    """One office's dashboard. Before the office is set up there is no runtime: the page offers to
    create the organisation or to join one, and `start_node` turns the new node into a running one."""

    home: Path
    start_node: Callable[[Node], Awaitable[NodeRuntime]]
    runtime: NodeRuntime | None = None
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    setup_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def attach(self, runtime: NodeRuntime) -> None:
        self.runtime = runtime
        self.ready.set()


DASHBOARD = web.AppKey("dashboard", Dashboard)
