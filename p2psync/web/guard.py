"""Who may use the dashboard: only someone who can read the node's home.

The page is served on loopback, but any local user and any web page the office's browser opens can
reach loopback. So every request must carry a cookie holding a random secret kept in the home
(mode 0600), handed over once through the address the node prints (``/login?token=...``); the
Host header must name this server (against DNS rebinding); and a request that changes anything must
come from this server's own origin as JSON (against cross-site request forgery). No CORS headers are
ever sent, so no other origin can read an answer.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web

TOKEN_FILE = "dashboard.token"
LOGIN_PATH = "/login"
COOKIE_DAYS = 30
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
SAFE_METHODS = ("GET", "HEAD")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def load_token(home: Path) -> str:
    """The home's dashboard secret, created on first use readable by its owner only."""
    path = home / TOKEN_FILE
    try:
        token = path.read_text().strip()
    except FileNotFoundError:
        token = ""
    if len(token) < 32:
        token = secrets.token_urlsafe(32)
        home.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(token + "\n")
    os.chmod(path, 0o600)
    return token


def cookie_name(token: str) -> str:
    """Cookies are shared by every port of a host: a name of its own per node keeps two dashboards
    on one machine (a head office and a branch in a training room) from replacing each other's."""
    return "p2psync-" + hashlib.sha256(token.encode()).hexdigest()[:12]


class Guard:
    """The checks every request passes, as an aiohttp middleware."""

    def __init__(self, token: str, host: str) -> None:
        self.token = token
        self.cookie = cookie_name(token)
        self.names = {*LOOPBACK_NAMES, f"[{host}]" if ":" in host else host}
        self.hosts: set[str] = set()

    def listening(self, port: int) -> None:
        """The Host headers this server answers to, once its port is known."""
        self.hosts = {f"{name}:{port}" for name in self.names}

    def login_url(self, base: str) -> str:
        return f"{base}{LOGIN_PATH}?token={self.token}"

    def _token_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.host not in self.hosts:
            return _refuse(421, "this dashboard answers only at its own loopback address")
        if request.path == LOGIN_PATH:
            return self._login(request)
        if not self._token_ok(request.cookies.get(self.cookie)):
            return _refuse(401, "open the address that 'p2psync dashboard' prints to sign in")
        if request.method not in SAFE_METHODS:
            origin = request.headers.get("Origin")
            if origin != f"http://{request.host}":
                return _refuse(403, "a change must come from the dashboard's own page")
            if request.content_type != "application/json":
                return _refuse(415, "send changes as application/json")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Content-Security-Policy"] = ("default-src 'self'; img-src 'self' data:; "
                                                       "frame-ancestors 'none'; form-action 'self'")
        return response

    def _login(self, request: web.Request) -> web.StreamResponse:
        """Trade the token in the printed address for a cookie, and drop it from the address bar."""
        if request.method not in SAFE_METHODS or not self._token_ok(request.query.get("token")):
            return _refuse(401, "this sign-in address is not (or no longer) valid; "
                                "run 'p2psync dashboard' for the current one")
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(self.cookie, self.token, max_age=COOKIE_DAYS * 86400, path="/", httponly=True,
                            samesite="Strict")
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def _refuse(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)
