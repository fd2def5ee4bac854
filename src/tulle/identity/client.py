"""The proxy's side of identity: get, keep and renew a workload certificate.

`CertManager` owns one identity. It makes a fresh ECDSA P-256 key in memory for
every request (the key never leaves the process; a leaked key is worth no more
than its leaf's few hours), sends a CSR to a `CertificateSource`, and installs
the leaf into new `ssl.SSLContext`s. It renews at 70 % of the time between
receiving a leaf and its expiry; a failed attempt is retried after a jittered
backoff (`tulle.core.backoff`) while the current leaf keeps serving.

Contexts and renewal: `client_context()` returns the newest context, so take
it per connection. A listener is built once with `server_context()`; every
server context carries an SNI callback that moves each new handshake onto the
newest context, so a listener never needs rebuilding after a renewal or a
trust-bundle change.

Trust bundles arrive with each leaf and, between renewals, from the source's
bundle watch. A new bundle is installed at once (with the same leaf); if it no
longer holds the anchor our own leaf chains to, renewal happens immediately.

Sources: `GrpcCertificateSource` calls the control plane's Identity service,
trying each replica in turn; `LocalCertificateSource` signs with an issuer in
this process (tests, and single-process tools) through the same `Certifier`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Protocol

import grpc
from cryptography import x509

from tulle.api.control_tls import ControlTls, open_channel
from tulle.api.failover import Replicas, follow
from tulle.api.proto import identity_pb2, identity_pb2_grpc
from tulle.core.backoff import Backoff, BackoffSpec
from tulle.identity.authority import CertificationRefused, Certifier, IssuedCertificate
from tulle.identity.ca import DEFAULT_LEAF_TTL_S, ChainError, TrustBundle, generate_key, uri_sans
from tulle.identity.ca import verify_chain as verify_certificate_chain
from tulle.identity.csr import build_csr
from tulle.identity.spiffe import parse_spiffe_id
from tulle.identity.store import IssuerDirectory, IssuerMaterial, IssuerStore, IssuerUnavailable
from tulle.identity.tls import (
    PeerIdentityMismatch,
    SslEndpoint,
    WorkloadCertificate,
    build_client_context,
    build_server_context,
    peer_identity,
    verify_peer_identity,
)
from tulle.identity.tokens import make_token

__all__ = [
    "CertManager",
    "CertificateSource",
    "CertifyFailed",
    "GrpcCertificateSource",
    "LocalCertificateSource",
    "NotReady",
    "PeerIdentityMismatch",
    "renewal_time",
]

log = logging.getLogger(__name__)

RENEW_FRACTION = 0.7
DEFAULT_RETRY = BackoffSpec(min_s=0.5, max_s=30.0, jitter=0.5)
# Statuses after which another replica may well succeed.
_TRY_NEXT_REPLICA = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNIMPLEMENTED,
    }
)


class CertifyFailed(Exception):
    """No certificate (or bundle) could be obtained; the message says why."""


class NotReady(RuntimeError):
    """A TLS context was asked for before the first certificate arrived."""


class CertificateSource(Protocol):
    async def certify(self, identity: str, csr_der: bytes) -> IssuedCertificate:
        """A leaf for `identity`, or `CertifyFailed`."""
        ...

    def watch_bundles(self, identity: str) -> AsyncIterator[TrustBundle]:
        """Current trust bundle, then each change; ends or raises `CertifyFailed` on loss."""
        ...

    async def close(self) -> None: ...


def renewal_time(received_at: float, valid_until: float, fraction: float = RENEW_FRACTION) -> float:
    """When to renew a leaf received at `received_at` that expires at `valid_until`."""
    return received_at + fraction * max(0.0, valid_until - received_at)


class CertManager:
    """Holds the workload's certificate and TLS contexts, and renews them."""

    def __init__(
        self,
        identity: str,
        source: CertificateSource,
        *,
        alpn_protocols: Sequence[str] = (),
        renew_fraction: float = RENEW_FRACTION,
        retry: BackoffSpec = DEFAULT_RETRY,
        watch_bundle: bool = True,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        parse_spiffe_id(identity)
        if not 0 < renew_fraction < 1:
            raise ValueError("renew_fraction must be within (0, 1)")
        self.identity = identity
        self.source = source
        self.alpn_protocols = tuple(alpn_protocols)
        self.renew_fraction = renew_fraction
        self.watch_bundle = watch_bundle
        self._retry = Backoff(retry, rng)
        self._watch_retry = Backoff(retry, rng)
        self._clock = clock
        self._sleep = sleep
        self._current: WorkloadCertificate | None = None
        self._server_context: ssl.SSLContext | None = None
        self._client_context: ssl.SSLContext | None = None
        self._renew_now = asyncio.Event()
        self._first = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listeners: list[Callable[[WorkloadCertificate], None]] = []
        self.renewals = 0
        self.failures = 0
        self.bundle_updates = 0
        self.last_error: str | None = None

    # -- construction ------------------------------------------------------------

    @classmethod
    def from_control_plane(
        cls,
        identity: str,
        control_addresses: Sequence[str],
        token: str,
        *,
        tls: ControlTls | None = None,
        timeout_s: float = 5.0,
        alpn_protocols: Sequence[str] = (),
        retry: BackoffSpec = DEFAULT_RETRY,
        token_file: str = "",
    ) -> CertManager:
        """Certificates from the control plane's replicas (`host:port` each) with a join token
        (or a ServiceAccount token, re-read from `token_file` for every request when given)."""
        source = GrpcCertificateSource(
            control_addresses, token, tls=tls, timeout_s=timeout_s, token_file=token_file
        )
        return cls(identity, source, alpn_protocols=alpn_protocols, retry=retry)

    @classmethod
    def from_local_issuer(
        cls,
        identity: str,
        issuer: IssuerMaterial | Path,
        *,
        leaf_ttl_s: float = DEFAULT_LEAF_TTL_S,
        alpn_protocols: Sequence[str] = (),
        retry: BackoffSpec = DEFAULT_RETRY,
    ) -> CertManager:
        """No gRPC: sign with an in-process issuer (material, or a directory reloaded on change)."""
        source = LocalCertificateSource.for_issuer(issuer, leaf_ttl_s=leaf_ttl_s)
        return cls(identity, source, alpn_protocols=alpn_protocols, retry=retry)

    # -- state ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        current = self._current
        return current is not None and self._clock() < current.valid_until

    @property
    def expiry(self) -> float:
        """The leaf's notAfter (Unix seconds), 0.0 before the first leaf."""
        return self._current.valid_until if self._current is not None else 0.0

    @property
    def current(self) -> WorkloadCertificate | None:
        return self._current

    def add_listener(self, callback: Callable[[WorkloadCertificate], None]) -> None:
        """`callback(certificate)` after each new leaf or bundle is installed."""
        self._listeners.append(callback)

    def server_context(self) -> ssl.SSLContext:
        if self._server_context is None:
            self._server_context = build_server_context(
                self._certificate_or_raise(), self.alpn_protocols, self._select_server_context
            )
        return self._server_context

    def client_context(self) -> ssl.SSLContext:
        if self._client_context is None:
            self._client_context = build_client_context(
                self._certificate_or_raise(), self.alpn_protocols
            )
        return self._client_context

    def _certificate_or_raise(self) -> WorkloadCertificate:
        if self._current is None:
            raise NotReady(f"no certificate for {self.identity} yet")
        return self._current

    @staticmethod
    def peer_identity(ssl_object: SslEndpoint) -> str | None:
        return peer_identity(ssl_object)

    @staticmethod
    def verify_peer_identity(ssl_object: SslEndpoint, expected: str) -> str:
        return verify_peer_identity(ssl_object, expected)

    def render_prometheus(self) -> str:
        return (
            "# HELP identity_cert_expiration_timestamp_seconds When the workload leaf expires.\n"
            "# TYPE identity_cert_expiration_timestamp_seconds gauge\n"
            f"identity_cert_expiration_timestamp_seconds {self.expiry:.0f}\n"
            "# HELP identity_cert_refresh_total Certificate requests by result.\n"
            "# TYPE identity_cert_refresh_total counter\n"
            f'identity_cert_refresh_total{{result="ok"}} {self.renewals}\n'
            f'identity_cert_refresh_total{{result="failure"}} {self.failures}\n'
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Begin fetching and renewing in the background; returns at once."""
        if self._tasks:
            return
        self._tasks.append(asyncio.create_task(self._renew_loop(), name="identity-renew"))
        if self.watch_bundle:
            self._tasks.append(asyncio.create_task(self._watch_loop(), name="identity-bundle"))

    async def wait_ready(self, timeout_s: float) -> None:
        """Wait for the first certificate; TimeoutError says why it has not come."""
        try:
            await asyncio.wait_for(self._first.wait(), timeout_s)
        except TimeoutError:
            raise TimeoutError(
                f"no certificate for {self.identity} after {timeout_s:g} s: "
                f"{self.last_error or 'no answer yet'}"
            ) from None

    async def close(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.source.close()

    async def renew(self) -> WorkloadCertificate:
        """One certificate request now; installs and returns the new certificate."""
        key = generate_key()
        issued = await self.source.certify(self.identity, build_csr(self.identity, key))
        received_at = self._clock()
        certificate = WorkloadCertificate(
            self.identity, key, issued.leaf, issued.intermediates, issued.bundle, received_at
        )
        self._check(certificate)
        self._install(certificate)
        self.renewals += 1
        return certificate

    # -- internals -----------------------------------------------------------------

    def _check(self, certificate: WorkloadCertificate) -> None:
        # A control plane that hands out the wrong thing must not break the proxy's TLS.
        if uri_sans(certificate.leaf) != [self.identity]:
            raise CertifyFailed(f"the issued leaf does not name {self.identity}")
        if certificate.leaf.public_key() != certificate.key.public_key():
            raise CertifyFailed("the issued leaf is not for our key")
        try:
            verify_certificate_chain(
                certificate.leaf,
                certificate.intermediates,
                certificate.bundle.anchors,
                now=self._clock(),
            )
        except ChainError as error:
            raise CertifyFailed(f"the issued leaf does not verify: {error}") from None

    def _install(self, certificate: WorkloadCertificate) -> None:
        # The contexts are built on first use: the proxy builds its own
        # (`tulle.net.mtls`), so building these at every install cost it two
        # TLS setups per renewal, and its start.
        self._current, self._server_context, self._client_context = certificate, None, None
        self._first.set()
        for listener in self._listeners:
            listener(certificate)

    def _select_server_context(
        self, ssl_object: SslEndpoint, _server_name: str | None, context: ssl.SSLContext
    ) -> None:
        # Runs inside each handshake: move it onto the newest context, which
        # carries the newest leaf and trust bundle.
        newest = self.server_context()
        if newest is not context:
            ssl_object.context = newest

    def _anchored(self, certificate: WorkloadCertificate, bundle: TrustBundle) -> bool:
        top = certificate.intermediates[-1] if certificate.intermediates else certificate.leaf
        return bool(bundle.anchors_of(top))

    def _on_bundle(self, bundle: TrustBundle) -> None:
        current = self._current
        if current is None or current.bundle.version == bundle.version:
            return
        self.bundle_updates += 1
        self._install(current.with_bundle(bundle))
        if not self._anchored(current, bundle):
            log.info("trust bundle no longer holds our anchor; renewing %s now", self.identity)
            self._renew_now.set()

    async def _renew_loop(self) -> None:
        while True:
            try:
                certificate = await self.renew()
            except Exception as error:
                # Whatever went wrong, the loop must survive: a proxy that stops
                # renewing fails every connection a few hours later.
                self.failures += 1
                self.last_error = str(error) or type(error).__name__
                delay = self._retry.next_delay()
                expected = isinstance(
                    error, (CertifyFailed, CertificationRefused, IssuerUnavailable)
                )
                log.warning(
                    "certificate for %s: %s; retrying in %.1f s",
                    self.identity,
                    self.last_error,
                    delay,
                    exc_info=not expected,
                )
            else:
                self._retry.reset()
                self.last_error = None
                due = renewal_time(
                    certificate.received_at, certificate.valid_until, self.renew_fraction
                )
                delay = max(0.0, due - self._clock())
            await self._pause(delay)

    async def _pause(self, delay: float) -> None:
        """Sleep `delay`, or less if a bundle change asks for renewal now."""
        self._renew_now.clear()
        sleeper = asyncio.ensure_future(self._sleep(delay))
        waker = asyncio.ensure_future(self._renew_now.wait())
        try:
            await asyncio.wait((sleeper, waker), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for future in (sleeper, waker):
                future.cancel()

    async def _watch_loop(self) -> None:
        # The source rotates among its replicas itself (GrpcCertificateSource).
        await follow(
            f"trust bundle watch for {self.identity}",
            lambda _replica: self.source.watch_bundles(self.identity),
            self._on_bundle,
            backoff=self._watch_retry,
            expected=(CertifyFailed,),
            reason=str,
            failure_level=logging.INFO,
            sleep=self._sleep,
            logger=log,
        )


class GrpcCertificateSource:
    """The control plane's Identity service over gRPC, trying replicas in turn.

    `tls` verifies the control plane's own certificate against the trust
    anchors (`tulle.api.control_tls`), since the join token travels in the
    request; None is plaintext, for loopback meshes only.
    """

    def __init__(
        self,
        addresses: Sequence[str],
        token: str,
        *,
        tls: ControlTls | None = None,
        timeout_s: float = 5.0,
        token_file: str = "",
    ) -> None:
        if not addresses:
            raise ValueError("at least one control-plane address is needed")
        self.addresses = list(addresses)
        self.token = token
        self.token_file = token_file
        self.timeout_s = timeout_s
        self._tls = tls
        self._channels: dict[str, grpc.aio.Channel] = {}
        # The replica that answered last is asked first next time.
        self._replicas = Replicas(self.addresses)
        self._next_watch = 0

    def _stub(self, address: str) -> identity_pb2_grpc.IdentityAsyncStub:
        channel = self._channels.get(address)
        if channel is None:
            channel = open_channel(address, (), self._tls)
            self._channels[address] = channel
        return identity_pb2_grpc.IdentityStub(channel)

    def current_token(self) -> str:
        """The token to send: the file's content now (a rotated projected token), else
        the last one read when the file cannot be read (the kubelet swaps it atomically)."""
        if self.token_file:
            try:
                with open(self.token_file, encoding="utf-8") as f:
                    token = f.read().strip()
            except OSError as exc:
                log.warning("cannot re-read the identity token %s: %s", self.token_file, exc)
            else:
                if token:
                    self.token = token
        return self.token

    async def certify(self, identity: str, csr_der: bytes) -> IssuedCertificate:
        request = identity_pb2.CertifyRequest(
            identity=identity, token=self.current_token(), certificate_signing_request=csr_der
        )
        errors: list[str] = []
        for index in self._replicas.in_turn():
            address = self.addresses[index]
            try:
                response = await self._stub(address).Certify(request, timeout=self.timeout_s)
            except grpc.aio.AioRpcError as error:
                errors.append(f"{address}: {error.code().name}: {error.details()}")
                if error.code() in _TRY_NEXT_REPLICA:
                    continue
                # A refusal (bad token, wrong identity) is the same on every replica.
                break
            self._replicas.answered(index)
            try:
                return _issued_from_proto(response)
            except ValueError as error:
                errors.append(f"{address}: unusable response: {error}")
        raise CertifyFailed("; ".join(errors))

    async def watch_bundles(self, identity: str) -> AsyncIterator[TrustBundle]:
        # Each new watch goes to the next replica, so a dead one is not retried forever.
        address = self.addresses[self._next_watch]
        self._next_watch = self._replicas.after(self._next_watch)
        call = self._stub(address).WatchTrustBundle(
            identity_pb2.WatchTrustBundleRequest(identity=identity)
        )
        try:
            async for message in call:
                try:
                    yield _bundle_from_proto(message)
                except ValueError as error:
                    raise CertifyFailed(f"{address}: unusable trust bundle: {error}") from None
        except grpc.aio.AioRpcError as error:
            raise CertifyFailed(f"{address}: {error.code().name}: {error.details()}") from None
        finally:
            call.cancel()

    async def close(self) -> None:
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close(None)


def _bundle_from_proto(message: identity_pb2.TrustBundle) -> TrustBundle:
    if not message.trust_anchors:
        raise ValueError("the trust bundle is empty")
    return TrustBundle.from_der(list(message.trust_anchors))


def _issued_from_proto(response: identity_pb2.CertifyResponse) -> IssuedCertificate:
    return IssuedCertificate(
        leaf=x509.load_der_x509_certificate(response.leaf_certificate),
        intermediates=tuple(
            x509.load_der_x509_certificate(der) for der in response.intermediate_certificates
        ),
        bundle=_bundle_from_proto(response.trust_bundle),
    )


class LocalCertificateSource:
    """Signs in-process with the same `Certifier` the control plane uses."""

    def __init__(
        self,
        certifier: Certifier,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval_s: float = 1.0,
    ) -> None:
        self.certifier = certifier
        self.poll_interval_s = poll_interval_s
        self._clock = clock

    @classmethod
    def for_issuer(
        cls, issuer: IssuerMaterial | Path, *, leaf_ttl_s: float = DEFAULT_LEAF_TTL_S
    ) -> LocalCertificateSource:
        if isinstance(issuer, IssuerMaterial):
            material = issuer
            return cls(Certifier(lambda: material, leaf_ttl_s=leaf_ttl_s))
        store = IssuerStore(IssuerDirectory(issuer), check_interval_s=0.2)
        return cls(Certifier(store.current, leaf_ttl_s=leaf_ttl_s))

    async def certify(self, identity: str, csr_der: bytes) -> IssuedCertificate:
        now = self._clock()
        try:
            secret = self.certifier.material().token_secret
            token = make_token(secret, identity, now=now, ttl_s=60.0)
            return self.certifier.certify(identity, token, csr_der, now=now)
        except (CertificationRefused, IssuerUnavailable) as error:
            raise CertifyFailed(str(error)) from None

    async def watch_bundles(self, identity: str) -> AsyncIterator[TrustBundle]:
        version = None
        while True:
            try:
                bundle = self.certifier.material().bundle
            except IssuerUnavailable as error:
                raise CertifyFailed(str(error)) from None
            if bundle.version != version:
                version = bundle.version
                yield bundle
            await asyncio.sleep(self.poll_interval_s)

    async def close(self) -> None:
        return None
