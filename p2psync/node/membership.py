"""A node's view of its organisation: the root key, the current policy, its own keys and its key
ring. It seals this node's changes (under its document's scope key once the organisation has them)
and tells `protocol.entry` whom to believe and which entries it can read."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from p2psync.books import schema
from p2psync.books.change import Change
from p2psync.books.rules import inter_office_name
from p2psync.errors import RuleViolation
from p2psync.protocol import entry
from p2psync.protocol.entry import EntryError, Unreadable
from p2psync.trust.certs import Member
from p2psync.trust.keys import NodeKeys, org_id
from p2psync.trust.policy import KeyRing, Policy, PolicyError, derive_key, link_key, verify
from p2psync.trust.scopes import inbound_scope, link_scope, parse_link, scope_of


def revoked_notice(office: str) -> str:
    """What a revoked node tells its user, the same wherever it is shown: what no longer works, and
    the one way on (a new machine, admitted with a new code; a revoked node is never readmitted)."""
    return ("This node was revoked by the head office: it no longer syncs with the other offices and cannot "
            "record changes; the books it holds stay readable here. To carry on, register a replacement machine: "
            f"ask the head office for a new invite code ('p2psync invite {office}') and join with it "
            "('p2psync join CODE') in a new, empty home.")


#: The most derived scope keys a node keeps (offices times epochs, in any real organisation far fewer).
_MAX_DERIVED = 4096


class Membership:
    def __init__(self, root: Ed25519PublicKey, policy: Policy, keys: NodeKeys) -> None:
        self.root = root
        self.org = org_id(root)
        self.keys = keys
        self.node_id = keys.node_id
        self._members: dict[str, Member] = {}
        self.policy = policy
        self.ring = KeyRing()
        #: Scope keys derived from the epochs' secrets (a head office, or a member reading every
        #: office's books): one HKDF per (scope, epoch), not one per entry sealed or opened.
        self._derived: dict[tuple[str, int], bytes] = {}
        self._adopt(policy)

    def _adopt(self, policy: Policy) -> None:
        self.policy = policy
        self._members.clear()
        try:
            self.ring.update(policy.key_ring(self.node_id, self.keys.sealing))
        except PolicyError:
            pass  # revoked: keep the keys we had, receive nothing new

    def accept(self, blob: bytes) -> Policy:
        """Adopt a newer policy; raises `PolicyError` for a forged, foreign or stale one."""
        policy = verify(blob, self.root, self.org, self.policy)
        self._adopt(policy)
        return policy

    @property
    def revoked(self) -> bool:
        return self.node_id in self.policy.revoked

    # ------------------------------------------------------------ entry.Keys

    def author(self, node: str) -> Member:
        member = self._members.get(node)
        if member is None:
            member = self.policy.member(node, self.root)
            self._members[node] = member
        return member

    def cutoff(self, node: str, doc: str) -> int | None:
        revoked = self.policy.revoked.get(node)
        return None if revoked is None else revoked.get(doc, 0)

    def epoch_key(self, epoch: int) -> bytes:
        if self.policy.is_scoped(epoch):
            raise EntryError(f"entry names the organisation-wide key of epoch {epoch}, whose keys are per scope")
        key = self.ring.get(epoch)
        if key is None:
            raise EntryError(f"no key for epoch {epoch} here (sealed after this node was revoked, or policy not yet "
                             "received)", retryable=True)
        return key

    def scope_key(self, scope: str, epoch: int) -> bytes:
        """The key of `scope` in `epoch`: sealed to this node, or derived from the epoch's secret (a
        head office). `Unreadable` when this node holds none: it carries such entries unread."""
        if not self.policy.is_scoped(epoch) and epoch <= self.policy.epoch:
            raise EntryError(f"entry names a scope key of epoch {epoch}, which has one key for everything")
        key = self.ring.scoped.get(scope, {}).get(epoch)
        if key is not None:
            return key
        derived = self._derived.get((scope, epoch))
        if derived is None:
            derived = self._derive(scope, epoch)
            if derived is not None:
                if len(self._derived) >= _MAX_DERIVED:  # scopes are named by entries: bound what they add
                    self._derived.clear()
                self._derived[(scope, epoch)] = derived
        if derived is not None:
            return derived
        if self.revoked:  # it carries nothing: no office links with it any more
            raise EntryError(f"no key for epoch {epoch} here (sealed after this node was revoked)", retryable=True)
        raise Unreadable(f"no key of {scope} for epoch {epoch} here: carried unread")

    def _derive(self, scope: str, epoch: int) -> bytes | None:
        """A key this node derives rather than holds: a link's from the inbound key of an office it
        reads, or any scope's from the epoch's secret (a head office, or a reader of every office)."""
        link = parse_link(scope)
        inbound = self.ring.scoped.get(inbound_scope(link[1]), {}).get(epoch) if link else None
        if link and inbound is not None:
            return link_key(inbound, self.org, link[0], epoch)
        secret = self.ring.get(epoch)
        if secret is not None and self.policy.is_scoped(epoch):
            return derive_key(secret, self.org, scope, epoch)
        return None

    # ------------------------------------------------------------ sealing

    def seal(self, change: Change) -> bytes:
        if self.revoked:
            raise RuleViolation("this node was revoked by the head office: it can no longer record changes for the "
                                "organisation (register a replacement machine with a new invite code)")
        epoch = self.policy.epoch
        if not self.policy.is_scoped(epoch):
            return entry.seal(change, self.org, epoch, self.epoch_key(epoch), self.keys.signing, self.policy.version)
        scope = scope_of(change.doc)
        try:
            key = self.scope_key(scope, epoch)
        except Unreadable:
            raise RuleViolation(f"this office may not write {change.doc}: it holds no key of its books") from None
        source = schema.parse_doc_name(change.doc).office or ""
        links = {}
        for target in change.to or ():
            name = link_scope(source, target)
            try:
                links[name] = self.scope_key(name, epoch)
            except Unreadable:
                raise RuleViolation(f"this office holds no key to seal a voucher for office {target} yet: {target} has "
                                    "no enrolled node, or the policy that enrolled it has not reached this office "
                                    f"(sync, then post against {inter_office_name(target)} again)") from None
        return entry.seal(change, self.org, epoch, key, self.keys.signing, self.policy.version, scope, links)

    def may_read(self, scope: str) -> bool:
        """Whether the policy lets this node read `scope` (the masters, or an office's books)."""
        return self.policy.may_read(self.author(self.node_id), scope)

    def open(self, blob: bytes | entry.Framed) -> tuple[Change, Member]:
        change = entry.open_entry(blob, self)
        return change, self.author(change.author)
