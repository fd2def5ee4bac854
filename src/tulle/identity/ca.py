"""The certificate authority's crypto: trust anchors, issuers and workload leaves.

Chain of trust (DESIGN.md "Identity and mTLS"):

    trust anchor (root, self-signed, long-lived; may be kept offline)
      -> issuer (intermediate, path length 0, held by the control plane)
        -> workload leaf (hours; SPIFFE ID in a critical URI SAN, empty subject)

Every key is ECDSA P-256. Certificates carry subject/authority key identifiers
so that chain building stays unambiguous while two anchors with similar names
share a trust bundle during rotation, and each CA certificate's common name
ends in a short random tag so that names differ across rotations too. This
module does no file I/O; `tulle.identity.store` persists what it makes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import itertools
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tulle.identity.spiffe import SpiffeId

DAY_S = 86_400.0
DEFAULT_ANCHOR_TTL_S = 10 * 365 * DAY_S
DEFAULT_ISSUER_TTL_S = 365 * DAY_S
DEFAULT_LEAF_TTL_S = DAY_S
# CA certificates start slightly in the past so a peer whose clock lags a little
# still accepts a freshly rotated issuer.
CA_BACKDATE_S = 60.0
# Leaves are backdated by at most this much, and never by more than their own
# lifetime, for the same reason.
LEAF_MAX_BACKDATE_S = 30.0

CertificateAuthorityKey = ec.EllipticCurvePrivateKey


class ChainError(ValueError):
    """A certificate does not chain to the anchors it is expected to chain to."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def generate_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(int(timestamp), tz=dt.UTC)


def _ca_name(role: str, trust_domain: str) -> x509.Name:
    tag = secrets.token_hex(4)
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "tulle"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{role} {trust_domain[:40]} {tag}"),
        ]
    )


def make_anchor(trust_domain: str, *, now: float, ttl_s: float = DEFAULT_ANCHOR_TTL_S) -> KeyPair:
    """A new self-signed trust anchor for `trust_domain`."""
    key = generate_key()
    name = _ca_name("tulle trust anchor", trust_domain)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CA_BACKDATE_S))
        .not_valid_after(_utc(now + ttl_s))
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def make_issuer(
    trust_domain: str, anchor: KeyPair, *, now: float, ttl_s: float = DEFAULT_ISSUER_TTL_S
) -> KeyPair:
    """A new intermediate signed by `anchor`; it never outlives the anchor."""
    key = generate_key()
    not_after = min(now + ttl_s, anchor.certificate.not_valid_after_utc.timestamp())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_ca_name("tulle issuer", trust_domain))
        .issuer_name(anchor.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - CA_BACKDATE_S))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(anchor.certificate), critical=False)
        .sign(anchor.key, hashes.SHA256())
    )
    return KeyPair(certificate, key)


def _server_names(names: Sequence[str]) -> list[x509.GeneralName]:
    """DNS names, and IP addresses as IP SANs (a client dialling 127.0.0.1 checks those)."""
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def issue_leaf(
    identity: SpiffeId,
    public_key: ec.EllipticCurvePublicKey,
    issuer: KeyPair,
    *,
    now: float,
    ttl_s: float = DEFAULT_LEAF_TTL_S,
    dns_names: Sequence[str] = (),
) -> x509.Certificate:
    """A workload certificate for `identity`, usable as TLS client and server.

    Its lifetime is cut short at the issuer's own expiry so that no leaf claims
    a validity its chain cannot back. `dns_names` are for the control plane's
    own serving certificate only: Identity.Certify never puts a DNS name in a
    workload's leaf, so no workload can pass for the control plane.
    """
    backdate = min(LEAF_MAX_BACKDATE_S, ttl_s)
    not_after = min(now + ttl_s, issuer.certificate.not_valid_after_utc.timestamp())
    return (
        x509.CertificateBuilder()
        # Empty subject: the identity lives only in the SAN, which is then critical (RFC 5280).
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_utc(now - backdate))
        .not_valid_after(_utc(not_after))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(identity.uri), *_server_names(dns_names)]
            ),
            critical=True,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(_authority_key_id(issuer.certificate), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )


def _ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(issuer_certificate: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer_certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value)


def uri_sans(certificate: x509.Certificate) -> list[str]:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return san.value.get_values_for_type(x509.UniformResourceIdentifier)


def fingerprint_sha256(certificate: x509.Certificate) -> str:
    """Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256` prints it."""
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def is_issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s key signed `certificate` (names and signature both checked)."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def verify_chain(
    leaf: x509.Certificate,
    intermediates: Sequence[x509.Certificate],
    anchors: Sequence[x509.Certificate],
    *,
    now: float,
) -> None:
    """Check leaf -> intermediates... -> one of `anchors`, signatures and validity times.

    A compact check for the control plane and the CLI (no policy beyond what
    Tulle issues); the TLS handshakes rely on OpenSSL's full verification.
    """
    chain = [leaf, *intermediates]
    at = _utc(now)
    for certificate in chain:
        if not certificate.not_valid_before_utc <= at <= certificate.not_valid_after_utc:
            raise ChainError(
                f"certificate {certificate.subject.rfc4514_string()!r} is not valid now"
            )
    for child, parent in itertools.pairwise(chain):
        if not is_issued_by(child, parent):
            raise ChainError(
                f"{child.subject.rfc4514_string()!r} is not signed by "
                f"{parent.subject.rfc4514_string()!r}"
            )
    if not any(is_issued_by(chain[-1], anchor) for anchor in anchors):
        name = chain[-1].subject.rfc4514_string() or "the leaf"
        raise ChainError(f"{name!r} is not signed by any trust anchor")


def certificates_to_pem(certificates: Sequence[x509.Certificate]) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


@dataclass(frozen=True, slots=True)
class TrustBundle:
    """The anchors a workload trusts: one, or two while an anchor rotation is under way."""

    anchors: tuple[x509.Certificate, ...]

    @property
    def version(self) -> str:
        """A short digest of the anchors: equal bundles have equal versions."""
        digest = hashlib.sha256()
        for der in sorted(self.der()):
            digest.update(der)
        return digest.hexdigest()[:16]

    def der(self) -> list[bytes]:
        return [a.public_bytes(serialization.Encoding.DER) for a in self.anchors]

    def pem(self) -> bytes:
        return certificates_to_pem(self.anchors)

    @classmethod
    def from_der(cls, ders: Sequence[bytes]) -> TrustBundle:
        return cls(tuple(x509.load_der_x509_certificate(der) for der in ders))

    def anchors_of(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        """The anchors in this bundle that directly signed `certificate`."""
        return [anchor for anchor in self.anchors if is_issued_by(certificate, anchor)]
