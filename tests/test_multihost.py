"""Offices on separate hosts: each node and the relay run as real processes inside network namespaces
of their own (`netns.Network`: a head office and two branches on one office LAN, the relay on a WAN).

Nodes are started as an office would start them, ``p2psync run --host <LAN address> --port 8470``,
with mDNS on and no ``--peer``: they find each other only by zeroconf across the LAN bridge. The
relay is known only from the head office's signed policy, by its WAN address. Homes are prepared in
this process (`procs.make_org`, once per module for each kind of organisation, then copied per test);
vouchers are posted, and books read, from this process against each home while the nodes run (files
are shared; only the network is namespaced).

Cables are pulled and plugged at the switches (`Network.cut`, `Network.plug`). Every wait is bounded
(`procs.wait_until`), and the network is torn down by a fixture finalizer, also on failure.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import netns
import pytest
from helpers import copy_home
from netns import RELAY, Network
from outside import require
from procs import (
    SERVING,
    WAIT,
    NodeProcess,
    cli_many,
    converged,
    environment,
    here,
    here_json,
    make_org,
    policy,
    post_here,
    quarantined,
    relay_linked,
    reports,
    status,
    voucher_args,
    voucher_numbers,
)
from procs import wait_until as poll_until

pytestmark = pytest.mark.slow

OFFICES = ("HO", "BR1", "BR2")
NODE_PORT = 8470
RELAY_PORT = 8471
STOP_WITHIN = 40.0


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """`procs.wait_until`, printing how long it took: shown with the output of a failed test."""
    start = time.monotonic()
    try:
        return poll_until(predicate, what, timeout)
    finally:
        print(f"{time.monotonic() - start:5.1f} s waiting for {what}")


def wait_converged(*homes: Path, timeout: float = WAIT) -> None:
    wait_until(lambda: converged(*homes), f"{', '.join(h.name for h in homes)} to converge", timeout)


def relay_url() -> str:
    return f"ws://{netns.plan()[RELAY][1]}:{RELAY_PORT}"


# ---------------------------------------------------------------- processes inside a host


class HostNode(NodeProcess):
    """``p2psync run`` inside an office's namespace, on its LAN address, with mDNS on."""

    def __init__(self, net: Network, office: str, home: Path) -> None:
        super().__init__(home, NODE_PORT, mdns=True)
        self.net, self.host = net, net.hosts[office]
        self._before = 0

    def launch(self) -> HostNode:
        """Start the process; `ready` waits until it serves."""
        assert self.host.lan is not None
        self._before = len(SERVING.findall(self.output()))
        args = self.net.command(self.host.name, sys.executable, "-m", "p2psync", "--home", str(self.home), "run",
                                "--host", self.host.lan, "--port", str(NODE_PORT))
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT,
                                         env=environment(self.home.parent), start_new_session=True)
        return self

    def ready(self) -> HostNode:
        self.wait_serving(self._before)
        return self

    def start(self) -> HostNode:
        return self.launch().ready()


