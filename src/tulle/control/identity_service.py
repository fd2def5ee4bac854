"""The control plane's Identity gRPC service: Certify and WatchTrustBundle.

Register it on the control plane's grpc.aio server with one call:

    service = add_identity_servicer(server, Path("/var/lib/tulle/identity"))

The service reads the issuer directory through an `IssuerStore`, which notices
changed files (`tulle identity rotate ...`) within `check_interval_s` and never
needs a restart; if a reload fails, the last good issuer keeps serving.
Bundle watchers share one poller that runs only while someone watches.
Refusals map to gRPC statuses as `tulle.identity.authority` documents, and each
Certify outcome is counted in `identity_certify_total{result=...}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from tulle.api.proto import identity_pb2, identity_pb2_grpc
from tulle.identity.authority import (
    CertificationRefused,
    Certifier,
    InvalidRequest,
    NotAuthenticated,
    NotPermitted,
)
from tulle.identity.ca import DEFAULT_LEAF_TTL_S, TrustBundle
from tulle.identity.store import IdentityStoreError, IssuerDirectory, IssuerStore, IssuerUnavailable

log = logging.getLogger(__name__)

_STATUS_OF_REFUSAL: dict[type[CertificationRefused], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotAuthenticated: grpc.StatusCode.UNAUTHENTICATED,
    NotPermitted: grpc.StatusCode.PERMISSION_DENIED,
}


class CertifyCounters:
    """Certify outcomes; plain integers, rendered only when scraped."""

    RESULTS = (
        "ok",
        "invalid_argument",
        "unauthenticated",
        "permission_denied",
        "unavailable",
        "internal",
    )

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(self.RESULTS, 0)

    def record(self, result: str) -> None:
        self.counts[result] = self.counts.get(result, 0) + 1

    def render_prometheus(self) -> str:
        lines = [
            "# HELP identity_certify_total Identity.Certify calls by result.",
            "# TYPE identity_certify_total counter",
        ]
        lines += [f'identity_certify_total{{result="{r}"}} {n}' for r, n in self.counts.items()]
        return "\n".join(lines) + "\n"


class TokenAuthenticator(Protocol):
    async def identity_of(self, token: str) -> str | None:
        """The identity a token proves; None when the token is not of this kind.
        Raises NotAuthenticated when refused, another exception when unavailable."""


class IdentityService(identity_pb2_grpc.IdentityServicer):
    def __init__(
        self,
        certifier: Certifier,
        store: IssuerStore | None = None,
        *,
        clock: Callable[[], float] = time.time,
        watch_poll_interval_s: float = 1.0,
        authenticator: TokenAuthenticator | None = None,
    ) -> None:
        # Tried before the join tokens: Kubernetes ServiceAccount tokens.
        self.authenticator = authenticator
        self.certifier = certifier
        self.store = store
        self.counters = CertifyCounters()
        self.watch_poll_interval_s = watch_poll_interval_s
        self._clock = clock
        self._bundle_changed = asyncio.Event()
        self._watchers = 0
        self._poller: asyncio.Task[None] | None = None

    # -- Certify ---------------------------------------------------------------

    async def Certify(
        self,
        request: identity_pb2.CertifyRequest,
        context: grpc.aio.ServicerContext[
            identity_pb2.CertifyRequest, identity_pb2.CertifyResponse
        ],
    ) -> identity_pb2.CertifyResponse:
        try:
            proven = None
            if self.authenticator is not None:
                try:
                    proven = await self.authenticator.identity_of(request.token)
                except CertificationRefused:
                    raise
                except Exception as error:
                    raise IssuerUnavailable(str(error)) from None
            if proven is not None and proven != request.identity:
                raise NotPermitted(f"the token proves {proven}, not {request.identity}")
            issued = self.certifier.certify(
                request.identity,
                request.token,
                request.certificate_signing_request,
                now=self._clock(),
                token_checked=proven is not None,
            )
        except CertificationRefused as error:
            self.counters.record(error.reason)
            log.info("certify %r refused: %s", request.identity, error)
            await context.abort(_STATUS_OF_REFUSAL[type(error)], str(error))
        except IssuerUnavailable as error:
            self.counters.record("unavailable")
            log.warning("certify %r: no usable issuer: %s", request.identity, error)
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"no usable issuer: {error}")
        except Exception:
            self.counters.record("internal")
            log.exception("certify %r failed", request.identity)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error while issuing")
        self.counters.record("ok")
        return identity_pb2.CertifyResponse(
            leaf_certificate=issued.leaf_der(),
            intermediate_certificates=issued.intermediates_der(),
            trust_bundle=self._bundle_message(issued.bundle),
            valid_until=_timestamp(issued.valid_until),
        )

    # -- WatchTrustBundle ------------------------------------------------------

    async def WatchTrustBundle(
        self,
        request: identity_pb2.WatchTrustBundleRequest,
        context: grpc.aio.ServicerContext[
            identity_pb2.WatchTrustBundleRequest, identity_pb2.TrustBundle
        ],
    ) -> AsyncIterator[identity_pb2.TrustBundle]:
        self._watchers += 1
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll_bundle(), name="identity-bundle-poll")
        sent_version: str | None = None
        try:
            while True:
                changed = self._bundle_changed
                try:
                    bundle = self.certifier.material().bundle
                except IssuerUnavailable as error:
                    if sent_version is None:
                        await context.abort(
                            grpc.StatusCode.UNAVAILABLE, f"no usable issuer: {error}"
                        )
                    bundle = None  # fail static: the watcher keeps what it has
                if bundle is not None and bundle.version != sent_version:
                    sent_version = bundle.version
                    yield self._bundle_message(bundle)
                await changed.wait()
        finally:
            self._watchers -= 1
            if self._watchers == 0 and self._poller is not None:
                self._poller.cancel()
                self._poller = None

    async def _poll_bundle(self) -> None:
        while True:
            await asyncio.sleep(self.watch_poll_interval_s)
            if self.store is not None:
                self.store.refresh()
            # Wake every watcher; each compares versions and sends only on change.
            changed, self._bundle_changed = self._bundle_changed, asyncio.Event()
            changed.set()

    # -- metrics and lifecycle -------------------------------------------------

    def render_prometheus(self) -> str:
        text = self.counters.render_prometheus()
        text += (
            "# HELP identity_trust_bundle_watchers Open WatchTrustBundle streams.\n"
            "# TYPE identity_trust_bundle_watchers gauge\n"
            f"identity_trust_bundle_watchers {self._watchers}\n"
        )
        with contextlib.suppress(IssuerUnavailable):
            material = self.certifier.material()
            expiry = material.issuer.certificate.not_valid_after_utc.timestamp()
            text += (
                "# HELP identity_issuer_expiration_timestamp_seconds When the issuer expires.\n"
                "# TYPE identity_issuer_expiration_timestamp_seconds gauge\n"
                f"identity_issuer_expiration_timestamp_seconds {expiry:.0f}\n"
                "# HELP identity_trust_anchors Anchors in the trust bundle.\n"
                "# TYPE identity_trust_anchors gauge\n"
                f"identity_trust_anchors {len(material.bundle.anchors)}\n"
            )
        return text

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    def _bundle_message(self, bundle: TrustBundle) -> identity_pb2.TrustBundle:
        trust_domain = ""
        with contextlib.suppress(IssuerUnavailable):
            trust_domain = self.certifier.material().trust_domain
        return identity_pb2.TrustBundle(
            trust_domain=trust_domain, trust_anchors=bundle.der(), version=bundle.version
        )


def add_identity_servicer(
    server: grpc.aio.Server,
    issuer_dir: Path,
    *,
    leaf_ttl_s: float = DEFAULT_LEAF_TTL_S,
    check_interval_s: float = 1.0,
    authenticator: TokenAuthenticator | None = None,
) -> IdentityService:
    """Register Identity on `server`, serving from `issuer_dir`.

    Raises `IdentityStoreError` (with a message for the operator) when the
    directory cannot be loaded at all; later failures keep the last good issuer.
    """
    store = IssuerStore(IssuerDirectory(issuer_dir), check_interval_s=check_interval_s)
    store.refresh()
    if store.last_error is not None:
        raise IdentityStoreError(f"identity service cannot start: {store.last_error}")
    service = IdentityService(
        Certifier(store.current, leaf_ttl_s=leaf_ttl_s),
        store,
        watch_poll_interval_s=check_interval_s,
        authenticator=authenticator,
    )
    identity_pb2_grpc.add_IdentityServicer_to_server(service, server)
    return service


def _timestamp(unix_seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromSeconds(int(unix_seconds))
    return stamp
