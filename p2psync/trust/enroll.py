"""The enrollment exchange, without I/O: a branch proves it holds an invite code; the head office
answers with the branch's certificate, the policy and the organisation's names, encrypted to the code.

    branch -> HO   {"type": "enroll", "invite", "signing", "sealing", "nonce", "pin", "mac"}
    HO -> branch   {"type": "enrolled", "nonce", "box", "mac"}  or  {"type": "refused", "reason"}

``mac`` in the request is HMAC(K_mac, "join" | fields); in the reply HMAC(K_mac, "head" | request mac |
box). ``box`` is ChaCha20-Poly1305 under K_enc with the request mac as associated data.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from p2psync.canonical import dumps, loads
from p2psync.errors import P2PSyncError
from p2psync.trust.certs import root_public_from_cert, verify_node_cert
from p2psync.trust.invite import EnrollKeys, InviteCode, org_pin, same, tag
from p2psync.trust.keys import NodeKeys, b64, org_id, raw_public, unb64
from p2psync.trust.policy import Policy, verify

MAX_MESSAGE = 1024 * 1024


class EnrollError(P2PSyncError):
    """Enrollment refused or failed; the message says why."""


@dataclass(frozen=True)
class Request:
    invite_id: bytes
    signing: Ed25519PublicKey
    sealing: X25519PublicKey
    nonce: bytes
    mac: bytes
    raw_fields: bytes
    pin: bytes


@dataclass(frozen=True)
class Grant:
    """What the head office hands a new branch."""

    root_cert: bytes
    cert: bytes
    policy: bytes
    company: str
    office: str
    office_name: str

    def encode(self) -> bytes:
        return dumps({"root_cert": b64(self.root_cert), "cert": b64(self.cert), "policy": self.policy.decode(),
                      "company": self.company, "office": self.office, "office_name": self.office_name}).encode()


@dataclass(frozen=True)
class Enrollment:
    """A verified grant, ready to be stored by the new branch."""

    grant: Grant
    org: str
    policy: Policy
    ring: dict[int, bytes]


def _fields(invite_id: bytes, signing: bytes, sealing: bytes, nonce: bytes, pin: bytes) -> bytes:
    return dumps({"invite": invite_id.hex(), "signing": b64(signing), "sealing": b64(sealing),
                  "nonce": b64(nonce), "pin": pin.hex()}).encode()


def request(code: InviteCode, keys: NodeKeys) -> bytes:
    signing, sealing = raw_public(keys.signing.public_key()), raw_public(keys.sealing.public_key())
    nonce = os.urandom(16)
    fields = _fields(code.invite_id, signing, sealing, nonce, code.pin)
    mac = tag(code.keys().mac, b"join", fields)
    return dumps({"type": "enroll", "v": 1, "invite": code.invite_id.hex(), "signing": b64(signing),
                  "sealing": b64(sealing), "nonce": b64(nonce), "pin": code.pin.hex(), "mac": b64(mac)}).encode()


def request_pin(raw: bytes) -> str:
    """The organisation pin (hex) a request names: how a relay finds the head office to pass it to."""
    pin = _load(raw, "enroll").get("pin")
    if not isinstance(pin, str) or len(pin) != 6:
        raise EnrollError("enrollment request names no organisation")
    return pin.lower()


def parse_request(raw: bytes) -> Request:
    """Decode a request's fields; the MAC is checked by `check_request` once the invite is known."""
    data = _load(raw, "enroll")
    try:
        invite_id, pin = bytes.fromhex(data["invite"]), bytes.fromhex(data["pin"])
        signing_raw, sealing_raw = unb64(data["signing"]), unb64(data["sealing"])
        nonce, mac = unb64(data["nonce"]), unb64(data["mac"])
        request = Request(invite_id, Ed25519PublicKey.from_public_bytes(signing_raw),
                          X25519PublicKey.from_public_bytes(sealing_raw), nonce, mac,
                          _fields(invite_id, signing_raw, sealing_raw, nonce, pin), pin)
    except (KeyError, TypeError, ValueError):
        raise EnrollError("enrollment request is malformed") from None
    if len(invite_id) != 4 or len(nonce) != 16 or len(mac) != 32:
        raise EnrollError("enrollment request is malformed")
    return request