class RelayProcess:
    """``p2psync relay`` inside the relay's namespace, on its WAN address."""

    def __init__(self, net: Network, base: Path) -> None:
        self.net, self.base = net, base
        self.out = base / "relay.out"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RelayProcess:
        args = self.net.command(RELAY, sys.executable, "-m", "p2psync", "relay", "--host", self.net.hosts[RELAY].wan,
                                "--port", str(RELAY_PORT), "--db", str(self.base / "relay.db"))
        with self.out.open("ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=environment(self.base),
                                         start_new_session=True)
        wait_until(self._listening, "the relay to listen")
        return self

    def _listening(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the relay exited {self.proc.returncode}:\n{self.out.read_text()}")
        return f"relay listening on {relay_url()}" in self.out.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
                raise AssertionError(f"the relay did not stop on SIGTERM:\n{self.out.read_text()}") from None


class Site:
    """One test's hosts: the network, a home per office, and the processes run on them."""

    def __init__(self, net: Network, homes: dict[str, Path], base: Path) -> None:
        self.net, self.homes = net, homes
        self.relay = RelayProcess(net, base)
        self.nodes: dict[str, HostNode] = {}

    def start(self, *offices: str) -> None:
        """Start the offices' nodes together, then wait until each serves."""
        for office in offices:
            self.nodes[office] = HostNode(self.net, office, self.homes[office]).launch()
        for office in offices:
            self.nodes[office].ready()

    def close(self) -> None:
        """SIGTERM every node still running, all at once; each must exit cleanly (code 0). The bound
        is generous because a node whose peer vanished from the network (a pulled cable) waits out
        websockets' close handshake timeout on its way out."""
        try:
            running = [node for node in self.nodes.values() if node.running]
            for node in running:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
            problems = []
            for node in running:
                assert node.proc is not None
                try:
                    node.proc.wait(STOP_WITHIN)
                except subprocess.TimeoutExpired:
                    node.kill()
                    problems.append(f"{node.home.name} did not stop on SIGTERM:\n{node.output()}")
                else:
                    if node.proc.returncode != 0:
                        problems.append(f"{node.home.name} exited {node.proc.returncode}:\n{node.output()}")
            assert not problems, "\n".join(problems)
        finally:
            try:
                self.relay.stop()
            finally:
                self.net.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An organisation made once: HO with BR1 and BR2 enrolled, the relay named by its WAN address."""
    require(netns.unavailable())
    base = tmp_path_factory.mktemp("multihost-org")
    make_org(base, OFFICES[1:], relays=(relay_url(),))
    return base


@pytest.fixture(scope="module")
def scoped_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An organisation with the default read scopes (each office reads the masters and its own books,
    the head office reads all), switched on at the head office; no relay, so while the head office
    is down the branches' LAN link is their only path. The branches learn of the scopes once linked."""
    require(netns.unavailable())
    base = tmp_path_factory.mktemp("multihost-scoped-org")
    ho, _, _ = make_org(base, OFFICES[1:], read_all=False)
    here(ho, "scope", "enable")  # idempotent: "already in force" where scopes are the default
    return base


@contextmanager
def site_from(template: Path, tmp_path: Path) -> Iterator[Site]:
    """A fresh copy of `template`'s homes on a network of their own, torn down after the test."""
    homes = {}
    for office in OFFICES:
        copy_home(template / office, tmp_path / office)
        homes[office] = tmp_path / office
    place = Site(Network(OFFICES), homes, tmp_path)
    try:
        yield place
    finally:
        place.close()


@pytest.fixture
def site(template: Path, tmp_path: Path) -> Iterator[Site]:
    with site_from(template, tmp_path) as place:
        yield place


@pytest.fixture
def scoped_site(scoped_template: Path, tmp_path: Path) -> Iterator[Site]:
    with site_from(scoped_template, tmp_path) as place:
        yield place


# ---------------------------------------------------------------- what the tests look at


def lan_links(home: Path) -> dict[str, str]:
    """The offices `home`'s running node has a synced, online direct link with: {office: address}."""
    return {p["office"]: p["address"] for p in status(home)["peers"]
            if p["kind"] == "node" and p["online"] and p["last_sync"]}



def sent_to_relay(home: Path) -> int:
    """How many entries `home`'s node has sent the relay (over all its links with it)."""
    return sum(p["sent"] for p in status(home)["peers"] if p["kind"] == "relay")


def host_of(address: str) -> str:
    """The IP address in ``wss://IP:PORT`` (a link this node dialled) or ``IP:PORT`` (one it accepted)."""
    return address.split("://")[-1].rsplit(":", 1)[0]


def all_linked(site: Site, offices: tuple[str, ...] = OFFICES, relay: bool = False) -> bool:
    """Every office in `offices` has direct links with all the others (and with the relay)."""
    return all(set(offices) - {o} <= set(lan_links(site.homes[o])) and (not relay or relay_linked(site.homes[o]))
               for o in offices)


def held_bytes(home: Path) -> bytes:
    """Every byte of every file in `home`: its database (with its WAL), keys and settings."""
    return b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())


def trial_balance(home: Path) -> str:
    return here(home, "report", "trial-balance", "--json")


def receipt(home: Path, amount: str, narration: str, date: str = "2026-04-02") -> str:
    return post_here(home, "receipt", date, "Cash", "Sales", amount, narration)


# ---------------------------------------------------------------- tests


def test_offices_find_each_other_on_the_lan_by_zeroconf_and_converge(site: Site) -> None:
    # No relay runs and no --peer is given: zeroconf across the LAN bridge is the only way to meet.
    site.start(*OFFICES)
    wait_until(lambda: all_linked(site), "HO, BR1 and BR2 to find each other by zeroconf and link")
    for office in OFFICES:
        for peer, address in lan_links(site.homes[office]).items():
            assert host_of(address) == site.net.hosts[peer].lan, f"{office} links with {peer} at {address}"

    # the three offices post at once, each with the p2psync command on its own home
    done = cli_many(*((home, voucher_args("receipt", "2026-04-02", "Cash", "Sales", "2,345.50", f"at {office}"))
                      for office, home in site.homes.items()))
    posted = {office: {json.loads(result.stdout)["number"]} for office, result in zip(OFFICES, done, strict=True)}
    for office, home in site.homes.items():
        posted[office].add(receipt(home, "100.00", f"more at {office}"))
    posted["BR2"].add(post_here(site.homes["BR2"], "payment", "2026-04-03", "Rent", "Cash", "900.00", "rent"))

    homes = list(site.homes.values())
    wait_converged(*homes)
    numbers = set().union(*posted.values())
    assert len(numbers) == 7
    assert all(voucher_numbers(home) == numbers for home in homes)
    assert trial_balance(homes[0]) == trial_balance(homes[1]) == trial_balance(homes[2])
    assert not any(quarantined(home) for home in homes)


