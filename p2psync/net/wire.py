"""Per-message compression of links (RFC 7692), shared by nodes and the relay.

An entry's payload is compressed before it is encrypted, so a websocket message on its own does not
compress. What does is the stream: consecutive entries repeat their header's organisation, author,
document and dependencies, and acknowledgements repeat their shape. With the compression context
kept across messages (the RFC's default "context takeover"), those repeats cost a few bytes each: a
live voucher's bytes on the wire fall by about a third.

Level 1 and small windows keep the cost low: a large entry is ciphertext that no level shrinks, so a
faster level loses nothing there, and 4 KiB windows (12 bits) with memLevel 5 hold about 40 KiB per
connection by zlib's own sizing formula, which matters at a relay with many members. Decompressed
messages stay bounded by the connection's `max_size`, so a small compressed frame cannot expand into
a large allocation.

Compression beside encryption leaks sizes only to someone who can both put chosen text into a
stream and watch its length (CRIME). Here the only parties who can write into a link's stream are the
two ends, which already read all of it; an eavesdropper on the network can do neither.
"""

from __future__ import annotations

from typing import Any

from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    ServerPerMessageDeflateFactory,
)

WINDOW_BITS = 12
_COMPRESS = {"level": 1, "memLevel": 5}


def client_options() -> dict[str, Any]:
    """`websockets.connect` options for a dialling node (a peer's or a relay's URL)."""
    return {"compression": None, "extensions": [ClientPerMessageDeflateFactory(
        server_max_window_bits=WINDOW_BITS, client_max_window_bits=WINDOW_BITS, compress_settings=_COMPRESS)]}


def server_options() -> dict[str, Any]:
    """`websockets.serve` options for a node's or the relay's listening side. A client that offers no
    compression (an older node, a plain tool) is served uncompressed."""
    return {"compression": None, "extensions": [ServerPerMessageDeflateFactory(
        server_max_window_bits=WINDOW_BITS, client_max_window_bits=WINDOW_BITS, compress_settings=_COMPRESS)]}
