"""A bad network cable in user space: two TAP devices and a forwarder that loses, delays and reorders
the Ethernet frames it copies between them.

Kernels built without netem (``sch_netem``) cannot make a bad link with ``tc``; every kernel with
TUN/TAP can run this instead. `netns.Network.impair` starts it as a process inside a switch
namespace: it opens the TAP ``--port`` (which the Network enslaves to the switch's bridge, as the
host's port) and the TAP ``--host-side`` (which the Network moves into the host's namespace, where it
becomes the host's interface; the open descriptor keeps working after the move). Each frame read
from one is written to the other, or not: each direction draws its fate independently from its own
seeded generator (`Direction`), so a run is repeatable. The TAPs live as long as this process: when
it exits, both interfaces vanish.

Run: ``python badcable.py --port br1 --host-side br1-host --loss 0.05 --delay 0.08 --jitter 0.03``;
it prints ``ready`` once both TAPs exist, then forwards until killed.
"""

from __future__ import annotations

import argparse
import fcntl
import heapq
import itertools
import os
import random
import select
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass

TUNSETIFF = 0x400454CA  # _IOW('T', 202, int)
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000  # Ethernet frames, without the 4-byte packet-information header
FRAME_MAX = 65536


@dataclass(frozen=True)
class Impairment:
    """What a bad cable does to every frame, the same both ways (each way drawing its own luck)."""

    loss: float = 0.0  # share of frames dropped, 0 to 1
    delay: float = 0.0  # seconds a frame spends on the cable, on average
    jitter: float = 0.0  # ± seconds around `delay`, uniform: frames closer than 2×jitter may swap
    rate: float | None = None  # bytes per second the cable carries (None: no limit)

    def __post_init__(self) -> None:
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be between 0 and 1, not {self.loss}")
        if not 0.0 <= self.jitter <= self.delay:
            raise ValueError(f"need 0 <= jitter <= delay, not jitter {self.jitter} and delay {self.delay}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"rate must be positive, not {self.rate}")

    def arguments(self) -> list[str]:
        """The command-line options that make `main` rebuild this impairment."""
        options = ["--loss", str(self.loss), "--delay", str(self.delay), "--jitter", str(self.jitter)]
        return options + ([] if self.rate is None else ["--rate", str(self.rate)])


class Direction:
    """One way along the cable (sans I/O): whether and when each frame put on it comes out."""

    def __init__(self, impairment: Impairment, rng: random.Random) -> None:
        self.impairment, self.rng = impairment, rng
        self.free_at = 0.0  # when the cable has finished sending what it already carries (rate limit)

    def due(self, size: int, now: float) -> float | None:
        """When a frame of `size` bytes sent at `now` arrives, or None if it is lost."""
        impairment = self.impairment
        if self.rng.random() < impairment.loss:
            return None
        sent = now
        if impairment.rate is not None:
            self.free_at = sent = max(now, self.free_at) + size / impairment.rate
        return sent + impairment.delay + self.rng.uniform(-impairment.jitter, impairment.jitter)


def open_tap(name: str) -> int:
    """A new TAP interface `name` in this process's namespace; it lives as long as the descriptor."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def frames(fd: int) -> Iterator[bytes]:
    """The frames waiting on `fd` (one per read), until none is left."""
    while True:
        try:
            yield os.read(fd, FRAME_MAX)
        except BlockingIOError:
            return


def forward(a: int, b: int, impairment: Impairment, seed: int) -> None:
    """Copy frames between TAPs `a` and `b` through the impairment, forever."""
    ways = {a: (b, Direction(impairment, random.Random(f"{seed}:a->b"))),
            b: (a, Direction(impairment, random.Random(f"{seed}:b->a")))}
    order = itertools.count()  # ties on the due time keep their order; frames never compare
    pending: list[tuple[float, int, int, bytes]] = []  # (due, order, target, frame), a heap
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([a, b], [], [], timeout)
        now = time.monotonic()
        for source in readable:
            target, way = ways[source]
            for frame in frames(source):
                due = way.due(len(frame), now)
                if due is not None:
                    heapq.heappush(pending, (due, next(order), target, frame))
        deliver(pending, time.monotonic())


def deliver(pending: list[tuple[float, int, int, bytes]], now: float) -> None:
    """Write out every frame due by `now`; one the interface refuses (it is down) is lost, as on a wire."""
    while pending and pending[0][0] <= now:
        _, _, target, frame = heapq.heappop(pending)
        try:
            os.write(target, frame)
        except OSError:
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", required=True, help="TAP that becomes the host's port on the switch")
    parser.add_argument("--host-side", required=True, help="TAP that becomes the host's interface")
    parser.add_argument("--loss", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument("--rate", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    impairment = Impairment(args.loss, args.delay, args.jitter, args.rate)
    port, host_side = open_tap(args.port), open_tap(args.host_side)
    print("ready", flush=True)
    forward(port, host_side, impairment, args.seed)


if __name__ == "__main__":
    main()
