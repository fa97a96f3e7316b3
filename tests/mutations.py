"""Structure-aware mutations for property-based fuzzing: what real damage and real attackers do to
a valid encoding, as Hypothesis strategies."""

from __future__ import annotations

import json

from hypothesis import strategies as st

from fuzz.common import FRAME_SEPARATOR

#: Any JSON value, as text, including the awkward ones: huge numbers, NaN and Infinity, lone
#: surrogates, impossible dates, and nesting deeper than Python's stack.
JSON_TEXT = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
        | st.sampled_from(["2026-02-30", "", "HO", "masters", "vouchers/HO/2026-04"]),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    ).map(json.dumps),
    st.sampled_from(["NaN", "-Infinity", "1e400", '"\\ud800"', '{"a":"\\udfff"}', "9" * 5000]),
    st.integers(500, 50_000).map(lambda depth: "[" * depth + "]" * depth),
)
HOLE = r'"\u0000hole\u0000"'


def _flip(seed: bytes, bits: list[int]) -> bytes:
    out = bytearray(seed)
    for bit in bits:
        out[bit // 8 % len(out)] ^= 1 << (bit % 8)
    return bytes(out)


def mutations(seed: bytes, others: list[bytes]) -> st.SearchStrategy[bytes]:
    size = max(len(seed), 1)
    return st.one_of(
        st.lists(st.integers(0, size * 8 - 1), min_size=1, max_size=6).map(lambda bits: _flip(seed or b"\0", bits)),
        st.integers(0, size).map(lambda n: seed[:n]),
        st.integers(0, size).map(lambda n: seed[n:]),
        st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=24)).map(
            lambda cut: seed[:cut[0]] + cut[1] + seed[cut[0]:]),
        st.tuples(st.integers(0, size), st.sampled_from(others), st.integers(0, 4096)).map(
            lambda cut: seed[:cut[0]] + cut[1][cut[2] % max(len(cut[1]), 1):]),
        st.tuples(st.integers(0, size), st.integers(0, 64)).map(lambda cut: seed[:cut[0]] + seed[cut[0] + cut[1]:]),
        _json_substitutions(seed),
    )


def _json_substitutions(seed: bytes) -> st.SearchStrategy[bytes]:
    """Replace one field of a JSON object found in the seed (after a one-byte harness prefix, or in
    the first text frame) with any JSON value."""
    for start in (0, 1, 2):
        try:
            value = json.loads(seed[start:].split(FRAME_SEPARATOR)[0])
        except ValueError:
            continue
        if isinstance(value, dict) and value:
            prefix, rest = seed[:start], seed[start:].split(FRAME_SEPARATOR, 1)[1:]
            return st.tuples(st.sampled_from(sorted(value)), JSON_TEXT).map(
                lambda sub: prefix + FRAME_SEPARATOR.join(
                    [json.dumps({**value, sub[0]: "\0hole\0"}).replace(HOLE, sub[1]).encode(), *rest]))
    return st.just(seed)
