"""The receive path's faster decoders against the versions they replaced, kept here as the
specification: every replica must refuse exactly what the others refuse, so a decoder that accepts
one input more or one less than before would let replicas diverge. Inputs are the fuzzers' (valid
encodings mutated, any JSON value, noise), as text and as bytes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from mutations import JSON_TEXT, mutations

from p2psync import canonical
from p2psync.books import model, schema
from p2psync.books.model import (
    SCHEMA_VERSION,
    Action,
    Line,
    Revision,
    Side,
    VoucherContent,
    VoucherType,
    _int,
    _list,
    _member,
    _str,
)
from p2psync.errors import InvalidInput
from p2psync.store.books import Watch

DIFFERENTIAL = settings(max_examples=400, deadline=None)


# ---------------------------------------------------------------- the previous semantics


def previous_loads(raw: str | bytes | bytearray, **options: Any) -> Any:
    """The first `loads`, with the one change made since on purpose: nesting deeper than
    `canonical.MAX_DEPTH` is refused (measured here on the text, there on the value)."""
    try:
        value = json.loads(raw, parse_constant=canonical._no_constant, **options)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    try:
        ascii_text = json.dumps(value)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    if nesting(ascii_text) > canonical.MAX_DEPTH:
        raise ValueError("JSON is nested too deeply")
    try:
        json.dumps(value, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValueError("JSON holds text that is not valid Unicode (a lone surrogate)") from None
    return value


def nesting(text: str) -> int:
    """How deep lists and objects nest in JSON text, read character by character."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def previous_decode_revision(text: Any) -> Revision:
    if not isinstance(text, str):
        raise InvalidInput("malformed voucher revision: not a JSON string")
    try:
        data = previous_loads(text)
    except ValueError:
        raise InvalidInput("malformed voucher revision: not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput("malformed voucher revision: not a JSON object")
    try:
        lines = tuple(_previous_line(item) for item in _list(data["lines"]))
        content = VoucherContent(
            type=_member(VoucherType, data["type"]),
            date=dt.date.fromisoformat(_str(data["date"])),
            lines=lines,
            narration=_str(data["narration"]),
        )
        rev = Revision(
            id=_str(data["id"]),
            number=_str(data["number"]),
            office=_str(data["office"]),
            content=content,
            action=_member(Action, data["action"]),
            parents=tuple(_str(p) for p in _list(data["parents"])),
            generation=_int(data["gen"]),
            author=_str(data["author"]),
            at=_str(data["at"]),
            reason=_str(data.get("reason", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed voucher revision: {exc}") from None
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidInput(f"voucher revision has unsupported schema version {data.get('v')!r}")
    return rev


def _previous_line(item: Any) -> Line:
    if not isinstance(item, list) or len(item) != 3:
        raise ValueError("a line must be [ledger, side, paise]")
    ledger, side, paise = item
    return Line(_str(ledger), _member(Side, side), _int(paise))


# ---------------------------------------------------------------- inputs


def _revision(action: Action, narration: str, parents: tuple[str, ...] = (), reason: str = "") -> bytes:
    content = VoucherContent(VoucherType.SALES, dt.date(2026, 4, 3),
                             (Line("Sundry Debtors Control", Side.DR, 123456), Line("Sales", Side.CR, 123456)),
                             narration)
    return model.encode_revision(Revision("a1" * 12, "HO/SAL/00012", "HO", content, action, parents, 1 + len(parents),
                                          "c3" * 16, "2026-04-03T10:00:00.000000Z", reason)).encode()


SEEDS = [
    _revision(Action.POST, "Invoice INV-0000012 to Sharma Traders"),
    _revision(Action.AMEND, "बिक्री ₹ 1,234.56 — Gupta & Sons", ("b2" * 12,)),
    _revision(Action.CANCEL, "😀 \\ud800 written out", ("b2" * 12, "d4" * 12), "entered twice"),
    b'{"a":"\\ud83d\\ude00","b":["\\uDBFF\\uDFFF","\\\\ud800"]}',
]
ESCAPES = st.sampled_from(["\\ud800", "\\uDBFF", "\\uDbFf", "\\udc80", "\\uDFFF", "\\ud83d\\ude00", "\\u00e9",
                           "\\\\ud800", "\ud800", "\udfff", "\ud83d\ude00", "é", "\0"])
RAW = st.one_of(
    st.sampled_from(SEEDS).flatmap(lambda seed: mutations(seed, SEEDS)),
    JSON_TEXT.map(str.encode),
    st.tuples(st.sampled_from(SEEDS), st.integers(0, 400), ESCAPES).map(
        lambda cut: cut[0][:cut[1]] + cut[2].encode("utf-8", "surrogatepass") + cut[0][cut[1]:]),
    st.binary(max_size=64),
)
#: Bytes as they arrive, and as text: UTF-8 (raw surrogates kept as code points), UTF-16 and UTF-32.
AS_TEXT = st.sampled_from([
    lambda raw: raw.decode("utf-8", "surrogateescape"),
    lambda raw: raw.decode("utf-8", "surrogatepass") if _decodes(raw) else raw.decode("latin-1"),
])
AS_BYTES = st.sampled_from([
    lambda raw: raw,
    lambda raw: bytearray(raw),
    lambda raw: raw.decode("latin-1").encode("utf-16-le"),
    lambda raw: raw.decode("latin-1").encode("utf-16"),
    lambda raw: raw.decode("latin-1").encode("utf-32-be"),
])


def _decodes(raw: bytes) -> bool:
    try:
        raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def outcome(decode: Callable[[Any], Any], raw: Any) -> tuple[str, str]:
    """What a decoder made of the input: the value (its repr tells 1 from 1.0 and True) or the refusal."""
    try:
        return "value", repr(decode(raw))
    except (ValueError, InvalidInput) as exc:
        return type(exc).__name__, str(exc)


# ---------------------------------------------------------------- the tests


@DIFFERENTIAL
@given(raw=RAW, as_text=AS_TEXT, as_bytes=AS_BYTES)
def test_loads_accepts_and_refuses_what_it_did(raw: bytes, as_text: Callable[[bytes], str],
                                               as_bytes: Callable[[bytes], bytes]) -> None:
    for given_raw in (as_text(raw), as_bytes(raw)):
        assert outcome(canonical.loads, given_raw) == outcome(previous_loads, given_raw)


@DIFFERENTIAL
@given(raw=RAW, as_text=AS_TEXT)
def test_a_revision_decodes_or_is_refused_as_it_was(raw: bytes, as_text: Callable[[bytes], str]) -> None:
    text = as_text(raw)
    assert outcome(model.decode_revision, text) == outcome(previous_decode_revision, text)


#: Values a revision's field may be given instead of its own: the ones a typed decoder could read
#: differently from `json` (bools and floats for integers, huge integers, other date forms, escapes,
#: lines of the wrong shape or types, deep nesting), and any JSON value.
FIELD_VALUES = st.one_of(
    st.sampled_from(["true", "false", "null", "0", "-0", "1", "2", "1.0", "1e0", "-1", "9" * 4300, "9" * 4301,
                     "-" + "9" * 4300, str(2**64), str(-2**63 - 1), '""', '"x"', "[]", "{}", '"post"', '"cancel"',
                     '"sales"', '"Dr"', '"2026-02-30"', '"20260403"', '"2026-W14-5"', '"2026-04-03T10:00"',
                     '"\\u0041"', '"a\\nb"', '"\\/"', '"\\ud800"', '"\ud800"', "NaN", '["a","b"]', "[1]",
                     '[["L","Dr",1]]', '[["L","Dr",1,2]]', '[["L","dr",1]]', '[["L","Dr",true]]', '[["L","Dr",1.0]]',
                     '[["L","Cr",' + "9" * 4301 + "]]", '[["L","Cr",1]' + ",[]" + "]", '[["L",["Dr"],1]]',
                     "[" * 3000 + "]" * 3000, '{"a":' * 3000 + "1" + "}" * 3000]),
    JSON_TEXT,
)


@st.composite
def near_revisions(draw: st.DrawFn) -> str:
    """A revision's fields, some dropped, repeated, replaced or joined by unknown ones, in any order."""
    seed = json.loads(draw(st.sampled_from(SEEDS[:3])))
    pairs = [(key, json.dumps(value, ensure_ascii=draw(st.booleans()))) for key, value in seed.items()]
    for _ in range(draw(st.integers(0, 4))):
        key = draw(st.sampled_from([*seed, "reason", "extra", "V", ""]))
        what = draw(st.sampled_from(["replace", "repeat", "drop"]))
        value = draw(FIELD_VALUES)
        if what == "drop":
            pairs = [pair for pair in pairs if pair[0] != key]
        elif what == "repeat":
            pairs.insert(draw(st.integers(0, len(pairs))), (key, value))
        else:
            pairs = [(k, value if k == key else v) for k, v in pairs] if key in seed else [*pairs, (key, value)]
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in pairs) + "}"


@DIFFERENTIAL
@given(text=near_revisions())
def test_a_near_revision_decodes_or_is_refused_as_it_was(text: str) -> None:
    """Mostly well-formed JSON with one field or a few wrong, where a typed decoder could differ."""
    assert outcome(model.decode_revision, text) == outcome(previous_decode_revision, text)


def test_nesting_is_refused_past_a_fixed_depth_whatever_the_stack() -> None:
    """Every replica refuses the same: up to `MAX_DEPTH` is read, deeper is refused, whether the
    caller is near the top of the stack or deep in it, and however deep the input goes."""
    import sys

    def outcomes(depth: int) -> list[tuple[str, str]]:
        raws = ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth)
        return [outcome(canonical.loads, r) for raw in raws for r in (raw, raw.encode(), raw.encode("utf-16"))]

    def from_deep_in_the_stack(frames: int, depth: int) -> list[tuple[str, str]]:
        return from_deep_in_the_stack(frames - 1, depth) if frames else outcomes(depth)

    refused = ("ValueError", "JSON is nested too deeply")
    limit = sys.getrecursionlimit()
    for depth in (1, canonical.MAX_DEPTH - 1, canonical.MAX_DEPTH):
        assert all(kind == "value" for kind, _ in outcomes(depth)), depth
        assert from_deep_in_the_stack(limit // 2, depth) == outcomes(depth)
    for depth in (canonical.MAX_DEPTH + 1, 500, limit - 20, limit + 5, 5 * limit):
        assert outcomes(depth) == [refused] * 6, depth
        assert from_deep_in_the_stack(limit // 2, depth) == [refused] * 6, depth


#: Writes by three replicas to a few keys of two maps: a value set, or the key deleted (None).
WRITES = st.lists(st.tuples(st.integers(0, 2), st.sampled_from(schema.MASTERS_MAPS[:2]), st.sampled_from("abc"),
                            st.none() | st.text(max_size=4) | st.integers(-9, 9)), max_size=14)


@DIFFERENTIAL
@given(earlier=WRITES, later=WRITES)
def test_a_watch_reports_each_value_as_the_map_then_holds_it(earlier: list[Any], later: list[Any]) -> None:
    """`check_change` checks the values the update's event reported instead of reading the map: the
    same, whatever concurrent writes, overwrites and deletions the update brings."""
    replicas = [schema.new_doc(schema.MASTERS, client_id=n + 1) for n in range(3)]
    receiver = schema.new_doc(schema.MASTERS, client_id=9)

    def write(writes: list[Any]) -> None:
        for writer, map_name, key, value in writes:
            values = schema.root(replicas[writer], map_name)
            if value is not None:
                values[key] = value
            elif key in values:
                del values[key]

    write(earlier)
    for replica in replicas:
        receiver.apply_update(replica.get_update())
    before = [replica.get_state() for replica in replicas]
    write(later)
    watch = Watch(receiver, schema.MASTERS)
    try:
        for replica, state in zip(replicas, before):
            receiver.apply_update(replica.get_update(state))
    finally:
        watch.close()
    for map_name, keys in watch.changed.items():
        values = schema.root(receiver, map_name)
        for key, action in keys.items():
            if action != "delete":
                assert watch.values[map_name][key] == values[key]
