"""TLS contexts for proxy-to-proxy mTLS, and reading the peer's identity.

Both sides speak TLS 1.3 only, present their leaf and its intermediates, and
verify the peer against the trust bundle (anchors only). Host name checking is
off: a workload is named by the SPIFFE ID in its URI SAN, which the client
checks after the handshake with `verify_peer_identity` against the identity
the destination service named for the endpoint.

Loading a key held in memory. `ssl.SSLContext.load_cert_chain` reads only from
a path, and the proxy's key must never rest on a disk. The chain and key are
written to an anonymous in-memory file (`os.memfd_create`, read back through
`/proc/self/fd/N`), which has no name in any file system and disappears when
its descriptor is closed, right after loading. Where memfd is missing the file
goes into a fresh 0700 temporary directory, 0600, and is unlinked at once;
that file may touch a disk-backed /tmp, so the key in it is always encrypted
with a random one-time password handed to OpenSSL directly (it costs ~0.5 ms
per load). The memfd path is encrypted the same way, for uniformity: another
process of the same user that could read the memfd could also read our memory,
so the password adds nothing there but costs nothing either.
"""

from __future__ import annotations

import os
import secrets
import ssl
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tulle.identity.ca import TrustBundle, certificates_to_pem
from tulle.identity.spiffe import SCHEME

SslEndpoint = ssl.SSLObject | ssl.SSLSocket


class PeerIdentityMismatch(ssl.SSLError):
    """The peer's certificate verified but names another workload than expected."""


@dataclass(frozen=True, slots=True)
class WorkloadCertificate:
    """A leaf with its private key, chain and the bundle it was issued with."""

    identity: str
    key: ec.EllipticCurvePrivateKey
    leaf: x509.Certificate
    intermediates: tuple[x509.Certificate, ...]
    bundle: TrustBundle
    # Local clock when the leaf was received: the start of its renewal period.
    received_at: float

    @property
    def valid_until(self) -> float:
        return self.leaf.not_valid_after_utc.timestamp()

    def with_bundle(self, bundle: TrustBundle) -> WorkloadCertificate:
        return WorkloadCertificate(
            self.identity, self.key, self.leaf, self.intermediates, bundle, self.received_at
        )


def build_server_context(
    certificate: WorkloadCertificate,
    alpn_protocols: Sequence[str] = (),
    sni_callback: Callable[[SslEndpoint, str | None, ssl.SSLContext], int | None] | None = None,
) -> ssl.SSLContext:
    """Accepts only TLS 1.3 clients that present a leaf from the trust bundle."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _configure(context, certificate, alpn_protocols)
    # Python clients resume a session only when handed one explicitly, so
    # tickets would be work done for nothing on every handshake; and a resumed
    # session would skip re-checking the client against a rotated bundle.
    context.num_tickets = 0
    if sni_callback is not None:
        context.sni_callback = sni_callback
    return context


def build_client_context(
    certificate: WorkloadCertificate, alpn_protocols: Sequence[str] = ()
) -> ssl.SSLContext:
    """Presents the leaf and verifies the server's chain; the name is checked afterwards."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    _configure(context, certificate, alpn_protocols)
    return context


def _configure(
    context: ssl.SSLContext, certificate: WorkloadCertificate, alpn_protocols: Sequence[str]
) -> None:
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    # Tulle's certificates follow RFC 5280 closely; strict mode refuses sloppier ones.
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    context.load_verify_locations(cadata=certificate.bundle.pem().decode("ascii"))
    load_cert_chain_from_memory(
        context, certificate.key, [certificate.leaf, *certificate.intermediates]
    )
    if alpn_protocols:
        context.set_alpn_protocols(list(alpn_protocols))


def load_cert_chain_from_memory(
    context: ssl.SSLContext,
    key: ec.EllipticCurvePrivateKey,
    chain: Sequence[x509.Certificate],
) -> None:
    """`context.load_cert_chain` for a key that exists only in memory (see module doc)."""
    password = secrets.token_bytes(32)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    )
    data = certificates_to_pem(chain) + key_pem
    memfd_create = getattr(os, "memfd_create", None)
    if memfd_create is not None and Path("/proc/self/fd").is_dir():
        descriptor: int = memfd_create("tulle-workload-chain", os.MFD_CLOEXEC)
        try:
            _write_all(descriptor, data)
            context.load_cert_chain(f"/proc/self/fd/{descriptor}", password=password)
        finally:
            os.close(descriptor)
        return
    with tempfile.TemporaryDirectory(prefix="tulle-tls-") as private_dir:  # mkdtemp: 0700
        path = os.path.join(private_dir, "chain.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(descriptor, data)
        finally:
            os.close(descriptor)
        try:
            context.load_cert_chain(path, password=password)
        finally:
            os.unlink(path)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def peer_identity(ssl_object: SslEndpoint) -> str | None:
    """The SPIFFE ID of a verified peer, or None (no certificate, or not exactly one ID)."""
    certificate = ssl_object.getpeercert()
    if not certificate:
        return None
    uris: list[str] = []
    for entry in certificate.get("subjectAltName", ()):
        if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "URI":
            value = entry[1]
            if isinstance(value, str) and value.startswith(SCHEME):
                uris.append(value)
    return uris[0] if len(uris) == 1 else None


def verify_peer_identity(ssl_object: SslEndpoint, expected: str) -> str:
    """Raise `PeerIdentityMismatch` unless the verified peer is `expected`; return it."""
    actual = peer_identity(ssl_object)
    if actual != expected:
        raise PeerIdentityMismatch(
            f"peer presented identity {actual or '(none)'}, expected {expected}"
        )
    return actual
