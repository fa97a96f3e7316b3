"""The head office as registrar: invites, enrollment, and the policies only its root key can sign."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.books import schema
from p2psync.books.model import check_office_code
from p2psync.canonical import utc_now
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE
from p2psync.store import log, queries
from p2psync.store.db import get_setting, set_setting
from p2psync.store.tables import Invite
from p2psync.trust import enroll
from p2psync.trust.certs import issue_node_cert, to_der
from p2psync.trust.invite import MAX_WRONG_TRIES, InviteCode, derive_keys
from p2psync.trust.keys import NodeKeys, load_root, node_id, unb64
from p2psync.trust.policy import Authority, Policy
from p2psync.trust.policy import sign as sign_policy

if TYPE_CHECKING:
    from p2psync.node.office import Node

logger = logging.getLogger(__name__)

DEFAULT_TTL = dt.timedelta(minutes=15)
MAX_TTL = dt.timedelta(days=7)


def parse_ttl(text: str) -> dt.timedelta:
    """``15m``, ``2h``, ``1d`` or ``90s``."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhd])\s*", text.lower())
    if not match:
        raise InvalidInput(f"--ttl {text!r} must look like 15m, 2h or 1d")
    value, unit = int(match.group(1)), match.group(2)
    ttl = dt.timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}[unit]: value})
    if not dt.timedelta(seconds=30) <= ttl <= MAX_TTL:
        raise InvalidInput("--ttl must be between 30 seconds and 7 days")
    return ttl


def _require_head(node: Node) -> Ed25519PrivateKey:
    if not node.identity.is_head:
        raise RuleViolation("only the head office can do this; it holds the organisation's root key")
    return load_root(node.home / KEYS_DIR / ROOT_KEY_FILE)


def invite(node: Node, office: str, ttl: dt.timedelta = DEFAULT_TTL) -> tuple[str, dt.datetime]:
    """A one-time code for branch `office` (which must be in the branch master)."""
    _require_head(node)
    code_office = check_office_code(office)
    with node.db.read() as session:
        offices = {o.code: o for o in queries.offices(session)}
    if code_office not in offices:
        raise NotFound(f"office {code_office} is not in the branch master; add it with 'p2psync branch add'")
    if offices[code_office].role == "head":
        raise InvalidInput(f"{code_office} is the head office")
    code = InviteCode.new(node.trust.org)
    expires = dt.datetime.now(dt.timezone.utc) + ttl
    with node.db.write() as session:
        session.add(Invite(invite_id=code.invite_id.hex(), office=code_office, secret=code.secret, pin=code.pin,
                           created_at=utc_now(), expires_at=expires.isoformat()))
    return code.text(), expires


def handle_enroll(node: Node, raw: bytes) -> bytes:
    """Answer one enrollment request; every refusal is a reply, never an exception."""
    try:
        return _enroll(node, raw)
    except P2PSyncError as exc:
        logger.warning("enrollment refused: %s", exc)
        return enroll.refusal(str(exc))


def _enroll(node: Node, raw: bytes) -> bytes:
    root = _require_head(node)
    request = enroll.parse_request(raw)
    now = dt.datetime.now(dt.timezone.utc)
    with node.db.write() as session:
        row = session.get(Invite, request.invite_id.hex())
        if row is None:
            raise enroll.EnrollError("unknown invite code (not issued by this head office)")
        keys = derive_keys(request.invite_id, row.secret, row.pin)
        if row.attempts >= MAX_WRONG_TRIES:
            raise enroll.EnrollError("this invite code is locked after too many wrong tries; issue a new one")
        if not enroll.check_request(request, keys):
            row.attempts += 1
            session.add(row)
            left = MAX_WRONG_TRIES - row.attempts
            return enroll.refusal("wrong invite code" + (f" ({left} tries left)" if left else "; it is now locked"))
        if row.used_by is not None:
            if row.used_by == node_id(request.signing) and row.response:
                return row.response  # the same branch retrying after a lost reply
            raise enroll.EnrollError("this invite code has already been used")
        if dt.datetime.fromisoformat(row.expires_at) < now:
            raise enroll.EnrollError("this invite code has expired; issue a new one")
        office_name = next((o.name for o in queries.offices(session) if o.code == row.office), row.office)
        series = 1 + sum(1 for nid in node.trust.policy.members if node.trust.author(nid).office == row.office)
        cert = to_der(issue_node_cert(root, _root_cert(node), request.signing, request.sealing, row.office, "branch",
                                      series))
        policy = Authority(root, node.trust.ring).admit(node.trust.policy, cert)
        blob = sign_policy(policy, root)
        grant = enroll.Grant(_root_cert_der(node), cert, blob, node.identity.company, row.office, office_name)
        reply = enroll.reply(request, keys, grant)
        row.used_by = node_id(request.signing)
        row.response = reply
        session.add(row)
        set_setting(session, "policy", blob.decode())  # the new member and its used code, together
    node.trust.accept(blob)
    logger.info("enrolled node %s for office %s", row.used_by, row.office)
    return reply


def _root_cert_der(node: Node) -> bytes:
    with node.db.read() as session:
        return unb64(get_setting(session, "root_cert") or "")


def _root_cert(node: Node) -> x509.Certificate:
    return x509.load_der_x509_certificate(_root_cert_der(node))


def _reissue(node: Node, change: Any) -> Policy:
    root = _require_head(node)
    policy = change(Authority(root, node.trust.ring), node.trust.policy)
    node.adopt_policy(sign_policy(policy, root))
    return policy


def set_sync_after(node: Node, date: dt.date | None) -> Policy:
    return _reissue(node, lambda auth, p: auth.settings(p, sync_after=date.isoformat() if date else None))


def set_relays(node: Node, relays: list[str]) -> Policy:
    return _reissue(node, lambda auth, p: auth.settings(p, relays=tuple(relays)))


def revoke(node: Node, target: str) -> list[str]:
    """Revoke a node (by id or id prefix) or every node of an office; rotates the epoch key."""
    _require_head(node)
    wanted = target.strip()
    members = {nid: node.trust.author(nid) for nid in node.trust.policy.members}
    chosen = [nid for nid, m in members.items()
              if nid not in node.trust.policy.revoked
              and (m.office == wanted.upper() or (len(wanted) >= 8 and nid.startswith(wanted.lower())))]
    if not chosen:
        raise NotFound(f"no active node or office matches {target!r}")
    if any(members[nid].is_head for nid in chosen):
        raise RuleViolation("the head office cannot revoke itself")
    with node.db.read() as session:
        docs = [d for d in log.documents(session) if not schema.parse_doc_name(d).local]
        cutoffs = {nid: {d: s for d in docs if (s := log.vector(session, d).get(nid, 0))} for nid in chosen}
    for nid in chosen:
        _reissue(node, lambda auth, p, nid=nid: auth.revoke(p, nid, cutoffs[nid]))
    return chosen


def enroll_here(head: Node, home: Path, office: str) -> Node:
    """Register a branch whose home is on this machine: the same exchange as ``join``, in process."""
    from p2psync.node.office import Node as NodeClass

    code = InviteCode.parse(invite(head, office)[0])
    keys = NodeKeys.generate()
    request = enroll.request(code, keys)
    enrolled = enroll.read_reply(handle_enroll(head, request), code, request, keys)
    return NodeClass.join(home, enrolled, keys)
