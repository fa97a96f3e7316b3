"""The dashboard's web server, in this process over real HTTP on loopback, in front of a real
running node: how it is protected (one-time sign-in tickets, session cookies bound to one server
instance, Host, Origin), that its refusals are the node's own messages, that it answers what the
command line prints, and that it pushes live events."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from helpers import draft, forge_entry, forged_revision, outgoing, setup_branch, setup_head, state, sync
from procs import here

from p2psync.books.model import Line, Side, encode_revision
from p2psync.node import views
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.cli.serve_commands import _control_handler
from p2psync.web.guard import LEGACY_TOKEN_FILE
from p2psync.web.server import DashboardServer
from p2psync.web.sessions import IDLE_SECONDS, LIFETIME_SECONDS, TICKET_SECONDS
from p2psync.web.state import Dashboard

PAYMENT = {"type": "payment", "date": "2026-04-03", "narration": "April rent",
           "lines": [{"side": "Dr", "ledger": "Rent", "amount": "25,000"},
                     {"side": "Cr", "ledger": "Cash", "amount": "25,000"}]}


class Clock:
    """The servers' clock for tickets and sessions, moved by the test instead of waited for."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    server: DashboardServer
    http: aiohttp.ClientSession
    dashboard: Dashboard
    clock: Clock
    session: tuple[str, str] = ("", "")  # the cookie's name and value, once signed in
    set_cookie: list[str] = field(default_factory=list)  # what the first sign-in set

    @property
    def runtime(self) -> NodeRuntime | None:
        return self.dashboard.runtime

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def cookie(self) -> dict[str, str]:
        return {"Cookie": "=".join(self.session)}

    async def sign_in(self, url: str, cookie: str = "") -> tuple[int, tuple[str, str] | None, list[str]]:
        """Open a sign-in address as the browser does (sending `cookie`): the status, the session
        cookie it sets, and its Set-Cookie headers."""
        headers = {"Cookie": cookie} if cookie else {}
        async with self.http.get(url, allow_redirects=False, headers=headers) as response:
            cookies = [(name, morsel.value) for name, morsel in response.cookies.items() if morsel.value]
            assert len(cookies) <= 1, cookies
            return response.status, cookies[0] if cookies else None, response.headers.getall("Set-Cookie", [])

    def origin(self) -> dict[str, str]:
        return {**self.cookie, "Origin": self.base}

    async def get(self, path: str, **params: str) -> tuple[int, Any]:
        async with self.http.get(self.base + path, params=params, headers=self.cookie) as response:
            return response.status, await response.json()

    async def post(self, path: str, body: Any) -> tuple[int, Any]:
        async with self.http.post(self.base + path, json=body, headers=self.origin()) as response:
            return response.status, await response.json()


@asynccontextmanager
async def served(node: Node | None, home: Path) -> AsyncIterator[Served]:
    """A dashboard on a free loopback port, over `node` running (or over an office not set up, whose
    node the page creates: it then runs here, as it would in ``p2psync dashboard``)."""
    runtimes: list[NodeRuntime] = []

    async def start_node(new: Node) -> NodeRuntime:
        runtime = NodeRuntime(new, host="127.0.0.1", port=0, mdns=False)
        await runtime.start()
        runtimes.append(runtime)
        return runtime

    dashboard = Dashboard(home, start_node)
    if node is not None:
        dashboard.attach(await start_node(node))
    clock = Clock()
    server = DashboardServer(dashboard, "127.0.0.1", 0, clock=clock)
    printed = await server.start()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            web = Served(server, http, dashboard, clock)
            status, session, set_cookie = await web.sign_in(printed)  # what the office does with the address
            assert status == 303 and session is not None
            web.session, web.set_cookie = session, set_cookie
            yield web
    finally:
        await server.stop()
        for runtime in runtimes:
            await runtime.stop()
            if node is None:
                runtime.node.close()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ---------------------------------------------------------------- protection


async def status_with(web: Served, base: str, cookie: str) -> int:
    async with web.http.get(base + "/api/state", headers={"Cookie": cookie}) as response:
        return response.status


