"""A running office: composes the books, the store and the network.

`Node` and `Identity` are imported on first use (`from p2psync.node import Node` still works): the
modules of this package that need neither (the home, the control channel) then load without the
store, the ORM and the network libraries, which is most of a short command's start-up time."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from p2psync.node.office import Identity, Node

__all__ = ["Identity", "Node"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from p2psync.node import office

        return getattr(office, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
