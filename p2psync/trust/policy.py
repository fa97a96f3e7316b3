"""The organisation's policy: versioned, signed by the root key, passed on by any node.

It lists the members (their certificates), the revoked nodes with the last sequence of theirs that
stays valid per document, the dated rules (the sync-after date and the period lock), relay addresses,
who reads which office's books (read grants), and the key epoch with each member's key ring sealed to
it. A node accepts only a newer policy that verifies.

Read scopes: the masters are one scope, each office's books another (`scopes.scope_of`). From the
epoch `scoped_from` on (the first, for an organisation made with scopes), each (scope, epoch) has its
own key, derived from that epoch's secret, which head office nodes hold; every other member is
sealed the keys of the scopes it reads. Epochs before
`scoped_from` (an organisation made before scopes) have one key for everything, sealed to every
member, because the masters written under it must stay readable to all. A member granted every
office's books (`EVERY_OFFICE`) is sealed the epochs' secrets, as a head office is, so that it reads
offices added later without a new policy.

Links between offices: a voucher of office A that touches B's inter-office account (`@B`) must be
readable at B, which accepts or disputes it, though B may not read A's books. Its entry is sealed
under a one-off key wrapped for A's scope and for the link `vouchers/A>B` (`scopes.link_scope`). The
readers of B's books hold B's inbound key (`scopes.inbound_scope`), from which they derive the key of
every link into B (`link_key`); each office holds the keys of its own links out, and nothing else of them.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2psync.canonical import dumps, loads, utc_now
from p2psync.errors import P2PSyncError
from p2psync.trust.certs import CertificateError, Member, UnknownMember, verify_node_cert
from p2psync.trust.keys import b64, unb64
from p2psync.trust.scopes import (
    EVERY_OFFICE,
    MASTERS_SCOPE,
    inbound_scope,
    link_scope,
    office_scope,
    parse_link,
    scope_office,
)
from p2psync.trust.scopes import granted as granted_to
from p2psync.trust.scopes import reads as reads_of
from p2psync.trust.seal import open_sealed, seal

_SIG_CONTEXT = b"p2psync-policy-v1\x00"
MAX_POLICY_BYTES = 4 * 1024 * 1024


def link_key(inbound: bytes, org: str, source: str, epoch: int) -> bytes:
    """The key of the link from `source` into the office whose inbound key is `inbound` (HKDF-SHA256,
    RFC 5869): a reader of that office derives it for every source; `source` is sealed it alone."""
    info = f"p2psync-link-key\x00{org}\x00{source}\x00{epoch}".encode()
    return HKDF(SHA256(), 32, salt=None, info=info).derive(inbound)


def derive_key(secret: bytes, org: str, scope: str, epoch: int) -> bytes:
    """Any scope's key from the epoch's secret (what a head office holds): a link's through its
    target's inbound key, every other scope's directly."""
    link = parse_link(scope)
    if link is None:
        return scope_key(secret, org, scope, epoch)
    return link_key(scope_key(secret, org, inbound_scope(link[1]), epoch), org, link[0], epoch)


class PolicyError(P2PSyncError):
    """A policy is malformed, forged, for another organisation, or not newer than ours."""


class StalePolicy(PolicyError):
    """A valid policy, but not newer than the one held: nothing to do, nothing wrong."""


#: The dates the head office sets in the policy that every receiver applies to voucher dates: vouchers
#: dated before the sync-after date are never exchanged; none dated on or before the lock date may be
#: posted, amended or cancelled. Each is a field of the policy, with `<name>_history` and `<name>_held`.
SYNC_AFTER = "sync_after"
LOCK_UNTIL = "lock_until"
DATED_RULES = (SYNC_AFTER, LOCK_UNTIL)

#: Held positions: {document: {author: highest sequence}}.
Held = dict[str, dict[str, int]]


@dataclass(frozen=True)
class DatedRule:
    """One date the head office sets (`DATED_RULES`), with every change of it, read from a policy.

    A signed entry cites the policy version its author held, but its author may lie about that to
    escape a date set since. So a change that refuses more (`stricter`) also records what the head
    office held then (`held`, by version): an entry beyond those positions is judged by that change
    whatever older version it cites, which every office decides alike, whatever has arrived there. A
    change that refuses less records no positions: it counts only for entries that cite it, so that
    nothing refused before it is taken in by some offices and not by others."""

    name: str
    date: str | None
    #: Policy version -> the date it set, for every version that changed it.
    history: dict[str, str | None]
    #: Policy version -> what the head office held when that version made the rule stricter.
    held: dict[str, Held]

    @property
    def current(self) -> dt.date | None:
        return dt.date.fromisoformat(self.date) if self.date else None

    def as_of(self, version: int) -> dt.date | None:
        """The date that policy `version` set (a policy knows every earlier change)."""
        known = [int(v) for v in self.history if int(v) <= version]
        value = self.history[str(max(known))] if known else None
        return dt.date.fromisoformat(value) if value else None

    def judging(self, doc: str, author: str, seq: int, cited: int) -> dt.date | None:
        """The date an entry is judged by: that of the newest change that it either cites or lies
        beyond (its position was not held by the head office when the change was made), so that citing
        an old policy does not get a voucher past a date set since."""
        for version in sorted((int(v) for v in self.history), reverse=True):
            held = self.held.get(str(version))
            if version <= cited or (held is not None and seq > held.get(doc, {}).get(author, 0)):
                return self.as_of(version)
        return None

    def stricter(self, date: dt.date | None) -> bool:
        """Whether moving to `date` refuses vouchers this rule accepts now (a later date, or a first
        one): both rules refuse dates up to theirs."""
        return date is not None and (self.current is None or date > self.current)


@dataclass(frozen=True)
class Policy:
    org: str
    version: int
    issued_at: str
    epoch: int
    members: dict[str, str] = field(default_factory=dict)  # node id -> certificate DER, base64
    sealed: dict[str, str] = field(default_factory=dict)  # node id -> sealed key ring, base64
    revoked: dict[str, dict[str, int]] = field(default_factory=dict)  # node id -> doc -> last valid seq
    sync_after: str | None = None
    relays: tuple[str, ...] = ()
    #: Policy version -> sync-after date set by it, so an entry is judged by the date its author had.
    sync_after_history: dict[str, str | None] = field(default_factory=dict)
    #: Policy version that made the date stricter -> {document: {author: highest sequence the head
    #: office held then}}: an entry beyond those positions is judged by that version's date whatever older
    #: version it cites (its author may claim not to have seen the change; the head office says what
    #: was exchanged before it).
    sync_after_held: dict[str, Held] = field(default_factory=dict)
    #: The period lock: no voucher dated on or before it may be posted, amended or cancelled. Its
    #: history and held positions work as the sync-after date's (`DatedRule`); policies from before the
    #: lock existed have none of these fields, and mean what they meant.
    lock_until: str | None = None
    lock_until_history: dict[str, str | None] = field(default_factory=dict)
    lock_until_held: dict[str, Held] = field(default_factory=dict)
    #: Policy version -> when it was issued, for every version that changed a dated rule: the history
    #: shown to people (what was locked or unlocked, and when).
    rules_changed_at: dict[str, str] = field(default_factory=dict)
    #: Office -> the other offices whose books it may read, beyond the defaults (a head office reads
    #: every office's books; every office reads the masters and its own books); `EVERY_OFFICE` on
    #: either side means every office, including those added later.
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: The first epoch whose keys are per scope (0: none yet, one key per epoch for everything).
    scoped_from: int = 0

    def body(self) -> bytes:
        return dumps({
            "org": self.org, "version": self.version, "issued_at": self.issued_at, "epoch": self.epoch,
            "members": self.members, "sealed": self.sealed, "revoked": self.revoked,
            "sync_after": self.sync_after, "relays": list(self.relays),
            "sync_after_history": self.sync_after_history,
            **({"sync_after_held": self.sync_after_held} if self.sync_after_held else {}),
            **({"lock_until": self.lock_until, "lock_until_history": self.lock_until_history}
               if self.lock_until_history else {}),
            **({"lock_until_held": self.lock_until_held} if self.lock_until_held else {}),
            **({"rules_changed_at": self.rules_changed_at} if self.rules_changed_at else {}),
            **({"grants": {office: list(offices) for office, offices in self.grants.items()}} if self.grants else {}),
            **({"scoped_from": self.scoped_from} if self.scoped_from else {}),
        }).encode()

    def rule(self, name: str) -> DatedRule:
        """One of the `DATED_RULES`, with its history and held positions."""
        return DatedRule(name, getattr(self, name), getattr(self, f"{name}_history"), getattr(self, f"{name}_held"))

    def granted(self, office: str) -> frozenset[str]:
        """What branch `office` is granted beyond its own books (`scopes.granted`)."""
        return granted_to(self.grants, office)

    def reads(self, office: str, is_head: bool) -> frozenset[str] | None:
        """The offices whose books a member of `office` may read; None for every office, including
        offices added later (`scopes.reads`). Every member reads the masters."""
        return reads_of(self.grants, office, is_head)

    def may_read(self, member: Member, scope: str) -> bool:
        offices = self.reads(member.office, member.is_head)
        target = scope_office(scope)
        return offices is None or target is None or target in offices

    def is_scoped(self, epoch: int) -> bool:
        """Whether entries of `epoch` are sealed under per-scope keys."""
        return 0 < self.scoped_from <= epoch

    @property
    def sync_after_date(self) -> dt.date | None:
        return self.rule(SYNC_AFTER).current

    @property
    def lock_until_date(self) -> dt.date | None:
        return self.rule(LOCK_UNTIL).current

    def sync_after_as_of(self, version: int) -> dt.date | None:
        """The sync-after date that policy `version` set (this policy knows every earlier change)."""
        return self.rule(SYNC_AFTER).as_of(version)

    def sync_after_for(self, doc: str, author: str, seq: int, cited: int) -> dt.date | None:
        """The sync-after date an entry is judged by (`DatedRule.judging`)."""
        return self.rule(SYNC_AFTER).judging(doc, author, seq, cited)

    def lock_until_for(self, doc: str, author: str, seq: int, cited: int) -> dt.date | None:
        """The lock date an entry is judged by (`DatedRule.judging`)."""
        return self.rule(LOCK_UNTIL).judging(doc, author, seq, cited)

    def member(self, node: str, root: Ed25519PublicKey) -> Member:
        der = self.members.get(node)
        if der is None:
            raise UnknownMember(f"unknown author {node[:16]}: not a member of this organisation")
        try:
            raw = unb64(der)
        except ValueError:
            raise CertificateError(f"certificate filed for {node[:16]} is not base64") from None
        member = verify_node_cert(raw, root)
        if member.node_id != node:
            raise CertificateError(f"certificate filed for {node[:16]} belongs to {member.node_id[:16]}")
        return member

    def key_ring(self, node: str, sealing: X25519PrivateKey) -> KeyRing:
        """The keys sealed to `node`: epoch keys (organisation-wide before `scoped_from`, the epoch's
        secret from it on, at a head office) and the keys of the scopes it reads (`scope@epoch`)."""
        box = self.sealed.get(node)
        if box is None:
            raise PolicyError("no epoch key is sealed to this node (revoked, or not yet a member)")
        try:
            return KeyRing.decode(loads(open_sealed(unb64(box), sealing, _ring_info(self.org, node))))
        except (ValueError, TypeError, AttributeError):
            raise PolicyError("the epoch key ring sealed to this node is malformed") from None


@dataclass
class KeyRing(Mapping[int, bytes]):
    """One member's keys: `epochs` by epoch (what the ring maps), `scoped` by scope then epoch."""

    epochs: dict[int, bytes] = field(default_factory=dict)
    scoped: dict[str, dict[int, bytes]] = field(default_factory=dict)

    def __getitem__(self, epoch: int) -> bytes:
        return self.epochs[epoch]

    def __iter__(self) -> Iterator[int]:
        return iter(self.epochs)

    def __len__(self) -> int:
        return len(self.epochs)

    def update(self, other: KeyRing) -> None:
        """Keep what was held and add what is new: a grant taken back leaves what was read readable."""
        self.epochs.update(other.epochs)
        for scope, keys in other.scoped.items():
            self.scoped.setdefault(scope, {}).update(keys)

    def names(self) -> dict[str, str]:
        """`{"<epoch>": b64 key, "<scope>@<epoch>": b64 key}`: the ring as sealed and exported."""
        ring = {str(e): b64(k) for e, k in sorted(self.epochs.items())}
        ring.update({f"{scope}@{e}": b64(k) for scope, keys in self.scoped.items() for e, k in keys.items()})
        return ring

    def encode(self) -> bytes:
        return dumps(self.names()).encode()

    @classmethod
    def decode(cls, names: dict[str, Any]) -> KeyRing:
        """The inverse of `names`; raises ValueError, TypeError or AttributeError if malformed."""
        out = cls()
        for name, key in names.items():
            scope, at, epoch = name.rpartition("@")
            raw = unb64(key)
            if len(raw) != 32:
                raise ValueError("a key is not 32 bytes")
            (out.scoped.setdefault(scope, {}) if at else out.epochs)[int(epoch)] = raw
        return out


