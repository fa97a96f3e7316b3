"""X.509 certificates: the head office is a private CA whose root key signs one certificate per node.

A node certificate binds the node's Ed25519 key (its subject key) to its office, its role and its
X25519 sealing key (carried as ``urn:p2psync:`` URIs in subjectAltName). The same certificates
authenticate TLS 1.3 links between nodes.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.x509.oid import NameOID

from p2psync.errors import P2PSyncError
from p2psync.trust.keys import b64, node_id, org_id, raw_public, unb64

ROOT_YEARS = 30
NODE_YEARS = 10
#: How far before its issue a certificate is already valid: the clock skew tolerated between the head
#: office and a node whose clock runs behind it.
BACKDATE = dt.timedelta(days=1)
_URN = "urn:p2psync:"
#: Ed25519's AlgorithmIdentifier in DER: OID 1.3.101.112 with its parameters absent (RFC 8410 §3).
ED25519_ALGORITHM = bytes.fromhex("300506032b6570")
#: The BIT STRING of an Ed25519 signature: 65 bytes, the first saying no bits are unused.
_SIGNATURE_HEAD = bytes.fromhex("034100")
_VERSION_TAG = 0xA0


class CertificateError(P2PSyncError):
    """A certificate does not chain to the organisation's root or is malformed."""


class UnknownMember(CertificateError):
    """No certificate is known for a node: not a member, or admitted by a policy not yet received."""


@dataclass(frozen=True)
class Member:
    """What a verified node certificate says about its holder."""

    node_id: str
    org: str
    office: str
    role: str
    signing: Ed25519PublicKey
    sealing: X25519PublicKey
    der: bytes
    #: Which of its office's machines this is (1 for the first): its own voucher number series.
    series: int = 1

    @property
    def is_head(self) -> bool:
        return self.role == "head"


def _name(org: str, common: str, office: str | None = None) -> x509.Name:
    parts = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org), x509.NameAttribute(NameOID.COMMON_NAME, common)]
    if office:
        parts.insert(1, x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, office))
    return x509.Name(parts)


def make_root_cert(root: Ed25519PrivateKey) -> x509.Certificate:
    org = org_id(root.public_key())
    now = dt.datetime.now(dt.timezone.utc)
    name = _name(org, "p2psync root")
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(root.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=365 * ROOT_YEARS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(root, None)
    )


def issue_node_cert(root: Ed25519PrivateKey, root_cert: x509.Certificate, signing: Ed25519PublicKey,
                    sealing: X25519PublicKey, office: str, role: str, series: int = 1) -> x509.Certificate:
    org = org_id(root.public_key())
    now = dt.datetime.now(dt.timezone.utc)
    san = x509.SubjectAlternativeName([
        x509.UniformResourceIdentifier(f"{_URN}role:{role}"),
        x509.UniformResourceIdentifier(f"{_URN}x25519:{b64(raw_public(sealing))}"),
        x509.UniformResourceIdentifier(f"{_URN}series:{series}"),
        x509.DNSName(f"{node_id(signing)}.p2psync.invalid"),
    ])
    return (
        x509.CertificateBuilder()
        .subject_name(_name(org, node_id(signing), office))
        .issuer_name(root_cert.subject)
        .public_key(signing)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=365 * NODE_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .sign(root, None)
    )


