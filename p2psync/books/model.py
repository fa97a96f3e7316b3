"""The books' records as immutable values, and their canonical JSON form in the CRDT documents.

A voucher revision is one JSON string in a document (lines included), so a merge can only ever pick
a whole revision, never mix the lines of two.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from enum import Enum
from json.encoder import encode_basestring
from typing import Any, TypeVar

import msgspec

from p2psync.books.groups import group_key
from p2psync.canonical import dumps, loads
from p2psync.errors import InvalidInput

SCHEMA_VERSION = 1
OFFICE_CODE = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,15}$")
MAX_NAME = 120
MAX_NARRATION = 1000
MAX_LINES = 500


class VoucherType(str, Enum):
    PAYMENT = "payment"
    RECEIPT = "receipt"
    CONTRA = "contra"
    JOURNAL = "journal"
    SALES = "sales"
    PURCHASE = "purchase"
    CREDIT_NOTE = "credit-note"
    DEBIT_NOTE = "debit-note"

    @property
    def prefix(self) -> str:
        """The short code in voucher numbers, e.g. ``BR1/PMT/00012``."""
        return _PREFIXES[self]

    @property
    def label(self) -> str:
        return self.value.replace("-", " ").title()

    @classmethod
    def parse(cls, text: str) -> VoucherType:
        wanted = re.sub(r"[\s_]+", "-", text.strip().lower())
        for kind in cls:
            if wanted in (kind.value, kind.prefix.lower()):
                return kind
        names = ", ".join(k.value for k in cls)
        raise InvalidInput(f"unknown voucher type {text!r}; use one of {names}")


_PREFIXES = {
    VoucherType.PAYMENT: "PMT",
    VoucherType.RECEIPT: "RCT",
    VoucherType.CONTRA: "CTR",
    VoucherType.JOURNAL: "JRN",
    VoucherType.SALES: "SAL",
    VoucherType.PURCHASE: "PUR",
    VoucherType.CREDIT_NOTE: "CRN",
    VoucherType.DEBIT_NOTE: "DBN",
}


class Side(str, Enum):
    DR = "Dr"
    CR = "Cr"


class Action(str, Enum):
    POST = "post"
    AMEND = "amend"
    CANCEL = "cancel"


class Line(msgspec.Struct, frozen=True):
    ledger: str
    side: Side
    paise: int

    @property
    def signed(self) -> int:
        """Debit positive, credit negative: the sign convention of every balance in p2psync."""
        return self.paise if self.side is Side.DR else -self.paise


class VoucherContent(msgspec.Struct, frozen=True):
    """What the user enters: the part of a voucher an amendment replaces as a whole."""

    type: VoucherType
    date: dt.date
    lines: tuple[Line, ...]
    narration: str = ""


class Revision(msgspec.Struct, frozen=True):
    """One immutable revision of a voucher: a post, an amendment or a cancellation.

    This and its parts are frozen msgspec structs rather than frozen dataclasses: one is built for
    every voucher posted or received, and a struct is built in a fifth of the time."""

    id: str
    number: str
    office: str
    content: VoucherContent
    action: Action
    parents: tuple[str, ...]
    generation: int
    author: str
    at: str
    reason: str = ""

    @property
    def cancelled(self) -> bool:
        return self.action is Action.CANCEL

    @property
    def sort_key(self) -> tuple[int, str, str]:
        """Total order used to pick a winner among concurrent revisions, identical on every node."""
        return (self.generation, self.at, self.id)


@dataclass(frozen=True)
class LedgerDef:
    """A ledger as created at one office; the same name created at two offices is two records."""

    name: str
    group: str
    office: str
    author: str
    at: str
    #: The author's entry in the masters document that created it (0 in records of older versions):
    #: tells a receiver whether a later record of the same name was made by someone who had seen it.
    seq: int = 0

    @property
    def key(self) -> str:
        return group_key(self.name)


@dataclass(frozen=True)
class GroupDef:
    name: str
    parent: str
    office: str
    author: str
    at: str
    seq: int = 0  # as `LedgerDef.seq`

    @property
    def key(self) -> str:
        return group_key(self.name)


@dataclass(frozen=True)
class Office:
    code: str
    name: str
    role: str = "branch"  # "head" or "branch"


@dataclass(frozen=True)
class Opening:
    """Opening balance of one ledger at one office (debit positive)."""

    ledger: str
    office: str
    paise: int
    author: str = ""
    at: str = ""


@dataclass
class VoucherState:
    """A voucher as resolved from all its revisions."""

    number: str
    current: Revision
    revisions: list[Revision] = field(default_factory=list)
    conflicts: list[Revision] = field(default_factory=list)


# ---------------------------------------------------------------- canonical JSON encoding


def encode_revision(rev: Revision) -> str:
    """`canonical.dumps` of the revision's fields (keys sorted), written out directly: it runs for
    every voucher posted, and building a dict for `json.dumps` cost several times more. The text is
    what every replica decodes and what is signed, so it must not change by a byte; values of other
    types than the fields declare, which the direct form does not handle, go through `dumps`."""
    c = rev.content
    try:
        lines = ",".join([f"[{_text(ln.ledger)},{_text(ln.side._value_)},{_whole(ln.paise)}]" for ln in c.lines])
        return (f'{{"action":{_text(rev.action._value_)},"at":{_text(rev.at)},"author":{_text(rev.author)},'
                f'"date":{_text(c.date.isoformat())},"gen":{_whole(rev.generation)},"id":{_text(rev.id)},'
                f'"lines":[{lines}],"narration":{_text(c.narration)},"number":{_text(rev.number)},'
                f'"office":{_text(rev.office)},"parents":[{",".join([_text(p) for p in rev.parents])}],'
                f'"reason":{_text(rev.reason)},"type":{_text(c.type._value_)},"v":{SCHEMA_VERSION}}}')
    except TypeError:
        return dumps(_revision_fields(rev))


def _revision_fields(rev: Revision) -> dict[str, Any]:
    c = rev.content
    return {
        "v": SCHEMA_VERSION,
        "id": rev.id,
        "number": rev.number,
        "office": rev.office,
        "type": c.type.value,
        "date": c.date.isoformat(),
        "narration": c.narration,
        "lines": [[ln.ledger, ln.side.value, ln.paise] for ln in c.lines],
        "action": rev.action.value,
        "parents": list(rev.parents),
        "gen": rev.generation,
        "author": rev.author,
        "at": rev.at,
        "reason": rev.reason,
    }


#: A JSON string literal as `json.dumps(..., ensure_ascii=False)` writes it (its own C function);
#: raises `TypeError` for anything but text.
_text = encode_basestring


def _whole(value: int) -> str:
    """A JSON integer as `json.dumps` writes it; `TypeError` for anything but an `int` (a bool, say)."""
    if type(value) is not int:
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return int.__repr__(value)


class _RevisionWire(msgspec.Struct, forbid_unknown_fields=True):
    """A revision as `encode_revision` writes it, for msgspec to decode and type-check in one pass."""

    action: Action
    at: str
    author: str
    date: str
    gen: int
    id: str
    lines: tuple[tuple[str, Side, int], ...]
    narration: str
    number: str
    office: str
    parents: tuple[str, ...]
    type: VoucherType
    v: int
    reason: str = ""


_REVISION_WIRE = msgspec.json.Decoder(_RevisionWire)


def decode_revision(text: Any) -> Revision:
    """Decode a revision from a document; raises `InvalidInput` on any malformed field (the first in
    the order below). It runs for every voucher received, hence the positional arguments.

    msgspec reads and type-checks a well-formed revision in an eighth of the time `loads` and the
    checks below take. Every input it does not accept as exactly what they accept goes on to them,
    which decide and word the refusal: text with a ``\\u`` escape (`loads` refuses lone surrogates,
    msgspec words it otherwise), a field unknown to the struct (whose value msgspec would skip
    unchecked), and anything msgspec or the date or version check refuses."""
    if type(text) is str and "\\u" not in text:
        try:
            wire = _REVISION_WIRE.decode(text)
            if wire.v == SCHEMA_VERSION:
                return Revision(wire.id, wire.number, wire.office,
                                VoucherContent(wire.type, dt.date.fromisoformat(wire.date),
                                               tuple([Line(*line) for line in wire.lines]), wire.narration),
                                wire.action, wire.parents, wire.gen, wire.author, wire.at, wire.reason)
        except ValueError:  # msgspec's errors, a bad date, and text holding a lone surrogate
            pass
    data = _load_object(text, "voucher revision")
    try:
        lines = tuple([_decode_line(item) for item in _list(data["lines"])])
        content = VoucherContent(_member(VoucherType, data["type"]), dt.date.fromisoformat(_str(data["date"])),
                                 lines, _str(data["narration"]))
        rev = Revision(_str(data["id"]), _str(data["number"]), _str(data["office"]), content,
                       _member(Action, data["action"]), tuple([_str(p) for p in _list(data["parents"])]),
                       _int(data["gen"]), _str(data["author"]), _str(data["at"]), _str(data.get("reason", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed voucher revision: {exc}") from None
    if data.get("v") != SCHEMA_VERSION:
        raise InvalidInput(f"voucher revision has unsupported schema version {data.get('v')!r}")
    return rev


def _decode_line(item: Any) -> Line:
    if not isinstance(item, list) or len(item) != 3:
        raise ValueError("a line must be [ledger, side, paise]")
    ledger, side, paise = item
    return Line(_str(ledger), _member(Side, side), _int(paise))


_MEMBERS: dict[type[Enum], dict[Any, Any]] = {}

E = TypeVar("E", bound=Enum)


def _member(kind: type[E], value: Any) -> E:
    """`kind(value)` at a tenth of the cost (a dictionary, not Enum's lookup machinery): decoding
    runs for every voucher received. Raises as `kind(value)` does."""
    members = _MEMBERS.get(kind)
    if members is None:
        members = _MEMBERS[kind] = {member.value: member for member in kind}
    try:
        return members[value]  # type: ignore[no-any-return]
    except KeyError:
        raise ValueError(f"{value!r} is not a valid {kind.__name__}") from None


def encode_ledger(ledger: LedgerDef) -> str:
    return dumps(
        {"name": ledger.name, "group": ledger.group, "office": ledger.office,
         "author": ledger.author, "at": ledger.at, **({"seq": ledger.seq} if ledger.seq else {})}
    )


def decode_ledger(text: Any) -> LedgerDef:
    data = _load_object(text, "ledger")
    try:
        return LedgerDef(_str(data["name"]), _str(data["group"]), _str(data["office"]),
                         _str(data["author"]), _str(data["at"]), _record_seq(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed ledger record: {exc}") from None


def _record_seq(data: dict[str, Any]) -> int:
    seq = _int(data.get("seq", 0))
    if not 0 <= seq < 2**62:
        raise ValueError("seq out of range")
    return seq


def encode_group(group: GroupDef) -> str:
    return dumps(
        {"name": group.name, "parent": group.parent, "office": group.office,
         "author": group.author, "at": group.at, **({"seq": group.seq} if group.seq else {})}
    )


def decode_group(text: Any) -> GroupDef:
    data = _load_object(text, "group")
    try:
        return GroupDef(_str(data["name"]), _str(data["parent"]), _str(data["office"]),
                        _str(data["author"]), _str(data["at"]), _record_seq(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed group record: {exc}") from None


def encode_office(office: Office) -> str:
    return dumps({"code": office.code, "name": office.name, "role": office.role})


def decode_office(text: Any) -> Office:
    data = _load_object(text, "office")
    try:
        office = Office(_str(data["code"]), _str(data["name"]), _str(data["role"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed office record: {exc}") from None
    if office.role not in ("head", "branch"):
        raise InvalidInput(f"office {office.code} has unknown role {office.role!r}")
    return office


def encode_opening(opening: Opening) -> str:
    return dumps({"ledger": opening.ledger, "office": opening.office, "paise": opening.paise,
                  "author": opening.author, "at": opening.at})


def decode_opening(text: Any) -> Opening:
    data = _load_object(text, "opening balance")
    try:
        return Opening(_str(data["ledger"]), _str(data["office"]), _int(data["paise"]),
                       _str(data["author"]), _str(data["at"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(f"malformed opening balance: {exc}") from None


def _load_object(text: Any, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InvalidInput(f"malformed {what}: not a JSON string")
    try:
        data = loads(text)
    except ValueError:
        raise InvalidInput(f"malformed {what}: not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"malformed {what}: not a JSON object")
    return data


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {type(value).__name__}")
    return value


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {type(value).__name__}")
    return value


def voucher_number(office: str, kind: VoucherType, series: int, position: int) -> str:
    """``BR1/SAL/00012`` for an office's first machine; ``BR1/SAL/2-00012`` for its second, and so on.

    Each machine an office ever had (a replaced laptop, say) numbers in a series of its own, given
    at registration, so numbers are unique in the organisation by construction."""
    tail = f"{position:05d}" if series == 1 else f"{series}-{position:05d}"
    return f"{office}/{kind.prefix}/{tail}"


_NUMBER = re.compile(r"[^/]+/[A-Z]{3}/(?:(\d{1,4})-)?(\d{1,9})")


def number_series(number: str) -> tuple[int, int]:
    """(series, position) of a voucher number; (0, 0) if it is not one this code writes."""
    match = _NUMBER.fullmatch(number)
    if not match:
        return 0, 0
    return int(match.group(1) or 1), int(match.group(2))


def check_office_code(code: str) -> str:
    code = code.strip().upper()
    if not OFFICE_CODE.match(code):
        raise InvalidInput(
            f"office code {code!r} must be 1-16 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return code


def check_name(name: str, what: str) -> str:
    cleaned = " ".join(name.split())
    if not cleaned:
        raise InvalidInput(f"{what} name is empty")
    if len(cleaned) > MAX_NAME:
        raise InvalidInput(f"{what} name is longer than {MAX_NAME} characters")
    if any(ord(ch) < 32 for ch in cleaned) or "@" in cleaned:
        raise InvalidInput(f"{what} name {cleaned!r} contains a control character or '@'")
    return cleaned