def scope_key(secret: bytes, org: str, scope: str, epoch: int) -> bytes:
    """The key of one scope in one epoch, from the epoch's secret (HKDF-SHA256, RFC 5869): a head
    office derives any of them; a member is sealed only those it reads."""
    info = f"p2psync-scope-key\x00{org}\x00{scope}\x00{epoch}".encode()
    return HKDF(SHA256(), 32, salt=None, info=info).derive(secret)


def _ring_info(org: str, node: str) -> bytes:
    return f"p2psync-epoch-keys\x00{org}\x00{node}".encode()


def sign(policy: Policy, root: Ed25519PrivateKey) -> bytes:
    return sign_body(policy.body(), root)


def sign_body(body: bytes, root: Ed25519PrivateKey) -> bytes:
    """A signed policy blob around `body` (any bytes: the fuzz harnesses sign malformed bodies)."""
    return dumps({"body": body.decode(), "sig": b64(root.sign(_SIG_CONTEXT + body))}).encode()


def claimed_version(blob: bytes) -> int:
    """The version a signed policy claims, unverified (0 if unreadable): a cheap test of whether a
    full `verify` is worth doing."""
    try:
        return _count(loads(loads(blob)["body"])["version"])
    except (ValueError, KeyError, TypeError):
        return 0


