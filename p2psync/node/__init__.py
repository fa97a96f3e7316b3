"""A running office: composes the books, the store and (later) the network."""

from p2psync.node.office import Identity, Node

__all__ = ["Identity", "Node"]
