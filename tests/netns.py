"""Separate hosts for multi-host tests, built from Linux network namespaces (needs root and iproute2).

One `Network` is a head office and its branches on an office LAN, plus a relay they reach over a
WAN, each host a network namespace of its own with its own interfaces, addresses and ports:

      LAN switch namespace          WAN switch namespace
         bridge "lan"                  bridge "wan"
    HO  ──lan0──┤                         ├──wan0── HO      office ports on the WAN are
    BR1 ──lan0──┤                         ├──wan0── BR1     isolated: an office reaches the
    BR2 ──lan0──┤                         ├──wan0── BR2     relay, never another office
                                          ├──wan0── RELAY   (as offices behind NAT would)

- Every office has two veth pairs: ``lan0`` to a port of the LAN bridge and ``wan0`` to a port of
  the WAN bridge; the relay has ``wan0`` only. Each bridge sits in a "switch" namespace of its own,
  with no address. The switch-side end of a pair is named after its host (``br1``), so pulling a
  cable is ``ip -n <switch> link set br1 down`` (`Network.cut`): the office's interface loses its
  carrier and keeps its address, as with a real cable.
- mDNS crosses the LAN bridge as it crosses a real switch: a Linux bridge floods link-local
  multicast (224.0.0.251 is in 224.0.0.0/24, never pruned), and multicast snooping is off anyway.
  A node run with ``--host <its LAN address>`` binds zeroconf to that address, so it joins the group
  and sends on ``lan0``; no multicast route is needed. The WAN carries no mDNS: nothing listens there.
- On the WAN bridge the office ports are *isolated* (``bridge_slave isolated on``): isolated ports
  forward only to non-isolated ones, so each office reaches the relay and nothing else, like offices
  behind NAT on the internet.
- Addresses: the LAN is 10.S.T.0/24 and the WAN 10.S.T+1.0/24 (S from the pytest-xdist worker id,
  T random), used only inside these namespaces; no host has a default route, so nothing can leave.
- `Network.impair` swaps one veth cable for a bad one made in user space (`badcable`), since many
  kernels lack netem: two TAP devices, one the host's interface (same name, MAC and address), one
  its port on the switch, and a forwarder process between them that loses, delays and reorders
  frames both ways. It needs TUN/TAP (``/dev/net/tun``; `bad_cable_unavailable` probes). The
  forwarder runs in the switch's namespace; `Network.close` stops it, and its TAPs vanish with it.
- Nothing is created in the namespace the tests run in: veth pairs are created inside a host's
  namespace with their peer put straight into the switch's, TAPs inside the switch's.

Names: every namespace is ``p2pt-<pid of the creating process>-<random>-<host>``, so parallel workers
never collide, and `remove_stale` can delete what a crashed run left (its creator is gone) without
touching a live worker's. Interface and bridge names live inside the namespaces, so they cannot
collide either. `Network.close` stops the bad cables and whatever still runs inside, and deletes every
namespace; the tests call it from a fixture finalizer, so it runs on failure too. A crashed run's
forwarder, left in a switch namespace, is killed with it by `remove_stale`.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from badcable import Impairment

PREFIX = "p2pt-"
OFFICES = ("HO", "BR1", "BR2")
RELAY = "RELAY"
LAN_DEV, WAN_DEV = "lan0", "wan0"
LAN_BRIDGE, WAN_BRIDGE = "lan", "wan"
FORWARDER = Path(__file__).with_name("badcable.py")


class NetnsError(RuntimeError):
    """An ``ip`` command failed; the message holds the command and what it printed."""


def ip(*args: str, check: bool = True) -> str:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


@functools.cache
def unavailable() -> str | None:
    """Why these tests cannot run here (None: they can). Probes by building a tiny namespace with a
    bridge and a veth pair, and running a command in it; cleans up what a crashed run left."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "multi-host tests need root (they create network namespaces)"
    if shutil.which("ip") is None:
        return "multi-host tests need iproute2 (the ip command)"
    remove_stale()
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-probe"
    try:
        ip("netns", "add", probe)
        try:
            ip("-n", probe, "link", "add", "b0", "type", "bridge")
            ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1")
            ip("-n", probe, "link", "set", "v1", "master", "b0")
            ip("-n", probe, "link", "set", "v1", "type", "bridge_slave", "isolated", "on")
            ip("netns", "exec", probe, "ip", "link", "set", "lo", "up")
        finally:
            ip("netns", "del", probe, check=False)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"network namespaces are not usable here ({str(exc).splitlines()[0]})"
    return None


