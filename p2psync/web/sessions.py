"""Sign-in tickets and browser sessions of one dashboard server, held in its memory only.

A ticket is what the printed sign-in address carries: random, usable once, for a few minutes. It is
traded for a session: a random id in a cookie, ended by idle time, by an absolute lifetime, and by
the node stopping (nothing is written anywhere, so a restart signs every browser out). Neither is a
long-term secret, so a ticket or a cookie that reaches the wrong listener is worth little and soon
worth nothing.

Both are looked up by their SHA-256 digest: the tables never hold the values the browser sends, and
a lookup's timing says nothing useful about them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

#: How long a printed sign-in address works (once); `p2psync dashboard` prints a fresh one.
TICKET_SECONDS = 15 * 60
#: A session unused this long ends (an office left for the night signs in again).
IDLE_SECONDS = 8 * 3600
#: A session ends this long after sign-in however much it is used.
LIFETIME_SECONDS = 24 * 3600
#: Addresses printed but not opened; the oldest is forgotten beyond this (they are minted only by the
#: node's owner, this only bounds memory).
MAX_TICKETS = 32

Clock = Callable[[], float]


@dataclass
class Session:
    started: float
    seen: float


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode()).digest()


class Sessions:
    """The tickets and sessions of one server instance; `clock` is injectable so tests need not wait."""

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self.clock = clock
        self._tickets: dict[bytes, float] = {}
        self._sessions: dict[bytes, Session] = {}

    def mint_ticket(self) -> str:
        """A new one-time ticket for a sign-in address."""
        while len(self._tickets) >= MAX_TICKETS:
            del self._tickets[next(iter(self._tickets))]
        ticket = secrets.token_urlsafe(32)
        self._tickets[_digest(ticket)] = self.clock()
        return ticket

    def redeem(self, ticket: str | None) -> str | None:
        """A new session id for a valid ticket, which is then spent; None for any other."""
        if not ticket:
            return None
        minted = self._tickets.pop(_digest(ticket), None)
        now = self.clock()
        if minted is None or now - minted > TICKET_SECONDS:
            return None
        self._forget_ended(now)
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = Session(now, now)
        return session

    def check(self, session: str | None, touch: bool = True) -> bool:
        """Whether `session` is live; `touch` counts this as use (an open event stream does not)."""
        if not session:
            return False
        key = _digest(session)
        found = self._sessions.get(key)
        now = self.clock()
        if found is None or _ended(found, now):
            self._sessions.pop(key, None)
            return False
        if touch:
            found.seen = now
        return True

    def _forget_ended(self, now: float) -> None:
        for key in [k for k, s in self._sessions.items() if _ended(s, now)]:
            del self._sessions[key]
        for key in [k for k, minted in self._tickets.items() if now - minted > TICKET_SECONDS]:
            del self._tickets[key]


def _ended(session: Session, now: float) -> bool:
    return now - session.seen > IDLE_SECONDS or now - session.started > LIFETIME_SECONDS
