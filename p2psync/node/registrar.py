"""The head office as registrar: invites, enrollment, and the policies only its root key can sign."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from p2psync.books import schema
from p2psync.books.model import check_office_code
from p2psync.canonical import utc_now
from p2psync.errors import InvalidInput, NotFound, P2PSyncError, RuleViolation
from p2psync.node.home import KEYS_DIR, ROOT_KEY_FILE
from p2psync.node.office import CATCHING_UP_FIX
from p2psync.store import log, queries
from p2psync.store.db import get_setting, set_setting
from p2psync.store.tables import Invite
from p2psync.trust import enroll
from p2psync.trust.certs import issue_node_cert, to_der
from p2psync.trust.invite import SECRET_BYTES, AttemptLimit, EnrollKeys, InviteCode, derive_keys
from p2psync.trust.keys import NodeKeys, load_root, node_id, unb64
from p2psync.trust.policy import LOCK_UNTIL, SYNC_AFTER, Authority, Policy
from p2psync.trust.policy import sign as sign_policy
from p2psync.trust.scopes import EVERY_OFFICE

if TYPE_CHECKING:
    from sqlmodel import Session

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
    """The root key, for the head office's acts that sign a policy (an invite leads to one)."""
    if not node.identity.is_head:
        raise RuleViolation("only the head office can do this; it holds the organisation's root key")
    check_may_sign(node)
    return load_root(node.home / KEYS_DIR / ROOT_KEY_FILE)


def check_may_sign(node: Node) -> None:
    """A head office restored from a backup may hold an older policy than the offices do: one it
    signed now would take a version number they already hold, so they would refuse it (or hold two
    different policies of one version). It signs again once it has caught up, the newest policy with it."""
    if node.identity.is_head and node.catching_up:
        raise RuleViolation("this head office is catching up after a restore: its offices may hold a newer policy "
                            "than the backup, so it signs none (invites, revocations, sync-after date, relays) before "
                            f"then; {CATCHING_UP_FIX}")


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


#: The one answer to every enrollment refused over the invite (unknown id, wrong code, expired,
#: used by another node): an outsider must not learn which invite ids exist. The reason is logged here.
REFUSED = ("the invite code is not valid: unknown here, wrong, expired or already used; "
           "ask the head office for a new code")
TOO_MANY = "too many enrollment requests at the head office; try again in a few minutes"
#: Tried against unknown invite ids, so that they cost the same key derivation and MAC check as a known one.
_DECOY_SECRET = os.urandom(SECRET_BYTES)


class _Refused(enroll.EnrollError):
    """Enrollment refused over the invite; the message is for the head office's log only."""


@dataclass
class Gate:
    """The head office's limit on enrollment attempts from the network, and the clock it reads. Used
    from the node's one worker thread, like the database, so it needs no lock."""

    limit: AttemptLimit = field(default_factory=AttemptLimit)
    clock: Callable[[], float] = time.monotonic
    refused: int = 0  # attempts refused over the limit since it last let one through


_gates: weakref.WeakKeyDictionary[Node, Gate] = weakref.WeakKeyDictionary()


def enroll_gate(node: Node) -> Gate:
    """This head office's gate (one per open node, kept in memory: a restart refills it)."""
    return _gates.setdefault(node, Gate())


def handle_enroll(node: Node, raw: bytes) -> bytes:
    """Answer one enrollment request from the network; every refusal is a reply, never an exception.
    Requests over the limit are refused unread: they test no code and lock nothing."""
    gate = enroll_gate(node)
    if not gate.limit.allow(gate.clock()):
        if not gate.refused:
            logger.warning("enrollment requests over the limit (%s, then %s a minute): refusing them unread",
                           gate.limit.burst, gate.limit.per_second * 60)
        gate.refused += 1
        return enroll.refusal(TOO_MANY)
    if gate.refused:
        logger.warning("%d enrollment requests were refused over the limit", gate.refused)
        gate.refused = 0
    return _answer(node, raw)


def _answer(node: Node, raw: bytes) -> bytes:
    """Enroll or refuse; a refusal over the invite is `REFUSED` whatever its reason."""
    try:
        return _enroll(node, raw)
    except _Refused as exc:
        logger.warning("enrollment refused: %s", exc)
        return enroll.refusal(REFUSED)
    except P2PSyncError as exc:
        logger.warning("enrollment refused: %s", exc)
        return enroll.refusal(str(exc))