@functools.cache
def bad_cable_unavailable() -> str | None:
    """Why `Network.impair` cannot run here (None: it can): it needs TUN/TAP (``/dev/net/tun``).
    Probes by running the bad cable's forwarder in a namespace of its own until it is ready."""
    missing = unavailable()
    if missing is not None:
        return missing
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-tap"
    try:
        ip("netns", "add", probe)
        try:
            BadCable(probe, "tap0", "tap1", Impairment()).stop()
        finally:
            _delete(probe)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"TAP devices are not usable here ({str(exc).splitlines()[0]})"
    return None


class BadCable:
    """The `badcable` forwarder, run inside `switch`'s namespace with its two TAPs `port` and
    `host_side`; `stop` (idempotent) ends it, and its TAPs with it, wherever they have moved."""

    def __init__(self, switch: str, port: str, host_side: str, impairment: Impairment, seed: int = 0) -> None:
        argv = [sys.executable, str(FORWARDER), "--port", port, "--host-side", host_side,
                "--seed", str(seed), *impairment.arguments()]
        self.process = subprocess.Popen(["ip", "netns", "exec", switch, *argv], stdin=subprocess.DEVNULL,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":  # it prints nothing else: EOF is an exit
            try:
                _, error = self.process.communicate(timeout=10)
            finally:
                self.stop()
            last = error.strip().splitlines()[-1:] or ["no output"]
            raise NetnsError(f"the bad cable did not start: {last[0]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None and not stream.closed:
                stream.close()


def ours() -> list[str]:
    """Namespaces whose names carry our prefix, whoever made them."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.startswith(PREFIX)]


def remove_stale() -> None:
    """Delete namespaces left by test processes that no longer exist (a crash, a kill -9)."""
    for name in ours():
        creator = name[len(PREFIX):].split("-", 1)[0]
        if creator.isdigit() and not _alive(int(creator)):
            _delete(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete(name: str) -> None:
    """Kill what still runs in namespace `name` (only test processes run in ours), then delete it."""
    for pid in ip("netns", "pids", name, check=False).split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    ip("netns", "del", name, check=False)


@functools.cache
def subnets() -> tuple[ipaddress.IPv4Network, ipaddress.IPv4Network]:
    """This process's LAN and WAN: 10.S.T.0/24 and 10.S.T+1.0/24 (S from the xdist worker, T random).
    Only ever configured inside the namespaces; fixed per process so homes can be made once."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    second = 100 + (int(worker) if worker.isdigit() else 0) % 100
    third = 2 * secrets.randbelow(127)
    return (ipaddress.IPv4Network(f"10.{second}.{third}.0/24"), ipaddress.IPv4Network(f"10.{second}.{third + 1}.0/24"))


@dataclass(frozen=True)
class Host:
    name: str  # "HO", "BR1", "BR2", "RELAY"
    ns: str  # its network namespace
    lan: str | None  # its LAN address (None for the relay)
    wan: str  # its WAN address


def plan(offices: Sequence[str] = OFFICES) -> dict[str, tuple[str | None, str]]:
    """Each host's (LAN address, WAN address): offices .10, .11, …; the relay .200 on the WAN."""
    lan, wan = subnets()
    out: dict[str, tuple[str | None, str]] = {name: (str(lan[10 + i]), str(wan[10 + i])) for i, name in
                                              enumerate(offices)}
    out[RELAY] = (None, str(wan[200]))
    return out


class Network:
    """The hosts and the two bridges; `close` (idempotent) removes it all."""

    def __init__(self, offices: Sequence[str] = OFFICES) -> None:
        tag = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}"
        self.lan_switch, self.wan_switch = f"{tag}-lan", f"{tag}-wan"
        self.hosts = {name: Host(name, f"{tag}-{name.lower()}", lan, wan) for name, (lan, wan) in
                      plan(offices).items()}
        self.created: list[str] = []
        self.cables: dict[tuple[str, str], BadCable] = {}  # (host, net): its bad cable
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _add_namespace(self, name: str) -> None:
        ip("netns", "add", name)
        self.created.append(name)
        ip("-n", name, "link", "set", "lo", "up")

    def _build(self) -> None:
        for switch, bridge in ((self.lan_switch, LAN_BRIDGE), (self.wan_switch, WAN_BRIDGE)):
            self._add_namespace(switch)
            ip("-n", switch, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            ip("-n", switch, "link", "set", bridge, "up")
        for host in self.hosts.values():
            self._add_namespace(host.ns)
            for net in ("lan", "wan") if host.lan is not None else ("wan",):
                dev, port = self.device(net), self.port(host.name)
                ip("-n", host.ns, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", self._switch(net))
                self._connect(host, net)

    def _connect(self, host: Host, net: str) -> None:
        """Bring up `host`'s cable on `net` once both ends exist: its port on the switch's bridge
        (isolated on the WAN for an office), its address on its interface."""
        switch, port, dev = self._switch(net), self.port(host.name), self.device(net)
        ip("-n", switch, "link", "set", port, "master", LAN_BRIDGE if net == "lan" else WAN_BRIDGE)
        if net == "wan" and host.name != RELAY:
            ip("-n", switch, "link", "set", port, "type", "bridge_slave", "isolated", "on")
        ip("-n", switch, "link", "set", port, "up")
        lan_net, wan_net = subnets()
        address, prefix = (host.lan, lan_net.prefixlen) if net == "lan" else (host.wan, wan_net.prefixlen)
        ip("-n", host.ns, "addr", "add", f"{address}/{prefix}", "dev", dev)
        ip("-n", host.ns, "link", "set", dev, "up")

    @staticmethod
    def device(net: str) -> str:
        """A host's interface on `net`."""
        return LAN_DEV if net == "lan" else WAN_DEV

    @staticmethod
    def port(host: str) -> str:
        """The switch-side end of `host`'s cable (the same name on both switches)."""
        return host.lower()

    def command(self, host: str, *argv: str) -> list[str]:
        """`argv` run inside `host`'s namespace (``ip netns exec`` execs it: same pid, same signals)."""
        return ["ip", "netns", "exec", self.hosts[host].ns, *argv]

    def _switch(self, net: str) -> str:
        if net not in ("lan", "wan"):
            raise ValueError(f"no network {net!r}")
        return self.lan_switch if net == "lan" else self.wan_switch

    def cut(self, host: str, net: str) -> None:
        """Pull `host`'s cable on `net` ("lan" or "wan") out of the switch."""
        ip("-n", self._switch(net), "link", "set", self.port(host), "down")

    def plug(self, host: str, net: str) -> None:
        """Plug it back in."""
        ip("-n", self._switch(net), "link", "set", self.port(host), "up")

    def impair(self, host: str, net: str, *, loss: float = 0.0, delay: float = 0.0, jitter: float = 0.0,
               rate: float | None = None, seed: int = 0) -> None:
        """Swap `host`'s cable on `net` for a bad one (`badcable`), bad both ways: `loss` (a share of
        frames), `delay` ± `jitter` seconds (which reorders frames), `rate` (bytes per second).
        The host keeps its interface name, MAC and address, so what runs there carries on, as after
        a cable swapped in an office; a cable already bad stays as it is (ValueError)."""
        cable = Impairment(loss, delay, jitter, rate)
        if (host, net) in self.cables:
            raise ValueError(f"{host}'s cable on {net} is already a bad one")
        node, switch, dev, port = self.hosts[host], self._switch(net), self.device(net), self.port(host)
        mac = json.loads(ip("-j", "-n", node.ns, "link", "show", dev))[0]["address"]
        ip("-n", node.ns, "link", "del", dev)  # its peer, the switch port, goes with it
        host_side = f"{port}-host"
        self.cables[host, net] = BadCable(switch, port, host_side, cable, seed)
        ip("-n", switch, "link", "set", host_side, "netns", node.ns)
        ip("-n", node.ns, "link", "set", host_side, "name", dev, "address", mac)
        self._connect(node, net)

    def close(self) -> None:
        """Stop the bad cables, kill anything still running inside, delete every namespace (their
        interfaces go with them)."""
        cables, self.cables = self.cables, {}
        for cable in cables.values():
            cable.stop()
        created, self.created = self.created, []
        for name in reversed(created):
            _delete(name)
        left = set(created) & set(ours())
        if left:
            raise NetnsError(f"could not delete namespaces {sorted(left)}")
