"""`p2psync scope`: at the head office, who reads which office's books."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.errors import InvalidInput
from p2psync.node import views
from p2psync.trust.scopes import EVERY_OFFICE

F = TypeVar("F", bound=Callable[..., Any])


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
                   _offices(r["granted"]) or "-"] for r in rows])
    everyone = next((r["every_office"] for r in rows if r["every_office"]), [])
    if everyone:
        render.info(f"Every branch office also reads the books of {_offices(everyone)} (granted to every office).")


@scope_group.command("enable")
@json_option
@home_option
def scope_enable(home: str | None, as_json: bool) -> None:
    """Seal the masters and each office's books under keys of their own, from a new key epoch on, so
    that each office reads only what the scopes grant it. Only an organisation made with a version
    before read scopes needs it (its head office also does it when it starts); entries sealed before
    stay readable to every office."""
    with open_node(home) as node:
        data = views.enable_scopes(node)
    if as_json:
        render.print_json(data)
    elif data["changed"]:
        render.info(f"Read scopes are in force from key epoch {data['scoped_from']} (policy version "
                    f"{data['policy_version']}); entries sealed before stay readable to every office.")
    else:
        render.info(f"Read scopes are already in force (since key epoch {data['scoped_from']}).")


def _granting(func: F) -> F:
    """OFFICE and OFFICES, or --every-office, and --all: the arguments of grant and revoke."""
    for option in reversed([
        click.argument("offices", nargs=-1, metavar="OFFICE [OFFICES]..."),
        click.option("--all", "every", is_flag=True,
                     help="Every office's books, including those of offices added later."),
        click.option("--every-office", "every_office", is_flag=True,
                     help="For every branch office, including those added later, instead of one OFFICE."),
        json_option, home_option,
    ]):
        func = option(func)
    return func


def _target(offices: tuple[str, ...], every: bool, every_office: bool) -> tuple[str, list[str]]:
    """The office whose reading changes and the offices it concerns (`"*"` for each --all stands for)."""
    if not every_office and not offices:
        raise InvalidInput("name the office whose reading changes, or give --every-office")
    office, others = (EVERY_OFFICE, list(offices)) if every_office else (offices[0], list(offices[1:]))
    if every:
        others.append(EVERY_OFFICE)
    if not others:
        raise InvalidInput("name the offices whose books, or give --all for every office's")
    return office, others


@scope_group.command("grant")
@_granting
def scope_grant(home: str | None, offices: tuple[str, ...], every: bool, every_office: bool, as_json: bool) -> None:
    """Let branch OFFICE read the books of OFFICES (a regional office over its branches), or with --all
    of every office, including offices added later."""
    office, others = _target(offices, every, every_office)
    with open_node(home) as node:
        row = views.change_scope(node, office, grant=others)
    _report(row, as_json)


@scope_group.command("revoke")
@_granting
def scope_revoke(home: str | None, offices: tuple[str, ...], every: bool, every_office: bool, as_json: bool) -> None:
    """Take back branch OFFICE's reading of OFFICES' books (with --all: of every office's but its own);
    rotates the keys, so nothing they write from now on is readable there (what it already read stays
    with it)."""
    office, others = _target(offices, every, every_office)
    with open_node(home) as node:
        row = views.change_scope(node, office, revoke=others)
    _report(row, as_json)


def _offices(codes: list[str]) -> str:
    return ", ".join("every office" if code == EVERY_OFFICE else code for code in codes)


def _report(row: dict[str, Any], as_json: bool) -> None:
    if as_json:
        render.print_json(row)
        return
    everyone = row["office"] == EVERY_OFFICE
    who = "every branch office" if everyone else row["office"]
    if row["all"]:
        reads = "the books of every office, including offices added later"
    elif everyone:
        reads = f"the books of {', '.join(row['reads'])} besides its own" if row["reads"] else "only its own books"
    else:
        reads = f"the books of {', '.join(row['reads'])}"
    if not row["changed"]:
        render.info(f"No change: {who} reads {reads}")
        return
    render.info(f"{who[0].upper()}{who[1:]} now reads {reads} (policy version {row['policy_version']})")
    if row["rotated"]:
        where = "the branch offices, which still carry it" if everyone else f"{who}, which still carries it"
        render.info(f"Keys rotated to epoch {row['key_epoch']}: what the offices taken away write from now on "
                    f"is unreadable at {where}.")