def _enroll(node: Node, raw: bytes) -> bytes:
    root = _require_head(node)
    request = enroll.parse_request(raw)
    with node.db.write() as session:
        row, keys = _proven_invite(session, request)
        if row.used_by is not None and row.response:
            return row.response  # the same branch retrying after a lost reply
        _check_client_id(node, node_id(request.signing))
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


def _check_client_id(node: Node, new_node: str) -> None:
    """Refuse keys whose Yjs client id is a member's: a node writes only under its own client id, so two
    members sharing one could overwrite each other's items (it takes some 2^32 key pairs to find one on
    purpose). The invite stays unused: new keys can use it."""
    clash = schema.client_id(new_node)
    if any(schema.client_id(member) == clash for member in node.trust.policy.members if member != new_node):
        raise P2PSyncError("this node's keys collide with a member's (Yjs client id); run 'p2psync join' again, "
                           "which makes new keys")


def _proven_invite(session: Session, request: enroll.Request) -> tuple[Invite, EnrollKeys]:
    """The invite whose code `request` proves it holds, still usable by its sender, or `_Refused`
    naming why. Nothing is written on refusal: wrong tries lock nothing, so an outsider who knows an
    invite id cannot spoil it; guessing is bounded by the gate and the expiry instead."""
    row = session.get(Invite, request.invite_id.hex())
    secret, pin = (row.secret, row.pin) if row else (_DECOY_SECRET, request.pin)
    keys = derive_keys(request.invite_id, secret, pin)
    proven = enroll.check_request(request, keys)
    label = f"invite {request.invite_id.hex()}"
    if row is None:
        raise _Refused(f"{label} was not issued by this head office")
    label += f" for {row.office}"
    if not proven:
        raise _Refused(f"{label}: wrong code (the request's MAC does not match)")
    if row.used_by is not None:
        if row.used_by != node_id(request.signing) or not row.response:
            raise _Refused(f"{label} was already used by node {row.used_by[:16]}")
    elif dt.datetime.fromisoformat(row.expires_at) < dt.datetime.now(dt.timezone.utc):
        raise _Refused(f"{label} expired at {row.expires_at}")
    return row, keys


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


HEAD_ONLY_LOCK = ("only the head office can lock or unlock a period (it signs the policy with the organisation's "
                  "root key); ask it to run 'p2psync settings --lock-until DATE'")


def set_sync_after(node: Node, date: dt.date | None) -> Policy:
    """A new sync-after date (`set_dated_rule`)."""
    return set_dated_rule(node, SYNC_AFTER, date)


def set_lock_until(node: Node, date: dt.date | None) -> Policy:
    """Lock the books up to `date`, or unlock them (an earlier date, or None): a new policy version
    either way, so every lock and unlock stays in the policy's history."""
    if not node.identity.is_head:
        raise RuleViolation(HEAD_ONLY_LOCK)
    return set_dated_rule(node, LOCK_UNTIL, date)


def set_dated_rule(node: Node, name: str, date: dt.date | None) -> Policy:
    """A new date for one of the policy's dated rules. A change that refuses more records what the head
    office holds of the books it could concern (`_concerned`): entries beyond those positions are judged
    by the new date at every office, whatever older policy they cite (`DatedRule`)."""
    text = date.isoformat() if date else None
    rule = node.trust.policy.rule(name)
    if text == rule.date:
        return _reissue(node, lambda auth, p: auth.settings(p))
    changes: dict[str, Any] = {name: text}
    if date is not None and rule.stricter(date):
        changes[f"{name}_held"] = {**rule.held, str(node.trust.policy.version + 1): _concerned(node, date)}
    return _reissue(node, lambda auth, p: auth.settings(p, **changes))


def _concerned(node: Node, date: dt.date) -> dict[str, dict[str, int]]:
    """What this office holds of the shared voucher documents a date could concern: those of months up
    to the date's, and those holding an amended voucher (an amendment stays in its voucher's first
    document whatever date it gives, so only these can hold a revision dated earlier than their month)."""
    with node.db.read() as session:
        amended = set(queries.amended_docs(session))
    return {doc: vector for doc, vector in node.vectors().items()
            if (month := schema.parse_doc_name(doc).month) is not None
            and (month <= f"{date:%Y-%m}" or doc in amended)}


