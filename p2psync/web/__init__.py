"""The office dashboard: a local web page over the node's own functions (registration, settings,
status, the books), served by the running node on loopback."""

#: The dashboard's port on loopback (a free one is used when it is taken).
DEFAULT_PORT = 8472
