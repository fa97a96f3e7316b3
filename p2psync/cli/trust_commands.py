"""Commands of registration and trust: invite, join, settings, revoke, run, quarantine."""

from __future__ import annotations

import asyncio
from typing import Any, Self

import click
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.errors import P2PSyncError
from p2psync.localtime import DATE_FORMATS, local_time, zone_name
from p2psync.node import control, joining, registrar, roster, views
from p2psync.node.home import resolve_home
from p2psync.node.membership import revoked_notice
from p2psync.node.office import CATCHING_UP_NOTICE
from p2psync.node.runtime import NodeRuntime, PeerState, status_from_db


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
@click.option("--via", "via", default=None, metavar="URL",
              help="The head office's address, wss://HOST:PORT (default: find it on the LAN, else via the relay).")
@home_option
def join_cmd(home: str | None, code: str, via: str | None) -> None:
    """At a branch: register with the head office using its one-time CODE."""
    path = resolve_home(home)
    joining.check_join(path, code, via)  # a refused join must not spend the code: check before asking
    with render.err.status("Registering with the head office" if via else "Looking for the head office on the LAN"):
        node, office_name = asyncio.run(joining.join(path, code, via))
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
@click.option("--lock-until", "lock_until", default=None,
              help="Head office: no voucher dated on or before this may be posted, amended or cancelled "
                   "('none' to unlock).")
@click.option("--history", "history", is_flag=True, help="Show every change of the sync-after and lock dates.")
@click.option("--relay", "relays", multiple=True, help="Head office: relay address ws(s)://HOST:PORT (repeatable).")
@click.option("--books-begin", "books_begin", default=None,
              help="This office: no voucher may be entered dated before this ('none': 8 financial years back).")
@click.option("--post-ahead", "post_ahead", default=None,
              help="This office: latest voucher date, 'year-end' (of the current financial year) or DAYS after today.")
@click.option("--negative-cash", "negative_cash", type=click.Choice(["warn", "refuse"]), default=None,
              help="This office: when a posting leaves cash in hand below zero.")
@click.option("--date-format", "date_format", type=click.Choice(list(DATE_FORMATS), case_sensitive=False),
              default=None, help="How this office's screens write dates (default dd-mm-yyyy); --json keeps ISO.")
@json_option
@home_option
def settings_cmd(home: str | None, mode: str | None, interval: int | None, sync_after: str | None,
                 relays: tuple[str, ...], books_begin: str | None, post_ahead: str | None,
                 negative_cash: str | None, date_format: str | None, lock_until: str | None, history: bool,
                 as_json: bool) -> None:
    """Show or change data synchronization and posting settings, the period lock, and how this office
    writes dates."""
    with open_node(home) as node:
        data = views.change_settings(node, mode, interval, sync_after, list(relays) or None, books_begin,
                                     post_ahead, negative_cash, date_format, lock_until)
        changes = views.policy_history(node) if history else None
    if changes is not None:
        _print_history(changes, as_json, data.get("date_format"))
    elif as_json:
        render.print_json(data)
    else:
        render.table("Data synchronization settings", ["Setting", "Value"],
                     [[k.replace("_", " "), ", ".join(v) if isinstance(v, list) else v] for k, v in data.items()])


def _print_history(changes: list[dict[str, Any]], as_json: bool, date_format: str | None) -> None:
    """The policy versions that set or cleared the sync-after or lock date."""
    if as_json:
        render.print_json(changes)
        return
    names = {"sync_after": "sync after", "lock_until": "lock until"}
    render.table("Sync-after and lock dates (policy history)", ["Version", f"Issued ({zone_name()})", "Setting",
                                                                "Date"],
                 [[c["version"], local_time(c["issued_at"], date_format), names.get(c["setting"], c["setting"]),
                   c["date"] or ("(unlocked)" if c["setting"] == "lock_until" else "(no date)")] for c in changes],
                 numeric={0})


@click.command("revoke")
@click.argument("target")
@home_option
def revoke_cmd(home: str | None, target: str) -> None:
    """At the head office: revoke a node (id) or every node of an office; rotates the key."""
    with open_node(home) as node:
        unseen = {r["node"] for r in roster.nodes(node) if not r["came_online"]}
        revoked = registrar.revoke(node, target)
        office = node.trust.author(revoked[0]).office
        epoch = node.trust.policy.epoch
    render.info(f"Revoked {', '.join(n[:16] + (' (it never came online)' if n in unseen else '') for n in revoked)}"
                f"; new key epoch {epoch}")
    render.info(f"Register a replacement machine with a new code: 'p2psync invite {office}'.")