LEGACY_TOKEN = "lasting-token-kept-in-the-home-by-an-older-version-0123456789"
LEGACY_COOKIE = "p2psync-" + hashlib.sha256(LEGACY_TOKEN.encode()).hexdigest()[:12]


def test_the_printed_address_trades_a_one_time_ticket_for_a_strict_httponly_session(head: Node) -> None:
    (head.home / LEGACY_TOKEN_FILE).write_text(LEGACY_TOKEN + "\n")  # as an older version left it

    async def scenario() -> None:
        async with served(head, head.home) as web:
            assert not (head.home / LEGACY_TOKEN_FILE).exists()  # the lasting secret is retired
            name, value = web.session
            assert name.startswith(f"p2psync-{web.server.port}-") and len(value) >= 43
            [cookie] = [c for c in web.set_cookie if c.startswith(f"{name}=")]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
            assert f"Max-Age={LIFETIME_SECONDS}" in cookie
            assert not any(LEGACY_TOKEN in c for c in web.set_cookie)
            url = web.server.sign_in_url()
            assert url.startswith(f"{web.base}/login?ticket=") and value not in url and LEGACY_TOKEN not in url
            status, again, _ = await web.sign_in(url)  # each address: a session of its own
            assert status == 303 and again is not None and again[0] == name and again[1] != value
            for address in (f"/login?token={LEGACY_TOKEN}", "/login?ticket=guessed", "/login"):
                assert (await web.sign_in(web.base + address))[:2] == (401, None), address
            assert await status_with(web, web.base, f"{LEGACY_COOKIE}={LEGACY_TOKEN}") == 401

    run(scenario())


