"""How a command tells the node running on its home that it wrote to the books.

A command (``voucher post``, ``ledger add``, ``voucher import``, ``settings`` at the head office, ...)
commits in its own process; the node serving the home must then send the new entries (or the new
policy) to its links. A short notice over the control channel makes it do so at once
(`NodeRuntime.local_written`); without one the node finds them only at its safety-net poll
(`runtime.LOCAL_POLL_SECONDS`). Writing with no node running is the normal offline case, and a
notice that fails costs only that latency: neither is an error for the command.
"""

from __future__ import annotations

import logging
from pathlib import Path

from p2psync.errors import P2PSyncError

#: The control channel's request for "entries or a policy were committed here by another process".
LOCAL_WRITE = "local-write"
#: A notice is answered at once (the pick-up runs after the reply); a node that takes longer is busy
#: or stuck, and the poll will do.
NOTICE_TIMEOUT = 2.0

logger = logging.getLogger(__name__)


def tell_running_node(home: Path) -> None:
    """Tell the node running on `home`, if there is one, that this process wrote to its books."""
    from p2psync.node import control  # asyncio and the socket: only for a command that wrote

    try:
        control.request(home, LOCAL_WRITE, timeout=NOTICE_TIMEOUT)
    except P2PSyncError as exc:
        logger.info("the running node was not told of this change (%s); its poll will find it", exc)
