"""The relay's handling of one member's connection (`relay.server.Session`) over an in-memory
websocket: the member proves itself with the head office's real certificate, then sends the fuzz
input as frames (inputs starting with ``R`` replace the hello too).

The relay must answer every input by refusing it with a precise close code (protocol error, policy,
try later) or by carrying on; never with its own-error close code 1011 (an exception escaped), and
without storing anything that is not a real entry (its store already holds every real one)."""

from __future__ import annotations

import asyncio
import functools
import json

from websockets.exceptions import ConnectionClosed

from fuzz.common import frames, join_frames, world
from p2psync.protocol import entry, relay_auth
from p2psync.protocol.sync import SyncConnection
from p2psync.relay.server import CLOSE_ERROR, Limits, Relay
from p2psync.relay.store import SqliteRelayStore

#: How long the wire waits for the relay to acknowledge the batches it sent before hanging up.
SETTLE_SECONDS = 5.0


class Wire:
    """The member's end of the connection, as the relay's `Transport` sees it."""

    def __init__(self, script: list[str | bytes]) -> None:
        self.script = script
        self.sent: list[str | bytes] = []
        self.closed: int | None = None
        self.batches = sum(1 for f in script if isinstance(f, bytes) and f[:1] == b"\x01" and len(f) >= 5)

    async def send(self, message: str | bytes) -> None:
        if self.closed is not None:
            raise ConnectionClosed(None, None)
        self.sent.append(message)

    async def recv(self) -> str | bytes:
        if self.closed is None and len(self.sent) == 1:  # the challenge: answer it for real
            w = world()
            return relay_auth.answer(self.sent[0], w.root_cert, w.head_cert, w.head.trust.keys.signing)
        if self.closed is None and self.script:
            return self.script.pop(0)
        await self._settle()
        raise ConnectionClosed(None, None)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = code

    async def _settle(self) -> None:
        """Let the relay finish storing and acknowledging what it received (bounded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SETTLE_SECONDS
        while self.closed is None and self.acks() < self.batches and loop.time() < deadline:
            await asyncio.sleep(0.001)

    def acks(self) -> int:
        return sum(1 for m in self.sent if isinstance(m, str) and m.startswith('{"batch":'))


@functools.cache
def relay() -> Relay:
    w = world()
    store = SqliteRelayStore(w.home.parent / "relay.db")
    store.put_entries(w.org, [(entry.peek(blob), blob) for blob in w.entries])
    store.set_policy(w.org, w.head.trust.policy.version, w.policy)
    return Relay(store, Limits(auth_timeout=2, hello_timeout=2, store_threads=1))


def check(data: bytes) -> None:
    w = world()
    script = list(frames(data[1:]))
    if data[:1] != b"R":
        script.insert(0, _hello())
    before = relay().store.vectors(w.org)
    wire = Wire(script)
    asyncio.run(relay().handle(wire))
    assert wire.closed != CLOSE_ERROR, "the relay failed with an exception"
    assert relay().store.vectors(w.org) == before, "the relay stored an entry nobody sealed"


def _hello() -> str:
    w = world()
    return SyncConnection().hello(w.head.trust.node_id, w.org, "head", w.head.trust.policy.version, {})


def seeds() -> list[bytes]:
    w = world()
    us = SyncConnection()
    batch = us.entries(list(w.entries[:2]))
    talk = [batch, us.policy(w.policy), us.ack(1, {}), us.caught_up(), us.enroll_reply(1, w.enroll_reply)]
    hello = json.loads(_hello())
    return [b"-" + join_frames(talk), b"R" + join_frames([_hello(), batch]),
            b"R" + join_frames([json.dumps({**hello, "org": "0" * 64}), batch]), b"-" + join_frames([us.refuse("x")])]
