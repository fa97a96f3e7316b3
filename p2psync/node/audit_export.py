"""Audit exports: one file an auditor can check without trusting the company or holding its keys.

It carries the organisation's root certificate, its newest signed policy (every member's certificate,
revocations, sync-after dates), the sealed entries exactly as they were signed, what each entry wrote
in clear, the chain head of every (author, document), and the epoch keys of those entries (symmetric
keys: they open only what the file already shows in clear; no private key is ever exported). The
exporting node signs the whole file. Byte layout: `docs/protocol.md` §8.

`verify` checks every signature, certificate and chain, then rebuilds the books in a throwaway home by
receiving the entries exactly as an office does (`inbox.receive`: the same checks and rules, nothing
duplicated here), and compares what each entry wrote with the clear text the file shows.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlmodel import Session

from p2psync.books import schema
from p2psync.books.model import decode_revision
from p2psync.canonical import dumps, loads, utc_now
from p2psync.errors import P2PSyncError
from p2psync.node import audit, views
from p2psync.node.home import DB_FILE
from p2psync.node.membership import Membership
from p2psync.node.office import Identity, Node
from p2psync.protocol import entry
from p2psync.store import history, log, queries
from p2psync.store.db import Database, get_setting
from p2psync.trust.certs import CertificateError, root_public_from_cert
from p2psync.trust.keys import b64, org_id, registration_id, unb64
from p2psync.trust.policy import KeyRing, Policy, PolicyError
from p2psync.trust.policy import verify as verify_policy

MAGIC = b"p2psync audit export 1\n"
SIGNATURE_PREFIX = b"signature "
_SIG_CONTEXT = b"p2psync-audit-export-v1\x00"
FORMAT = 1
#: The node id the throwaway home of a verification runs under: no member's (it never writes).
_AUDITOR = "0" * 32

Data = dict[str, Any]


class AuditError(P2PSyncError):
    """An export that does not verify; the message says what and where, in one line."""


# ---------------------------------------------------------------- export


def export(node: Node, path: Path, start: dt.date | None = None, end: dt.date | None = None) -> Data:
    """Write the audit export of `node`'s shared books to `path`; returns its summary.

    It carries every masters entry and every voucher document up to `end` (whole: chains run from
    sequence 1, and the books as on `end` need every earlier entry) that this office reads whole (a
    document it carries entries of unread is left out); `start` only says which part of
    the trail an auditor is shown first (`verify(..., trail=True)`)."""
    if start and end and start > end:
        raise AuditError(f"the period starts ({start}) after it ends ({end})")
    with node.db.read() as session:
        unread = set(log.carried_docs(session))  # entries this office carries but may not read
        docs = [doc for doc in log.documents(session) if doc not in unread and _carried(session, doc, end)]
        body = _body(node, session, docs, start, end)
    signed = _sign(dumps(body).encode(), node.trust.keys.signing)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_bytes(signed)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise P2PSyncError(f"cannot write {path}: {exc.strerror}") from None
    return {"file": str(path), "entries": len(body["entries"]), "documents": len(docs),
            "registration_id": registration_id(node.trust.org), "from": body["range"]["from"],
            "to": body["range"]["to"], "local_only": body["local_only"]}


def _carried(session: Session, doc: str, end: dt.date | None) -> bool:
    """Shared documents the export holds: the masters, and voucher documents of months up to `end`, or
    later ones holding a revision dated up to `end` (an amendment stays in its voucher's first
    document whatever date it moves to)."""
    name = schema.parse_doc_name(doc)
    if name.local:
        return False  # local books are never sealed: nothing signed to show
    if name.is_masters or end is None or (name.month or "") <= f"{end:%Y-%m}":
        return True
    return any(decode_revision(w.after).content.date <= end
               for e in history.replay(session, doc) for w in e.writes if w.map == schema.REVISIONS)


def _body(node: Node, session: Session, docs: list[str], start: dt.date | None, end: dt.date | None) -> Data:
    wanted = set(docs)
    written = {(e.doc, e.author, e.seq): e for doc in docs for e in history.replay(session, doc)}
    entries, keys = [], KeyRing()
    for _id, doc, author, seq, _vouchers, blob in log.shared_after(session, 0, 2**62):
        if doc not in wanted:
            continue
        _add_key(node, keys, entry.peek(blob))
        wrote = written[(doc, author, seq)]
        entries.append({"entry": b64(blob), "logged_at": wrote.logged_at,
                        "records": [[w.map, w.key, w.after] for w in wrote.writes]})
    heads = {doc: {author: [seq, b64(head)] for author, (seq, head) in vector.items()}
             for doc, vector in log.heads(session, docs).items()}
    return {
        "format": FORMAT, "org": node.trust.org, "company": node.identity.company,
        "exporter": {"node": node.identity.node_id, "office": node.identity.office},
        "exported_at": utc_now(), "range": {"from": _iso(start), "to": _iso(end)},
        "root_cert": get_setting(session, "root_cert"), "policy": get_setting(session, "policy"),
        "epoch_keys": keys.names(),
        "heads": heads, "entries": entries, "local_only": queries.local_only(session, None, None, end),
    }


def _iso(day: dt.date | None) -> str | None:
    return day.isoformat() if day else None


def _sign(body: bytes, key: Ed25519PrivateKey) -> bytes:
    return MAGIC + body + b"\n" + SIGNATURE_PREFIX + b64(key.sign(_SIG_CONTEXT + body)).encode() + b"\n"


# ---------------------------------------------------------------- verify


def verify(path: Path, trail: bool = False) -> Data:
    """Check an export and rebuild its books; raises `AuditError` naming the first thing wrong."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"cannot read {path}: {exc.strerror}") from None
    return verify_bytes(raw, trail)


