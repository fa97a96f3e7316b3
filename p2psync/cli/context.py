"""Shared command plumbing: the ``--home`` option and opening the node it names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from p2psync.node.home import resolve_home
from p2psync.node.local_writes import tell_running_node

if TYPE_CHECKING:
    from p2psync.node.office import Node

F = TypeVar("F", bound=Callable[..., Any])


HOME_HELP = "The node's data directory (default: $P2PSYNC_HOME, then the per-user data directory)."


def _inherit_home(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--home`` given after the command wins; else the one given before it (``p2psync --home D ...``)."""
    if value is not None:
        return value
    root = ctx.find_root()
    return (root.obj or {}).get("home")


#: ``--json`` on every command that prints something a script may want.
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def home_option(func: F) -> F:
    return click.option("--home", default=None, metavar="DIR", callback=_inherit_home, help=HOME_HELP)(func)


@contextmanager
def open_node(home: str | None, *, serving: bool = False) -> Iterator[Node]:
    """The node of `home`, open for one command. When the command committed entries to be shared or
    a new policy, the node running on the home is told at once, so that its peers get them now
    (`local_writes`); `serving`: this command is that node (``run``), and tells no one."""
    from p2psync.node.office import Node  # the store and the ORM: only for commands that open the books

    node = Node.open(resolve_home(home))
    policy = node.trust.policy.version
    try:
        yield node
    finally:
        try:
            if not serving and (node.store.last_sealed or node.trust.policy.version != policy):
                tell_running_node(node.home)  # before closing: its snapshots need not delay the peers
        finally:
            node.close()
