"""Runs one harness under atheris (libFuzzer, coverage-guided): ``python -m fuzz.driver NAME
[libFuzzer options] [corpus dirs]``. p2psync and the harness are instrumented for coverage."""

from __future__ import annotations

import sys

import atheris


def main() -> None:
    name, options = sys.argv[1], sys.argv[2:]
    with atheris.instrument_imports(include=["p2psync", "fuzz"]):
        from fuzz.common import quiet_logs, world
        from fuzz.harnesses import harness

        module = harness(name)
    world()  # build the organisation before fuzzing starts, not inside the first input
    with quiet_logs():
        atheris.Setup([sys.argv[0], *options], module.check)
        atheris.Fuzz()


if __name__ == "__main__":
    main()