def verify(blob: bytes, root: Ed25519PublicKey, org: str, current: Policy | None = None) -> Policy:
    """Decode and check a signed policy; refuse forged, foreign, malformed and not-newer ones."""
    if len(blob) > MAX_POLICY_BYTES:
        raise PolicyError("policy is larger than allowed")
    try:
        outer = loads(blob)
        body = outer["body"].encode()
        signature = unb64(outer["sig"])
    except (ValueError, KeyError, TypeError, AttributeError):
        raise PolicyError("policy is malformed") from None
    try:
        root.verify(signature, _SIG_CONTEXT + body)
    except InvalidSignature:
        raise PolicyError("policy signature does not verify against the organisation's root key") from None
    policy = _decode(body)
    if policy.org != org:
        raise PolicyError("policy belongs to another organisation")
    if current is not None and policy.version <= current.version:
        raise StalePolicy(f"policy version {policy.version} is not newer than version {current.version} held here")
    return policy


def _decode(body: bytes) -> Policy:
    """Every field checked for its type: a policy is signed, but a decoder trusts no input's shape."""
    try:
        data: dict[str, Any] = loads(body)
        policy = Policy(
            org=_text(data["org"]), version=_count(data["version"]), issued_at=_text(data["issued_at"]),
            epoch=_count(data["epoch"]), members=_texts(data["members"]), sealed=_texts(data["sealed"]),
            revoked={_text(node): _cutoffs(cutoffs) for node, cutoffs in _mapping(data["revoked"]).items()},
            sync_after=_date(data["sync_after"]), relays=tuple(_text(r) for r in _sequence(data["relays"])),
            sync_after_history=_history(data["sync_after_history"]),
            sync_after_held=_held(data.get("sync_after_held", {})),
            lock_until=_date(data.get("lock_until")), lock_until_history=_history(data.get("lock_until_history", {})),
            lock_until_held=_held(data.get("lock_until_held", {})),
            rules_changed_at={str(_count(int(v))): _text(at) for v, at in _mapping(data.get("rules_changed_at", {})).items()},
            grants={_text(office): tuple(_text(o) for o in _sequence(offices))
                    for office, offices in _mapping(data.get("grants", {})).items()},
            scoped_from=_count(data.get("scoped_from", 0)),
        )
    except (ValueError, KeyError, TypeError):
        raise PolicyError("policy body is malformed") from None
    return policy


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**62:
        raise TypeError("expected a non-negative integer")
    return value