def verify_bytes(raw: bytes, trail: bool = False) -> Data:
    body_bytes, signature = _unframe(raw)
    body = _parse(body_bytes)
    root, policy = _trust(body)
    _check_exporter(body, root, policy, body_bytes, signature)
    with _auditor(body, root, policy) as auditor:
        _receive(auditor, body)
        _check_heads(auditor, body)
        _check_records(auditor, body)
        end = body["range"]["to"]
        result: Data = {
            "registration_id": registration_id(org_id(root)), "org": body["org"], "company": body["company"],
            "exporter": body["exporter"], "exported_at": body["exported_at"], "range": body["range"],
            "policy_version": policy.version, "entries": len(body["entries"]),
            "authors": len({(h[0]) for h in _entry_keys(body)}), "local_only": body["local_only"],
            "trial_balance": views.report(auditor, "trial-balance", end=end),
        }
        if trail:
            start = body["range"]["from"]
            scope = audit.Scope(start=dt.date.fromisoformat(start) if start else None,
                                end=dt.date.fromisoformat(end) if end else None)
            result["trail"] = _as_exported(audit.trail(auditor, scope), body)
    return result


def _as_exported(rows: list[Data], body: Data) -> list[Data]:
    """Trail rows rebuilt here, with the time the exporting office logged each entry (the file's
    claim, under its signature) instead of this throwaway home's."""
    logged = {(doc, author[:16], seq): item["logged_at"]
              for (author, doc, seq), item in zip(_entry_keys(body), body["entries"], strict=True)}
    out = []
    for row in rows:
        at = logged.get((row["document"], row["node"], row["seq"]))
        unstamped = row["at"] == row["logged_at"]  # a record with no time of its own (an office)
        out.append({**row, "logged_at": at, "origin": "exported", **({"at": at} if unstamped else {})})
    return sorted(out, key=lambda r: r["at"] or "")


