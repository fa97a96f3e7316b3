"""TLS 1.3 with mutual certificates for node links: the head office's root is the only CA."""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from p2psync.node.membership import Membership
from p2psync.trust.certs import CertificateError, Member, verify_node_cert

CERT_FILE = "node-cert.pem"
KEY_FILE = "node-signing.pem"


def write_cert_files(keys_dir: Path, cert_der: bytes) -> None:
    """The node certificate as PEM beside its key, where `ssl` expects to load them from."""
    pem = x509.load_der_x509_certificate(cert_der).public_bytes(serialization.Encoding.PEM)
    (keys_dir / CERT_FILE).write_bytes(pem)


def _context(purpose: int, keys_dir: Path, root_cert_der: bytes) -> ssl.SSLContext:
    context = ssl.SSLContext(purpose)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(keys_dir / CERT_FILE, keys_dir / KEY_FILE)
    root_pem = x509.load_der_x509_certificate(root_cert_der).public_bytes(serialization.Encoding.PEM)
    context.load_verify_locations(cadata=root_pem.decode())
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def server_context(keys_dir: Path, root_cert_der: bytes) -> ssl.SSLContext:
    """Members present their certificate; a client with none may only enroll (checked by the caller)."""
    context = _context(ssl.PROTOCOL_TLS_SERVER, keys_dir, root_cert_der)
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def enrollment_context() -> ssl.SSLContext:
    """Before joining, a branch cannot check the head office's certificate: the invite code's MACs
    authenticate the exchange instead, so the channel only needs to be encrypted."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def client_context(keys_dir: Path, root_cert_der: bytes) -> ssl.SSLContext:
    context = _context(ssl.PROTOCOL_TLS_CLIENT, keys_dir, root_cert_der)
    context.check_hostname = False  # peers are named by node id in the certificate, checked below
    return context


class RevokedPeer(CertificateError):
    """A member whose certificate is valid but whom the policy revokes: unlike a stranger, it is
    told so, with the policy, before it is refused."""

    def __init__(self, message: str, member: Member) -> None:
        super().__init__(message)
        self.member = member


def peer_member(ssl_object: ssl.SSLObject | None, trust: Membership) -> Member:
    """Who is on the other end, by its verified certificate; refuses revoked nodes (`RevokedPeer`)."""
    if ssl_object is None:
        raise CertificateError("the link is not encrypted")
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        raise CertificateError("the peer presented no certificate")
    member = verify_node_cert(der, trust.root)
    if member.node_id in trust.policy.revoked:
        raise RevokedPeer(f"node {member.node_id[:16]} ({member.office}) is revoked", member)
    return member
