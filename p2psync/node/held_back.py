"""Entries a stricter dated rule refuses, taken back out of books that applied them before.

When the head office makes a dated rule stricter (a later sync-after date, a period lock), its policy
records what it held of the books the date concerns; every office judges an entry beyond those
positions by the new date (`DatedRule.judging`). An office that applied such an entry before it held
that policy, because the entry cited an older one, would keep what the others refuse: on adopting the
policy it moves the entry, and what its author built on it in that document, to the quarantine and
rebuilds its books from the log. The verdict is the receivers' own (`admit.check_sync_after`,
`admit.check_unlocked`), so an office withdraws exactly what an office that held the policy refuses.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING

from sqlmodel import Session

from p2psync.books import admit, yupdate
from p2psync.books.model import Revision, decode_revision
from p2psync.errors import P2PSyncError, RuleViolation
from p2psync.node import quarantine
from p2psync.store import log
from p2psync.trust.policy import DATED_RULES, LOCK_UNTIL, SYNC_AFTER, Policy

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)

WITHDRAWN = "{reason} (withdrawn here when the policy setting that date arrived after the entry)"


def withdraw(node: Node, before: Policy) -> int:
    """Apply the stricter changes the current policy adds to `before`; how many entries were withdrawn."""
    policy = node.trust.policy
    rules = [name for name in DATED_RULES if set(policy.rule(name).held) - set(before.rule(name).held)]
    if not rules:  # nearly every policy: no write transaction for it
        return 0
    withdrawn = 0
    with node.db.write() as session:
        for (doc, author), (seq, reason) in _first_refused(session, policy, before, rules).items():
            for lost_seq, envelope in log.drop_from(session, doc, author, seq):
                quarantine.keep(session, envelope, doc, author, lost_seq, WITHDRAWN.format(reason=reason))
                withdrawn += 1
    if withdrawn:
        logger.warning("withdrew %d entries a newer sync-after or lock date refuses; rebuilding the books", withdrawn)
        node.store.rebuild()
    return withdrawn


def _first_refused(session: Session, policy: Policy, before: Policy,
                   rules: list[str]) -> dict[tuple[str, str], tuple[int, str]]:
    """Per (document, author), the first entry applied here that the new policy judges by another date
    than `before` did and refuses, with the reason a receiver gives."""
    first: dict[tuple[str, str], tuple[int, str]] = {}
    documents: dict[str, dict[str, Revision]] = {}

    def held(doc: str) -> admit.RevisionReader:
        """A reader of the revisions in `doc`'s log, read only if a parent is looked up."""
        def read(rev_id: str) -> Revision | None:
            if doc not in documents:
                documents[doc] = {rev.id: rev for _id, _author, update, _envelope in log.replay(session, doc)
                                  for rev in _revisions(update)}
            return documents[doc].get(rev_id)
        return read

    for doc, author, seq, cited in log.shared_links(session, "vouchers/"):
        if (doc, author) in first:
            continue
        dates = {name: policy.rule(name).judging(doc, author, seq, cited) for name in rules}
        if all(date == before.rule(name).judging(doc, author, seq, cited) for name, date in dates.items()):
            continue
        reason = _refusal(log.update(session, doc, author, seq), dates, held(doc))
        if reason is not None:
            first[(doc, author)] = (seq, reason)
    return first


def _refusal(update: bytes, dates: dict[str, dt.date | None], held: admit.RevisionReader) -> str | None:
    """Why a receiver judging by `dates` refuses the revisions an entry's update writes (None: it does
    not)."""
    for rev in _revisions(update):
        try:
            admit.check_sync_after(rev, dates.get(SYNC_AFTER))
            admit.check_unlocked(rev, dates.get(LOCK_UNTIL), held)
        except RuleViolation as exc:
            return str(exc)
    return None


def _revisions(update: bytes) -> list[Revision]:
    """The voucher revisions an entry's update writes."""
    try:
        items = yupdate.decode_update(update).items
    except yupdate.UpdateError:
        return []
    found = []
    for item in items:
        for value in item.values:
            try:
                found.append(decode_revision(value))
            except P2PSyncError:
                continue
    return found
