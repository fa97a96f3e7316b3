"""Each defect that fuzzing found, as the input that showed it: refused precisely now, where it once
escaped as the wrong exception (or crashed the receive path)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import struct
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from helpers import state

from fuzz import fuzz_enroll
from fuzz.common import resign_entry, world
from p2psync import canonical
from p2psync.books import importer, model
from p2psync.deps import decode_deps
from p2psync.errors import InvalidInput
from p2psync.node import control
from p2psync.node.office import Node
from p2psync.protocol import entry, relay_auth
from p2psync.protocol.entry import EntryError
from p2psync.protocol.relay_auth import AuthError
from p2psync.protocol.sync import ProtocolError, SyncConnection
from p2psync.trust import enroll, policy
from p2psync.trust.certs import CertificateError, root_public_from_cert, to_der, verify_node_cert
from p2psync.trust.enroll import EnrollError
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import b64
from p2psync.trust.policy import PolicyError

DEEP = "[" * 50_000 + "]" * 50_000


def framed(header: bytes) -> bytes:
    return entry.MAGIC + struct.pack(">H", len(header)) + header + struct.pack(">I", 0) + b"\0" * 64


# ---------------------------------------------------------------- JSON nested deeper than the stack


@pytest.mark.parametrize("decode", [
    lambda: entry.peek(framed(b"[" * 8000 + b"]" * 8000)),
    lambda: SyncConnection().receive(DEEP),
    lambda: relay_auth.verify(DEEP, b"n" * 32),
    lambda: relay_auth.answer(DEEP, b"", b"", world().root),
    lambda: policy.verify(DEEP.encode(), world().root.public_key(), world().org),
    lambda: enroll.parse_request(DEEP.encode()),
    lambda: enroll.request_pin(DEEP.encode()),
    lambda: decode_deps(DEEP),
    lambda: model.decode_revision(DEEP),
    lambda: importer.parse_json(DEEP),
    lambda: control.decode_request(("[" * 30_000).encode()),
], ids=["entry", "sync", "relay-auth", "relay-challenge", "policy", "enroll", "enroll-pin", "deps", "model",
        "import", "control"])
def test_json_nested_deeper_than_the_stack_is_refused_precisely(decode) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises((EntryError, ProtocolError, AuthError, PolicyError, EnrollError, InvalidInput, ValueError)):
        decode()


def test_deep_json_never_reaches_the_caller_as_a_recursion_error() -> None:
    assert policy.claimed_version(DEEP.encode()) == 0
    with pytest.raises(ProtocolError, match="not JSON"):
        SyncConnection().receive(DEEP)


# ---------------------------------------------------------------- lone surrogates


def test_an_entry_whose_clear_header_holds_a_lone_surrogate_is_quarantined(trio: list[Node]) -> None:
    """It once crashed `Node.receive` (SQLite cannot store such text), before any signature check."""
    head = trio[0]
    header = json.dumps({"org": head.trust.org, "doc": "masters", "author": "\udc80abc", "seq": 1, "epoch": 1,
                         "deps": {}, "nonce": "AAAAAAAAAAAAAAAA", "z": 0, "pv": 1}).encode()
    before = state(head)
    result = head.receive([framed(header)])
    assert result.applied == 0 and result.quarantined == ["entry header is malformed"]
    assert state(head) == before
    assert head.quarantined()[-1]["reason"] == "entry header is malformed"


def test_a_peer_cannot_hand_over_text_that_cannot_be_stored() -> None:
    conn = SyncConnection()
    with pytest.raises(ProtocolError, match="not JSON"):
        conn.receive('{"type":"hello","v":1,"node":"\\udc80","org":"o","role":"r","policy":1,"vectors":{}}')
    with pytest.raises(ProtocolError):
        conn.receive('{"type":"refused","reason":"\\ud800 gone"}')


@pytest.mark.parametrize("text", ['"\\ud800"', '"\\uDBFF"', '"x\\uDbFf"', '["\\udc80"]', '{"\\uDFFF": 1}',
                                  '"\\ude00\\ud83d"', '"\ud800"', '"x\udfff"'])
def test_a_surrogate_escaped_in_any_case_or_raw_is_refused_as_text_or_bytes(text: str) -> None:
    """The check before decoding skips the costly one only for text that cannot hold a surrogate."""
    for raw in (text, text.encode("utf-8", "surrogatepass"), text.encode("utf-16-le", "surrogatepass"),
                text.encode("utf-32", "surrogatepass")):
        with pytest.raises(ValueError, match="lone surrogate"):
            canonical.loads(raw)


def test_escaped_pairs_and_escaped_backslashes_are_text() -> None:
    assert canonical.loads('["\\ud83d\\ude00", "\\\\ud800", "\\u00e9"]') == ["\U0001f600", "\\ud800", "\u00e9"]
    assert canonical.loads(b'"\\uD83D\\uDE00"') == "\U0001f600"
    with pytest.raises(ValueError, match="lone surrogate"):  # a str holding a pair's two code points
        canonical.loads('"\ud83d\ude00"')


def test_a_revision_holding_a_lone_surrogate_is_refused() -> None:
    body = model.encode_revision(model.Revision(
        "a1" * 12, "HO/PMT/00001", "HO", model.VoucherContent(model.VoucherType.PAYMENT, dt.date(2026, 4, 1), (
            model.Line("Rent", model.Side.DR, 100), model.Line("Cash", model.Side.CR, 100)), "rent"),
        model.Action.POST, (), 1, "c3" * 16, "2026-04-01T10:00:00.000000Z"))
    model.decode_revision(body)
    for narration in ("\\uDBFF rent", "rent \\udc80", "\ud800"):
        with pytest.raises(InvalidInput, match="not valid JSON"):
            model.decode_revision(body.replace('"rent"', f'"{narration}"'))


# ---------------------------------------------------------------- numbers JSON allows and Python does not


def test_a_policy_claiming_an_infinite_version_is_unreadable_not_a_crash() -> None:
    """`claimed_version` runs on unverified policies from any peer; `int(1e400)` is an OverflowError."""
    for version in ("1e400", "Infinity", "NaN", "-1", "true", '"7"'):
        body = json.dumps({"version": 0}).replace("0", version)
        assert policy.claimed_version(json.dumps({"body": body}).encode()) == 0


@pytest.mark.parametrize("field, value", [
    ("version", 1e400), ("version", True), ("epoch", "2"), ("members", {"n": 5}), ("sealed", []),
    ("revoked", {"n": {"masters": "3"}}), ("relays", "ws://r"), ("sync_after", "2026-02-30"),
    ("sync_after_history", {"x": None}),
])
def test_a_signed_policy_body_of_the_wrong_shape_is_refused_precisely(field: str, value: object) -> None:
    w = world()
    body = json.loads(json.loads(w.policy)["body"])
    blob = policy.sign_body(json.dumps({**body, field: value}).encode(), w.root)
    with pytest.raises(PolicyError, match="malformed"):
        policy.verify(blob, w.root.public_key(), w.org)


@pytest.mark.parametrize("policy", [1e400, 7, None, ["p"]])
def test_a_sealed_grant_whose_policy_is_not_text_is_refused_precisely(policy: object) -> None:
    """Its ``policy.encode()`` once escaped as an AttributeError."""
    w = world()
    code = InviteCode.parse(w.invite)
    grant = json.dumps({"root_cert": b64(w.root_cert), "cert": b64(w.head_cert), "policy": policy,
                        "company": "Fuzz Traders", "office": "BR1", "office_name": "Branch One"}).encode()
    with pytest.raises(EnrollError, match="cannot be decrypted"):
        enroll.read_reply(fuzz_enroll._sealed_grant(grant, code, w.enroll_request), code, w.enroll_request, w.joiner)


# ---------------------------------------------------------------- certificates


def test_a_certificate_with_an_impossible_x509_version_is_refused_precisely() -> None:
    """The version byte of a real certificate set to 35: `cryptography` raises `InvalidVersion`,
    which is not a `ValueError`."""
    der = bytearray(world().head_cert)
    at = der.index(b"\xa0\x03\x02\x01\x02")  # [0] EXPLICIT INTEGER 2 (v3)
    der[at + 4] = 35
    with pytest.raises(CertificateError, match="not valid DER"):
        verify_node_cert(bytes(der), world().root.public_key())
    with pytest.raises(CertificateError):
        root_public_from_cert(bytes(der))


def test_a_root_certificate_with_an_rsa_key_is_refused_precisely() -> None:
    """Verifying an RSA key's signature needs padding arguments: it once escaped as a TypeError."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "not ours")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    with pytest.raises(CertificateError, match="Ed25519"):
        root_public_from_cert(to_der(cert))