def check_request(req: Request, keys: EnrollKeys) -> bool:
    return same(tag(keys.mac, b"join", req.raw_fields), req.mac)


def reply(req: Request, keys: EnrollKeys, grant: Grant) -> bytes:
    nonce = os.urandom(12)
    box = ChaCha20Poly1305(keys.enc).encrypt(nonce, grant.encode(), req.mac)
    mac = tag(keys.mac, b"head", req.mac, nonce, box)
    return dumps({"type": "enrolled", "nonce": b64(nonce), "box": b64(box), "mac": b64(mac)}).encode()


def refusal(reason: str) -> bytes:
    return dumps({"type": "refused", "reason": reason[:300]}).encode()


def read_reply(raw: bytes, code: InviteCode, sent: bytes, keys: NodeKeys,
               now: dt.datetime | None = None) -> Enrollment:
    """Verify the head office's reply against the code and our request; decode the grant."""
    data = _load(raw, None)
    if data.get("type") == "refused":
        raise EnrollError(f"the head office refused: {str(data.get('reason', 'no reason given'))[:300]}")
    if data.get("type") != "enrolled":
        raise EnrollError("unexpected reply from the head office")
    ekeys = code.keys()
    try:
        req_mac = unb64(loads(sent)["mac"])
        nonce, box, mac = unb64(data["nonce"]), unb64(data["box"]), unb64(data["mac"])
    except (KeyError, TypeError, ValueError):
        raise EnrollError("reply from the head office is malformed") from None
    if not same(tag(ekeys.mac, b"head", req_mac, nonce, box), mac):
        raise EnrollError("the reply does not prove knowledge of the invite code: not our head office")
    try:
        grant_data = loads(ChaCha20Poly1305(ekeys.enc).decrypt(nonce, box, req_mac))
        grant = Grant(unb64(grant_data["root_cert"]), unb64(grant_data["cert"]), grant_data["policy"].encode(),
                      str(grant_data["company"]), str(grant_data["office"]), str(grant_data["office_name"]))
    except (InvalidTag, KeyError, TypeError, ValueError, AttributeError):  # AttributeError: a policy not text
        raise EnrollError("reply from the head office cannot be decrypted") from None
    return verify_grant(grant, code, keys, now)


def verify_grant(grant: Grant, code: InviteCode, keys: NodeKeys, now: dt.datetime | None = None) -> Enrollment:
    """Check the grant against the code and this node's keys; the certificate's validity by this
    machine's clock (`now`, for tests)."""
    root = root_public_from_cert(grant.root_cert)
    org = org_id(root)
    if org_pin(org) != code.pin:
        raise EnrollError("this head office belongs to another organisation than the invite code")
    member = verify_node_cert(grant.cert, root, now)
    if member.node_id != keys.node_id or raw_public(member.sealing) != raw_public(keys.sealing.public_key()):
        raise EnrollError("the certificate issued is not for this node's keys")
    policy = verify(grant.policy, root, org)
    if member.node_id not in policy.members:
        raise EnrollError("the policy received does not list this node")
    ring = policy.key_ring(member.node_id, keys.sealing)
    return Enrollment(grant, org, policy, ring)


def _load(raw: bytes, expected: str | None) -> dict[str, Any]:
    if len(raw) > MAX_MESSAGE:
        raise EnrollError("enrollment message is too large")
    try:
        data = loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise EnrollError("enrollment message is not JSON") from None
    if not isinstance(data, dict) or (expected and data.get("type") != expected):
        raise EnrollError("enrollment message has the wrong type")
    return data
