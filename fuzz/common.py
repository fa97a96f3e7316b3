"""What the fuzz harnesses and the property tests share: a small real organisation to draw valid
inputs from, a splitter that turns one fuzz input into several frames, and `refused_only`, the oracle
every decoder must pass: an input gives a result or one of the decoder's own errors, nothing else.

The organisation (a head office with vouchers, a pending invite, an enrollment exchange) is built
once per process in a temporary home that is removed at exit.
"""

from __future__ import annotations

import atexit
import functools
import logging
import shutil
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.books.drafts import make_draft
from p2psync.node import registrar
from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE
from p2psync.node.office import Node
from p2psync.store import queries
from p2psync.store.db import get_setting
from p2psync.trust import enroll
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import NodeKeys, load_root, unb64

T = TypeVar("T")

#: Separates frames in one fuzz input (a byte pair rare in valid frames).
FRAME_SEPARATOR = b"\xf0\x9f"


@dataclass(frozen=True)
class World:
    """A head office and valid encodings of everything a peer, relay or file can hand it."""

    home: Path
    head: Node
    root: Ed25519PrivateKey
    root_cert: bytes
    head_cert: bytes
    policy: bytes
    entries: tuple[bytes, ...]
    invite: str
    joiner: NodeKeys
    enroll_request: bytes
    enroll_reply: bytes

    @property
    def org(self) -> str:
        return self.head.trust.org

    def fingerprint(self) -> tuple[Any, ...]:
        """The head office's books in brief: what a refused input must leave exactly as it was."""
        with self.head.db.read() as session:
            vouchers = [(v.number, v.amount, v.cancelled, v.current) for v in queries.vouchers(session)]
            balances = sorted(map(repr, queries.balances(session)))
        return self.head.vectors(), vouchers, balances


@functools.cache
def world() -> World:
    base = Path(tempfile.mkdtemp(prefix="p2psync-fuzz-"))
    atexit.register(shutil.rmtree, base, True)
    head = Node.create_head(base / "HO", "Fuzz Traders", "HO", "Head Office")
    atexit.register(head.close)
    head.set_local(books_begin="2020-04-01")  # the fixed dates below stay inside its window as years pass
    head.add_office("BR1", "Branch One")
    for name, group in (("Cash", "Cash-in-Hand"), ("Bank", "Bank Accounts"), ("Rent", "Indirect Expenses"),
                        ("Sales", "Sales Accounts"), ("Debtors", "Sundry Debtors")):
        head.add_ledger(name, group)
    head.post(make_draft("payment", "2026-04-01", ["Rent=1250.50"], ["Cash=1250.50"], "April rent"))
    head.post(make_draft("sales", "2026-05-02", ["Debtors=99.99"], ["Sales=99.99"], "Invoice 7"))
    spent = InviteCode.parse(registrar.invite(head, "BR1")[0])
    joiner = NodeKeys.generate()
    request = enroll.request(spent, joiner)
    reply = registrar.handle_enroll(head, request)
    invite = registrar.invite(head, "BR1")[0]  # a second code, left unused for the harnesses
    with head.db.read() as session:
        root_cert, cert = unb64(get_setting(session, "root_cert") or ""), unb64(get_setting(session, "cert") or "")
    return World(base / "HO", head, load_root(base / "HO" / KEYS_DIR / ROOT_KEY_FILE), root_cert, cert,
                 head.policy_blob(), tuple(head.entries()), invite, joiner, request, reply)


def refused_only(errors: tuple[type[BaseException], ...], call: Callable[[], T]) -> T | None:
    """Run `call`; one of `errors` means the input was refused (None). Any other exception is a
    defect and propagates to the fuzzer or test."""
    try:
        return call()
    except errors:
        return None


def frames(data: bytes) -> Iterator[str | bytes]:
    """One fuzz input as a sequence of websocket frames: a leading ``T`` makes a text frame (decoded
    as a websocket would have required: valid UTF-8, else replaced), anything else a binary one."""
    for part in data.split(FRAME_SEPARATOR):
        if part[:1] == b"T":
            yield part[1:].decode("utf-8", "replace")
        elif part:
            yield part[1:]


def join_frames(items: list[str | bytes]) -> bytes:
    """The inverse of `frames`, for building seeds."""
    return FRAME_SEPARATOR.join(b"T" + f.encode() if isinstance(f, str) else b"B" + f for f in items)


def resign_entry(blob: bytes, header: bytes, signer: Ed25519PrivateKey) -> bytes:
    """An entry with its header replaced and signed again by a member's key: what a buggy or
    compromised member could send, so checks past the signature get fuzzed too."""
    (old_len,) = struct.unpack_from(">H", blob, 4)
    header = header[:0xFFFF]  # the length field has 16 bits: no entry can carry a longer header
    rest = blob[6 + old_len:-64]
    body = blob[:4] + struct.pack(">H", len(header)) + header + rest
    return body + signer.sign(body)


@contextmanager
def quiet_logs() -> Iterator[None]:
    """Refusals are logged as warnings; a fuzz run would print millions of them."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)
