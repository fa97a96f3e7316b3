"""The runnable scenarios in ``examples/``, run as a user runs them: ``bash examples/NAME.sh`` with
``P2PSYNC`` naming the command. Each script checks its own outcome and exits 0 only if it happened;
the test also looks for the line that announces that outcome, and checks that the script removed
its temporary folder and stopped every process it started.

A script that runs too long is stopped like an operator would stop it (SIGTERM to its process
group, so its own clean-up runs and stops its nodes), then killed.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
#: Sourced by the scenarios, not a scenario itself.
HELPERS = {"common.sh"}
#: Far above a normal run (15-45 s on an idle machine); each wait inside a script gives up after 60 s.
TIMEOUT = 240.0

#: script -> lines its output must contain (the outcome it promises, checked by the script itself).
PROMISES: dict[str, tuple[str, ...]] = {
    "opening-day.sh": ("Trial balance identical after rebuild.",),
    "lost-laptop.sh": (
        "OK: refused: the laptop is revoked",
        "OK: Nagpur's sale from before the theft stays; the voucher entered after it never got in",
        "OK: the head office accepts Nagpur's vouchers from the new machine",
    ),
    "three-offices-lan.sh": (
        "OK: both branches registered with Registration ID",
        "OK: HO, BR1 and BR2 show the same consolidated trial balance, 2,70,750.50 on each side",
    ),
    "sync-after-date.sh": (
        "OK: Surat's settings now show the sync-after date 2026-04-01",
        "OK: the late entry of 31 March stays in Surat's own books only",
    ),
    "offline-branch.sh": (
        "OK: the head office holds none of Pune's vouchers, and Pune none of the head office's",
        "OK: both offices show the same trial balance, 36,750.00 on each side",
    ),
    "relay-only-branch.sh": (
        "OK: the head office and the Goa branch show the same trial balance, 48,400.00 on each side",
        "OK: Goa exchanged everything through the relay and never linked to the head office directly",
        "OK: the relay's database holds no narration, company, office or ledger name in clear",
    ),
}
#: Scenarios that start nodes or a relay (separate processes talking over sockets).
MULTI_PROCESS = {name for name in PROMISES if name != "opening-day.sh"}


def cases() -> list[pytest.ParameterSet]:
    # In PROMISES' order, the longest first, so that parallel workers finish at about the same time.
    return [pytest.param(name, marks=[pytest.mark.slow] if name in MULTI_PROCESS else [], id=name.removesuffix(".sh"))
            for name in PROMISES]


def environment(base: Path) -> dict[str, str]:
    """The user's environment, with the command under test and every per-user folder inside `base`."""
    env = dict(os.environ, P2PSYNC=f"{sys.executable} -m p2psync", TMPDIR=str(base), PYTHONUNBUFFERED="1")
    for var in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env[var] = str(base / "xdg")
    for var in ("P2PSYNC_HOME", "KEEP", "LAN", "WAIT"):
        env.pop(var, None)
    return env


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - the id was reused by someone else's process
        return False
    return True


def run_script(script: Path, base: Path) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run `script` in its own process group; returns its result and whether anything it started
    was still running after it ended."""
    proc = subprocess.Popen(["bash", str(script)], cwd=base, env=environment(base), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        pytest.fail(f"{script.name} ran longer than {TIMEOUT:.0f} s:\n{out[-3000:]}\n{err[-3000:]}")
    deadline = time.monotonic() + 10
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left_running = group_alive(proc.pid)
    if left_running:
        os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), left_running


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary folder with a short path: a node's control socket lives in its home, and a Unix
    socket's path may not exceed about 100 bytes (pytest's own tmp_path is too deep for that)."""
    path = Path(tempfile.mkdtemp(prefix="p2pex-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("name", cases())
def test_example_keeps_its_promise(name: str, short_tmp: Path) -> None:
    result, left_running = run_script(EXAMPLES / name, short_tmp)
    shown = f"exit {result.returncode}\n--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}"
    assert result.returncode == 0, shown
    for line in PROMISES[name]:
        assert line in result.stdout, f"missing {line!r}\n{shown}"
    assert "Traceback" not in result.stdout + result.stderr, shown
    assert "FAILED" not in result.stderr, shown
    assert not left_running, f"{name} left processes running"
    left = sorted(p.name for p in short_tmp.iterdir() if p.name != "xdg")
    assert left == [], f"{name} left {left} in its temporary folder"


def test_every_example_script_is_run_here() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.sh")} - HELPERS
    assert scripts == set(PROMISES)
    listed = (EXAMPLES / "README.md").read_text()
    assert all(f"`{name}`" in listed for name in scripts), "examples/README.md lists every script"
