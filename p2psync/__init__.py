"""p2psync: peer-to-peer, end-to-end encrypted synchronization of accounting books."""

__version__ = "0.1.0"