def _unframe(raw: bytes) -> tuple[bytes, bytes]:
    """The body and the signature: the file is exactly the magic line, the body line and the signature
    line, each ending in a newline; anything else is refused before a byte of it is parsed."""
    if not raw.startswith(MAGIC):
        raise AuditError("not a p2psync audit export (its first line is not 'p2psync audit export 1')")
    lines = raw[len(MAGIC):].split(b"\n")
    if len(lines) != 3 or lines[2] != b"" or not lines[1].startswith(SIGNATURE_PREFIX):
        raise AuditError("the export's framing is damaged: it must be three lines, the last its signature")
    try:
        signature = unb64(lines[1][len(SIGNATURE_PREFIX):].decode("ascii"))
    except (ValueError, UnicodeDecodeError):
        raise AuditError("the export's signature line is damaged") from None
    if len(signature) != 64:
        raise AuditError("the export's signature line is damaged")
    return lines[0], signature


#: Every field of the body and the type it must have.
_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format": int, "org": str, "company": str, "exporter": dict, "exported_at": str, "range": dict,
    "root_cert": str, "policy": str, "epoch_keys": dict, "heads": dict, "entries": list, "local_only": int,
}


def _parse(body_bytes: bytes) -> Data:
    try:
        body = loads(body_bytes)
    except (ValueError, UnicodeDecodeError):
        raise AuditError("the export's body is not valid JSON (the file was altered or damaged)") from None
    if not isinstance(body, dict) or set(body) != set(_FIELDS):
        raise AuditError("the export's body does not have the fields of an audit export")
    for key, kind in _FIELDS.items():
        if not isinstance(body[key], kind) or isinstance(body[key], bool):
            raise AuditError(f"the export's field {key!r} is malformed")
    if body["format"] != FORMAT:
        raise AuditError(f"the export is of format {body['format']}; this p2psync reads format {FORMAT}")
    try:
        for name in ("from", "to"):
            if body["range"][name] is not None:
                dt.date.fromisoformat(body["range"][name])
        _text(body["exporter"]["node"]), _text(body["exporter"]["office"])
        for item in body["entries"]:
            _text(item["entry"]), _text(item["logged_at"])
            if not isinstance(item["records"], list) or not all(
                    isinstance(r, list) and len(r) == 3 and all(isinstance(x, str) for x in r) for r in item["records"]):
                raise TypeError("records")
    except (KeyError, TypeError, ValueError):
        raise AuditError("the export's range, exporter or entries are malformed") from None
    return body


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("expected text")
    return value


def _trust(body: Data) -> tuple[Ed25519PublicKey, Policy]:
    """The root key (from its self-signed certificate), the policy it signed, and every member
    certificate the policy lists checked against it."""
    try:
        root = root_public_from_cert(unb64(body["root_cert"]))
    except (CertificateError, ValueError) as exc:
        raise AuditError(f"the export's root certificate is invalid: {exc}") from None
    org = org_id(root)
    if body["org"] != org:
        raise AuditError("the export's root certificate is not the root of the organisation it names")
    try:
        policy = verify_policy(body["policy"].encode(), root, org)
    except PolicyError as exc:
        raise AuditError(f"the export's policy is invalid: {exc}") from None
    for node in sorted(policy.members):
        try:
            policy.member(node, root)
        except CertificateError as exc:
            raise AuditError(f"the certificate of node {node[:16]} in the policy is invalid: {exc}") from None
    return root, policy


def _check_exporter(body: Data, root: Ed25519PublicKey, policy: Policy, body_bytes: bytes, signature: bytes) -> None:
    node = body["exporter"]["node"]
    try:
        member = policy.member(node, root)
    except CertificateError as exc:
        raise AuditError(f"the exporting node {node[:16]} is not a member: {exc}") from None
    try:
        member.signing.verify(signature, _SIG_CONTEXT + body_bytes)
    except InvalidSignature:
        raise AuditError(f"the export's signature does not verify against node {node[:16]}'s certificate: "
                         "the file was altered after it was written") from None


def _add_key(node: Node, ring: KeyRing, header: entry.Header) -> None:
    """The key an exported entry was sealed under: an epoch's, or its scope's in that epoch."""
    if header.scope is None:
        ring.epochs[header.epoch] = node.trust.epoch_key(header.epoch)
    else:
        ring.scoped.setdefault(header.scope, {})[header.epoch] = node.trust.scope_key(header.scope, header.epoch)


