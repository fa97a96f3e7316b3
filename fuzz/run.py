"""Fuzz every decoder for a bounded budget and say how many inputs each was given.

    python -m fuzz.run [--seconds S] [--runs N] [--jobs J] [--only NAME ...] [--corpus DIR]

Each harness runs in its own process under atheris, starting from the seed corpus (written on first
use; the fuzzer adds what it finds that reaches new code). A harness that finds a defect stops and
leaves the input that triggers it in ``fuzz/crashes/``; the run then exits non-zero.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fuzz import corpus
from fuzz.harnesses import NAMES

HERE = Path(__file__).parent
STAT = re.compile(r"stat::number_of_executed_units:\s*(\d+)")


def run_one(name: str, seconds: float, runs: int, where: Path) -> tuple[int, bool, str]:
    """(inputs tried, defect found, last lines of output) for one harness."""
    crashes = HERE / "crashes"
    crashes.mkdir(exist_ok=True)
    options = [f"-max_total_time={int(seconds)}", f"-runs={runs}", "-timeout=120", "-rss_limit_mb=2048",
               "-print_final_stats=1", f"-artifact_prefix={crashes}/{name}-", str(where / name)]
    proc = subprocess.run([sys.executable, "-m", "fuzz.driver", name, *options], cwd=HERE.parent,
                          capture_output=True, text=True, errors="replace")
    out = proc.stdout + proc.stderr
    found = STAT.search(out)
    return int(found.group(1)) if found else 0, proc.returncode != 0, "\n".join(out.splitlines()[-25:])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60, help="time budget per harness (0: none)")
    parser.add_argument("--runs", type=int, default=-1, help="input budget per harness (-1: time only)")
    parser.add_argument("--jobs", type=int, default=1, help="harnesses run at once")
    parser.add_argument("--only", nargs="*", choices=NAMES, default=list(NAMES))
    parser.add_argument("--corpus", type=Path, default=HERE / "corpus")
    args = parser.parse_args(argv)
    corpus.write(args.corpus, tuple(args.only))
    total, failed = 0, []
    print(f"{'harness':<12} {'inputs':>10} {'seconds':>8}  result")

    def timed(name: str) -> tuple[str, float, tuple[int, bool, str]]:
        started = time.monotonic()
        outcome = run_one(name, args.seconds, args.runs, args.corpus)
        return name, time.monotonic() - started, outcome

    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        for name, seconds, (tried, crashed, tail) in pool.map(timed, args.only):
            total += tried
            print(f"{name:<12} {tried:>10} {seconds:>8.0f}  {'DEFECT' if crashed else 'ok'}", flush=True)
            if crashed:
                failed.append(name)
                print(tail, file=sys.stderr)
    print(f"{'total':<12} {total:>10}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
