"""`p2psync scope`: at the head office, who reads which office's books."""

from __future__ import annotations

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.node import views


@click.group("scope")
def scope_group() -> None:
    """Read scopes: whose books each office may read (head office)."""


@scope_group.command("list")
@json_option
@home_option
def scope_list(home: str | None, as_json: bool) -> None:
    """Each office and the offices whose books it reads (all read the masters)."""
    with open_node(home) as node:
        rows = views.read_scopes(node)
    if as_json:
        render.print_json(rows)
        return
    render.table("Read scopes", ["Office", "Name", "Reads the books of", "Granted"],
                 [[r["office"], r["name"], "every office" if r["all"] else ", ".join(r["reads"]),
                   ", ".join(r["granted"]) or "-"] for r in rows])


@scope_group.command("enable")
@json_option
@home_option
def scope_enable(home: str | None, as_json: bool) -> None:
    """Seal the masters and each office's books under keys of their own, from a new key epoch on, so
    that each office reads only what the scopes grant it (once; entries sealed before stay readable
    to every office)."""
    with open_node(home) as node:
        data = views.enable_scopes(node)
    if as_json:
        render.print_json(data)
    elif data["changed"]:
        render.info(f"Read scopes are in force from key epoch {data['scoped_from']} (policy version "
                    f"{data['policy_version']}); entries sealed before stay readable to every office.")
    else:
        render.info(f"Read scopes are already in force (since key epoch {data['scoped_from']}).")


@scope_group.command("grant")
@click.argument("office")
@click.argument("offices", nargs=-1, required=True)
@json_option
@home_option
def scope_grant(home: str | None, office: str, offices: tuple[str, ...], as_json: bool) -> None:
    """Let branch OFFICE read the books of OFFICES (a regional office over its branches)."""
    with open_node(home) as node:
        row = views.change_scope(node, office, grant=list(offices))
    _report(row, as_json)


@scope_group.command("revoke")
@click.argument("office")
@click.argument("offices", nargs=-1, required=True)
@json_option
@home_option
def scope_revoke(home: str | None, office: str, offices: tuple[str, ...], as_json: bool) -> None:
    """Take back branch OFFICE's reading of OFFICES' books; rotates the keys, so nothing they write
    from now on is readable there (what it already read stays with it)."""
    with open_node(home) as node:
        row = views.change_scope(node, office, revoke=list(offices))
    _report(row, as_json)


def _report(row: dict, as_json: bool) -> None:
    if as_json:
        render.print_json(row)
        return
    reads = ", ".join(row["reads"])
    if not row["changed"]:
        render.info(f"No change: {row['office']} reads the books of {reads}")
        return
    render.info(f"{row['office']} now reads the books of {reads} (policy version {row['policy_version']})")
    if row["rotated"]:
        render.info(f"Keys rotated to epoch {row['key_epoch']}: what the offices taken away write from now on "
                    f"is unreadable at {row['office']}, which still carries it.")
