"""Mutual TLS between the broker and the nodes: a federation CA, member certificates, contexts.

The federation CA (ECDSA P-256, made with ``cryptography``'s x509 builder) issues one
certificate per member whose subject common name is the member id. A certificate is accepted
only when it chains to the federation CA *and* it is bound to a current member of the trust
list with the expected role: either by the SHA-256 fingerprint the member lists
(``tls_fingerprint``, checked when present) or, when the member lists none, by the common name.
The binding is checked per request against the trust list in force, so removing a member or
changing its fingerprint in a new trust-list version takes effect at the next refresh, with no
restart and no certificate revocation list.

Certificates use ECDSA rather than Ed25519 because every TLS stack in use by councils (load
balancers, proxies, older OpenSSL builds) supports it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from trust.errors import TrustError, UnknownMemberError
from trust.trustlist import Member, TrustList

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


class CertificateError(TrustError):
    """A peer certificate is missing, unreadable, or not bound to a current member."""


@dataclass(frozen=True)
class TlsFiles:
    """Where one party's TLS material lives: its certificate and key, and the federation CA."""

    cert: Path
    key: Path
    ca: Path


def fingerprint(der: bytes) -> str:
    """The trust list's form of a certificate fingerprint: ``sha256:<hex>`` of the DER bytes."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def certificate_fingerprint(path: Path) -> str:
    """The fingerprint of a PEM certificate file."""
    cert = _load_cert(path)
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


def _load_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise TrustError(f"{path}: cannot read certificate: {exc}") from exc


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise TrustError(f"{path}: cannot read private key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TrustError(f"{path}: expected an ECDSA private key")
    return key


def _write_private(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_ca(cert_path: Path, key_path: Path, name: str, *, valid_days: int = 3650,
              now: datetime | None = None) -> x509.Certificate:
    """Create the federation CA: a self-signed ECDSA P-256 certificate that may only sign certs."""
    moment = now or datetime.now(UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} federation CA")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=5))
        .not_valid_after(moment + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=False, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write_private(key, key_path)
    _write_cert(cert, cert_path)
    return cert


def _san(hosts: Iterable[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_certificate(
    ca_cert_path: Path, ca_key_path: Path, member_id: str, cert_path: Path, key_path: Path,
    *, hosts: Iterable[str] = DEFAULT_HOSTS, valid_days: int = 90, now: datetime | None = None,
) -> str:
    """Issue a member certificate (server and client use) signed by the federation CA.

    The subject common name is the member id; the member id and ``hosts`` become subject
    alternative names (the broker checks a node by its member id; browsers and health checks
    use the host names). Returns the certificate's fingerprint for the
    member's ``tls_fingerprint`` in the trust list.
    """
    if not member_id:
        raise TrustError("member_id: expected a non-empty member id")
    moment = now or datetime.now(UTC)
    ca_cert = _load_cert(ca_cert_path)
    ca_key = _load_key(ca_key_path)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member_id)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(moment - timedelta(minutes=5))
        .not_valid_after(moment + timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=True, key_cert_sign=False, crl_sign=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(
            [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san(dict.fromkeys([member_id, *hosts]))),
                       critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_private(key, key_path)
    _write_cert(cert, cert_path)
    return fingerprint(cert.public_bytes(serialization.Encoding.DER))


# --- SSL contexts ---------------------------------------------------------------------------


def server_context(files: TlsFiles, *, require_client: bool = True) -> ssl.SSLContext:
    """A server context: TLS 1.2+; for a node, a client certificate from the federation CA required.

    The handshake proves the client holds a key certified by the federation CA; which member it
    is, and whether that member is a current broker, is checked per request with
    ``peer_member`` against the trust list in force. The broker's practitioner-facing side uses
    ``require_client=False`` (practitioners authenticate with tokens, not certificates).
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_NONE
    context.load_cert_chain(str(files.cert), str(files.key))
    return context


def client_context(files: TlsFiles, *, bind: Callable[[], TrustList] | None = None,
                   role: str = "node") -> ssl.SSLContext:
    """The broker's client context: present its certificate, verify nodes against the CA only.

    Only the federation CA is trusted (not the system store), and the host name is checked
    against the certificate. With ``bind`` (a function returning the trust list in force) every
    handshake also checks that the certificate is bound to the member named as the server host
    name (the broker connects with ``server_hostname`` = the node's member id, which every
    member certificate carries as a DNS name): a failed binding fails the handshake.
    """
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files.ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(str(files.cert), str(files.key))
    if bind is not None:
        context.sslobject_class = _binding_sslobject(bind, role)
    return context


def _binding_sslobject(trust: Callable[[], TrustList], role: str) -> type[ssl.SSLObject]:
    """An ``SSLObject`` that, once the handshake verified the chain, checks the trust-list binding."""

    class BoundSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()
            try:
                peer_member(trust(), self.getpeercert(binary_form=True), role, expected=self.server_hostname)
            except CertificateError as exc:
                raise ssl.SSLCertVerificationError(str(exc)) from exc

    return BoundSSLObject


def plain_client_context(ca: Path) -> ssl.SSLContext:
    """A client context that trusts the federation CA and presents no certificate (health checks)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


# --- Binding a peer certificate to a member -------------------------------------------------


def peer_certificate(transport: Any) -> bytes | None:
    """The DER bytes of the peer's certificate on an asyncio transport, or None (no TLS, none)."""
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return bytes(der) if der else None


def response_certificate(response: Any) -> bytes | None:
    """The server certificate behind an aiohttp client response (None if it cannot be found).

    A small response is often complete, and its connection back in the pool, by the time the
    caller sees it, so ``response.connection`` may already be None; the protocol that carried
    it still holds the transport while the connection is kept alive. Callers fail closed on None.
    """
    connection = getattr(response, "connection", None)
    if connection is not None and connection.transport is not None:
        return peer_certificate(connection.transport)
    protocol = getattr(response, "_protocol", None)
    return peer_certificate(getattr(protocol, "transport", None))


def _common_name(der: bytes) -> str | None:
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError:
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else None


def peer_member(trust: TrustList, der: bytes | None, role: str, *, expected: str | None = None) -> Member:
    """The current member with ``role`` that the certificate ``der`` is bound to.

    A member that lists ``tls_fingerprint`` is bound by that fingerprint only; a member without
    one is bound by the certificate's common name (the handshake already proved the chain to the
    federation CA). ``expected`` names the member the caller meant to reach (the node asked).
    Raises ``CertificateError`` when there is no certificate or no current binding.
    """
    if der is None:
        raise CertificateError("TLS: the peer presented no certificate")
    digest = fingerprint(der)
    if expected is not None:
        one = trust.members.get(expected)
        candidates = [one] if one is not None and role in one.roles else []
    else:
        candidates = trust.with_role(role)
    for member in candidates:
        if member.tls_fingerprint is not None and member.tls_fingerprint.lower() == digest:
            return member
    name = _common_name(der)
    if name is not None:
        for member in candidates:
            if member.id == name and member.tls_fingerprint is None:
                return member
    try:
        trust.member(name or "", role)
    except UnknownMemberError:
        raise CertificateError(
            f"TLS: certificate {digest[:23]}… (CN {name!r}) does not belong to a current {role} "
            f"of trust list version {trust.version}") from None
    raise CertificateError(
        f"TLS: certificate {digest[:23]}… (CN {name!r}) is not the one trust list version "
        f"{trust.version} binds to {expected or name!r}")
