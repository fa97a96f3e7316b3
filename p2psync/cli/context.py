"""Shared command plumbing: the ``--home`` option and opening the node it names."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import click

from p2psync.node.home import resolve_home

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
def open_node(home: str | None) -> Iterator[Node]:
    from p2psync.node.office import Node  # the store and the ORM: only for commands that open the books

    node = Node.open(resolve_home(home))
    try:
        yield node
    finally:
        node.close()
