"""``p2psync run`` (the node, with its dashboard) and ``p2psync dashboard`` (the way into it, also
for an office not set up yet)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, open_node
from p2psync.errors import P2PSyncError
from p2psync.node import control, delegated
from p2psync.node.home import DB_FILE, resolve_home
from p2psync.node.local_writes import LOCAL_WRITE
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.web import DEFAULT_PORT as DASHBOARD_PORT

if TYPE_CHECKING:  # the web server is imported only by the commands that serve it: every other command starts faster
    from p2psync.web.server import DashboardServer

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_PORT = 8470


@dataclass(frozen=True)
class Serving:
    """How to serve: the node's links and its dashboard."""

    host: str
    port: int
    peers: tuple[str, ...]
    mdns: bool
    dashboard_host: str
    dashboard_port: int
    dashboard: bool


def serving_options(func: F) -> F:
    for option in reversed([
        click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on for peers."),
        click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535)),
        click.option("--peer", "peers", multiple=True, metavar="URL",
                     help="A peer's address wss://HOST:PORT (repeatable)."),
        click.option("--no-mdns", "no_mdns", is_flag=True, help="Do not advertise or browse on the LAN."),
        click.option("--dashboard-host", default="127.0.0.1", show_default=True,
                     help="Address of the dashboard (keep it on loopback)."),
        click.option("--dashboard-port", default=DASHBOARD_PORT, show_default=True, type=click.IntRange(0, 65535),
                     help="Port of the dashboard (a free one if the default is taken)."),
        click.option("--no-dashboard", "no_dashboard", is_flag=True, help="Serve no dashboard."),
    ]):
        func = option(func)
    return func


def _serving(host: str, port: int, peers: tuple[str, ...], no_mdns: bool, dashboard_host: str,
             dashboard_port: int, no_dashboard: bool) -> Serving:
    return Serving(host, port, peers, not no_mdns, dashboard_host, dashboard_port, not no_dashboard)


@click.command("run")
@serving_options
@home_option
def run_cmd(home: str | None, **options: Any) -> None:
    """Run this office's node until stopped (Ctrl-C or SIGTERM), with its dashboard on loopback."""
    with open_node(home, serving=True) as node:
        asyncio.run(_serve(node.home, node, _serving(**options)))


@click.command("dashboard")
@serving_options
@home_option
def dashboard_cmd(home: str | None, **options: Any) -> None:
    """Print the running node's dashboard address; else run the node with its dashboard. An office not
    set up yet gets a page to create the organisation (head office) or join it (branch)."""
    path = resolve_home(home)
    reply = control.request(path, "dashboard")
    if reply is not None:
        if not reply.get("url"):
            raise P2PSyncError("the running node serves no dashboard; restart it without --no-dashboard")
        render.info(f"Dashboard: {reply['url']}")
        return
    serving = _serving(**options)
    if not serving.dashboard:
        raise P2PSyncError("'p2psync dashboard' serves the dashboard; leave out --no-dashboard")
    if (path / DB_FILE).exists():
        with open_node(home, serving=True) as node:
            asyncio.run(_serve(path, node, serving))
    else:
        asyncio.run(_serve(path, None, serving))


async def _serve(home: Path, node: Node | None, serving: Serving) -> None:
    """Serve until stopped. Without a `node`, the dashboard alone until the page sets the office up."""
    from p2psync.web.server import DashboardServer
    from p2psync.web.state import Dashboard

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    server: DashboardServer | None = None
    running: list[tuple[NodeRuntime, asyncio.AbstractServer]] = []

    async def start_node(new: Node) -> NodeRuntime:
        runtime = NodeRuntime(new, host=serving.host, port=serving.port, peers=serving.peers, mdns=serving.mdns)
        channel = await control.serve(home, _control_handler(runtime, server, stop))
        running.append((runtime, channel))
        await runtime.start()
        ident = new.identity
        render.info(f"{ident.office} ({'head office' if ident.is_head else 'branch'}) serving on "
                    f"wss://{runtime.host}:{runtime.port}, {new.settings()['mode']} mode "
                    f"(started {dt.datetime.now():%H:%M:%S})")
        return runtime

    dashboard = Dashboard(home, start_node)
    if serving.dashboard:
        server = DashboardServer(dashboard, serving.dashboard_host, serving.dashboard_port)
    try:
        url = await server.start() if server is not None else None
        if node is not None:
            dashboard.attach(await start_node(node))  # first line printed: where the node serves, as before
        elif url is not None:
            render.info("This office is not set up yet: open the dashboard to create the organisation "
                        "(head office) or to join it with a one-time code (branch).")
        if url is not None:
            render.info(f"Dashboard: {url}")
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        for runtime, channel in running:
            channel.close()
            await runtime.stop()
            with contextlib.suppress(FileNotFoundError):
                control.socket_path(home).unlink()
            if node is None:  # created by the page in this process
                runtime.node.close()


def _control_handler(runtime: NodeRuntime, server: DashboardServer | None,
                     stop: asyncio.Event) -> control.Handler:
    """What ``p2psync status``, ``sync``, ``restart`` and ``dashboard`` ask the running node, the writes
    a command hands to it (`delegated`), and what a command that wrote to the books tells it
    (`local_writes`)."""

    async def handle(command: str, args: dict[str, Any]) -> dict[str, Any]:
        if command in delegated.WRITES:
            return await delegated.answer(runtime, command, args)
        if command == LOCAL_WRITE:  # answered at once: the command need not wait for the pick-up
            runtime.local_written()
            return {"ok": True}
        if command == "status":
            return await runtime.status()
        if command == "sync":  # auto mode: a full reconcile now; manual mode: the caller syncs itself
            if runtime.manual:
                return {"ok": False}
            await runtime.restart_links()
            return {"ok": True}
        if command == "restart":
            await runtime.restart_links()
            return {"ok": True}
        if command == "dashboard":
            return {"url": server.sign_in_url() if server is not None and server.guard is not None else None}
        if command == "stop":
            stop.set()
            return {"ok": True}
        return {"error": f"unknown command {command[:40]!r}"}

    return handle
