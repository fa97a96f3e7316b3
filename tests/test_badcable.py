"""The bad cable (`badcable`) really is bad: its decisions, then pings across one between namespaces."""

from __future__ import annotations

import random
import re
import subprocess
from collections.abc import Iterator

import netns
import pytest
from badcable import Direction, Impairment
from netns import RELAY, Network
from outside import require


def fates(impairment: Impairment, frames: int = 2000, size: int = 1000) -> list[float | None]:
    way = Direction(impairment, random.Random(7))
    return [way.due(size, now=0.0) for _ in range(frames)]


def test_a_clean_cable_delivers_every_frame_at_once() -> None:
    assert fates(Impairment()) == [0.0] * 2000


def test_loss_drops_about_that_share_of_frames() -> None:
    lost = fates(Impairment(loss=0.2)).count(None)
    assert 300 < lost < 500  # 400 expected; the generator is seeded, so this never flakes


def test_delay_and_jitter_bound_every_arrival_and_spread_them() -> None:
    arrivals = fates(Impairment(delay=0.08, jitter=0.03))
    assert all(0.05 <= due <= 0.11 for due in arrivals if due is not None)
    assert max(arrivals) - min(arrivals) > 0.05  # spread: frames sent together come out in a new order


def test_a_rate_limit_spaces_frames_by_their_size() -> None:
    arrivals = fates(Impairment(rate=10_000), frames=5, size=1000)
    assert arrivals == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize("bad", [dict(loss=1.5), dict(loss=-0.1), dict(delay=0.01, jitter=0.02),
                                 dict(jitter=-0.01), dict(rate=0)])
def test_impossible_impairments_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Impairment(**bad)


@pytest.fixture
def network() -> Iterator[Network]:
    require(netns.bad_cable_unavailable())
    net = Network(offices=("HO",))
    try:
        yield net
    finally:
        net.close()


def ping(net: Network, count: int) -> tuple[int, list[int], list[float]]:
    """From HO to the relay over the WAN: (replies, their sequence numbers as they came, their RTTs)."""
    argv = net.command("HO", "ping", "-n", "-c", str(count), "-i", "0.01", "-W", "1", net.hosts[RELAY].wan)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False).stdout
    replies = re.findall(r"icmp_seq=(\d+) ttl=\d+ time=([\d.]+) ms", out)
    return len(replies), [int(seq) for seq, _ in replies], [float(ms) / 1000 for _, ms in replies]


def test_pings_across_a_bad_cable_are_lost_delayed_and_reordered(network: Network) -> None:
    replies, _, _ = ping(network, 20)
    assert replies == 20  # the veth cable loses nothing
    network.impair("HO", "wan", loss=0.2, delay=0.05, jitter=0.02, seed=1)
    replies, order, rtts = ping(network, 100)
    assert 0 < replies < 100  # each ping crosses twice at 20 % loss: about 64 come back
    assert min(rtts) >= 2 * (0.05 - 0.02)  # at least the delay both ways, whatever the machine's load
    assert order != sorted(order)  # ±20 ms of jitter each way, pings 10 ms apart: some overtake others
    with pytest.raises(ValueError, match="already a bad one"):
        network.impair("HO", "wan", loss=0.5)
    forwarder = network.cables["HO", "wan"].process
    network.close()
    assert forwarder.poll() is not None
    assert not [name for name in netns.ours() if name.startswith(network.wan_switch.rsplit("-", 1)[0])]
