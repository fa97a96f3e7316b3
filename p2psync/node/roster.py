"""The member nodes of the organisation as this office knows them: which office and series each
belongs to, when it was enrolled and when it was last heard from. The head office uses it to find
and remove nodes that were enrolled but never came online (a join that failed after the head office
had answered, a code used on a machine that was then lost)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from cryptography import x509
from sqlmodel import Session, func, select

from p2psync.books import schema
from p2psync.errors import NotFound, RuleViolation
from p2psync.node import registrar
from p2psync.node.office import Node
from p2psync.store import log
from p2psync.store.tables import PeerRow, SyncLogRow
from p2psync.trust.certs import BACKDATE, Member

Data = dict[str, Any]


def nodes(node: Node) -> list[Data]:
    """Every node in the policy, revoked ones too, oldest enrollment first."""
    policy = node.trust.policy
    with node.db.read() as session:
        authored = _authored(session)
        seen = _last_seen(session)
    rows = [_row(node, node.trust.author(nid), authored.get(nid, 0), seen.get(nid, "")) for nid in policy.members]
    # certificates are dated to the second: the head office's comes first, then each office's machines
    # in their series order, whatever their random node ids
    return sorted(rows, key=lambda r: (r["enrolled_at"], r["role"] != "head", r["office"], r["series"], r["node"]))


def _row(node: Node, member: Member, entries: int, last_seen: str) -> Data:
    this = member.node_id == node.identity.node_id
    return {
        "node": member.node_id, "office": member.office, "role": member.role, "series": member.series,
        "enrolled_at": _enrolled_at(member), "last_seen": last_seen, "entries": entries,
        "this_node": this, "revoked": member.node_id in node.trust.policy.revoked,
        "came_online": this or bool(last_seen) or entries > 0,
    }


def _enrolled_at(member: Member) -> str:
    """When its certificate was issued: certificates are dated `BACKDATE` before issue, for clocks
    that run slow."""
    issued = x509.load_der_x509_certificate(member.der).not_valid_before_utc + BACKDATE
    return issued.astimezone(dt.UTC).isoformat(timespec="seconds")


def _authored(session: Session) -> dict[str, int]:
    """Entries held from each author in the shared documents (sequences count from 1 without gaps)."""
    counts: dict[str, int] = {}
    for doc in log.documents(session):
        if not schema.parse_doc_name(doc).local:
            for author, seq in log.vector(session, doc).items():
                counts[author] = counts.get(author, 0) + seq
    return counts


def _last_seen(session: Session) -> dict[str, str]:
    """The last time each node had a link with this one, from the peers table and the sync log."""
    seen = {p.key: p.last_seen for p in session.exec(select(PeerRow).where(PeerRow.kind == "node")) if p.last_seen}
    for peer, at in session.exec(select(SyncLogRow.peer, func.max(SyncLogRow.at)).group_by(SyncLogRow.peer)):
        seen[peer] = max(seen.get(peer, ""), at or "")
    return seen


def remove_unseen(node: Node, target: str) -> Data:
    """At the head office: revoke the one node `target` (its id or an id prefix of 8 or more) that never
    came online. A node that did is refused: losing one of those is ``p2psync revoke``, a decision of
    its own."""
    row = _one(nodes(node), target)
    if row["this_node"]:
        raise RuleViolation("the head office cannot remove itself")
    if row["revoked"]:
        raise RuleViolation(f"node {row['node'][:16]} of {row['office']} is already revoked")
    if row["came_online"]:
        raise RuleViolation(f"node {row['node'][:16]} of {row['office']} has come online (last seen "
                            f"{row['last_seen'][:19] or 'through the entries it made'}); to shut it out use "
                            f"'p2psync revoke {row['node'][:16]}'")
    registrar.revoke(node, row["node"])
    return row


def _one(rows: list[Data], target: str) -> Data:
    wanted = target.strip().lower()
    if len(wanted) < 8:
        raise NotFound(f"give at least 8 characters of the node's id ({target!r} is too short); "
                       "'p2psync branch nodes' lists them")
    found = [r for r in rows if r["node"].startswith(wanted)]
    if len(found) != 1:
        raise NotFound(f"no node id starts with {target!r}; 'p2psync branch nodes' lists them" if not found
                       else f"{len(found)} node ids start with {target!r}; give more of it")
    return found[0]