# ---------------------------------------------------------------- files and the control socket


def test_a_csv_field_longer_than_the_csv_module_allows_names_its_row() -> None:
    text = "voucher,type,date,ledger,dr,cr\n1,payment,2026-04-01,Rent,1,\n2," + "x" * 200_000 + ",,,,\n"
    with pytest.raises(InvalidInput, match=r"row 3: field larger than field limit"):
        importer.parse_csv(text)


def test_a_malformed_control_request_gets_an_answer(tmp_path: Path) -> None:
    """A request the node cannot read is answered "malformed request"; deep nesting once killed
    the handler, leaving the client waiting."""

    async def ask(line: bytes) -> dict[str, object]:
        server = await control.serve(tmp_path, handle)
        try:
            reader, writer = await asyncio.open_unix_connection(str(control.socket_path(tmp_path)))
            writer.write(line + b"\n")
            reply = json.loads(await asyncio.wait_for(reader.readline(), 30))
            writer.close()
            return reply
        finally:
            server.close()
            await server.wait_closed()

    async def handle(command: str, _args: dict[str, object]) -> dict[str, object]:
        return {"ran": command}

    for line in (b"[" * 30_000, b"[1, 2]", b'{"command": 5}', b"\xff\xfe"):
        assert asyncio.run(ask(line)) == {"error": "malformed request"}
    assert asyncio.run(ask(b'{"command": "status"}')) == {"ran": "status"}