def set_relays(node: Node, relays: list[str]) -> Policy:
    return _reissue(node, lambda auth, p: auth.settings(p, relays=tuple(relays)))


def use_scope_keys(node: Node) -> Policy:
    """Move an organisation made before read scopes to per-scope keys (a new epoch): from then on each
    office reads only what the policy grants it. Entries sealed before stay under the old epochs' key,
    which every member holds."""
    if node.trust.policy.scoped_from:
        return node.trust.policy
    return _reissue(node, lambda auth, p: auth.scope_keys(p))


def move_to_scopes(node: Node) -> Policy | None:
    """At a head office that may sign, when it starts (``run``, ``sync``) or catches up after a
    restore: move an organisation made before read scopes to them (`use_scope_keys`), so that an
    upgrade of the head office brings the defaults in. The new policy, or None when there was
    nothing to do here (a branch, scopes in force already, catching up, or no root key to sign with,
    which is logged: the office keeps running)."""
    if not node.identity.is_head or node.trust.policy.scoped_from or node.catching_up:
        return None
    try:
        policy = use_scope_keys(node)
    except P2PSyncError as exc:
        logger.warning("read scopes not brought in: %s", exc)
        return None
    logger.warning("this organisation was made before read scopes: they are in force from key epoch %d "
                   "(policy version %d): each office reads the masters and its own books and those granted to it, "
                   "the head office every office's; entries sealed before stay readable to every office",
                   policy.scoped_from, policy.version)
    return policy


def set_grants(node: Node, office: str, add: Iterable[str] = (), remove: Iterable[str] = ()) -> Policy:
    """Let branch `office` read the books of the offices in `add` (a regional office over its
    branches), or no longer those in `remove`; taking one away rotates every key. `EVERY_OFFICE` as
    `office` means every branch office, and in `add` or `remove` every office's books (present and
    future; it stands for them all, so taking it away leaves no other grant)."""
    _require_head(node)
    with node.db.read() as session:
        known = {o.code: o for o in queries.offices(session)}
    code = office.strip().upper()
    adding, removing = {o.strip().upper() for o in add}, {o.strip().upper() for o in remove}
    for name in (code, *sorted(adding | removing)):
        if name not in known and name != EVERY_OFFICE:
            raise NotFound(f"unknown office {name}; see 'p2psync branch list'")
    if code != EVERY_OFFICE and known[code].role == "head":
        raise InvalidInput(f"{code} is a head office: it reads every office's books already")
    if code != EVERY_OFFICE and code in adding | removing:
        raise InvalidInput(f"{code} always reads its own books")
    policy = node.trust.policy
    current = set(policy.grants.get(code, ()))
    _check_removable(policy, code, current, removing)
    target = (current | adding) - removing
    if EVERY_OFFICE in target:
        target = {EVERY_OFFICE}  # it stands for every office: the others are in it
    if target == current:
        return policy
    return _reissue(node, lambda auth, p: auth.set_grants(p, code, target))


def _check_removable(policy: Policy, code: str, current: set[str], removing: set[str]) -> None:
    """Refuse taking back what `code` reads through a wider grant, which a narrower change cannot
    express: one office out of `--all`, or what every branch office is granted."""
    if EVERY_OFFICE in current and removing and EVERY_OFFICE not in removing:
        raise InvalidInput(f"{_who(code)} every office's books (granted --all): take that back with "
                           f"'p2psync scope revoke {_named(code)} --all', then grant the offices it should read")
    everyone = set(policy.grants.get(EVERY_OFFICE, ())) if code != EVERY_OFFICE else set()
    through = sorted(o for o in removing - current if o in everyone or EVERY_OFFICE in everyone)
    if through:
        what = "every office's books" if EVERY_OFFICE in everyone else f"the books of {', '.join(through)}"
        raise InvalidInput(f"every branch office reads {what} (granted to every office): take that back with "
                           f"'p2psync scope revoke --every-office {'--all' if EVERY_OFFICE in everyone else ' '.join(through)}'")


def _who(code: str) -> str:
    return "every branch office reads" if code == EVERY_OFFICE else f"{code} reads"


def _named(code: str) -> str:
    return "--every-office" if code == EVERY_OFFICE else code


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
    enrolled = enroll.read_reply(_answer(head, request), code, request, keys)  # not from the network: no gate
    return NodeClass.join(home, enrolled, keys)
