"""Certification: turn (identity, token, CSR) into a leaf, or a precise refusal.

This is the decision the control plane's `Identity.Certify` makes, kept free of
gRPC so that the proxy's local test path and the service share it. Each refusal
is its own exception type, which the service maps to one gRPC status:

    InvalidRequest     -> INVALID_ARGUMENT   (malformed identity or CSR)
    NotAuthenticated   -> UNAUTHENTICATED    (token does not prove the identity)
    NotPermitted       -> PERMISSION_DENIED  (CSR or trust domain not the identity's)
    IssuerUnavailable  -> UNAVAILABLE        (no usable issuer right now)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from tulle.identity.ca import DEFAULT_LEAF_TTL_S, TrustBundle, issue_leaf
from tulle.identity.csr import CsrIdentityMismatch, MalformedCsr, check_csr
from tulle.identity.spiffe import InvalidSpiffeId, parse_spiffe_id
from tulle.identity.store import IssuerMaterial, IssuerUnavailable
from tulle.identity.tokens import InvalidToken, verify_token

__all__ = [
    "CertificationRefused",
    "Certifier",
    "InvalidRequest",
    "IssuedCertificate",
    "IssuerUnavailable",
    "NotAuthenticated",
    "NotPermitted",
]


class CertificationRefused(Exception):
    """Base of the refusals; `reason` is a short label for metrics."""

    reason = "refused"


class InvalidRequest(CertificationRefused):
    reason = "invalid_argument"


class NotAuthenticated(CertificationRefused):
    reason = "unauthenticated"


class NotPermitted(CertificationRefused):
    reason = "permission_denied"


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    bundle: TrustBundle

    @property
    def valid_until(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    def leaf_der(self) -> bytes:
        return self.leaf.public_bytes(serialization.Encoding.DER)

    def intermediates_der(self) -> list[bytes]:
        return [c.public_bytes(serialization.Encoding.DER) for c in self.intermediates]


class Certifier:
    """Checks requests against the current issuer material and signs leaves."""

    def __init__(
        self,
        material: Callable[[], IssuerMaterial],
        *,
        leaf_ttl_s: float = DEFAULT_LEAF_TTL_S,
    ) -> None:
        if leaf_ttl_s <= 0:
            raise ValueError("leaf lifetime must be positive")
        self._material = material
        self.leaf_ttl_s = leaf_ttl_s

    def material(self) -> IssuerMaterial:
        return self._material()

    def certify(
        self,
        identity: str,
        token: str,
        csr_der: bytes,
        *,
        now: float,
        token_checked: bool = False,
    ) -> IssuedCertificate:
        """Sign a leaf for `identity`; `token_checked` when another authenticator
        (a Kubernetes TokenReview) has already proved the identity."""
        try:
            spiffe_id = parse_spiffe_id(identity)
        except InvalidSpiffeId as error:
            raise InvalidRequest(str(error)) from None
        material = self._material()  # may raise IssuerUnavailable
        if not token_checked:
            try:
                verify_token(material.token_secret, token, identity, now=now)
            except InvalidToken as error:
                raise NotAuthenticated(str(error)) from None
        if spiffe_id.trust_domain != material.trust_domain:
            raise NotPermitted(
                f"{identity} is in trust domain {spiffe_id.trust_domain!r}; this control plane "
                f"issues for {material.trust_domain!r}"
            )
        try:
            public_key = check_csr(csr_der, identity)
        except MalformedCsr as error:
            raise InvalidRequest(str(error)) from None
        except CsrIdentityMismatch as error:
            raise NotPermitted(str(error)) from None
        leaf = issue_leaf(spiffe_id, public_key, material.issuer, now=now, ttl_s=self.leaf_ttl_s)
        return IssuedCertificate(leaf, (material.issuer.certificate,), material.bundle)