def test_a_branch_cut_off_the_lan_converges_through_the_relay_alone(site: Site) -> None:
    site.relay.start()
    site.start(*OFFICES)
    wait_until(lambda: all_linked(site, relay=True), "every office to link on the LAN and with the relay")

    ho, br1, br2 = (site.homes[o] for o in OFFICES)
    before = sent_to_relay(br1)
    site.net.cut("BR1", "lan")  # BR1's LAN cable is pulled: from now on its only way out is the WAN
    cut_off = {receipt(br1, amount, "posted at BR1 while it is off the LAN") for amount in ("10.00", "20.00")}
    at_ho = receipt(ho, "30.00", "posted at HO")
    at_br2 = receipt(br2, "40.00", "posted at BR2")
    wait_converged(ho, br1, br2)
    assert cut_off | {at_ho, at_br2} <= voucher_numbers(ho) == voucher_numbers(br1) == voucher_numbers(br2)
    assert sent_to_relay(br1) >= before + len(cut_off), "BR1's vouchers went out through the relay"

    later = receipt(br1, "50.00", "posted at BR1 later, still off the LAN")  # and it goes on working
    wait_until(lambda: later in voucher_numbers(ho) and later in voucher_numbers(br2), "BR1's next voucher to spread")
    wait_converged(ho, br1, br2)
    assert trial_balance(ho) == trial_balance(br1) == trial_balance(br2)
    assert not any(quarantined(home) for home in (ho, br1, br2))


def test_a_fully_partitioned_branch_heals_to_identical_books_and_reports(site: Site) -> None:
    site.relay.start()
    site.start(*OFFICES)
    ho, br1, br2 = (site.homes[o] for o in OFFICES)
    wait_until(lambda: all_linked(site, relay=True), "every office to link on the LAN and with the relay")
    shared = receipt(br2, "500.00", "posted at BR2 before the partition")
    wait_converged(ho, br1, br2)

    site.net.cut("BR2", "lan")  # BR2 loses both cables: no LAN peer, no relay
    site.net.cut("BR2", "wan")
    at_ho = receipt(ho, "75.00", "at HO during the partition", date="2026-04-03")
    at_br1 = receipt(br1, "65.00", "at BR1 during the partition", date="2026-04-03")
    at_br2 = receipt(br2, "60.00", "at BR2 during the partition", date="2026-04-03")
    here(ho, "voucher", "amend", shared, "--date", "2026-04-02", "--dr", "Cash=510.00", "--cr", "Sales=510.00",
         "--narration", "amended at HO during the partition")
    here(br2, "voucher", "amend", shared, "--date", "2026-04-02", "--dr", "Bank=520.00", "--cr", "Sales=520.00",
         "--narration", "amended at BR2 during the partition")
    wait_converged(ho, br1)  # the connected side keeps syncing
    assert {at_ho, at_br1} <= voucher_numbers(br1) and {at_ho, at_br1} <= voucher_numbers(ho)
    assert not {at_ho, at_br1} & voucher_numbers(br2) and at_br2 not in voucher_numbers(ho)

    site.net.plug("BR2", "lan")
    site.net.plug("BR2", "wan")
    wait_converged(ho, br1, br2)
    books = reports(ho, OFFICES)
    assert books == reports(br1, OFFICES) == reports(br2, OFFICES)
    assert {at_ho, at_br1, at_br2, shared} <= {v["number"] for v in books["vouchers"]}
    assert [c["subject"] for c in books["conflicts"]] == [shared], "the losing amendment is listed, not lost"
    assert not any(quarantined(home) for home in (ho, br1, br2))


