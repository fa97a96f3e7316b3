"""The office dashboard: a local web page over the node's own functions (registration, settings,
status, the books), served by the running node on loopback."""
