"""Why a link ended, in words an accountant can act on, beside the technical reason.

`status` and the dashboard show the plain sentence; ``--json`` and the log keep the technical detail
(exception type, close code and reason) for whoever maintains the system. A link closed on purpose (a
periodic full reconcile, a restart, a node shutting down) is no error at all.
"""

from __future__ import annotations

import errno
import ssl

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from p2psync.errors import P2PSyncError

#: Close codes (RFC 6455, 7.4.1) a node sends when it ends a healthy link on purpose: normal (a
#: periodic full reconcile), going away (shutting down), service restart (``p2psync restart``).
CLEAN_CODES = frozenset({1000, 1001, 1012})

#: What a close code received from the other side means for the office, where it says something the
#: close reason does not.
_RECEIVED = {
    1002: "the other office found a fault in what this office sent",
    1008: "the other office refused the link",
    1009: "the other office refused something too large",
    1011: "the other office's node hit a problem and dropped the link; it reconnects by itself",
    1013: "the other office is busy or cannot store now; it tries again later",
}
_DROPPED = "the connection dropped (network, or the other computer went away); it reconnects by itself"
_NO_ANSWER = "the other office did not answer in time (slow or broken network); it tries again"

#: A connection closed with one of these reasons ended normally, whichever side closed it.
RECONCILE_REASON = "periodic full reconcile"


def detail(exc: BaseException) -> str:
    """The technical reason, as the log and ``--json`` keep it."""
    return f"{type(exc).__name__}: {exc}"[:300]


def is_clean(exc: BaseException) -> bool:
    """Whether `exc` is only a link closed on purpose by either side (no error to show)."""
    if not isinstance(exc, ConnectionClosed):
        return False
    frame = exc.rcvd if exc.rcvd is not None else exc.sent
    return frame is not None and frame.code in CLEAN_CODES


def plain(exc: BaseException, address: str = "") -> str:
    """The sentence `status` shows for a link that ended with `exc` (or could not start)."""
    if isinstance(exc, ConnectionClosed):
        return _closed(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"certificate verify failed: {exc.verify_message}" if exc.verify_message else "certificate verify failed"
        return (f"the computer at {address or 'this address'} did not show a certificate of this organisation "
                f"({why}): check the address")
    if isinstance(exc, ssl.SSLError):
        return "the secure connection could not be set up (a certificate or TLS problem): check the address"
    if isinstance(exc, TimeoutError):
        return _NO_ANSWER
    if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) == errno.ECONNREFUSED:
        return f"nothing answers at {address or 'this address'}: is p2psync running at that office?"
    if isinstance(exc, OSError):
        reason = (exc.strerror or str(exc)).lower()
        return f"cannot reach {address or 'the other office'} ({reason}): check the network and the address"
    if isinstance(exc, InvalidURI):
        return f"{address or 'the address'} is not a valid address: write it as wss://HOST:PORT"
    if isinstance(exc, InvalidHandshake):
        return f"the program at {address or 'this address'} is not a p2psync node or relay: check the address"
    if isinstance(exc, P2PSyncError):
        return str(exc)[:300]
    return str(exc)[:300] or type(exc).__name__


def _closed(exc: ConnectionClosed) -> str:
    if exc.rcvd is None:
        return _DROPPED
    code, reason = exc.rcvd.code, exc.rcvd.reason
    if code in CLEAN_CODES:
        return ""
    meaning = _RECEIVED.get(code)
    if meaning is None:
        return f"the other office closed the link: {reason}" if reason else _DROPPED
    if code == 1011 or not reason:
        return meaning
    return f"{meaning}: {reason}"