def test_sign_in_expires_the_cookies_of_earlier_starts_on_its_port_and_legacy_ones_only(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            port = web.server.port
            other = f"p2psync-{port + 1}-0badcafe"  # another node's dashboard on this computer
            sent = f"{LEGACY_COOKIE}={LEGACY_TOKEN}; p2psync-{port}-deadbeef=old; {other}=theirs"
            status, session, set_cookie = await web.sign_in(web.server.sign_in_url(), sent)
            assert status == 303 and session is not None
            expired = {c.split("=")[0] for c in set_cookie if "Max-Age=0" in c}
            assert expired == {LEGACY_COOKIE, f"p2psync-{port}-deadbeef"}

    run(scenario())


def test_a_sign_in_address_works_once_and_only_for_minutes(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            url = web.server.sign_in_url()
            assert (await web.sign_in(url))[0] == 303
            status, session, set_cookie = await web.sign_in(url)  # opened a second time
            assert (status, session, set_cookie) == (401, None, [])
            async with web.http.get(url) as response:
                assert "no longer" in (await response.json())["error"]
            late = web.server.sign_in_url()
            web.clock.now += TICKET_SECONDS + 1
            assert (await web.sign_in(late))[:2] == (401, None)
            posted = web.server.sign_in_url()
            async with web.http.post(posted, headers={"Origin": web.base}, allow_redirects=False) as response:
                assert response.status == 401 and "Set-Cookie" not in response.headers
            assert (await web.sign_in(posted))[0] == 303  # only a GET spends it

    run(scenario())


@asynccontextmanager
async def another_server(web: Served, port: int = 0) -> AsyncIterator[DashboardServer]:
    """A second dashboard server over the same running node (another port, or the same port after a
    restart), signed in to nothing."""
    dashboard = Dashboard(web.dashboard.home, web.dashboard.start_node)
    assert web.runtime is not None
    dashboard.attach(web.runtime)
    server = DashboardServer(dashboard, "127.0.0.1", port, clock=web.clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def test_a_session_cookie_works_only_on_the_server_instance_that_issued_it(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            name, value = web.session
            async with another_server(web) as other:  # a second server (another port) on this computer
                status, theirs, _ = await web.sign_in(other.sign_in_url())
                assert status == 303 and theirs is not None and theirs[0] != name
                assert await status_with(web, other.base, f"{name}={value}") == 401  # the browser sends both
                assert await status_with(web, other.base, f"{theirs[0]}={value}") == 401  # value under its name
                assert await status_with(web, other.base, "=".join(theirs)) == 200
                assert await status_with(web, web.base, "=".join(theirs)) == 401
                assert await status_with(web, web.base, f"{name}={theirs[1]}") == 401
            assert await status_with(web, web.base, web.cookie["Cookie"]) == 200
            async with another_server(web) as first:  # the node stops, then starts again on its port
                port, kept = first.port, await web.sign_in(first.sign_in_url())
                assert kept[1] is not None
            async with another_server(web, port) as restarted:
                assert restarted.port == port and restarted.guard is not None
                assert restarted.guard.cookie != kept[1][0]
                assert await status_with(web, restarted.base, "=".join(kept[1])) == 401
                assert await status_with(web, restarted.base, f"{restarted.guard.cookie}={kept[1][1]}") == 401
                assert (await web.sign_in(first.sign_in_url().replace(first.base, restarted.base)))[0] == 401

    run(scenario())


def test_a_session_ends_after_idle_time_and_after_its_lifetime(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            signed_in_at = web.clock.now
            while web.clock.now + IDLE_SECONDS - 60 < signed_in_at + LIFETIME_SECONDS:
                web.clock.now += IDLE_SECONDS - 60  # used just often enough
                assert (await web.get("/api/state"))[0] == 200
            web.clock.now = signed_in_at + LIFETIME_SECONDS + 1  # used recently, but signed in too long ago
            status, refused = await web.get("/api/state")
            assert status == 401 and "sign in" in refused["error"]
            _, web.session, _ = await web.sign_in(web.server.sign_in_url())  # type: ignore[assignment]
            assert (await web.get("/api/state"))[0] == 200
            web.clock.now += IDLE_SECONDS + 1  # left unused
            assert (await web.get("/api/state"))[0] == 401
            assert (await web.get("/api/state"))[0] == 401  # and it does not come back

    run(scenario())


def test_an_open_event_stream_ends_with_its_session(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            async with web.http.get(web.base + "/api/events", headers=web.cookie) as stream:
                assert stream.status == 200 and stream.headers["X-Frame-Options"] == "DENY"
                await next_event(stream.content, "books")
                web.clock.now += IDLE_SECONDS + 1  # the stream alone does not keep the session alive
                async with asyncio.timeout(30):
                    while await stream.content.readline():
                        pass  # ends (the server closes it) instead of waiting for the timeout

    run(scenario())


def test_p2psync_dashboard_gets_a_fresh_one_time_address_from_the_running_node(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            assert web.runtime is not None
            handle = _control_handler(web.runtime, web.server, asyncio.Event())
            first, second = (await handle("dashboard", {}))["url"], (await handle("dashboard", {}))["url"]
            assert first != second and first.startswith(f"{web.base}/login?ticket=")
            for url in (second, first):
                assert (await web.sign_in(url))[0] == 303
                assert (await web.sign_in(url))[0] == 401
            assert await _control_handler(web.runtime, None, asyncio.Event())("dashboard", {}) == {"url": None}

    run(scenario())


def test_tickets_and_session_cookies_never_reach_the_log(head: Node, monkeypatch: Any, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)

    def broken(_node: Node) -> None:
        raise RuntimeError("a bug while answering")

    async def scenario() -> list[str]:
        async with served(head, head.home) as web:
            url = web.server.sign_in_url()
            _, session, _ = await web.sign_in(url)
            await web.sign_in(url)  # refused: used
            monkeypatch.setattr(views, "identity", broken)
            assert (await web.get("/api/state"))[0] == 500  # logged with its traceback
            assert session is not None
            return [web.session[1], session[1], url.split("ticket=")[1]]

    secrets = run(scenario())
    assert "a bug while answering" in caplog.text
    assert not [secret for secret in secrets if secret in caplog.text]


def test_every_answer_carries_the_security_headers_and_no_cors(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            requests = [(web.base + "/", web.cookie), (web.base + "/static/app.js", web.cookie),
                        (web.base + "/api/state", web.cookie), (web.base + "/api/state", {}),
                        (web.base + "/login?ticket=guessed", {}),
                        (web.base + "/api/state", {**web.cookie, "Host": "attacker.example"})]
            for url, headers in requests:
                async with web.http.get(url, headers=headers, allow_redirects=False) as response:
                    assert response.headers["Content-Security-Policy"].startswith("default-src 'self'"), url
                    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
                    assert (response.headers["X-Frame-Options"], response.headers["X-Content-Type-Options"],
                            response.headers["Referrer-Policy"], response.headers["Cache-Control"]) == (
                        "DENY", "nosniff", "no-referrer", "no-store"), url
                    assert not [h for h in response.headers if h.lower().startswith("access-control-")], url

    run(scenario())


def test_requests_without_the_cookie_are_refused(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            for path in ("/", "/static/app.js", "/api/state", "/api/reports/trial-balance", "/api/events"):
                async with web.http.get(web.base + path) as response:
                    assert response.status == 401, path
            wrong = {"Cookie": f"{web.session[0]}=not-the-session"}
            async with web.http.get(web.base + "/api/status", headers=wrong) as response:
                assert response.status == 401
            assert (await web.get("/api/state"))[0] == 200  # the same request with the cookie

    run(scenario())


def test_a_wrong_host_header_is_refused_against_dns_rebinding(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            port = web.server.port
            for host in (f"attacker.example:{port}", f"127.0.0.1:{port + 1}", "localhost"):
                async with web.http.get(web.base + "/api/state", headers={**web.cookie, "Host": host}) as response:
                    assert response.status == 421, host
            async with web.http.get(web.base + "/api/state", headers={**web.cookie, "Host": f"localhost:{port}"}) as r:
                assert r.status == 200

    run(scenario())


def test_a_cross_origin_or_form_post_changes_nothing(head: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            before = await web.runtime.call(state, head)  # type: ignore[union-attr]
            url = web.base + "/api/vouchers"
            for headers, body, status in (
                ({**web.cookie, "Origin": "http://attacker.example"}, json.dumps(PAYMENT), 403),
                ({**web.cookie, "Origin": f"http://localhost:{web.server.port + 1}"}, json.dumps(PAYMENT), 403),
                (web.cookie, json.dumps(PAYMENT), 403),  # no Origin at all
                ({**web.origin(), "Content-Type": "text/plain"}, json.dumps(PAYMENT), 415),  # a form's "simple" POST
            ):
                async with web.http.post(url, data=body, headers=headers) as response:
                    assert response.status == status
                    assert "Access-Control-Allow-Origin" not in response.headers
            assert await web.runtime.call(state, head) == before  # type: ignore[union-attr]
            assert (await web.post("/api/vouchers", PAYMENT))[0] == 201  # the page's own request is served

    run(scenario())


# ---------------------------------------------------------------- the node's rules, the node's messages


def test_refusals_are_the_node_rules_own_messages_and_write_nothing(head: Node) -> None:
    unbalanced = {**PAYMENT, "lines": [{"side": "Dr", "ledger": "Rent", "amount": "100"},
                                       {"side": "Cr", "ledger": "Cash", "amount": "99.50"}]}
    contra_with_rent = {**PAYMENT, "type": "contra"}

    def cli_error(body: dict[str, Any]) -> str:
        """What the same voucher gets from the node's functions, as the command line calls them."""
        try:
            head.post(draft(body["type"], body["date"], {body["lines"][0]["ledger"]: body["lines"][0]["amount"]},
                            {body["lines"][1]["ledger"]: body["lines"][1]["amount"]}))
        except Exception as exc:
            return str(exc)
        raise AssertionError("the node accepted a voucher the rules refuse")

    expected = {"unbalanced": cli_error(unbalanced), "contra": cli_error(contra_with_rent)}

    async def scenario() -> None:
        async with served(head, head.home) as web:
            before = await web.runtime.call(state, head)  # type: ignore[union-attr]
            cases = [
                ("/api/vouchers", unbalanced, 422, expected["unbalanced"]),
                ("/api/vouchers", contra_with_rent, 422, expected["contra"]),
                ("/api/vouchers", {**PAYMENT, "date": "31-02-2026"}, 400, "is not a valid date"),
                ("/api/vouchers", {**PAYMENT, "lines": [{**PAYMENT["lines"][0], "amount": "-5"}, PAYMENT["lines"][1]]},
                 400, "is negative"),
                ("/api/vouchers", {**PAYMENT, "lines": [{**PAYMENT["lines"][0], "amount": 25000}]}, 400,
                 "'amount' must be text"),
                ("/api/vouchers", {**PAYMENT, "lines": "Rent=5"}, 400, "'lines' must be a list"),
                ("/api/vouchers", {k: v for k, v in PAYMENT.items() if k != "date"}, 400, "'date' is required"),
                ("/api/vouchers", [PAYMENT], 400, "must be a JSON object"),
                ("/api/vouchers/amend", {**PAYMENT, "number": "HO/PMT/99999"}, 404, "no voucher numbered HO/PMT/99999"),
                ("/api/vouchers/cancel", {"number": "HO/PMT/99999", "reason": "typo"}, 404, "no voucher numbered"),
                ("/api/settings", {"mode": "sometimes"}, 400, "must be auto or manual"),
                ("/api/settings", {"interval": "5"}, 400, "whole number of minutes"),
                ("/api/offices", {"code": "bad code!", "name": "X"}, 400, "office code"),
                ("/api/invites", {"office": "BR9"}, 404, "BR9"),
                ("/api/ledgers", {"name": "Misc", "group": "No Such Group"}, 404, "unknown group 'No Such Group'"),
                ("/api/ledgers", {"name": "cash", "group": "Cash-in-Hand"}, 400, "already exists as 'Cash'"),
                ("/api/ledgers", {"name": "Petty Cash", "group": "Cash-in-Hand", "opening": "1.234"}, 400,
                 "more than two decimal places"),
            ]
            for path, body, status, message in cases:
                got_status, got = await web.post(path, body)
                assert (got_status, message in got["error"]) == (status, True), (path, body, got)
                assert "Traceback" not in got["error"]
            async with web.http.post(web.base + "/api/vouchers", data="{not json", headers={
                    **web.origin(), "Content-Type": "application/json"}) as response:
                assert (response.status, await response.json()) == (400, {
                    "error": "the request body is not valid JSON"})
            assert (await web.get("/api/reports/nonsense"))[0] == 400
            assert (await web.get("/api/reports/ledger", ledger="No Such Ledger"))[1] == {
                "error": "unknown ledger 'No Such Ledger'"}
            assert await web.runtime.call(state, head) == before  # type: ignore[union-attr]

    run(scenario())


def test_the_api_answers_what_the_command_line_prints(head: Node) -> None:
    async def scenario() -> dict[str, Any]:
        async with served(head, head.home) as web:
            status, posted = await web.post("/api/vouchers", PAYMENT)
            assert status == 201 and posted["number"] == "HO/PMT/00001"
            amended = {**PAYMENT, "number": posted["number"], "narration": "April rent, corrected",
                       "lines": [{**line, "amount": "24,000.50"} for line in PAYMENT["lines"]]}
            assert (await web.post("/api/vouchers/amend", amended))[0] == 200
            await web.post("/api/vouchers", {**PAYMENT, "type": "receipt", "lines": [
                {"side": "Dr", "ledger": "Bank", "amount": "1,00,000"},
                {"side": "Cr", "ledger": "Capital", "amount": "100000"}]})
            status, cancelled = await web.post("/api/vouchers/cancel",
                                               {"number": "HO/RCT/00001", "reason": "duplicate"})
            assert status == 200 and cancelled["action"] == "cancel"
            status, made = await web.post("/api/ledgers", {"name": "Petty Cash", "group": "cash-in-hand",
                                                            "opening": "2,500"})
            assert (status, made) == (201, {"name": "Petty Cash", "group": "Cash-in-Hand"})
            out = {}
            for kind in ("trial-balance", "day-book", "balance-sheet", "profit-loss"):
                out[kind] = (await web.get(f"/api/reports/{kind}"))[1]
                out[f"{kind}/HO"] = (await web.get(f"/api/reports/{kind}", office="ho"))[1]
            out["ledger"] = (await web.get("/api/reports/ledger", ledger="cash", **{"from": "2026-04-01"}))[1]
            out["vouchers"] = (await web.get("/api/vouchers"))[1]
            out["settings"] = (await web.get("/api/settings"))[1]
            out["offices"] = (await web.get("/api/offices"))[1]
            out["ledgers"] = (await web.get("/api/ledgers"))[1]
            out["groups"] = (await web.get("/api/groups"))[1]
            return out

    api = run(scenario())
    cli = {kind: json.loads(here(head.home, "report", kind, "--json")) for kind in
           ("trial-balance", "day-book", "balance-sheet", "profit-loss")}
    cli |= {f"{kind}/HO": json.loads(here(head.home, "report", kind, "--office", "HO", "--json")) for kind in
            ("trial-balance", "day-book", "balance-sheet", "profit-loss")}
    cli["ledger"] = json.loads(here(head.home, "report", "ledger", "Cash", "--from", "2026-04-01", "--json"))
    cli["vouchers"] = json.loads(here(head.home, "voucher", "list", "--json"))
    cli["settings"] = json.loads(here(head.home, "settings", "--json"))
    cli["offices"] = json.loads(here(head.home, "branch", "list", "--json"))
    cli["ledgers"] = json.loads(here(head.home, "ledger", "list", "--json"))
    cli["groups"] = json.loads(here(head.home, "group", "list", "--json"))
    assert "Petty Cash" in [ledger["name"] for ledger in cli["ledgers"]]
    assert api == cli
    # the amended payment and Petty Cash's opening (balanced by a difference line); the receipt is cancelled
    assert api["trial-balance"]["total"] == {"debit": "26500.50", "credit": "26500.50"}


def test_settings_applied_at_the_head_office_sign_a_policy_a_branch_may_not(head: Node, branch: Node) -> None:
    async def scenario() -> None:
        async with served(head, head.home) as web:
            version = (await web.get("/api/settings"))[1]["policy_version"]
            status, after = await web.post("/api/settings", {"mode": "auto", "interval": 7, "sync_after": "01-04-2026",
                                                              "relays": ["wss://relay.example:8471"]})
            assert status == 200
            assert (after["interval"], after["sync_after"], after["relays"]) == ("7", "2026-04-01",
                                                                                 ["wss://relay.example:8471"])
            assert after["policy_version"] == version + 2  # one new policy for the date, one for the relays
            again = await web.post("/api/settings", {"sync_after": "2026-04-01", "relays": ["wss://relay.example:8471"]})
            assert again[1]["policy_version"] == version + 2  # applying unchanged values signs nothing
            cleared = (await web.post("/api/settings", {"sync_after": ""}))[1]
            assert (cleared["sync_after"], cleared["policy_version"]) == (None, version + 3)
        async with served(branch, branch.home) as web:
            status, refused = await web.post("/api/settings", {"sync_after": "2026-05-01"})
            assert (status, refused["error"]) == (422, "only the head office can do this; it holds the organisation's "
                                                       "root key")

    run(scenario())


def amended_apart(trio: list[Node]) -> str:
    """A BR1 voucher amended at the head office and at BR1 at once, every office holding both."""
    head, br1, _br2 = trio
    number = br1.post(draft("payment", "2026-04-05", {"Rent": "500"}, {"Cash": "500"}, "shop rent")).number
    sync(*trio)
    head.amend(number, draft("payment", "2026-04-05", {"Rent": "450"}, {"Cash": "450"}, "rent, as agreed"))
    br1.amend(number, draft("payment", "2026-04-05", {"Rent": "480"}, {"Cash": "480"}, "rent, per receipt"))
    sync(*trio)
    return number


def test_a_branch_cannot_settle_another_offices_conflict_and_its_own_office_can(trio: list[Node]) -> None:
    """The dashboard settles a conflict as ``conflicts resolve`` does, only where the node lets it:
    BR2 is offered nothing on BR1's voucher and is refused if it asks anyway; BR1 keeps a version."""
    number = amended_apart(trio)
    _head, br1, br2 = trio

    async def scenario() -> None:
        async with served(br2, br2.home) as web:
            (conflict,) = (await web.get("/api/conflicts"))[1]
            assert conflict["office"] == "BR1" and [v["settle"] for v in conflict["versions"]] == [None, None]
            before = state(br2)
            status, refused = await web.post("/api/conflicts/settle", {
                "number": number, "keep": "restore", "version": conflict["versions"][1]["revision"]})
            assert status == 422
            assert refused["error"] == (f"voucher {number} belongs to office BR1; "
                                        "only it or the head office may settle its conflict")
            assert state(br2) == before
        async with served(br1, br1.home) as web:
            (conflict,) = (await web.get("/api/conflicts"))[1]
            assert [v["settle"] for v in conflict["versions"]] == ["restore", "restore"]
            lost = next(v for v in conflict["versions"] if not v["current"])
            status, bad = await web.post("/api/conflicts/settle", {"number": number, "keep": "restore"})
            assert status == 400 and "'version'" in bad["error"]
            status, settled = await web.post("/api/conflicts/settle", {
                "number": number, "keep": "restore", "version": lost["revision"]})
            assert status == 200 and [r["action"] for r in settled["made"]] == ["amend"]
            assert (await web.get("/api/conflicts"))[1] == []
            shown = (await web.get("/api/voucher", number=number))[1]["current"]
            assert (shown["narration"], shown["lines"][0]["amount"]) == (lost["narration"], lost["amount"])

    run(scenario())


# ---------------------------------------------------------------- live events


async def next_event(lines: aiohttp.StreamReader, kind: str) -> dict[str, Any]:
    """The data of the next event of `kind` on a server-sent event stream."""
    event = ""
    async with asyncio.timeout(30):
        while True:
            line = (await lines.readline()).decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == kind:
                return dict(json.loads(line[6:]))


def test_events_announce_entries_as_they_arrive_from_another_office(head: Node, branch: Node) -> None:
    branch.post(draft("receipt", "2026-04-05", {"Cash": "500"}, {"Sales": "500"}, "counter sale at BR1"))

    async def scenario() -> None:
        async with served(head, head.home) as web:
            assert web.runtime is not None
            async with web.http.get(web.base + "/api/events", headers=web.cookie) as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                first = await next_event(stream.content, "books")
                status = await next_event(stream.content, "status")
                assert status["node"]["office"] == "HO" and status["node"]["running"]
                applied, *_ = await web.runtime.receive(outgoing(branch, head), [])
                assert applied == 1
                arrived = await next_event(stream.content, "books")
                assert arrived["entry"] > first["entry"]
            day_book = (await web.get("/api/reports/day-book", office="BR1"))[1]
            assert [row["narration"] for row in day_book["rows"]] == ["counter sale at BR1"]

    run(scenario())


def test_status_lists_a_refused_entry_with_its_reason(head: Node, branch: Node) -> None:
    unbalanced = forged_revision("BR1", "BR1/JRN/00042", (Line("Rent", Side.DR, 100), Line("Cash", Side.CR, 99)))
    blob = forge_entry(branch, "vouchers/BR1/2026-04",
                       lambda m: m.__setitem__(unbalanced.id, encode_revision(unbalanced)))

    async def scenario() -> None:
        async with served(head, head.home) as web:
            assert web.runtime is not None
            assert (await web.runtime.receive([blob], []))[0] == 0
            refused = (await web.get("/api/quarantine"))[1]
            assert [(q["document"], q["author"], q["seq"]) for q in refused] == [
                ("vouchers/BR1/2026-04", branch.identity.node_id, 1)]
            assert "do not equal credits" in refused[0]["reason"]
            status = (await web.get("/api/status"))[1]
            assert [q["reason"] for q in status["quarantined"]] == [refused[0]["reason"]]

    run(scenario())


# ---------------------------------------------------------------- before the office is set up


def test_an_office_not_set_up_offers_setup_only_then_runs_the_node_it_created(tmp_path: Path) -> None:
    home = tmp_path / "HO"

    async def scenario() -> None:
        async with served(None, home) as web:
            assert (await web.get("/api/state"))[1]["ready"] is False
            assert (await web.get("/api/status"))[0] == 409
            status, refused = await web.post("/api/setup/join", {"code": "not-a-code", "via": "wss://127.0.0.1:9"})
            assert status == 400 and "invite code" in refused["error"]
            assert (await web.post("/api/setup/head", {"office": "HO"}))[0] == 400  # no company
            assert not home.exists()  # nothing created by a refusal (nor by the dashboard itself)
            status, created = await web.post("/api/setup/head", {"company": "Acme Traders", "office": "HO"})
            assert status == 201 and created["file_type"] == "Head Office"
            state_now = (await web.get("/api/state"))[1]
            assert state_now["ready"] and state_now["identity"]["registration_id"] == created["registration_id"]
            assert (await web.get("/api/status"))[1]["node"]["running"] is True
            assert (await web.post("/api/setup/head", {"company": "Other"}))[1] == {
                "error": "this office is already set up"}

    run(scenario())
    node = Node.open(home)
    try:
        assert node.identity.company == "Acme Traders" and node.identity.is_head
        assert node.trust.policy.scoped_from == 1 and node.trust.policy.grants == {}  # the default read scopes
    finally:
        node.close()


def test_the_setup_page_can_make_an_organisation_with_open_books(tmp_path: Path) -> None:
    home = tmp_path / "HO"

    async def scenario() -> None:
        async with served(None, home) as web:
            status, _created = await web.post("/api/setup/head", {"company": "Acme Traders", "open_books": True})
            assert status == 201

    run(scenario())
    node = Node.open(home)
    try:
        assert node.trust.policy.grants == {"*": ("*",)}  # p2psync init --open-books
    finally:
        node.close()


def test_read_scopes_are_shown_and_granted_at_the_head_office_only(tmp_path: Path) -> None:
    head = setup_head(tmp_path / "HO", read_all=False)  # the default scopes
    branch = setup_branch(tmp_path / "BR1", "BR1", head)

    async def scenario() -> None:
        async with served(head, head.home) as web:
            status, granted = await web.post("/api/scopes", {"office": "BR1", "grant": ["BR2"]})
            assert status == 200 and granted["reads"] == ["BR1", "BR2"] and granted["granted"] == ["BR2"]
            assert (await web.get("/api/scopes"))[1] == views.read_scopes(head)
            status, taken = await web.post("/api/scopes", {"office": "BR1", "revoke": ["BR2"]})
            assert status == 200 and taken["reads"] == ["BR1"] and taken["rotated"]
            status, every = await web.post("/api/scopes", {"office": "BR1", "grant": ["*"]})
            assert status == 200 and every["all"] and every["granted"] == ["*"] and not every["rotated"]
            status, opened = await web.post("/api/scopes", {"office": "*", "grant": ["*"]})
            assert status == 200 and opened["office"] == "*" and opened["all"]
            assert all(r["all"] for r in (await web.get("/api/scopes"))[1])
        async with served(branch, branch.home) as web:
            status, refused = await web.post("/api/scopes", {"office": "BR1", "grant": ["BR2"]})
            assert status == 422 and "only the head office" in refused["error"]

    try:
        run(scenario())
    finally:
        head.close()
        branch.close()
