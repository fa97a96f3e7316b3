"""(7) Scale: a head office and branch nodes, each its own ``p2psync run`` process, linked only through
one relay process; every office imports vouchers at once; time until every node holds every voucher.
And the head office's memory holding a large bulk-built home across 50 offices."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import count_vouchers, finish, make_org, query, read_json_line, side

SERVING = re.compile(r"serving on wss://([^\s:]+):(\d+)")
RELAY = re.compile(r"(ws://127\.0\.0\.1:\d+)")


def _peak_of(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="200")


def _wait_text(path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        match = pattern.search(text)
        if match:
            return match
        if proc.poll() is not None:
            raise RuntimeError(f"process exited {proc.returncode}:\n{text[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"no {pattern.pattern!r} in time")


def _relay_online(home: Path) -> bool:
    from p2psync.node import control
    try:
        data = control.request(home, "status", timeout=10)
    except Exception:  # noqa: BLE001 - a node still starting answers nothing useful yet
        return False
    return bool(data) and any(p["kind"] == "relay" and p["online"] and p.get("last_sync") for p in data["peers"])


def converge(base: Path, branches: int, per_node: int, timeout: float = 3600) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    relay_out = base / "relay.out"
    with relay_out.open("wb") as out:
        relay = subprocess.Popen([sys.executable, "-m", "p2psync", "relay", "--host", "127.0.0.1", "--port", "0",
                                  "--db", str(base / "relay.db")], stdout=out, stderr=subprocess.STDOUT, env=_env())
    try:
        url = _wait_text(relay_out, RELAY, relay, 60).group(1)
        codes = [f"BR{i:02d}" for i in range(1, branches + 1)]
        homes = make_org(base / "org", codes, relays=(url,))
        for home in homes:
            out_path = base / f"{home.name}.out"
            with out_path.open("wb") as out:
                procs.append(subprocess.Popen([sys.executable, "-m", "p2psync", "--home", str(home), "run", "--host",
                                               "127.0.0.1", "--port", "0", "--no-mdns"], stdout=out,
                                              stderr=subprocess.STDOUT, env=_env(), start_new_session=True))
        for home, proc in zip(homes, procs, strict=True):
            _wait_text(base / f"{home.name}.out", SERVING, proc, 120)
        deadline = time.monotonic() + 300
        for home in homes:
            while not _relay_online(home):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{home.name} did not link to the relay")
                time.sleep(0.2)
        base_count = count_vouchers(homes[0])
        expected = base_count + per_node * len(homes)
        posters = [side("post", "--home", str(home), "--count", str(per_node), "--seed", str(100 + i), stdin=True)
                   for i, home in enumerate(homes)]
        for poster in posters:
            read_json_line(poster, 300)
        started = time.perf_counter()
        for poster in posters:
            assert poster.stdin is not None
            poster.stdin.write("go\n")
            poster.stdin.flush()
        post_seconds = [finish(p, 1800)["seconds"] for p in posters]
        posted = time.perf_counter()
        deadline = time.monotonic() + timeout
        pending = set(homes)
        last_seen: dict[Path, float] = {}
        while pending:
            for home in list(pending):
                if count_vouchers(home) >= expected and query(home, "SELECT count(*) FROM pending")[0][0] == 0:
                    pending.discard(home)
                    last_seen[home] = time.perf_counter() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(pending)} nodes did not converge")
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
        vectors = [query(h, "SELECT doc, author, max(seq) FROM entry WHERE doc NOT LIKE 'local/%' GROUP BY doc, author "
                            "ORDER BY doc, author") for h in homes]
        agree = all(v == vectors[0] for v in vectors[1:])
        peaks = {home.name: _peak_of(proc.pid) for home, proc in zip(homes, procs, strict=True)}
        relay_peak = _peak_of(relay.pid)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        relay.send_signal(signal.SIGTERM)
        try:
            relay.wait(30)
        except subprocess.TimeoutExpired:
            relay.kill()
    return {"nodes": len(homes), "branches": branches, "vouchers_per_node": per_node,
            "vouchers_total": per_node * len(homes), "seconds_to_agree": elapsed,
            "posting_seconds_wall": posted - started, "posting_seconds_max_node": max(post_seconds),
            "first_node_done_s": min(last_seen.values()), "all_agree": agree,
            "ho_peak_rss_mb": peaks["HO"], "max_node_peak_rss_mb": max(peaks.values()), "relay_peak_rss_mb": relay_peak}


def ho_memory(base: Path, vouchers: int, offices: int = 50, batch: int = 1000) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    built = finish(side("ho-build", "--base", str(base), "--offices", str(offices), "--vouchers", str(vouchers),
                        "--batch", str(batch)), 14_400)
    measured = finish(side("ho-memory", "--home", str(base / "HO"), "--load-docs"), 3600)
    return {"vouchers": measured["vouchers"], "offices": measured["offices"], "build_seconds": built["seconds"],
            "build_peak_rss_mb": built["peak_rss_mb"], "open_seconds": measured["open_seconds"],
            "trial_balance_seconds": measured["trial_balance_seconds"], "peak_rss_mb": measured["peak_rss_mb"],
            "consolidated_warm_seconds": measured["consolidated_warm_seconds"],
            "all_docs_loaded": measured["all_docs_loaded"], "all_docs_peak_rss_mb": measured["all_docs_peak_rss_mb"],
            "all_docs_seconds": measured["all_docs_seconds"]}
