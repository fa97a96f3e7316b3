"""The dashboard's web server: the page, its JSON API and live events, behind the guard, in the
node's own asyncio loop."""

from __future__ import annotations

import errno
import logging
import time
from pathlib import Path

from aiohttp import web

from p2psync.errors import P2PSyncError
from p2psync.web import DEFAULT_PORT, api, events, setup
from p2psync.web.guard import GUARD, Guard, harden, retire_legacy_token
from p2psync.web.sessions import Clock
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
    app[GUARD] = guard
    app.on_response_prepare.append(harden)
    app.router.add_get("/", _index)
    app.router.add_static("/static", STATIC)
    app.add_routes(api.routes)
    app.add_routes(setup.routes)
    app.add_routes(events.routes)
    return app


class DashboardServer:
    """Serves `dashboard` on `host`:`port`; the default port falls back to a free one when taken.
    `clock` times sign-in tickets and sessions (injectable so tests need not wait)."""

    def __init__(self, dashboard: Dashboard, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 clock: Clock = time.monotonic) -> None:
        self.dashboard = dashboard
        self.host, self.port = host, port
        self.clock = clock
        retire_legacy_token(dashboard.home)
        self.runner: web.AppRunner | None = None
        self.guard: Guard | None = None

    @property
    def base(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def sign_in_url(self) -> str:
        """A fresh address to open once, within minutes: it signs one browser in. Each call mints a new
        one-time ticket, so print it rather than log it, and keep it private until it is used."""
        assert self.guard is not None
        return self.guard.sign_in_url(self.base)

    async def start(self) -> str:
        port = await self._listen(self.port)
        if port is None and self.port == DEFAULT_PORT:
            logger.info("port %s is taken; the dashboard uses a free port instead", self.port)
            port = await self._listen(0)
        if port is None:
            raise P2PSyncError(f"cannot serve the dashboard on {self.host}:{self.port}: address in use")
        return self.sign_in_url()

    async def _listen(self, port: int) -> int | None:
        guard = Guard(self.host, self.clock)
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
