"""Resolving a voucher's revisions to one current revision, the same on every replica.

Revisions form a DAG through their parents. The heads (revisions no other revision replaces) that
remain after concurrent amendments are ranked by `Revision.sort_key`, a cancellation above every
amendment; the highest is current and the others are conflicts: kept, listed, never merged line by
line. Concurrent cancellations agree and are no conflict; so a conflict between an amendment and a
cancellation is settled by cancelling the amendment too (`conflicts resolve --keep-cancellation`).
"""

from __future__ import annotations

from collections.abc import Iterable

from p2psync.books.model import Revision, VoucherState


def resolve(revisions: Iterable[Revision]) -> VoucherState:
    """The voucher state from all known revisions of one voucher (at least one)."""
    revs = sorted(revisions, key=lambda r: r.sort_key)
    if len(revs) == 1:  # a new voucher, as nearly every one received is: current whatever its parents
        return VoucherState(number=revs[0].number, current=revs[0], revisions=revs, conflicts=[])
    if not revs:
        raise ValueError("a voucher has at least one revision")
    replaced = {parent for rev in revs for parent in rev.parents}
    heads = [rev for rev in revs if rev.id not in replaced]
    if not heads:  # a cycle can only come from forged data; fall back to the total order
        heads = revs[-1:]
    cancels = [rev for rev in heads if rev.cancelled]
    if cancels:  # cancelled stays cancelled: a concurrent amendment loses to it, whatever its time stamp
        heads = [rev for rev in heads if not rev.cancelled] + cancels
    current = heads[-1]
    conflicts = heads[:-1]
    if current.cancelled:  # two cancellations agree that the voucher is cancelled: no conflict
        conflicts = [rev for rev in conflicts if not rev.cancelled]
    return VoucherState(number=current.number, current=current, revisions=revs, conflicts=conflicts)


def heads(revisions: Iterable[Revision]) -> list[str]:
    """Ids of the revisions an amendment made now must replace (all heads, resolving conflicts)."""
    revs = list(revisions)
    replaced = {parent for rev in revs for parent in rev.parents}
    return sorted(rev.id for rev in revs if rev.id not in replaced)
