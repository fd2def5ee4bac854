"""Certificate signing requests: built by the proxy, checked by the control plane.

The proxy's CSR names its identity in a URI SAN and nothing else. The control
plane accepts a CSR only when it parses, its self-signature holds (so the
requester has the private key), its key is ECDSA on P-256 or P-384, and its
SANs are exactly the identity the token proved. The CSR's subject and other
requested extensions are ignored: the issuer decides what goes in a leaf.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

# Far above any honest CSR (a P-256 CSR with one SAN is ~300 bytes).
MAX_CSR_BYTES = 16 * 1024
_ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)


class MalformedCsr(ValueError):
    """The bytes are not a usable CSR."""


class CsrIdentityMismatch(ValueError):
    """The CSR is well-formed but names some identity other than the one proven."""


def build_csr(identity: str, key: ec.EllipticCurvePrivateKey) -> bytes:
    """DER CSR for `identity` (a SPIFFE ID), signed with `key`."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True
        )
        .sign(key, hashes.SHA256())
    )
    return request.public_bytes(Encoding.DER)


def check_csr(der: bytes, identity: str) -> ec.EllipticCurvePublicKey:
    """The CSR's public key, after checking that the CSR is sound and names only `identity`."""
    if not der:
        raise MalformedCsr("the certificate signing request is empty")
    if len(der) > MAX_CSR_BYTES:
        raise MalformedCsr(f"the certificate signing request is larger than {MAX_CSR_BYTES} bytes")
    try:
        request = x509.load_der_x509_csr(der)
        public_key = request.public_key()
        signature_ok = request.is_signature_valid
    except (ValueError, TypeError) as error:
        raise MalformedCsr(f"the certificate signing request is not valid DER: {error}") from None
    if not signature_ok:
        raise MalformedCsr("the certificate signing request's signature does not verify")
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, _ACCEPTED_CURVES
    ):
        raise MalformedCsr("the certificate signing request's key must be ECDSA P-256 or P-384")
    try:
        san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CsrIdentityMismatch(
            f"the certificate signing request names no identity; it must name {identity}"
        ) from None
    except ValueError as error:
        raise MalformedCsr(f"the certificate signing request's extensions: {error}") from None
    names = [_describe(name) for name in san]
    if names != [identity]:
        raise CsrIdentityMismatch(
            f"the certificate signing request names {', '.join(names) or 'nothing'}; "
            f"it must name exactly {identity}"
        )
    return public_key


def _describe(name: x509.GeneralName) -> str:
    if isinstance(name, x509.UniformResourceIdentifier):
        return name.value
    return f"{type(name).__name__}({name.value})"
