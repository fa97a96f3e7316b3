"""The node as a service runs it, each a real ``python -m p2psync`` process: the control channel that
works where Unix sockets do not (forced here with ``P2PSYNC_CONTROL=tcp``), a clean stop on SIGTERM
that keeps everything acknowledged, and the refusal to start on keys other users can read."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from procs import Fleet, cli, linked, make_org, peers_of, voucher_numbers, wait_until

from p2psync.node import control
from p2psync.node.home import KEYS_DIR

PAYMENT = {"type": "payment", "date": "2026-04-03",
           "lines": [{"side": "Dr", "ledger": "Rent", "amount": "1,000"},
                     {"side": "Cr", "ledger": "Cash", "amount": "1,000"}]}


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_status_sync_and_restart_reach_the_node_over_the_portable_channel(
        tmp_path: Path, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(control.CHANNEL_ENV, "tcp")  # the node processes inherit it
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    branch = fleet.start(br1, peers=(head.url,))
    wait_until(lambda: linked(br1, "HO") and linked(ho, "BR1"), "both sides to show the link")
    assert control.port_file(br1).exists() and not control.socket_path(br1).exists()

    shown = json.loads(cli(br1, "status", "--json").stdout)
    assert shown["node"]["running"] is True and shown["peers"][0]["office"] == "HO"
    synced = cli(br1, "sync")
    assert "reconnecting to every peer" in synced.stdout
    (before,) = peers_of(br1, "HO")
    assert "Restarted" in cli(br1, "restart").stdout
    wait_until(lambda: linked(br1, "HO") and peers_of(br1, "HO")[0]["last_sync"] > before["last_sync"],
               "BR1 to link and sync again after restart")

    branch.kill()  # SIGKILL: its port file stays behind, naming a port nobody answers on
    assert control.port_file(br1).exists()
    refused = cli(br1, "restart", check=False)
    assert refused.returncode == 1
    assert one_error_line(refused.stderr) == "error: the node is not running; start it with 'p2psync run'"
    assert "not running" in cli(br1, "status").stdout

    old_secret = json.loads(control.port_file(br1).read_text())["secret"]
    fleet.start(br1, peers=(head.url,))  # the stale file does not block the next start
    assert json.loads(control.port_file(br1).read_text())["secret"] != old_secret
    assert json.loads(cli(br1, "status", "--json").stdout)["node"]["running"] is True


async def _post_until_refused(base: str, sign_in: str, on_acked: int, stop: Callable[[], None],
                              posters: int = 4) -> list[str]:
    """Post vouchers through the dashboard from several clients at once; once `on_acked` are
    acknowledged call `stop` (SIGTERM, while other posts are in flight), and go on posting until the
    node no longer answers. The numbers acknowledged."""
    acked: list[str] = []
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        async with http.get(sign_in) as signed_in:
            assert signed_in.status == 200

        async def poster() -> None:
            while True:
                try:
                    async with http.post(f"{base}/api/vouchers", json=PAYMENT, headers={"Origin": base}) as answer:
                        if answer.status != 201:
                            return
                        acked.append((await answer.json())["number"])
                except aiohttp.ClientError:
                    return
                if len(acked) == on_acked:
                    stop()

        await asyncio.gather(*(poster() for _ in range(posters)))
    return acked


def test_sigterm_stops_the_node_within_seconds_and_keeps_every_acknowledged_voucher(
        tmp_path: Path, fleet: Fleet) -> None:
    (ho,) = make_org(tmp_path, ())
    node = fleet.start(ho, dashboard=True)
    base = node.dashboard_url.split("/login")[0]
    stopped_at: list[float] = []

    def sigterm() -> None:
        assert node.proc is not None
        stopped_at.append(time.monotonic())
        node.proc.terminate()

    acked = asyncio.run(_post_until_refused(base, node.dashboard_url, 25, sigterm))
    assert node.proc is not None
    code = node.proc.wait(20)
    took = time.monotonic() - stopped_at[0]
    assert code == 0, node.output()
    assert took < 5, f"took {took:.1f} s to stop"
    assert len(acked) >= 25
    assert not control.socket_path(ho).exists() and not control.port_file(ho).exists()

    fleet.start(ho)  # after a restart every acknowledged voucher is there, once
    assert set(acked) <= voucher_numbers(ho)
    assert len(acked) == len(set(acked))


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_node_refuses_to_start_on_keys_other_users_can_read(tmp_path: Path) -> None:
    (ho,) = make_org(tmp_path, ())
    key = ho / KEYS_DIR / "node-signing.pem"
    args = ("run", "--host", "127.0.0.1", "--port", "0", "--no-mdns", "--no-dashboard")
    for path, mode, why in ((key, 0o640, "other users can read or change it"),
                            (ho / KEYS_DIR, 0o777, "other users can write in it")):
        before = path.stat().st_mode
        path.chmod(mode)
        for command in (args, ("status",)):
            refused = cli(ho, *command, check=False, timeout=60)
            assert refused.returncode == 1
            line = one_error_line(refused.stderr)
            assert f"{path} is not private ({why})" in line and "chmod" in line
        path.chmod(before)
    if os.geteuid() == 0:  # only root can hand a file to another user
        os.chown(key, 4321, -1)
        line = one_error_line(cli(ho, "status", check=False).stderr)
        assert "belongs to another user" in line
        os.chown(key, 0, -1)
    assert "HO" in cli(ho, "status").stdout
