"""(6) First sync ("Sync Company Details") of a head office's year of vouchers to a fresh branch, each
side its own process, against the same documents synced by the peer (pycrdt-websocket)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from common import finish, read_json_line, side


def build(base: Path, vouchers: int, batch: int) -> dict[str, Any]:
    base.mkdir(parents=True, exist_ok=True)
    return finish(side("build-home", "--base", str(base), "--vouchers", str(vouchers), "--batch", str(batch),
                       "--seed-file", str(base / "peer-seed.bin")), 7200)


def p2psync(base: Path, vouchers: int, books_only: bool = False) -> dict[str, Any]:
    """The first sync into a copy of the fresh branch (so that it can be run again); `books_only`
    writes no voucher report rows: a bound of what writing them after the sync would give."""
    branch = base / ("BR1-books-only" if books_only else "BR1-synced")
    shutil.rmtree(branch, ignore_errors=True)
    shutil.copytree(base / "BR1", branch)
    server = side("p2p-serve", "--home", str(base / "HO"), stdin=True)
    try:
        ready = read_json_line(server, 120)
        client = side("p2p-sync", "--home", str(branch), "--url", f"wss://127.0.0.1:{ready['port']}",
                      "--expect", str(vouchers), *(["--books-only"] if books_only else []))
        result = finish(client, 7200)
        served = stop(server)
    finally:
        if server.poll() is None:
            server.kill()
    return {"vouchers": vouchers, "seconds": result["seconds"], "sync_seconds": result["sync_seconds"],
            "vouchers_per_s": vouchers / result["seconds"], "entries_received": result["received"],
            "receiver_peak_rss_mb": result["peak_rss_mb"], "sender_peak_rss_mb": served["peak_rss_mb"],
            "receiver_cpu_s": result["cpu_s"], "sender_cpu_s": served["cpu_s"], "errors": result["errors"]}


def stop(server: subprocess.Popen[str]) -> dict[str, Any]:
    """Ask a serving side to stop; its last line reports what it measured."""
    assert server.stdin is not None
    server.stdin.write("stop\n")
    server.stdin.flush()
    served = read_json_line(server, 120)
    server.wait(60)
    return served


def peer(base: Path, vouchers: int) -> dict[str, Any]:
    seed = str(base / "peer-seed.bin")
    server = side("peer-serve", "--seed-file", seed, stdin=True)
    try:
        ready = read_json_line(server, 300)
        result = finish(side("peer-sync", "--seed-file", seed, "--port", str(ready["port"]), "--expect", str(vouchers)),
                        3600)
        served = stop(server)
    finally:
        if server.poll() is None:
            server.kill()
    return {"vouchers": vouchers, "seconds": result["seconds"], "vouchers_per_s": vouchers / result["seconds"],
            "receiver_peak_rss_mb": result["peak_rss_mb"], "sender_peak_rss_mb": served["peak_rss_mb"],
            "receiver_cpu_s": result["cpu_s"], "sender_cpu_s": served["cpu_s"], "sender_rss_holding_docs_mb": ready["rss_mb"]}