class _ExportKeys(Membership):
    """The organisation as an export shows it: root, policy and epoch keys, and no key of any node.
    Whom to believe comes from `Membership` unchanged; this one never seals."""

    def __init__(self, root: Ed25519PublicKey, policy: Policy, ring: KeyRing) -> None:
        self.root = root
        self.org = org_id(root)
        self.keys = None  # type: ignore[assignment]
        self.node_id = _AUDITOR
        self._members = {}
        self._derived = {}
        self.policy = policy
        self.ring = ring


@contextmanager
def _auditor(body: Data, root: Ed25519PublicKey, policy: Policy) -> Iterator[Node]:
    """A node with no keys in a throwaway home, that receives the export's entries as the head office
    would (its chart is the head office's)."""
    try:
        ring = KeyRing.decode(body["epoch_keys"])
    except (ValueError, TypeError, AttributeError):
        raise AuditError("the export's epoch keys are malformed") from None
    heads = sorted(m.office for m in (policy.member(n, root) for n in policy.members) if m.is_head)
    with tempfile.TemporaryDirectory(prefix="p2psync-audit-") as tmp:
        db = Database(Path(tmp) / DB_FILE)
        db.create()
        node = Node(Path(tmp), db, Identity(body["company"], heads[0] if heads else "HO", "head", _AUDITOR),
                    _ExportKeys(root, policy, ring))
        try:
            yield node
        finally:
            node.close()


def _entry_keys(body: Data) -> list[tuple[str, str, int]]:
    keys = []
    for item in body["entries"]:
        try:
            header = entry.peek(unb64(item["entry"]))
        except (ValueError, entry.EntryError) as exc:
            raise AuditError(f"entry {len(keys) + 1} of the export is malformed: {exc}") from None
        keys.append((header.author, header.doc, header.seq))
    return keys


def _receive(auditor: Node, body: Data) -> None:
    keys = _entry_keys(body)
    if len(set(keys)) != len(keys):
        author, doc, seq = next(k for k in keys if keys.count(k) > 1)
        raise AuditError(f"entry {seq} of node {author[:16]} in {doc} is listed twice")
    result = auditor.receive(unb64(item["entry"]) for item in body["entries"])
    refused = auditor.quarantined()
    if refused:
        first = refused[0]
        # a refused signature is charged to nobody ("?"): name the author the entry's header claims
        claimed = {a for a, d, s in keys if (d, s) == (first["document"], first["seq"])}
        who = first["author"] if first["author"] != "?" or len(claimed) != 1 else claimed.pop()
        raise AuditError(f"entry {first['seq']} of node {who[:16]} in {first['document']} is refused: "
                         f"{first['reason']}")
    if result.waiting:
        raise AuditError(f"{result.waiting} entries wait for entries the export does not hold "
                         "(an author's sequence has a gap, or a dependency is missing)")


def _check_heads(auditor: Node, body: Data) -> None:
    """The chain heads the exporter held are those of the entries it exported."""
    with auditor.db.read() as session:
        held = {doc: {author: [seq, b64(head)] for author, (seq, head) in vector.items()}
                for doc, vector in log.heads(session, sorted(body["heads"])).items()}
    if held != body["heads"]:
        doc = next(d for d in sorted(set(held) | set(body["heads"])) if held.get(d) != body["heads"].get(d))
        raise AuditError(f"the chain heads the export states for {doc} are not those of its entries")


def _check_records(auditor: Node, body: Data) -> None:
    """What the export shows in clear is exactly what each signed, encrypted entry wrote."""
    shown = {}
    for (author, doc, seq), item in zip(_entry_keys(body), body["entries"], strict=True):
        shown[(doc, author, seq)] = item["records"]
    with auditor.db.read() as session:
        for doc in log.documents(session):
            for wrote in history.replay(session, doc):
                key = (doc, wrote.author, wrote.seq)
                if shown.get(key) != [[w.map, w.key, w.after] for w in wrote.writes]:
                    raise AuditError(f"the clear text shown for entry {wrote.seq} of node {wrote.author[:16]} in "
                                     f"{doc} is not what its signed entry holds")
