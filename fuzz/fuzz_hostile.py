"""A hostile member's entries, at length: the generator of tests/test_hostile_member.py's property
(honest work at the head office and BR2, raw updates BR1 signs with its real keys, deliveries in random
orders) driven by the fuzzer's bytes through hypothesis, each input played over fresh copies of a small
organisation and checked against the same invariants: the honest offices agree on everything, keep
every honest record, and admit from the hostile member only what keeps every rule."""

from __future__ import annotations

import atexit
import functools
import shutil
import sys
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import helpers
import test_hostile_member as hostile


@functools.cache
def template() -> Path:
    """An HO and two branches holding the HO's masters, built once per process."""
    base = Path(tempfile.mkdtemp(prefix="p2psync-hostile-"))
    atexit.register(shutil.rmtree, base, True)
    head = helpers.setup_head(base / "HO")
    branches = [helpers.setup_branch(base / code, code, head) for code in helpers.OFFICES[1:]]
    helpers.sync(head, *branches)
    for node in (head, *branches):
        node.close()
    return base


@settings(database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(script=hostile.scripts, seed=st.integers(0, 2**32))
def _play(script: list[tuple], seed: int) -> None:
    with tempfile.TemporaryDirectory() as where:
        play = hostile.play_script(template(), Path(where), script, seed)
        try:
            hostile.assert_hostile_contained(play)
        finally:
            hostile.close_all(play)


def check(data: bytes) -> None:
    _play.hypothesis.fuzz_one_input(data)


def seeds() -> list[bytes]:
    return [bytes(range(256)), b"\x00" * 64, b"\xff" * 200, bytes(i * 37 % 256 for i in range(400))]
