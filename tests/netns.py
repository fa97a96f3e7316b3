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
- `Network.impair` turns one cable into a bad link with netem (``tc qdisc ... netem``): loss, delay,
  jitter and reordering, both ways. It needs the kernel's sch_netem (`netem_unavailable` probes).
- Nothing is created in the namespace the tests run in: veth pairs are created inside a host's
  namespace with their peer put straight into the switch's.

Names: every namespace is ``p2pt-<pid of the creating process>-<random>-<host>``, so parallel workers
never collide, and `remove_stale` can delete what a crashed run left (its creator is gone) without
touching a live worker's. Interface and bridge names live inside the namespaces, so they cannot
collide either. `Network.close` stops whatever still runs inside and deletes every namespace; the
tests call it from a fixture finalizer, so it runs on failure too.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

PREFIX = "p2pt-"
OFFICES = ("HO", "BR1", "BR2")
RELAY = "RELAY"
LAN_DEV, WAN_DEV = "lan0", "wan0"
LAN_BRIDGE, WAN_BRIDGE = "lan", "wan"


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
def netem_unavailable() -> str | None:
    """Why `Network.impair` cannot run here (None: it can): it needs tc (iproute2) and the kernel's
    netem queueing discipline (module sch_netem), which some kernels lack."""
    missing = unavailable()
    if missing is not None:
        return missing
    if shutil.which("tc") is None:
        return "lossy-link tests need tc (iproute2)"
    if shutil.which("modprobe") is not None:  # kmod: load it if the kernel has it as a module
        subprocess.run(["modprobe", "sch_netem"], capture_output=True, timeout=30, check=False)
    probe = f"{PREFIX}{os.getpid()}-{secrets.token_hex(3)}-netem"
    try:
        ip("netns", "add", probe)
        try:
            ip("-n", probe, "link", "set", "lo", "up")
            tc("-n", probe, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
        finally:
            ip("netns", "del", probe, check=False)
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return f"the kernel's netem queueing discipline is not usable here ({str(exc).splitlines()[0]})"
    return None


def tc(*args: str) -> str:
    result = subprocess.run(["tc", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise NetnsError(f"tc {' '.join(args)}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


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
        lan_net, wan_net = subnets()
        for switch, bridge in ((self.lan_switch, LAN_BRIDGE), (self.wan_switch, WAN_BRIDGE)):
            self._add_namespace(switch)
            ip("-n", switch, "link", "add", bridge, "type", "bridge", "mcast_snooping", "0")
            ip("-n", switch, "link", "set", bridge, "up")
        for host in self.hosts.values():
            self._add_namespace(host.ns)
            links = [(WAN_DEV, self.wan_switch, WAN_BRIDGE, host.wan, wan_net.prefixlen)]
            if host.lan is not None:
                links.insert(0, (LAN_DEV, self.lan_switch, LAN_BRIDGE, host.lan, lan_net.prefixlen))
            for dev, switch, bridge, address, prefix in links:
                port = self.port(host.name)
                ip("-n", host.ns, "link", "add", dev, "type", "veth", "peer", "name", port, "netns", switch)
                ip("-n", switch, "link", "set", port, "master", bridge)
                if bridge == WAN_BRIDGE and host.name != RELAY:
                    ip("-n", switch, "link", "set", port, "type", "bridge_slave", "isolated", "on")
                ip("-n", switch, "link", "set", port, "up")
                ip("-n", host.ns, "addr", "add", f"{address}/{prefix}", "dev", dev)
                ip("-n", host.ns, "link", "set", dev, "up")

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

    def impair(self, host: str, net: str, *netem: str) -> None:
        """Make `host`'s cable on `net` a bad one both ways: netem (loss, delay, reordering, …) on the
        host's interface (what it sends) and on its switch port (what it receives)."""
        dev = LAN_DEV if net == "lan" else WAN_DEV
        tc("-n", self.hosts[host].ns, "qdisc", "replace", "dev", dev, "root", "netem", *netem)
        tc("-n", self._switch(net), "qdisc", "replace", "dev", self.port(host), "root", "netem", *netem)

    def close(self) -> None:
        """Kill anything still running inside, delete every namespace (their interfaces go with them)."""
        created, self.created = self.created, []
        for name in reversed(created):
            _delete(name)
        left = set(created) & set(ours())
        if left:
            raise NetnsError(f"could not delete namespaces {sorted(left)}")
