"""Entries a newer sync-after date refuses, taken back out of books that applied them before.

When the head office changes the sync-after date, its policy records what it held of the books the
date concerns; every office judges an entry beyond those positions by the new date (`Policy.
sync_after_for`). An office that applied such an entry before it held that policy, because the entry
cited an older one, would keep what the others refuse: on adopting the policy it moves the entry, and
what its author built on it in that document, to the quarantine and rebuilds its books from the log.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from p2psync.books import schema, yupdate
from p2psync.books.model import decode_revision
from p2psync.errors import P2PSyncError
from p2psync.node import quarantine
from p2psync.store import log
from p2psync.trust.policy import Policy

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)

REASON = "dated before the sync-after date {date}, set after its author's position was exchanged: never exchanged"


def withdraw(node: Node, before: Policy) -> int:
    """Apply the date changes the current policy adds to `before`; how many entries were withdrawn."""
    policy = node.trust.policy
    changes = [(int(v), held) for v, held in policy.sync_after_held.items() if v not in before.sync_after_held]
    if not changes:  # nearly every policy: no write transaction for it
        return 0
    withdrawn = 0
    with node.db.write() as session:
        for version, held in sorted(changes):
            date = policy.sync_after_as_of(version)
            if date is not None:
                withdrawn += _withdraw(session, version, held, date)
    if withdrawn:
        logger.warning("withdrew %d entries dated before the sync-after date; rebuilding the books", withdrawn)
        node.store.rebuild()
    return withdrawn


def _withdraw(session, version: int, held: dict[str, dict[str, int]], date: dt.date) -> int:  # type: ignore[no-untyped-def]
    first_bad: dict[tuple[str, str], int] = {}
    for doc, author, seq, cited in log.shared_links(session, "vouchers/"):
        name = schema.parse_doc_name(doc)
        if (doc, author) in first_bad or name.month is None or name.month > f"{date:%Y-%m}" or cited >= version:
            continue
        if seq > held.get(doc, {}).get(author, 0) and _dates_before(log.update(session, doc, author, seq), date):
            first_bad[(doc, author)] = seq
    count = 0
    for (doc, author), seq in first_bad.items():
        for lost_seq, envelope in log.drop_from(session, doc, author, seq):
            quarantine.keep(session, envelope, doc, author, lost_seq, REASON.format(date=date))
            count += 1
    return count


def _dates_before(update: bytes, date: dt.date) -> bool:
    """Whether an entry's update writes a voucher revision dated before `date`."""
    try:
        items = yupdate.decode_update(update).items
    except yupdate.UpdateError:
        return False
    for item in items:
        for value in item.values:
            try:
                if decode_revision(value).content.date < date:
                    return True
            except P2PSyncError:
                continue
    return False
