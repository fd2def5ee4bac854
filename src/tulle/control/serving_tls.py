"""The control plane's own TLS identity for its gRPC API (Destination, Identity, Policy).

A replica with an issuer directory signs itself a leaf, like any workload's
but with DNS SANs: its SPIFFE ID `spiffe://<trust-domain>/ns/tulle/sa/tulle-control`
in the URI SAN, and `tulle-control.tulle.svc` plus `localhost` (by default) as
DNS names, which is what clients check (`tulle.api.control_tls`). The key is
made in memory and never written.

Renewal is like a proxy's: at 70 % of the leaf's life, and at once when the
issuer changes (`tulle identity rotate`). gRPC asks `fetch` for a new
configuration on every handshake; `run` prepares it on the event loop, so the
handshake path only swaps a reference. Existing connections keep the
certificate they were opened with.

No client certificate is asked for: a proxy calls Identity.Certify before it
has one, and its join token (or ServiceAccount token) authenticates that call.

The admission webhook (`tulle.control.webhook`) serves the same leaf over
HTTPS: `ssl_context()` gives it a context that follows the renewals too (a
renewal loads the new chain into it; new handshakes use it). A name that is
an IP address (`--grpc-tls-name 127.0.0.1`) becomes an IP SAN, which is what
a client dialling that address checks.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable, Sequence

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tulle.api.control_tls import CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT
from tulle.identity.ca import DEFAULT_LEAF_TTL_S, generate_key, issue_leaf
from tulle.identity.client import renewal_time
from tulle.identity.spiffe import SpiffeId
from tulle.identity.store import IssuerStore, IssuerUnavailable
from tulle.identity.tls import load_cert_chain_from_memory

log = logging.getLogger(__name__)

CHECK_INTERVAL_S = 1.0


class ServingCertificate:
    """The replica's serving leaf, renewed before it expires or when the issuer changes."""

    def __init__(
        self,
        store: IssuerStore,
        dns_names: Sequence[str],
        *,
        ttl_s: float = DEFAULT_LEAF_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.dns_names = tuple(dns_names)
        self.ttl_s = ttl_s
        self._clock = clock
        self._issuer: x509.Certificate | None = None
        self._renew_at = 0.0
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self.identity = ""
        self.last_leaf: x509.Certificate | None = None
        self.valid_until = 0.0
        self._key: ec.EllipticCurvePrivateKey | None = None
        self._chain: tuple[x509.Certificate, ...] = ()
        self._ssl_contexts: list[ssl.SSLContext] = []

    def _issue(self) -> grpc.ServerCertificateConfiguration:
        """A new leaf from the current issuer; raises IssuerUnavailable."""
        material = self.store.current()
        identity = SpiffeId(material.trust_domain, CONTROL_NAMESPACE, CONTROL_SERVICE_ACCOUNT)
        key = generate_key()
        now = self._clock()
        leaf = issue_leaf(
            identity,
            key.public_key(),
            material.issuer,
            now=now,
            ttl_s=self.ttl_s,
            dns_names=self.dns_names,
        )
        self.identity = identity.uri
        self.last_leaf = leaf
        self._key = key
        self._chain = (leaf, material.issuer.certificate)
        for context in self._ssl_contexts:
            load_cert_chain_from_memory(context, key, self._chain)
        self._issuer = material.issuer.certificate
        self.valid_until = leaf.not_valid_after_utc.timestamp()
        self._renew_at = renewal_time(now, self.valid_until)
        chain = b"".join(
            c.public_bytes(serialization.Encoding.PEM) for c in (leaf, material.issuer.certificate)
        )
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return grpc.ssl_server_certificate_configuration([(key_pem, chain)])

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials that follow renewals; raises IssuerUnavailable."""
        # gRPC documents None from the fetcher as "no change"; its stubs do not say so.
        return grpc.dynamic_ssl_server_credentials(
            self._issue(),
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=False,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """An HTTPS server context with the current leaf, reloaded on each renewal.

        Raises IssuerUnavailable when no leaf could be issued yet."""
        if self._key is None:
            self._issue()
        assert self._key is not None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        load_cert_chain_from_memory(context, self._key, self._chain)
        self._ssl_contexts.append(context)
        return context

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """gRPC's callback, on each handshake: the renewed configuration once, else None."""
        pending, self._pending = self._pending, None
        return pending

    def check(self) -> bool:
        """Renew if due or the issuer changed; True when a new leaf is pending."""
        try:
            issuer = self.store.current().issuer.certificate
        except IssuerUnavailable:
            return False  # fail static: keep serving the current leaf
        if self._clock() < self._renew_at and issuer == self._issuer:
            return False
        try:
            self._pending = self._issue()
        except IssuerUnavailable as error:
            log.warning("cannot renew the control plane's serving certificate: %s", error)
            return False
        log.info(
            "control plane serving certificate renewed (%s), valid until %s",
            self.identity,
            time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.valid_until)),
        )
        return True

    async def run(self, interval_s: float = CHECK_INTERVAL_S) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.check()
