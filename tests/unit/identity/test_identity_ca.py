"""The CA chain: anchor -> issuer -> leaf, with the SPIFFE ID in the URI SAN."""

from __future__ import annotations

import pytest
from cryptography import x509

from tulle.identity.ca import (
    ChainError,
    TrustBundle,
    generate_key,
    issue_leaf,
    make_anchor,
    make_issuer,
    uri_sans,
    verify_chain,
)
from tulle.identity.spiffe import parse_spiffe_id
from tulle.identity.store import IssuerMaterial

TRUST_DOMAIN = "cluster.local"
WEB = "spiffe://cluster.local/ns/default/sa/web"


def test_leaf_chains_to_anchor(material: IssuerMaterial, now: float) -> None:
    key = generate_key()
    leaf = issue_leaf(parse_spiffe_id(WEB), key.public_key(), material.issuer, now=now, ttl_s=3600)
    verify_chain(leaf, [material.issuer.certificate], material.bundle.anchors, now=now + 1)
    assert uri_sans(leaf) == [WEB]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical  # the subject is empty, so RFC 5280 wants the SAN critical
    assert leaf.subject == x509.Name([])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc.timestamp() == now + 3600


def test_ca_constraints(material: IssuerMaterial) -> None:
    anchor = material.bundle.anchors[0]
    issuer = material.issuer.certificate
    assert anchor.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    constraints = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    assert issuer.issuer == anchor.subject


def test_leaf_never_outlives_issuer(now: float) -> None:
    anchor = make_anchor(TRUST_DOMAIN, now=now)
    issuer = make_issuer(TRUST_DOMAIN, anchor, now=now, ttl_s=600)
    leaf = issue_leaf(
        parse_spiffe_id(WEB), generate_key().public_key(), issuer, now=now, ttl_s=86_400
    )
    assert leaf.not_valid_after_utc == issuer.certificate.not_valid_after_utc


def test_chain_to_another_anchor_fails(material: IssuerMaterial, now: float) -> None:
    other = IssuerMaterial.generate(TRUST_DOMAIN, now=now)
    leaf = issue_leaf(parse_spiffe_id(WEB), generate_key().public_key(), other.issuer, now=now)
    with pytest.raises(ChainError, match="trust anchor"):
        verify_chain(leaf, [other.issuer.certificate], material.bundle.anchors, now=now)
    with pytest.raises(ChainError, match="not signed by"):
        verify_chain(leaf, [material.issuer.certificate], material.bundle.anchors, now=now)


def test_expired_leaf_fails(material: IssuerMaterial, now: float) -> None:
    leaf = issue_leaf(
        parse_spiffe_id(WEB), generate_key().public_key(), material.issuer, now=now, ttl_s=30
    )
    with pytest.raises(ChainError, match="not valid now"):
        verify_chain(leaf, [material.issuer.certificate], material.bundle.anchors, now=now + 31)


def test_bundle_version_ignores_order(now: float) -> None:
    a = make_anchor(TRUST_DOMAIN, now=now).certificate
    b = make_anchor(TRUST_DOMAIN, now=now).certificate
    assert TrustBundle((a, b)).version == TrustBundle((b, a)).version
    assert TrustBundle((a,)).version != TrustBundle((a, b)).version
    assert TrustBundle.from_der(TrustBundle((a, b)).der()) == TrustBundle((a, b))
