"""Who may use the dashboard: only someone who can run the node's own commands.

The page is served on loopback, but any local user and any web page the office's browser opens can
reach loopback, and a browser sends its cookies for 127.0.0.1 to every port there, so to whoever
listens on the dashboard's usual port while the node is down. Hence no lasting secret ever goes
into a cookie or an address: the node prints an address with a one-time ticket (``/login?ticket=``;
``p2psync dashboard`` asks the running node for a fresh one over its owner-only control socket),
and opening it trades the ticket for a short session held in this server's memory, in a cookie
whose name is this server's own (port and a random suffix per start). The Host header must name
this server (against DNS rebinding); a request that changes anything must come from this server's
own origin as JSON (against cross-site request forgery). No CORS headers are ever sent, so no other
origin can read an answer.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

from p2psync.web.sessions import LIFETIME_SECONDS, Clock, Sessions

LOGIN_PATH = "/login"
COOKIE_PREFIX = "p2psync-"
#: Before sessions, the cookie held the home's lasting token under a name derived from it; a
#: browser may still send one: it is expired at sign-in, and the file is deleted.
LEGACY_COOKIE = re.compile(r"p2psync-[0-9a-f]{12}")
LEGACY_TOKEN_FILE = "dashboard.token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SAFE_METHODS = ("GET", "HEAD")
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def retire_legacy_token(home: Path) -> None:
    """Delete the lasting token older versions kept in the home: nothing accepts it any more, and a
    secret nobody needs is one less to leak."""
    with contextlib.suppress(FileNotFoundError):
        (home / LEGACY_TOKEN_FILE).unlink()


class Guard:
    """The checks every request passes, as an aiohttp middleware, and the sign-in they rely on."""

    def __init__(self, host: str, clock: Clock = time.monotonic) -> None:
        self.sessions = Sessions(clock)
        self.names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
        self.hosts: set[str] = set()
        self.cookie = ""
        self.port = 0

    def listening(self, port: int) -> None:
        """The Host headers this server answers to, and its cookie's name, once its port is known.
        The name is this instance's own: a session cookie from another port or an earlier start of
        the node is not even looked at (and its id is not in this server's memory anyway)."""
        self.port = port
        self.hosts = {f"{name}:{port}" for name in self.names}
        self.cookie = f"{COOKIE_PREFIX}{port}-{secrets.token_hex(4)}"

    def sign_in_url(self, base: str) -> str:
        """A fresh address to open once: each one printed carries a ticket of its own."""
        return f"{base}{LOGIN_PATH}?ticket={self.sessions.mint_ticket()}"

    def signed_in(self, request: web.Request) -> bool:
        """Whether `request` still carries a live session, without counting it as use: an open event
        stream asks this to end when its session does."""
        return self.sessions.check(request.cookies.get(self.cookie), touch=False)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self.hosts:
            return _refuse(421, "this dashboard answers only at its own loopback address")
        if request.path == LOGIN_PATH:
            return self._sign_in(request)
        if not self.sessions.check(request.cookies.get(self.cookie)):
            return _refuse(401, "open the address that 'p2psync dashboard' prints to sign in")
        if request.method not in SAFE_METHODS:
            if request.headers.get("Origin") != f"http://{request.host}":
                return _refuse(403, "a change must come from the dashboard's own page")
            if request.content_type != "application/json":
                return _refuse(415, "send changes as application/json")
        return await handler(request)

    def _sign_in(self, request: web.Request) -> web.StreamResponse:
        """Trade the ticket in the printed address for a session, and drop it from the address bar."""
        session = self.sessions.redeem(request.query.get("ticket")) if request.method == "GET" else None
        if session is None:
            return _refuse(401, "this sign-in address is not (or no longer) valid; "
                                "run 'p2psync dashboard' for a fresh one")
        response = web.Response(status=303, headers={"Location": "/"})
        for stale in self._stale_cookies(request):
            response.del_cookie(stale, path="/")
        response.set_cookie(self.cookie, session, max_age=LIFETIME_SECONDS, path="/", httponly=True,
                            samesite="Strict")
        return response

    def _stale_cookies(self, request: web.Request) -> list[str]:
        """Cookies of earlier starts on this port, and any legacy one holding a lasting token: the
        browser would otherwise keep sending them to every port until they expire."""
        mine = f"{COOKIE_PREFIX}{self.port}-"
        return [name for name in request.cookies
                if name != self.cookie and (name.startswith(mine) or LEGACY_COOKIE.fullmatch(name))]


async def harden(_request: web.Request, response: web.StreamResponse) -> None:
    """Security headers on every answer, refusals and the event stream included (on_response_prepare
    runs before the headers are sent, which a middleware cannot promise for a stream)."""
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.update(SECURITY_HEADERS)


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


#: The guard of the server a request reached, for handlers that must notice a session ending.
GUARD = web.AppKey("guard", Guard)