def test_branches_keep_syncing_with_each_other_while_the_head_office_is_down(site: Site) -> None:
    # No relay runs: while the head office is down, the branches' direct LAN link is their only path.
    site.start(*OFFICES)
    ho, br1, br2 = (site.homes[o] for o in OFFICES)
    wait_until(lambda: all_linked(site), "HO, BR1 and BR2 to find each other by zeroconf and link")

    site.nodes["HO"].stop()
    wait_until(lambda: not {"HO"} & (set(lan_links(br1)) | set(lan_links(br2))), "the branches to see HO go")
    at_br1 = receipt(br1, "1200.00", "posted at BR1 while HO is down")
    at_br2 = receipt(br2, "340.50", "posted at BR2 while HO is down")
    wait_converged(br1, br2)
    assert {at_br1, at_br2} <= voucher_numbers(br1) == voucher_numbers(br2)
    assert not {at_br1, at_br2} & voucher_numbers(ho)
    assert trial_balance(br1) == trial_balance(br2)

    site.nodes["HO"].start()  # back: found again by zeroconf, and it catches up
    wait_converged(ho, br1, br2)
    assert trial_balance(ho) == trial_balance(br1) == trial_balance(br2)
    assert not any(quarantined(home) for home in (ho, br1, br2))


CANARY = "CANARY-BR2-netns-Q7"
CANARY_AMOUNT = "98,765.43"


def test_head_office_down_a_branch_carries_another_branchs_entries_it_cannot_read(scoped_site: Site) -> None:
    # Read scopes: BR1 may read only the masters and its own books, yet it stores and forwards BR2's.
    site = scoped_site
    site.start(*OFFICES)
    ho, br1, br2 = (site.homes[o] for o in OFFICES)
    wait_until(lambda: all_linked(site) and all(policy(h).get("scoped_from") for h in (br1, br2)),
               "HO, BR1 and BR2 to link by zeroconf and the scoped policy to reach the branches")

    site.nodes["HO"].stop()
    wait_until(lambda: not {"HO"} & (set(lan_links(br1)) | set(lan_links(br2))), "the branches to see HO go")
    number = post_here(br2, "receipt", "2026-04-02", "Cash", "Sales", CANARY_AMOUNT, CANARY)
    wait_converged(br1, br2)  # BR1 holds every entry of BR2's...
    assert number not in voucher_numbers(br1)  # ...and cannot read the voucher
    held = held_bytes(br1) + site.nodes["BR1"].output().encode()  # its files, and what its node printed
    traces = [t for t in (CANARY.encode(), b"9876543", b"98765.43") if t in held]
    assert not traces, f"BR1 holds {traces} of BR2's voucher in the clear"
    assert here_json(br1, "report", "trial-balance")["scope"] == "BR1: 1 of 3 offices"

    site.net.cut("BR2", "lan")  # BR2 is cut off (and no relay runs): only BR1 can bring its voucher
    site.nodes["HO"].start()  # back: found again by zeroconf, by BR1 alone
    wait_until(lambda: number in voucher_numbers(ho), "the head office to read BR2's voucher from BR1")
    wait_converged(ho, br1)
    links = wait_until(lambda: lan_links(ho), "the head office's link with BR1 to finish its sync")
    assert set(links) == {"BR1"}, links
    assert CANARY in str(here_json(ho, "voucher", "show", number))
    assert here_json(ho, "report", "trial-balance")["scope"] == "consolidated"
    assert not any(quarantined(home) for home in (ho, br1, br2))


#: A bad WAN link, both ways: one frame in twenty lost, 50-110 ms of delay, so frames sent closer
#: than 60 ms apart often arrive out of order.
BAD_LINK = dict(loss=0.05, delay=0.08, jitter=0.03)


def test_a_branch_on_a_lossy_slow_reordering_link_converges_through_the_relay(site: Site) -> None:
    require(netns.bad_cable_unavailable())
    site.relay.start()
    site.start(*OFFICES)
    ho, br1, br2 = (site.homes[o] for o in OFFICES)
    wait_until(lambda: all_linked(site, relay=True), "every office to link on the LAN and with the relay")
    site.net.cut("BR1", "lan")  # BR1's only way out is now its WAN cable to the relay...
    site.net.impair("BR1", "wan", **BAD_LINK)  # ...and that cable is a bad one
    at_br1 = {receipt(br1, f"{n}.00", f"posted at BR1 over a bad link {n}") for n in range(1, 13)}
    at_ho = {receipt(ho, f"{n}.50", f"posted at HO {n}") for n in range(1, 7)}
    at_br2 = receipt(br2, "99.00", "posted at BR2")
    wait_converged(ho, br1, br2, timeout=3 * WAIT)
    numbers = at_br1 | at_ho | {at_br2}
    assert numbers <= voucher_numbers(ho) == voucher_numbers(br1) == voucher_numbers(br2)
    books = reports(ho, OFFICES)
    assert books == reports(br1, OFFICES) == reports(br2, OFFICES)
    assert not any(quarantined(home) for home in (ho, br1, br2))
    assert site.net.cables["BR1", "wan"].process.poll() is None  # the bad cable carried it all