@click.command("quarantine")
@json_option
@home_option
def quarantine_cmd(home: str | None, as_json: bool) -> None:
    """Entries received but refused ("failed to import"), each with its reason."""
    with open_node(home) as node:
        data = views.quarantine(node)
        date_format = node.settings()["date_format"]
    if as_json:
        render.print_json(data)
    elif not data:
        render.info("Nothing quarantined.")
    else:
        render.table("Quarantine", ["Received", "Document", "Author", "Seq", "Reason"],
                     [[local_time(str(d["received_at"]), date_format), d["document"], str(d["author"])[:16], d["seq"],
                       d["reason"]] for d in data])


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
        was_catching_up = node.catching_up
        runtime = NodeRuntime(node, peers=peers, mdns=False)
        with SyncProgress() as progress:
            runtime.on_progress = progress.update
            results = asyncio.run(_sync_once(runtime))
        still_catching_up = node.catching_up
    rows = [{"peer": r.key, "office": r.office, "address": r.address, "sent": r.stats.sent,
             "acknowledged": r.stats.acked, "received": r.stats.received, "sent_vouchers": r.stats.sent_vouchers,
             "received_vouchers": r.stats.received_vouchers, "ok": not r.last_error, "error": r.last_error,
             "error_detail": r.last_error_detail} for r in results]
    if as_json:
        render.print_json(rows)
    elif not rows:
        render.info("No peer or relay to sync with: give --peer wss://HOST:PORT or set relays at the head office.")
    else:
        render.table("Sync (vouchers)", ["Peer", "Office", "Sent", "Received", "Result"],
                     [[r["peer"][:40], r["office"], r["sent_vouchers"], r["received_vouchers"],
                       "ok" if r["ok"] else _clip(r["error"])] for r in rows], numeric={2, 3})
    _check_synced(rows)
    if was_catching_up:
        render.info("Caught up after the restore: this office may post again." if not still_catching_up else
                    "Still catching up after the restore: a peer holds entries of this office not received yet; "
                    "sync again (with every office, or the relay) until it says caught up.")


class SyncProgress:
    """How far a first sync is, on stderr: a bar per peer on a terminal, a line every tenth otherwise
    (a log or a pipe). Percent of the entries the peer held that this office lacked, beside the
    vouchers received so far."""

    STEP = 10

    def __init__(self) -> None:
        self.bar: Progress | None = None
        self.tasks: dict[str, TaskID] = {}
        self.shown: dict[str, int] = {}

    def __enter__(self) -> Self:
        if render.err.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                                TextColumn("{task.fields[vouchers]} vouchers"), console=render.err)
            self.bar.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, state: PeerState) -> None:
        stats, who = state.stats, state.office or state.key[:24]
        if not stats.expected:
            return
        vouchers = f"{stats.received_vouchers:,}"
        if self.bar is not None:
            if who not in self.tasks:
                self.tasks[who] = self.bar.add_task(f"Receiving from {who}", total=100, vouchers="0")
            self.bar.update(self.tasks[who], completed=stats.percent, vouchers=vouchers)
            return
        step = stats.percent // self.STEP * self.STEP
        if stats.received < stats.expected and step > self.shown.get(who, -1):  # not for a sync done in one go
            self.shown[who] = step
            render.err.print(f"Receiving from {who}: {stats.percent}% ({vouchers} vouchers so far)", markup=False)


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
    fmt = info.get("date_format")
    render.info(f"{info['company']} - {info['office']} ({info['role']}), Registration ID {info['registration_id']}: "
                f"node {'running' if info['running'] else 'not running'}, {info['mode']} mode"
                + (f" every {info['interval_minutes']} min" if info["mode"] == "auto" else ""))
    if info.get("revoked"):
        render.info(revoked_notice(info["office"]))
    if data.get("catching_up") or info.get("catching_up"):
        render.info(CATCHING_UP_NOTICE)
    zone = zone_name()
    render.table("Peers (sent and received in vouchers)",
                 ["Peer", "Office", "Status", f"Last sync ({zone})", "Sent", "Received", "Backlog", "Last error"],
                 [[p["peer"][:24], p["office"], _link_status(p), local_time(p["last_sync"], fmt) or "never",
                   p["sent_vouchers"], p["received_vouchers"], p["backlog"], _clip(p["last_error"])]
                  for p in data["peers"]], numeric={4, 5, 6})
    if data["sync_log"]:
        render.table("Recent sync log", [f"At ({zone})", "Peer", "Office", "Direction", "Vouchers"],
                     [[local_time(r["at"], fmt), r["peer"][:24], r["office"], r["direction"], r["vouchers"]]
                      for r in data["sync_log"][:10]], numeric={4})
    if data["waiting_entries"]:
        render.info(f"{data['waiting_entries']} received entries wait for earlier ones")
    if info.get("lock_until"):
        render.info(f"Books locked up to {info['lock_until']}: no voucher dated on or before it may be posted, "
                    "amended or cancelled")
    if data.get("local_only"):
        render.info(f"{data['local_only']} voucher{'s are' if data['local_only'] != 1 else ' is'} dated before the "
                    f"sync-after date{' ' + info['sync_after'] if info.get('sync_after') else ''}: kept in this "
                    "office's books only, never sent")
    if data["quarantined"]:
        render.table("Failed to import (quarantine)", [f"Received ({zone})", "Document", "Seq", "Reason"],
                     [[local_time(q["at"], fmt), q["document"], q["seq"], q["reason"]] for q in data["quarantined"]])
    if data.get("equivocations"):
        render.table("Offices that signed two different entries for one position (equivocation)",
                     [f"Found ({zone})", "Office", "Node", "Document", "Seq"],
                     [[local_time(e["found_at"], fmt), e["office"], e["author"][:16], e["document"], e["seq"]]
                      for e in data["equivocations"]])


def _link_status(peer: dict[str, Any]) -> str:
    """Online or Offline; while a first sync runs, how far it is."""
    progress = peer.get("progress")
    if progress:
        return f"Receiving {progress['percent']}% ({progress['vouchers']:,} vouchers)"
    return "Online" if peer["online"] else "Offline"


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
