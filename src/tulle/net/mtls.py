"""The proxy's mesh TLS: contexts per ALPN, rebuilt on every certificate renewal.

Proxy-to-proxy connections are TLS 1.3 with both sides verified against the
trust bundle (`tulle.identity.tls`). ALPN says what runs inside, so the inbound
proxy needs no detection after the handshake:

* `tulle.http1` -- HTTP/1.1 between proxies (pooled keep-alive);
* `tulle.h2`    -- HTTP/2 between proxies;
* `tulle.opaque` -- an opaque TCP stream.

A Python `SSLContext` carries one ALPN list, so the client side keeps one
context per protocol, each built on first use; all are replaced at once when
`CertManager` installs a renewed leaf or a rotated trust bundle. Connections already open keep the
context they were made with; new ones take the new one.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

# The identity modules pull in `cryptography` and `grpc` (~20 MB of RSS); a
# proxy without an identity never imports them.
if TYPE_CHECKING:
    from tulle.identity.client import CertManager
    from tulle.identity.tls import WorkloadCertificate

ALPN_HTTP1 = "tulle.http1"
ALPN_H2 = "tulle.h2"
ALPN_OPAQUE = "tulle.opaque"
MESH_ALPNS = (ALPN_HTTP1, ALPN_H2, ALPN_OPAQUE)


class MeshTls:
    """TLS contexts for one proxy's identity, following its `CertManager`."""

    def __init__(self, certs: CertManager) -> None:
        self.certs = certs
        self.identity = certs.identity
        self._server: ssl.SSLContext | None = None
        self._certificate: WorkloadCertificate | None = None
        self._clients: dict[str, ssl.SSLContext] = {}
        certs.add_listener(self._install)
        current = certs.current
        if current is not None:
            self._install(current)

    @property
    def ready(self) -> bool:
        return self._server is not None and self.certs.ready

    def _install(self, certificate: WorkloadCertificate) -> None:
        from tulle.identity.tls import build_server_context

        # Client contexts are built on first use, per ALPN: each is a few ms
        # of key and chain loading that the start (the proxy is ready once it
        # can serve) and many proxies (one or two protocols used) need not pay.
        self._server = build_server_context(certificate, MESH_ALPNS)
        self._certificate, self._clients = certificate, {}

    def server_context(self) -> ssl.SSLContext | None:
        return self._server

    def client_context(self, alpn: str) -> ssl.SSLContext | None:
        context = self._clients.get(alpn)
        if context is None and self._certificate is not None and alpn in MESH_ALPNS:
            from tulle.identity.tls import build_client_context

            context = build_client_context(self._certificate, (alpn,))
            self._clients[alpn] = context
        return context


def offered_mesh_alpn(alpns: tuple[str, ...]) -> str | None:
    """The mesh protocol a client asks for, if it is one of ours."""
    for alpn in alpns:
        if alpn in MESH_ALPNS:
            return alpn
    return None


def transport_peer_identity(ssl_object: object) -> str | None:
    if isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        from tulle.identity.tls import peer_identity

        return peer_identity(ssl_object)
    return None


def verify_identity(ssl_object: object, expected: str) -> str:
    """The server's identity, checked against the one discovery named.
    Raises `ssl.SSLError` (PeerIdentityMismatch) when they differ."""
    from tulle.identity.tls import verify_peer_identity

    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        raise ssl.SSLError("not a TLS connection")
    return verify_peer_identity(ssl_object, expected)
