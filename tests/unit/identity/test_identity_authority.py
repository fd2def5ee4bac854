"""Certification decisions: token, CSR well-formedness and identity, trust domain."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from tulle.identity.authority import Certifier, InvalidRequest, NotAuthenticated, NotPermitted
from tulle.identity.ca import generate_key, uri_sans, verify_chain
from tulle.identity.csr import build_csr
from tulle.identity.store import IssuerMaterial
from tulle.identity.tokens import make_token

API = "spiffe://cluster.local/ns/default/sa/api"
WEB = "spiffe://cluster.local/ns/default/sa/web"


@pytest.fixture()
def certifier(material: IssuerMaterial) -> Certifier:
    return Certifier(lambda: material, leaf_ttl_s=30)


def _token(material: IssuerMaterial, identity: str, now: float) -> str:
    return make_token(material.token_secret, identity, now=now, ttl_s=3600)


def test_issues_leaf(certifier: Certifier, material: IssuerMaterial, now: float) -> None:
    key = generate_key()
    issued = certifier.certify(WEB, _token(material, WEB, now), build_csr(WEB, key), now=now)
    assert uri_sans(issued.leaf) == [WEB]
    assert issued.leaf.public_key() == key.public_key()
    assert issued.valid_until == now + 30
    verify_chain(issued.leaf, issued.intermediates, issued.bundle.anchors, now=now)


def test_bad_token(certifier: Certifier, material: IssuerMaterial, now: float) -> None:
    csr = build_csr(WEB, generate_key())
    with pytest.raises(NotAuthenticated, match="no join token"):
        certifier.certify(WEB, "", csr, now=now)
    with pytest.raises(NotAuthenticated, match="is for"):
        certifier.certify(WEB, _token(material, API, now), csr, now=now)


def test_csr_for_another_identity(
    certifier: Certifier, material: IssuerMaterial, now: float
) -> None:
    csr = build_csr(API, generate_key())
    with pytest.raises(NotPermitted, match=f"names {API}; it must name exactly {WEB}"):
        certifier.certify(WEB, _token(material, WEB, now), csr, now=now)


def test_csr_with_extra_names(certifier: Certifier, material: IssuerMaterial, now: float) -> None:
    key = generate_key()
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(WEB), x509.DNSName("evil.example")]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(NotPermitted, match="DNSName"):
        certifier.certify(
            WEB, _token(material, WEB, now), request.public_bytes(Encoding.DER), now=now
        )


def test_csr_without_names(certifier: Certifier, material: IssuerMaterial, now: float) -> None:
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(generate_key(), hashes.SHA256())
    )
    with pytest.raises(NotPermitted, match="names no identity"):
        certifier.certify(
            WEB, _token(material, WEB, now), request.public_bytes(Encoding.DER), now=now
        )


@pytest.mark.parametrize("garbage", [b"", b"\x00" * 10, b"not a csr at all", b"\x30\x82\xff\xff"])
def test_malformed_csr(
    certifier: Certifier, material: IssuerMaterial, now: float, garbage: bytes
) -> None:
    with pytest.raises(InvalidRequest, match="certificate signing request"):
        certifier.certify(WEB, _token(material, WEB, now), garbage, now=now)


def test_csr_with_broken_signature(
    certifier: Certifier, material: IssuerMaterial, now: float
) -> None:
    der = bytearray(build_csr(WEB, generate_key()))
    der[-5] ^= 0xFF  # inside the signature
    with pytest.raises(InvalidRequest):
        certifier.certify(WEB, _token(material, WEB, now), bytes(der), now=now)


def test_csr_with_weak_curve(certifier: Certifier, material: IssuerMaterial, now: float) -> None:
    csr = build_csr(WEB, ec.generate_private_key(ec.SECP521R1()))
    with pytest.raises(InvalidRequest, match="P-256"):
        certifier.certify(WEB, _token(material, WEB, now), csr, now=now)


def test_other_trust_domain(now: float) -> None:
    other = IssuerMaterial.generate("example.org", now=now)
    certifier = Certifier(lambda: other)
    with pytest.raises(NotPermitted, match="trust domain"):
        certifier.certify(WEB, _token(other, WEB, now), build_csr(WEB, generate_key()), now=now)


def test_malformed_identity(certifier: Certifier, now: float) -> None:
    with pytest.raises(InvalidRequest, match="must start with"):
        certifier.certify("web", "token", b"", now=now)
