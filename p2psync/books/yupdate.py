"""A decoder of Yjs v1 updates and state vectors: what an update would do, read before pycrdt sees it.

A signed entry is only its author's claim, and map events show only part of what an update does: a
delete set for clocks that do not exist yet, or structs under another client's id, change the
document later and silently. So every receiver reads the update itself (the structs and the delete
set of the Yjs v1 encoding, as lib0 writes them) and refuses what the author may not do
(`p2psync.books.admit.check_update`). This module only decodes; it accepts every well-formed update
and raises `UpdateError` with the offset for anything else, so a truncated or inflated update is
one precise refusal, never a crash.

Encoding (Yjs ``encoding.js``/``updates.js``, lib0 ``encoding.js``): an update is
``varuint groups, {varuint structs, varuint client, varuint clock, struct*}*, delete set``; a struct
is one info byte (low five bits: the content kind; 0x80 origin, 0x40 right origin, 0x20 parent key)
and its fields; a delete set is ``varuint clients, {varuint client, varuint ranges,
{varuint clock, varuint length}*}*``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2psync.errors import InvalidInput

#: Struct kinds (the info byte's low five bits).
GC, DELETED, JSON, BINARY, STRING, EMBED, FORMAT, TYPE, ANY, DOC, SKIP = range(11)
_ORIGIN, _RIGHT_ORIGIN, _PARENT_SUB = 0x80, 0x40, 0x20

#: Bounds on counts read from the wire, so a few bytes cannot ask for a huge allocation or loop:
#: no honest update of one entry comes near them.
MAX_ITEMS = 1 << 22
MAX_DEPTH = 64


class UpdateError(InvalidInput):
    """The bytes are not a well-formed Yjs v1 update (or state vector)."""


@dataclass(frozen=True)
class Item:
    """One struct of an update. `parent` is the root type's name when the struct names it; `parent_id`
    when it names an item; neither when the parent is inherited from an origin. `values` holds the
    decoded content of an Any (lists of plain values); other content is summarised by `kind`."""

    client: int
    clock: int
    length: int
    kind: int
    origin: tuple[int, int] | None = None
    right_origin: tuple[int, int] | None = None
    parent: str | None = None
    parent_id: tuple[int, int] | None = None
    key: str | None = None
    values: tuple[object, ...] = ()


@dataclass
class Update:
    items: list[Item] = field(default_factory=list)
    #: client -> [(clock, length)] of the delete set.
    deletes: dict[int, list[tuple[int, int]]] = field(default_factory=dict)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def fail(self, what: str) -> UpdateError:
        return UpdateError(f"malformed Yjs update at byte {self.at}: {what}")

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise self.fail("truncated")
        value = self.data[self.at]
        self.at += 1
        return value

    def uint(self) -> int:
        value, shift = 0, 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7
            if shift > 63:
                raise self.fail("integer too long")

    def count(self) -> int:
        value = self.uint()
        if value > MAX_ITEMS:
            raise self.fail(f"count {value} exceeds {MAX_ITEMS}")
        return value

    def sint(self) -> int:
        b = self.byte()
        negative, value, shift = b & 0x40, b & 0x3F, 6
        while b & 0x80:
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
            if shift > 70:
                raise self.fail("integer too long")
        return -value if negative else value

    def raw(self, length: int) -> bytes:
        if length > len(self.data) - self.at:
            raise self.fail("truncated")
        chunk = self.data[self.at:self.at + length]
        self.at += length
        return chunk

    def text(self) -> str:
        try:
            return self.raw(self.uint()).decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("text is not UTF-8") from None

    def ident(self) -> tuple[int, int]:
        return self.uint(), self.uint()

    def any(self, depth: int = 0) -> object:
        if depth > MAX_DEPTH:
            raise self.fail("value nested too deeply")
        tag = self.byte()
        if tag in (127, 126):
            return None
        if tag == 125:
            return self.sint()
        if tag == 124:
            return self.raw(4)
        if tag in (123, 122):
            return self.raw(8)
        if tag in (121, 120):
            return tag == 120
        if tag == 119:
            return self.text()
        if tag == 118:
            return {self.text(): self.any(depth + 1) for _ in range(self.count())}
        if tag == 117:
            return [self.any(depth + 1) for _ in range(self.count())]
        if tag == 116:
            return self.raw(self.uint())
        raise self.fail(f"unknown value tag {tag}")


def decode_update(data: bytes) -> Update:
    """Every struct and the delete set of a Yjs v1 update; raises `UpdateError` if malformed."""
    reader = _Reader(bytes(data))
    update = Update()
    for _ in range(reader.count()):
        structs, client, clock = reader.count(), reader.uint(), reader.uint()
        for _ in range(structs):
            item = _struct(reader, client, clock)
            update.items.append(item)
            clock += item.length
    for _ in range(reader.count()):
        client = reader.uint()
        ranges = update.deletes.setdefault(client, [])
        for _ in range(reader.count()):
            ranges.append(reader.ident())
    if reader.at != len(reader.data):
        raise reader.fail("bytes after the delete set")
    return update


def decode_state_vector(data: bytes) -> dict[int, int]:
    """client -> next clock, from an encoded state vector (``Doc.get_state()``)."""
    reader = _Reader(bytes(data))
    vector = dict(reader.ident() for _ in range(reader.count()))
    if reader.at != len(reader.data):
        raise reader.fail("bytes after the state vector")
    return vector


def _struct(reader: _Reader, client: int, clock: int) -> Item:
    info = reader.byte()
    kind = info & 0x1F
    if kind in (GC, SKIP):
        return Item(client, clock, _length(reader, reader.uint()), kind)
    origin = reader.ident() if info & _ORIGIN else None
    right_origin = reader.ident() if info & _RIGHT_ORIGIN else None
    parent = parent_id = key = None
    if not info & (_ORIGIN | _RIGHT_ORIGIN):
        if reader.uint() == 1:
            parent = reader.text()
        else:
            parent_id = reader.ident()
        if info & _PARENT_SUB:
            key = reader.text()
    length, values = _content(reader, kind)
    return Item(client, clock, _length(reader, length), kind, origin, right_origin, parent, parent_id, key, values)


def _length(reader: _Reader, length: int) -> int:
    if not 0 < length <= MAX_ITEMS * 64:
        raise reader.fail(f"struct length {length}")
    return length


def _content(reader: _Reader, kind: int) -> tuple[int, tuple[object, ...]]:
    """(length in clock ticks, decoded values for Any) of one struct's content."""
    if kind == DELETED:
        return reader.uint(), ()
    if kind == JSON:
        count = reader.count()
        for _ in range(count):
            reader.text()
        return count, ()
    if kind in (BINARY, EMBED):
        reader.raw(reader.uint())
        return 1, ()
    if kind == STRING:
        text = reader.text()
        return len(text.encode("utf-16-le")) // 2, (text,)
    if kind == FORMAT:
        reader.text()
        reader.text()
        return 1, ()
    if kind == TYPE:
        if reader.uint() in (3, 6):  # XmlElement and XmlHook carry a name
            reader.text()
        return 1, ()
    if kind == ANY:
        count = reader.count()
        return count, tuple(reader.any() for _ in range(count))
    if kind == DOC:
        reader.text()
        reader.any()
        return 1, ()
    raise reader.fail(f"unknown struct kind {kind}")
