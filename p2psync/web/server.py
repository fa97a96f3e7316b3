"""The dashboard's web server: the page, its JSON API and live events, behind the guard, in the
node's own asyncio loop."""

from __future__ import annotations

import errno
import logging
from pathlib import Path

from aiohttp import web

from p2psync.errors import P2PSyncError
from p2psync.web import DEFAULT_PORT, api, events, setup
from p2psync.web.guard import Guard, load_token
from p2psync.web.state import DASHBOARD, Dashboard

logger = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
#: Open event streams end when the node stops; this bounds the wait for any other request.
SHUTDOWN_SECONDS = 2.0


async def _index(_request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


def make_app(dashboard: Dashboard, guard: Guard) -> web.Application:
    app = web.Application(middlewares=[guard.middleware, api.errors], client_max_size=256 * 1024)
    app[DASHBOARD] = dashboard
    app.router.add_get("/", _index)
    app.router.add_static("/static", STATIC)
    app.add_routes(api.routes)
    app.add_routes(setup.routes)
    app.add_routes(events.routes)
    return app


class DashboardServer:
    """Serves `dashboard` on `host`:`port`; the default port falls back to a free one when taken."""

    def __init__(self, dashboard: Dashboard, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
        self.dashboard = dashboard
        self.host, self.port = host, port
        self.token = load_token(dashboard.home)
        self.runner: web.AppRunner | None = None
        self.guard: Guard | None = None

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def login_url(self) -> str:
        """The address to open once: it signs this browser in (keep it private, like a password)."""
        assert self.guard is not None
        return self.guard.login_url(self.base)

    async def start(self) -> str:
        port = await self._listen(self.port)
        if port is None and self.port == DEFAULT_PORT:
            logger.info("port %s is taken; the dashboard uses a free port instead", self.port)
            port = await self._listen(0)
        if port is None:
            raise P2PSyncError(f"cannot serve the dashboard on {self.host}:{self.port}: address in use")
        return self.login_url

    async def _listen(self, port: int) -> int | None:
        guard = Guard(self.token, self.host)
        runner = web.AppRunner(make_app(self.dashboard, guard), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, port).start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                return None
            raise P2PSyncError(f"cannot serve the dashboard on {self.host}:{port}: {exc.strerror or exc}") from None
        self.port = runner.addresses[0][1]
        guard.listening(self.port)
        self.runner, self.guard = runner, guard
        return self.port

    async def stop(self) -> None:
        self.dashboard.closing.set()
        if self.runner is not None:
            await self.runner.cleanup()
