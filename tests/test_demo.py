"""The README's main command: `p2psync demo` runs a relay and three nodes as real processes and
ends with every entry at every office: the head office reads them all, each branch its own books,
which agree with the head office's."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_and_the_offices_agree() -> None:
    done = subprocess.run([sys.executable, "-m", "p2psync", "demo", "--vouchers", "30"], capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    out = done.stdout
    assert "Registration ID" in out
    assert out.count("Joined Demo Traders Pvt Ltd") == 2
    assert "Status at BR2" in out and "relay" in out.split("Status at BR2")[1]
    assert "Every office holds every entry" in out and "each branch's books are what the head office reads" in out
    assert "BR1 carries BR2's entries to pass them on, unread: this office may not read BR2's books" in out
    assert "Traceback" not in done.stderr and "warning" not in done.stderr
