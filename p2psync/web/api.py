"""The dashboard's JSON API: each handler reads its request, calls the same node functions the
command line calls (on the node's worker thread) and returns their data. Rules live in the node:
a refusal comes back as ``{"error": "..."}`` with the node's own message."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web

from p2psync.books.drafts import draft_of, make_line
from p2psync.books.model import Side, VoucherType
from p2psync.canonical import report_json
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.localtime import DATE_FORMATS, DEFAULT_DATE_FORMAT
from p2psync.node import audit, registrar, views
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.web.state import DASHBOARD, Dashboard

logger = logging.getLogger(__name__)
T = TypeVar("T")
routes = web.RouteTableDef()
MAX_TEXT = 2000
MAX_LINES = 500


class BadRequest(Exception):
    """The request itself is malformed (not the books' rules): answered 400 with the reason."""


def reply(data: Any, status: int = 200) -> web.Response:
    return web.Response(text=report_json(data), status=status, content_type="application/json")


@web.middleware
async def errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every refusal as one precise message; a bug as a short line here and its traceback in the log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except BadRequest as exc:
        return reply({"error": str(exc)}, 400)
    except P2PSyncError as exc:
        return reply({"error": str(exc)}, _status(exc))
    except Exception as exc:  # a bug: the detail goes to the log, never to the page
        logger.exception("dashboard request %s %s failed", request.method, request.path)
        return reply({"error": f"internal error: {type(exc).__name__}; details in the node's log"}, 500)


def _status(exc: P2PSyncError) -> int:
    for kind, status in ((InvalidInput, 400), (NotFound, 404), (RuleViolation, 422)):
        if isinstance(exc, kind):
            return status
    return 409  # the node cannot do it now (not set up, another node running, a peer unreachable...)


# ---------------------------------------------------------------- reading requests


async def body(request: web.Request) -> dict[str, Any]:
    try:
        data = await request.json()
    except ValueError:
        raise BadRequest("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request body must be a JSON object")
    return data


def text(data: dict[str, Any], key: str) -> str:
    """A required text field."""
    value = optional_text(data, key)
    if value is None:
        raise BadRequest(f"{key!r} is required")
    return value


def optional_text(data: dict[str, Any], key: str) -> str | None:
    """A text field that may be missing, null or empty (all None)."""
    value = data.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{key!r} must be text")
    if len(value) > MAX_TEXT:
        raise BadRequest(f"{key!r} is longer than {MAX_TEXT} characters")
    return value


def lines(data: dict[str, Any]) -> tuple[Any, ...]:
    """Voucher lines as ``[{"side": "Dr"|"Cr", "ledger": ..., "amount": "1,250.00"}, ...]``."""
    items = data.get("lines")
    if not isinstance(items, list) or len(items) > MAX_LINES:
        raise BadRequest(f"'lines' must be a list of at most {MAX_LINES} lines")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise BadRequest("each line must be an object with side, ledger and amount")
        side = text(item, "side")
        if side not in ("Dr", "Cr"):
            raise BadRequest("a line's side must be Dr or Cr")
        out.append(make_line(optional_text(item, "ledger") or "", optional_text(item, "amount") or "", Side(side)))
    return tuple(out)


def runtime(request: web.Request) -> NodeRuntime:
    found = request.app[DASHBOARD].runtime
    if found is None:
        raise web.HTTPConflict(text=report_json({"error": "this office is not set up yet"}),
                               content_type="application/json")
    return found


async def on_node(request: web.Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(node, *args)` on the node's worker thread, where all its database work happens."""
    run = runtime(request)
    return await run.call(fn, run.node, *args)


# ---------------------------------------------------------------- the office

#: What the page reads as is: the same data ``--json`` prints.
READS: dict[str, Callable[[Node], Any]] = {
    "/api/settings": views.settings, "/api/offices": views.offices, "/api/ledgers": views.ledgers,
    "/api/groups": views.groups,
    "/api/quarantine": views.quarantine, "/api/conflicts": views.conflicts, "/api/scopes": views.read_scopes,
}


def _reader(view: Callable[[Node], Any]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def read(request: web.Request) -> web.Response:
        return reply(await on_node(request, view))
    return read


for _path, _view in READS.items():
    routes.get(_path)(_reader(_view))


@routes.get("/api/state")
async def state(request: web.Request) -> web.Response:
    dashboard: Dashboard = request.app[DASHBOARD]
    run = dashboard.runtime
    date_format = (await run.call(run.node.settings))["date_format"] if run else DEFAULT_DATE_FORMAT
    return reply({"ready": run is not None, "identity": views.identity(run.node) if run else None,
                  "date_format": date_format,
                  "date_formats": list(DATE_FORMATS),
                  "voucher_types": [{"value": t.value, "label": t.label} for t in VoucherType],
                  "position": list(run.position) if run else [0, 0]})


@routes.get("/api/status")
async def status(request: web.Request) -> web.Response:
    return reply(await runtime(request).status())


@routes.post("/api/sync")
async def sync_now(request: web.Request) -> web.Response:
    """Auto mode: reconnect everything for a full reconcile. Manual mode: one exchange now."""
    run = runtime(request)
    if not run.manual:
        await run.restart_links()
        return reply({"ok": True, "message": "Reconnecting to every peer and relay for a full exchange."})
    results = await run.sync_once(timeout=30)
    done = [r for r in results if not r.last_error]
    return reply({"ok": bool(done), "message": f"Synced with {len(done)} of {len(results)} peers and relays.",
                  "errors": [f"{r.key}: {r.last_error}" for r in results if r.last_error]})


@routes.post("/api/restart")
async def restart(request: web.Request) -> web.Response:
    await runtime(request).restart_links()
    return reply({"ok": True, "message": "Restarted every link."})


@routes.post("/api/settings")
async def change_settings(request: web.Request) -> web.Response:
    data = await body(request)
    interval = data.get("interval")
    if interval is not None and (not isinstance(interval, int) or isinstance(interval, bool)):
        raise BadRequest("'interval' must be a whole number of minutes")
    relays = data.get("relays")
    if relays is not None and (not isinstance(relays, list) or not all(isinstance(r, str) for r in relays)):
        raise BadRequest("'relays' must be a list of addresses")
    sync_after, lock_until = data.get("sync_after"), data.get("lock_until")  # "" clears the date
    for name, value in (("sync_after", sync_after), ("lock_until", lock_until)):
        if value is not None and not isinstance(value, str):
            raise BadRequest(f"'{name}' must be a date like 2026-04-01, or empty")
    run = runtime(request)
    before = await on_node(request, views.settings)
    change = functools.partial(views.change_settings, date_format=optional_text(data, "date_format"),
                               lock_until=lock_until)
    after = await on_node(request, change, optional_text(data, "mode"), interval, sync_after, relays)
    await run.settings_changed(before)
    return reply(after)


@routes.post("/api/offices")
async def add_office(request: web.Request) -> web.Response:
    data = await body(request)
    office = await on_node(request, Node.add_office, text(data, "code"), text(data, "name"))
    await runtime(request).notify()
    return reply({"code": office.code, "name": office.name, "role": office.role}, 201)


@routes.post("/api/scopes")
async def change_scope(request: web.Request) -> web.Response:
    """Grant an office other offices' books, or take them back (head office): `{office, grant: [...]}` or
    `{office, revoke: [...]}`."""
    data = await body(request)
    offices = {key: [str(o) for o in data.get(key) or [] if isinstance(o, str)] for key in ("grant", "revoke")}
    row = await on_node(request, views.change_scope, text(data, "office"), offices["grant"], offices["revoke"])
    await runtime(request).notify()
    return reply(row)


@routes.post("/api/invites")
async def invite(request: web.Request) -> web.Response:
    data = await body(request)
    ttl = registrar.parse_ttl(optional_text(data, "ttl") or "15m")
    code, expires = await on_node(request, registrar.invite, text(data, "office"), ttl)
    return reply({"office": text(data, "office").upper(), "code": code, "expires": expires}, 201)


# ---------------------------------------------------------------- the books


@routes.post("/api/ledgers")
async def add_ledger(request: web.Request) -> web.Response:
    data = await body(request)
    record = await on_node(request, Node.add_ledger, text(data, "name"), text(data, "group"),
                           optional_text(data, "opening"))
    await runtime(request).notify()
    return reply({"name": record.name, "group": record.group}, 201)


@routes.get("/api/vouchers")
async def vouchers(request: web.Request) -> web.Response:
    q = request.query
    return reply(await on_node(request, views.vouchers, q.get("office"), q.get("from"), q.get("to")))


@routes.get("/api/voucher")
async def voucher(request: web.Request) -> web.Response:
    return reply(await on_node(request, views.voucher, request.query.get("number", "")))


@routes.post("/api/vouchers")
async def post_voucher(request: web.Request) -> web.Response:
    data = await body(request)
    draft = draft_of(text(data, "type"), text(data, "date"), lines(data),
                     optional_text(data, "narration") or "")
    rev = await on_node(request, Node.post, draft)
    await runtime(request).notify()
    return reply(await on_node(request, views.revision_posted, rev), 201)


@routes.post("/api/vouchers/amend")
async def amend_voucher(request: web.Request) -> web.Response:
    data = await body(request)
    number, new_lines = text(data, "number"), lines(data)

    def amend(node: Node) -> Any:
        draft = draft_of(optional_text(data, "type") or views.voucher_type(node, number),
                         text(data, "date"), new_lines, optional_text(data, "narration") or "")
        return node.amend(number, draft)

    rev = await on_node(request, amend)
    await runtime(request).notify()
    return reply(views.revision_data(rev))


@routes.post("/api/vouchers/cancel")
async def cancel_voucher(request: web.Request) -> web.Response:
    data = await body(request)
    rev = await on_node(request, Node.cancel, text(data, "number"), optional_text(data, "reason") or "")
    await runtime(request).notify()
    return reply(views.revision_data(rev))


@routes.get("/api/audit-trail")
async def audit_trail(request: web.Request) -> web.Response:
    q = request.query
    return reply(await on_node(request, audit.report, q.get("office"), q.get("from"), q.get("to"), q.get("voucher")))


@routes.get("/api/inter-office")
async def inter_office(request: web.Request) -> web.Response:
    """This office's counterparts and the reconciliation of every pair of offices (``inter-office
    list`` and ``report inter-office``)."""
    from p2psync.node import interoffice

    def read(node: Node) -> Any:
        return {"office": node.identity.office, "counterparts": interoffice.counterparts(node),
                "reconciliation": interoffice.report(node, request.query.get("office"))}
    return reply(await on_node(request, read))


@routes.post("/api/inter-office/accept")
async def inter_office_accept(request: web.Request) -> web.Response:
    """``inter-office accept REF``: with no lines, the suggested mirror; else the lines given
    (``lines`` as in a voucher, this office's side; its account with the other office is added)."""
    from p2psync.books.money import to_decimal
    from p2psync.node import interoffice

    data = await body(request)
    given = lines(data) if data.get("lines") else ()
    debits = [f"{ln.ledger}={to_decimal(ln.paise)}" for ln in given if ln.side is Side.DR]
    credits = [f"{ln.ledger}={to_decimal(ln.paise)}" for ln in given if ln.side is Side.CR]
    rev = await on_node(request, interoffice.accept, text(data, "ref"), debits, credits, optional_text(data, "type"))
    await runtime(request).notify()
    return reply(await on_node(request, views.revision_posted, rev), 201)


@routes.post("/api/inter-office/dispute")
async def inter_office_dispute(request: web.Request) -> web.Response:
    from p2psync.node import interoffice

    data = await body(request)
    record = await on_node(request, interoffice.dispute, text(data, "ref"), text(data, "reason"))
    await runtime(request).notify()
    return reply({"ref": record.ref, "office": record.office, "reason": record.reason}, 201)


@routes.get("/api/reports/{kind}")
async def report(request: web.Request) -> web.Response:
    q = request.query
    return reply(await on_node(request, views.report, request.match_info["kind"], q.get("office"), q.get("from"),
                               q.get("to"), q.get("ledger")))


@routes.post("/api/conflicts/settle")
async def settle_conflict(request: web.Request) -> web.Response:
    """``conflicts resolve``: ``{"number": ..., "keep": "keep-cancellation"}`` or ``{"number": ...,
    "keep": "restore", "version": REVISION}``, as each version's ``settle`` in ``/api/conflicts`` names it."""
    data = await body(request)
    keep, version = text(data, "keep"), optional_text(data, "version")
    if keep not in ("keep-cancellation", "restore") or (keep == "restore") != (version is not None):
        raise BadRequest("give 'keep': 'keep-cancellation', or 'keep': 'restore' with the 'version' to keep")
    settled = await on_node(request, views.settle_conflict, text(data, "number"), version)
    await runtime(request).notify()
    return reply(settled)
