"""The coverage-guided harnesses run, briefly: each under atheris for a couple of hundred inputs from
the seed corpus, so that `python -m fuzz.run` keeps working. Long runs are not part of the suite."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from outside import require

from fuzz.harnesses import NAMES

ROOT = Path(__file__).resolve().parent.parent
RUNS = 200


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_harness_runs_under_atheris(tmp_path: Path) -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        require("atheris is not installed")
    result = subprocess.run([sys.executable, "-m", "fuzz.run", "--runs", str(RUNS), "--seconds", "0", "--jobs", "2",
                             "--corpus", str(tmp_path / "corpus")], cwd=ROOT, capture_output=True, text=True,
                            timeout=840, check=False)  # a bound on a hang, not a speed check
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    tried = dict(re.findall(r"^(\w+)\s+(\d+)\s+\d+\s+ok$", result.stdout, re.MULTILINE))
    assert set(tried) == set(NAMES), result.stdout
    assert all(int(count) >= RUNS for count in tried.values()), result.stdout