def verify_node_cert(der: bytes, root_public: Ed25519PublicKey, now: dt.datetime | None = None) -> Member:
    """Check that `der` is a node certificate signed by this organisation's root and decode it.

    Validity is judged by this machine's clock (`now`, for tests): a certificate is valid from a day
    before the head office issued it, so a receiver's clock may run up to that much behind."""
    try:
        cert = x509.load_der_x509_certificate(der)
    except (ValueError, x509.InvalidVersion):
        raise CertificateError("certificate is not valid DER X.509") from None
    check_algorithms(der)
    try:
        root_public.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertificateError("certificate is not signed by this organisation's root") from None
    org = org_id(root_public)
    try:
        subject_org = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value
        office = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value
        claimed = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
        fields = dict(u[len(_URN):].split(":", 1) for u in uris if u.startswith(_URN))
        signing = cert.public_key()
        sealing = X25519PublicKey.from_public_bytes(unb64(fields["x25519"]))
    except (IndexError, KeyError, ValueError, UnsupportedAlgorithm, x509.ExtensionNotFound):
        raise CertificateError("certificate lacks the p2psync node fields") from None
    if subject_org != org:
        raise CertificateError("certificate belongs to another organisation")
    if not isinstance(signing, Ed25519PublicKey) or node_id(signing) != claimed:
        raise CertificateError("certificate's node id does not match its key")
    role = fields.get("role", "")
    if role not in ("head", "branch"):
        raise CertificateError(f"certificate has unknown role {role!r}")
    series_text = fields.get("series", "1")
    if not series_text.isdigit() or not 1 <= int(series_text) <= 9999:
        raise CertificateError(f"certificate has a bad voucher series {series_text[:10]!r}")
    now = now or dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise CertificateError("certificate is outside its validity period")
    return Member(claimed, org, str(office), role, signing, sealing, der, int(series_text))


def check_algorithms(der: bytes) -> None:
    """Require the outer signatureAlgorithm, the signed one inside tbsCertificate and the signature's
    BIT STRING to be exactly Ed25519's.

    The signature covers only tbsCertificate: without this, the outer AlgorithmIdentifier (and the
    BIT STRING's unused-bits byte) could be changed freely and the certificate would still verify,
    so one certificate would have many encodings, and a receiver comparing certificates by their
    bytes would take a changed copy for another certificate."""
    try:
        _tag, body, end = _element(der, 0)
        _tag, _start, tbs_end = _element(der, body)
        outer = der[tbs_end:_element(der, tbs_end)[2]]
        signature = der[tbs_end + len(outer):end]
        inner = _signed_algorithm(der, body)
    except ValueError:
        raise CertificateError("certificate is not valid DER X.509") from None
    if end != len(der):
        raise CertificateError("certificate has bytes after its end")
    if inner != ED25519_ALGORITHM:
        raise CertificateError("certificate's signed signature algorithm (in tbsCertificate) is not Ed25519")
    if outer != inner:
        raise CertificateError("certificate's outer signatureAlgorithm differs from the signed one in tbsCertificate")
    if len(signature) != 67 or not signature.startswith(_SIGNATURE_HEAD):
        raise CertificateError("certificate's signature is not a 64-byte Ed25519 signature")


def _signed_algorithm(der: bytes, tbs_at: int) -> bytes:
    """The AlgorithmIdentifier inside tbsCertificate: after the optional [0] version and the serial."""
    _tag, at, _end = _element(der, tbs_at)
    tag, _start, after = _element(der, at)
    if tag == _VERSION_TAG:
        _tag, _start, after = _element(der, after)  # the serial number
    return der[after:_element(der, after)[2]]


def _element(der: bytes, at: int) -> tuple[int, int, int]:
    """(tag, start of contents, end) of the DER element at `at`. Only called on bytes `cryptography`
    has already parsed as strict DER; the bounds checks make it safe on anything anyway."""
    if at + 2 > len(der):
        raise ValueError("truncated")
    tag, first, at = der[at], der[at + 1], at + 2
    if first & 0x80:
        count = first & 0x7F
        if not 1 <= count <= 4 or at + count > len(der):
            raise ValueError("bad length")
        first, at = int.from_bytes(der[at:at + count], "big"), at + count
    if at + first > len(der):
        raise ValueError("truncated")
    return tag, at, at + first


def to_der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def root_public_from_cert(der: bytes) -> Ed25519PublicKey:
    try:
        cert = x509.load_der_x509_certificate(der)
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm, x509.InvalidVersion):
        raise CertificateError("root certificate is malformed or not self-signed") from None
    if not isinstance(key, Ed25519PublicKey):  # checked first: other key types verify differently
        raise CertificateError("root certificate does not hold an Ed25519 key")
    check_algorithms(der)
    try:
        key.verify(cert.signature, cert.tbs_certificate_bytes)
    except InvalidSignature:
        raise CertificateError("root certificate is malformed or not self-signed") from None
    return key