def _mapping(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("expected an object")
    return value


def _sequence(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError("expected a list")
    return value


def _texts(value: Any) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in _mapping(value).items()}


def _cutoffs(value: Any) -> dict[str, int]:
    return {_text(k): _count(v) for k, v in _mapping(value).items()}


def _history(value: Any) -> dict[str, str | None]:
    return {str(_count(int(v))): _date(d) for v, d in _mapping(value).items()}


def _held(value: Any) -> dict[str, Held]:
    return {str(_count(int(v))): {_text(doc): _cutoffs(vector) for doc, vector in _mapping(held).items()}
            for v, held in _mapping(value).items()}


def _date(value: Any) -> str | None:
    if value is not None:
        dt.date.fromisoformat(_text(value))
    return value


class Authority:
    """The head office's side: issues new policy versions with the root key. `ring` is the head
    office's own: every epoch's key (before `scoped_from`) or secret (from it on)."""

    def __init__(self, root: Ed25519PrivateKey, ring: Mapping[int, bytes]) -> None:
        self.root = root
        self.ring = dict(ring)

    def genesis(self, org: str, head_der: bytes, scoped: bool = True,
                grants: Mapping[str, Iterable[str]] | None = None) -> Policy:
        """The first policy of a new organisation: per-scope keys from its first epoch (`scoped=False`
        makes one as versions before read scopes did), with `grants` beyond the defaults."""
        self.ring = {1: os.urandom(32)}
        base = Policy(org=org, version=0, issued_at=utc_now(), epoch=1, scoped_from=1 if scoped else 0,
                      grants={office: tuple(sorted(set(offices))) for office, offices in (grants or {}).items()})
        return self._reissue(base, members={**base.members, _node_of(head_der, self.root): b64(head_der)})

    def admit(self, policy: Policy, der: bytes) -> Policy:
        return self._reissue(policy, members={**policy.members, _node_of(der, self.root): b64(der)})

    def revoke(self, policy: Policy, node: str, cutoffs: dict[str, int]) -> Policy:
        """Revoke `node`, keeping its entries up to `cutoffs`, and rotate to a new epoch key.

        Its certificate stays listed so that its entries from before the revocation still verify;
        the new key ring is sealed to everyone else."""
        return self._rotate(policy, revoked={**policy.revoked, node: dict(cutoffs)})

    def set_grants(self, policy: Policy, office: str, offices: Iterable[str]) -> Policy:
        """What `office` (or `EVERY_OFFICE`: every branch) may read beyond its own books; `EVERY_OFFICE`
        among `offices` stands for them all. Taking a grant away rotates every key, so that nothing
        written after it is readable there; what it had read stays readable to it."""
        wanted_set = set(offices) - {office} if office != EVERY_OFFICE else set(offices)
        wanted = (EVERY_OFFICE,) if EVERY_OFFICE in wanted_set else tuple(sorted(wanted_set))
        grants = {k: v for k, v in policy.grants.items() if k != office}
        if wanted:
            grants[office] = wanted
        if EVERY_OFFICE not in wanted and set(policy.grants.get(office, ())) - set(wanted):  # "*" takes nothing away
            return self._rotate(policy, grants=grants)
        return self._reissue(policy, grants=grants)

    def scope_keys(self, policy: Policy) -> Policy:
        """Move an organisation made before read scopes to per-scope keys, from a new epoch on."""
        return policy if policy.scoped_from else self._rotate(policy, scoped_from=policy.epoch + 1)

    def settings(self, policy: Policy, **changes: Any) -> Policy:
        return self._reissue(policy, **changes)

    def _rotate(self, policy: Policy, **changes: Any) -> Policy:
        self.ring[policy.epoch + 1] = os.urandom(32)
        return self._reissue(policy, epoch=policy.epoch + 1, **changes)

    def _reissue(self, policy: Policy, **changes: Any) -> Policy:
        draft = _recorded(policy, replace(policy, version=policy.version + 1, issued_at=utc_now(), **changes))
        members = {node: verify_node_cert(unb64(der), self.root.public_key())
                   for node, der in draft.members.items() if node not in draft.revoked}
        offices = frozenset(member.office for member in members.values())
        sealed = {node: b64(seal(self.ring_for(draft, member, offices).encode(), member.sealing,
                                 _ring_info(draft.org, node)))
                  for node, member in members.items()}
        return replace(draft, sealed=sealed)

    def ring_for(self, policy: Policy, member: Member, offices: frozenset[str]) -> KeyRing:
        """A head office node, or a member that reads every office's books, gets every epoch's key or
        secret (it derives the keys of offices added later itself); any other member the
        organisation-wide keys of the epochs before scopes, the keys of the scopes it reads with their
        inbound links, and the keys of its own office's links to the other `offices` (those with a
        member: an office enrolled later is linked to when its enrollment reissues the policy)."""
        reads = policy.reads(member.office, member.is_head)
        if reads is None:
            return KeyRing(dict(self.ring))
        scopes = [MASTERS_SCOPE, *(office_scope(office) for office in sorted(reads)),
                  *(inbound_scope(office) for office in sorted(reads)),
                  *(link_scope(member.office, other) for other in sorted(offices - {member.office}))]
        secrets = {e: k for e, k in self.ring.items() if policy.is_scoped(e)}
        return KeyRing({e: k for e, k in self.ring.items() if not policy.is_scoped(e)},
                       {scope: {e: derive_key(k, policy.org, scope, e) for e, k in secrets.items()} for scope in scopes})


def _recorded(policy: Policy, draft: Policy) -> Policy:
    """`draft` with every dated rule it changes from `policy` in that rule's history, and the time of
    the change (the sync-after date's history starts at the first version, as it always has)."""
    version = str(draft.version)
    for name in DATED_RULES:
        history = getattr(policy, f"{name}_history")
        if getattr(draft, name) != getattr(policy, name) or (name == SYNC_AFTER and not history):
            draft = replace(draft, **{f"{name}_history": {**history, version: getattr(draft, name)}})
            if policy.version:  # not the first version, which only starts the history
                draft = replace(draft, rules_changed_at={**draft.rules_changed_at, version: draft.issued_at})
    return draft


def _node_of(der: bytes, root: Ed25519PrivateKey) -> str:
    return verify_node_cert(der, root.public_key()).node_id
