"""Commands of registration and trust: invite, join, settings, revoke, run, quarantine."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.errors import P2PSyncError
from p2psync.node import control, joining, registrar, views
from p2psync.node.home import resolve_home
from p2psync.node.runtime import NodeRuntime, status_from_db
from p2psync.trust.invite import InviteCode



@click.command("invite")
@click.argument("office")
@click.option("--ttl", default="15m", show_default=True, help="How long the code stays valid (30s to 7d).")
@home_option
def invite_cmd(home: str | None, office: str, ttl: str) -> None:
    """At the head office: a one-time code for branch OFFICE to join with."""
    lifetime = registrar.parse_ttl(ttl)
    with open_node(home) as node:
        code, expires = registrar.invite(node, office, lifetime)
    render.info(f"One-time code for {office.upper()} (valid until {expires.astimezone():%Y-%m-%d %H:%M %Z}, "
                f"single use):")
    render.info(code)


@click.command("join")
@click.argument("code")
@click.option("--via", "via", default=None, metavar="URL", help="The head office's address, ws://HOST:PORT.")
@home_option
def join_cmd(home: str | None, code: str, via: str | None) -> None:
    """At a branch: register with the head office using its one-time CODE."""
    InviteCode.parse(code)  # a mistyped code is refused before looking for the head office
    with render.err.status("Registering with the head office" if via else "Looking for the head office on the LAN"):
        node, office_name = asyncio.run(joining.join(resolve_home(home), code, via))
    try:
        render.info(f"Joined {node.identity.company} as branch {node.identity.office} "
                    f"({office_name}); Registration ID {node.registration_id}")
    finally:
        node.close()


@click.command("settings")
@click.option("--mode", type=click.Choice(["auto", "manual"]), default=None, help="Sync live, or only when asked.")
@click.option("--interval", type=click.IntRange(1, 1440), default=None, help="Minutes between full reconciles (auto).")
@click.option("--sync-after", "sync_after", default=None,
              help="Head office: vouchers dated before this are never exchanged ('none' to clear).")
@click.option("--relay", "relays", multiple=True, help="Head office: relay address ws(s)://HOST:PORT (repeatable).")
@json_option
@home_option
def settings_cmd(home: str | None, mode: str | None, interval: int | None, sync_after: str | None,
                 relays: tuple[str, ...], as_json: bool) -> None:
    """Show or change data synchronization settings."""
    with open_node(home) as node:
        data = views.change_settings(node, mode, interval, sync_after, list(relays) or None)
    if as_json:
        render.print_json(data)
    else:
        render.table("Data synchronization settings", ["Setting", "Value"],
                     [[k.replace("_", " "), ", ".join(v) if isinstance(v, list) else v] for k, v in data.items()])


@click.command("revoke")
@click.argument("target")
@home_option
def revoke_cmd(home: str | None, target: str) -> None:
    """At the head office: revoke a node (id) or every node of an office; rotates the key."""
    with open_node(home) as node:
        revoked = registrar.revoke(node, target)
        epoch = node.trust.policy.epoch
    render.info(f"Revoked {', '.join(n[:16] for n in revoked)}; new key epoch {epoch}")


@click.command("quarantine")
@json_option
@home_option
def quarantine_cmd(home: str | None, as_json: bool) -> None:
    """Entries received but refused ("failed to import"), each with its reason."""
    with open_node(home) as node:
        data = views.quarantine(node)
    if as_json:
        render.print_json(data)
    elif not data:
        render.info("Nothing quarantined.")
    else:
        render.table("Quarantine", ["Received", "Document", "Author", "Seq", "Reason"],
                     [[str(d["received_at"])[:19], d["document"], str(d["author"])[:16], d["seq"], d["reason"]] for d in data])


@click.command("sync")
@click.option("--peer", "peers", multiple=True, metavar="URL", help="A peer's address wss://HOST:PORT (repeatable).")
@json_option
@home_option
def sync_cmd(home: str | None, peers: tuple[str, ...], as_json: bool) -> None:
    """One full exchange now with the given peers and the relays, then exit."""
    if not peers:
        reply = control.request(resolve_home(home), "sync")
        if reply is not None and reply.get("ok"):
            render.info("The node is running: it is reconnecting to every peer and relay for a full exchange now.")
            return
    with open_node(home) as node:
        runtime = NodeRuntime(node, peers=peers, mdns=False)
        results = asyncio.run(_sync_once(runtime))
    rows = [{"peer": r.key, "office": r.office, "address": r.address, "sent": r.stats.sent,
             "acknowledged": r.stats.acked, "received": r.stats.received, "ok": not r.last_error,
             "error": r.last_error} for r in results]
    if as_json:
        render.print_json(rows)
    elif not rows:
        render.info("No peer or relay to sync with: give --peer wss://HOST:PORT or set relays at the head office.")
    else:
        render.table("Sync", ["Peer", "Office", "Sent", "Received", "Result"],
                     [[r["peer"][:40], r["office"], r["sent"], r["received"], "ok" if r["ok"] else _clip(r["error"])]
                      for r in rows], numeric={2, 3})
    _check_synced(rows)


def _who(row: dict[str, Any]) -> str:
    """A peer as its user knows it: its office and the address dialed (the key may be a node id)."""
    return f"{row['office']} at {row['address']}" if row["office"] and row["address"] else row["peer"]


def _check_synced(rows: list[dict[str, Any]]) -> None:
    """Success only if every peer and relay acknowledged storing everything sent to it: a sync that
    failed with one of them must not look like one that worked (exit code 0)."""
    failures = "; ".join(f"{_who(r)}: {r['error']}" for r in rows if not r["ok"])
    if not any(r["ok"] for r in rows):
        raise P2PSyncError(f"no exchange succeeded: {failures}" if failures else "no exchange succeeded")
    if failures:
        raise P2PSyncError(f"not every exchange succeeded: {failures}")


async def _sync_once(runtime: NodeRuntime) -> list:
    try:
        return await runtime.sync_once()
    finally:
        runtime.worker.shutdown(wait=True)


@click.command("status")
@json_option
@home_option
def status_cmd(home: str | None, as_json: bool) -> None:
    """Per peer and relay: online or offline, last sync, backlog, errors; and the quarantine."""
    path = resolve_home(home)
    data = control.request(path, "status")
    if data is None:
        with open_node(home) as node:
            data = status_from_db(node)
    if as_json:
        render.print_json(data)
        return
    info = data["node"]
    render.info(f"{info['company']} - {info['office']} ({info['role']}), Registration ID {info['registration_id']}: "
                f"node {'running' if info['running'] else 'not running'}, {info['mode']} mode"
                + (f" every {info['interval_minutes']} min" if info["mode"] == "auto" else ""))
    render.table("Peers", ["Peer", "Office", "Status", "Last sync", "Sent", "Received", "Backlog", "Last error"],
                 [[p["peer"][:24], p["office"], "Online" if p["online"] else "Offline", (p["last_sync"] or "never")[:19],
                   p["sent"], p["received"], p["backlog"], _clip(p["last_error"])] for p in data["peers"]],
                 numeric={4, 5, 6})
    if data["sync_log"]:
        render.table("Recent sync log", ["At (UTC)", "Peer", "Office", "Direction", "Entries"],
                     [[r["at"][:19].replace("T", " "), r["peer"][:24], r["office"], r["direction"], r["entries"]]
                      for r in data["sync_log"][:10]], numeric={4})
    if data["waiting_entries"]:
        render.info(f"{data['waiting_entries']} received entries wait for earlier ones")
    if data["quarantined"]:
        render.table("Failed to import (quarantine)", ["Received", "Document", "Seq", "Reason"],
                     [[q["at"][:19], q["document"], q["seq"], q["reason"]] for q in data["quarantined"]])
    if data.get("equivocations"):
        render.table("Offices that signed two different entries for one position (equivocation)",
                     ["Found", "Office", "Node", "Document", "Seq"],
                     [[e["found_at"][:19], e["office"], e["author"][:16], e["document"], e["seq"]]
                      for e in data["equivocations"]])


def _clip(text: str, width: int = 40) -> str:
    """A long error cut to fit its table column, so the table keeps every other column readable
    (``--json`` has it whole)."""
    return text if len(text) <= width else text[:width - 1] + "…"


@click.command("restart")
@home_option
def restart_cmd(home: str | None) -> None:
    """Drop and re-establish every link of the running node."""
    reply = control.request(resolve_home(home), "restart")
    if reply is None:
        raise P2PSyncError("the node is not running; start it with 'p2psync run'")
    if "error" in reply:
        raise P2PSyncError(reply["error"])
    render.info("Restarted the node's links.")
