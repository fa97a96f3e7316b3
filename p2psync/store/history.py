"""Every value each logged entry wrote, with the value it replaced: the edit history of the books,
read from the entry log (append-only, the source of truth), never from the report tables, which are
caches. The audit trail and audit exports are built from it.

A document is replayed from an empty state, entry by entry in log order (the order they were
applied, which respects every dependency), and the keys each update changed are read from pycrdt's
own map events, as the write path reads them (`books.Watch`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from sqlmodel import Session

from p2psync.books import schema
from p2psync.sqlite import raw_connection
from p2psync.store.books import Watch
from p2psync.store.log import APPLIED


@dataclass(frozen=True)
class Written:
    """One value an entry wrote: the root map, the key, the value it replaced (None: a new key) and
    the value it wrote (each a record's canonical JSON, as the document holds it)."""

    map: str
    key: str
    before: str | None
    after: str


@dataclass(frozen=True)
class EntryWrites:
    """What one logged entry wrote, and where and when this node logged it."""

    doc: str
    author: str
    seq: int
    logged_at: str
    #: Made by this node (else received from another office).
    own: bool
    writes: tuple[Written, ...]


def replay(session: Session, doc: str) -> Iterator[EntryWrites]:
    """The values every entry of `doc` wrote, in log order (of those applied: not those carried unread)."""
    rows = raw_connection(session).execute(
        f'SELECT author, seq, "update", received_at, local FROM entry WHERE doc = ? AND {APPLIED} ORDER BY id',
        (doc,))
    yield from replay_updates(doc, ((author, seq, update, at, bool(own)) for author, seq, update, at, own in rows))


def replay_updates(doc: str, updates: Iterator[tuple[str, int, bytes, str, bool]]) -> Iterator[EntryWrites]:
    """The values each update wrote, applied in the order given: (author, seq, update, logged at, own)."""
    state = schema.new_doc(doc)
    held: dict[tuple[str, str], str] = {}
    for author, seq, update, logged_at, own in updates:
        watch = Watch(state, doc)
        try:
            state.apply_update(update)
        finally:
            watch.close()
        writes = []
        for map_name, keys in sorted(watch.changed.items()):
            for key in sorted(keys):
                after = watch.values[map_name].get(key)
                if not isinstance(after, str):
                    continue  # a receiver refuses deletes and non-text values: none is ever logged
                writes.append(Written(map_name, key, held.get((map_name, key)), after))
                held[(map_name, key)] = after
        yield EntryWrites(doc, author, seq, logged_at, own, tuple(writes))
