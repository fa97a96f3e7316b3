"""The enrollment exchange (`trust.enroll`): requests as the head office and a relay read them, and
replies as the joining branch reads them. Requests are refused with `EnrollError` only, and the head
office answers every one with a reply, never an exception, without admitting anyone. Replies are
refused with a `P2PSyncError` (enrollment, certificate, policy or sealing error). Inputs starting
with ``G`` are a grant sealed under the real invite code, so the grant decoder is fuzzed too. The head
office's limit on attempts is lifted here, so every input reaches the code behind it (the limit has
its own tests in `tests/test_registration_attacks.py`)."""

from __future__ import annotations

import json
import math
import os

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fuzz.common import world
from p2psync.canonical import dumps
from p2psync.errors import P2PSyncError
from p2psync.node import registrar
from p2psync.trust import enroll
from p2psync.trust.enroll import EnrollError
from p2psync.trust.invite import AttemptLimit, InviteCode, tag
from p2psync.trust.keys import b64, raw_public, unb64


def check(data: bytes) -> None:
    w = world()
    code = InviteCode.parse(w.invite)
    if data[:1] == b"G":
        _read(_sealed_grant(data[1:], code, w.enroll_request), code, w.enroll_request)
        return
    for parse in (enroll.parse_request, enroll.request_pin):
        try:
            parse(data)
        except EnrollError as exc:
            assert str(exc)
    members = dict(w.head.trust.policy.members)
    registrar.enroll_gate(w.head).limit = AttemptLimit(burst=math.inf)
    reply = json.loads(registrar.handle_enroll(w.head, data))
    assert reply["type"] in ("refused", "enrolled")
    if reply["type"] == "enrolled":  # only the branch already admitted, retrying, gets its reply again
        assert raw_public(enroll.parse_request(data).signing) == raw_public(w.joiner.signing.public_key())
    assert w.head.trust.policy.members == members
    _read(data, code, w.enroll_request)


def _read(reply: bytes, code: InviteCode, sent: bytes) -> None:
    try:
        enroll.read_reply(reply, code, sent, world().joiner)
    except P2PSyncError as exc:
        assert str(exc)
    # a reply built on a code we hold may verify (the real grant): nothing to refuse then


def _sealed_grant(grant: bytes, code: InviteCode, sent: bytes) -> bytes:
    keys = code.keys()
    mac_bytes = unb64(json.loads(sent)["mac"])
    nonce = os.urandom(12)
    box = ChaCha20Poly1305(keys.enc).encrypt(nonce, grant, mac_bytes)
    return dumps({"type": "enrolled", "nonce": b64(nonce), "box": b64(box),
                  "mac": b64(tag(keys.mac, b"head", mac_bytes, nonce, box))}).encode()


def seeds() -> list[bytes]:
    w = world()
    grant = json.dumps({"root_cert": b64(w.root_cert), "cert": b64(w.head_cert), "policy": w.policy.decode(),
                        "company": "Fuzz Traders", "office": "BR1", "office_name": "Branch One"})
    return [w.enroll_request, w.enroll_reply, enroll.refusal("no"), b"G" + grant.encode()]
