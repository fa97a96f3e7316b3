"""``init`` and ``branch``: the organisation at its head office, and its branch master."""

from __future__ import annotations

from typing import Any

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.errors import P2PSyncError
from p2psync.node import Node, roster, views
from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE, resolve_home


@click.command("init")
@click.option("--head-office", "head_office", is_flag=True, help="Create the organisation at its head office.")
@click.option("--company", required=True, help="The company's name.")
@click.option("--office", default="HO", show_default=True, help="This office's code.")
@click.option("--name", "office_name", default="Head Office", show_default=True, help="This office's name.")
@click.option("--open-books", "open_books", is_flag=True,
              help="Every office reads every office's books (default: the head office reads all, every other "
                   "office the masters and its own books).")
@home_option
def init_cmd(home: str | None, head_office: bool, company: str, office: str, office_name: str,
             open_books: bool) -> None:
    """Create a new organisation at its head office."""
    if not head_office:
        raise P2PSyncError("a branch office is set up with 'p2psync join CODE'; use --head-office at the head office")
    path = resolve_home(home)
    node = Node.create_head(path, company, office, office_name, open_books=open_books)
    try:
        render.info(f"Created {node.identity.company}: head office {node.identity.office} in {path}")
        render.info("Every office reads every office's books (open books)." if open_books else
                    "The head office reads every office's books; every other office reads the masters and its own "
                    "books ('p2psync scope grant' to widen).")
        render.info(f"Registration ID: {node.registration_id}")
        render.info(f"Back up {path / KEYS_DIR / ROOT_KEY_FILE} offline now: it is the organisation's root key.")
    finally:
        node.close()


@click.group("branch")
def branch() -> None:
    """Branch master: the offices of the organisation."""


@branch.command("add")
@click.argument("code")
@click.argument("name")
@home_option
def branch_add(home: str | None, code: str, name: str) -> None:
    """Add branch CODE named NAME (its data configuration name)."""
    with open_node(home) as node:
        office = node.add_office(code, name)
        render.info(f"Added branch {office.code} ({office.name})")


@branch.command("list")
@json_option
@home_option
def branch_list(home: str | None, as_json: bool) -> None:
    """List the offices."""
    with open_node(home) as node:
        rows = views.offices(node)
    if as_json:
        render.print_json(rows)
    else:
        render.table("Offices", ["Code", "Name", "Role"], [[r["code"], r["name"], r["role"]] for r in rows])


@branch.command("nodes")
@json_option
@home_option
def branch_nodes(home: str | None, as_json: bool) -> None:
    """List the member nodes: office, series, when enrolled, when last seen here."""
    with open_node(home) as node:
        rows = roster.nodes(node)
    if as_json:
        render.print_json(rows)
        return
    render.table("Nodes", ["Node", "Office", "Series", "Enrolled (UTC)", "Last seen (UTC)", "Entries", "State"],
                 [[r["node"][:16], r["office"], r["series"], _minute(r["enrolled_at"]), _minute(r["last_seen"]) or ("-" if r["this_node"] else "never"),
                   r["entries"], _state(r)] for r in rows], numeric={2, 5})
    if any(_state(r) == NEVER_ONLINE for r in rows):
        render.info("Remove a node that never came online with 'p2psync branch remove-node NODE'.")


NEVER_ONLINE = "never came online"


def _state(row: dict[str, Any]) -> str:
    if row["this_node"]:
        return "this node"
    if row["revoked"]:
        return "revoked"
    return "active" if row["came_online"] else NEVER_ONLINE


def _minute(at: str) -> str:
    return at[:16].replace("T", " ")


@branch.command("remove-node")
@click.argument("node_id", metavar="NODE")
@home_option
def branch_remove_node(home: str | None, node_id: str) -> None:
    """At the head office: remove (revoke) a node that was enrolled but never came online."""
    with open_node(home) as node:
        row = roster.remove_unseen(node, node_id)
        epoch = node.trust.policy.epoch
    render.info(f"Removed node {row['node'][:16]} of {row['office']} (series {row['series']}, enrolled "
                f"{_minute(row['enrolled_at'])} UTC): it never came online. It is revoked; new key epoch {epoch}.")
    render.info(f"Its invite slot can be reissued: make a new code with 'p2psync invite {row['office']}'.")