# ---------------------------------------------------------------- entries re-signed by a member


def test_an_entry_whose_header_a_member_changed_and_signed_again_is_refused_by_its_ciphertext() -> None:
    w = world()
    original = entry.peek(w.entries[-1])
    header = original.encode().replace(f'"seq":{original.seq}'.encode(), b'"seq":99')
    forged = resign_entry(w.entries[-1], header, w.head.trust.keys.signing)
    assert entry.check_signature(forged, w.head.trust).seq == 99
    with pytest.raises(EntryError, match="ciphertext fails authentication"):
        entry.open_entry(forged, w.head.trust)


def test_a_re_signed_header_longer_than_its_length_field_is_refused_not_a_harness_crash() -> None:
    """The fuzz harness once crashed packing a mutated header of more than 65,535 bytes."""
    from fuzz import fuzz_entry

    fuzz_entry.check(b"H" + b"{" * 70_000)


def test_a_revision_nested_past_the_fixed_depth_is_refused_on_every_python() -> None:
    """Where `json` runs out of stack differs between Python versions, so an unknown field nested
    2,000 deep was applied by one replica and refused by another; the depth limit is now fixed."""
    revision = json.loads(_a_revision())
    for depth, accepted in ((60, True), (65, False), (2_000, False)):
        text = json.dumps(revision)[:-1] + ',"extra":' + "[" * depth + "]" * depth + "}"
        if accepted:
            assert model.decode_revision(text).id == revision["id"]
        else:
            with pytest.raises(InvalidInput, match="malformed voucher revision: not valid JSON"):
                model.decode_revision(text)


def _a_revision() -> str:
    rev = model.Revision("r1", "HO/SAL/00001", "HO", model.VoucherContent(
        model.VoucherType.SALES, dt.date(2026, 4, 2), (model.Line("Cash", model.Side.DR, 100),
                                                       model.Line("Sales", model.Side.CR, 100))),
        model.Action.POST, (), 1, "a" * 32, "2026-04-02T00:00:00.000000Z")
    return model.encode_revision(rev)
