"""`tulle control`: wires the manifest source, the Destination service and the admin listener.

One process, one event loop (uvloop when available), `grpc.aio`. Replicas share
nothing but the manifest file, so any number can run side by side. SIGTERM and
SIGINT stop the process cleanly: listeners close, open streams end, and the
proxies move to another replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import grpc

from tulle.api.control_tls import CONTROL_NAME
from tulle.api.proto import destination_pb2_grpc as pb_grpc
from tulle.control.admin import AdminServer
from tulle.control.destination.service import DestinationService
from tulle.control.destination.translator import DEFAULT_QUEUE_CAPACITY
from tulle.control.destination.watcher import DestinationWatcher
from tulle.control.manifest import Manifest
from tulle.control.manifest_source import DEFAULT_POLL_INTERVAL_S, ManifestFileSource
from tulle.control.metrics import ControlMetrics
from tulle.control.policy.index import PolicyIndex
from tulle.control.policy.service import add_policy_servicer
from tulle.core.discovery import Address, format_address
from tulle.identity.store import IdentityStoreError, IssuerUnavailable

if TYPE_CHECKING:
    from tulle.control.identity_service import IdentityService
    from tulle.control.kubernetes.source import KubernetesSource
    from tulle.control.serving_tls import ServingCertificate
    from tulle.control.webhook import InjectionWebhook
    from tulle.k8s.inject import InjectConfig

log = logging.getLogger("tulle.control")

# Streams live for hours: keepalives find dead proxies (and let proxies find a
# dead replica) without waiting for TCP to time out. Proxies ping every 10 s,
# so the server must tolerate pings that often, even on idle connections.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.http2.max_ping_strikes", 0),
    # gRPC sets SO_REUSEPORT by default: two replicas on one port would then
    # split connections silently instead of the second failing to start.
    ("grpc.so_reuseport", 0),
]
STOP_GRACE_S = 0.5
CONTROL_SERVICE = "tulle-control"
GRPC_PORT = 8086
DEFAULT_TLS_NAMES = (CONTROL_NAME, "localhost")


@dataclass(frozen=True, slots=True)
class ControlConfig:
    manifest: Path
    grpc_addr: Address = ("127.0.0.1", 8086)
    admin_addr: Address = ("127.0.0.1", 9990)
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY
    # The metrics API (src/tulle/viz): None leaves it off.
    http_addr: Address | None = None
    scrape_targets: str = ""
    prometheus_url: str = ""
    # True when http_addr is only the default: a second replica on the same
    # machine then runs without the API instead of refusing to start.
    http_optional: bool = False
    scrape_interval_s: float = 2.0
    # The issuer directory (`tulle identity init`): serves Identity.Certify when set.
    identity_dir: Path | None = None
    identity_leaf_ttl_s: float = 24 * 3600.0
    # "manifest" (the file above) or "kubernetes" (the API server of `kubeconfig`,
    # or the cluster the replica runs in when it is None).
    source: str = "manifest"
    kubeconfig: str | None = None
    cluster_domain: str = "cluster.local"
    trust_domain: str = "cluster.local"
    # The audience of the ServiceAccount tokens Identity.Certify accepts.
    token_audience: str = "identity.tulle.io"
    # The HTTP API's credential for writes and tap (docs/api.md, "Credentials");
    # empty: those endpoints are refused.
    api_token: str = ""
    # Host names the HTTP API answers to besides IP addresses and localhost.
    api_allowed_hosts: tuple[str, ...] = ()
    # Sent to the proxies' admin `/tap` by the tap relay.
    proxy_admin_token: str = ""
    # A trace receiver's page the dashboard links to (http(s) only); empty: none.
    traces_url: str = ""
    # With identity_dir the gRPC API is served over TLS with the replica's own
    # leaf (tulle.control.serving_tls) unless this asks for plaintext.
    grpc_plaintext: bool = False
    grpc_tls_names: tuple[str, ...] = DEFAULT_TLS_NAMES
    # The injection webhook (tulle.control.webhook), HTTPS with the gRPC API's
    # leaf; None leaves it off. Needs source "kubernetes" and identity_dir.
    webhook_addr: Address | None = None
    # What the webhook injects: the proxy's image, the control plane's
    # namespace (the proxies dial tulle-control.<ns>.svc), and native sidecars
    # ("auto": when the API server is 1.29 or newer).
    proxy_image: str = ""
    control_namespace: str = "tulle"
    native_sidecar: str = "auto"


class HttpApi(Protocol):
    """The HTTP API served beside the gRPC one (`tulle.viz.service.VizService`).

    Started after the other listeners, stopped first. The control plane takes
    it from whoever runs the replica (`tulle control` passes the metrics API),
    so that this package does not depend on the one that reads its manifest.
    """

    async def start(self, host: str, port: int) -> Address: ...

    async def stop(self) -> None: ...


# Builds the HTTP API of a replica, from its config and its state: called once,
# at the end of `ControlPlane.__init__`, when `config.http_addr` is set.
HttpApiFactory = Callable[["ControlPlane"], HttpApi]


class ControlPlane:
    """One control-plane replica. `start()`, then `wait()` or `stop()`."""

    def __init__(self, config: ControlConfig, http_api: HttpApiFactory | None = None) -> None:
        self.config = config
        self.metrics = ControlMetrics()
        self._source: ManifestFileSource | None = None
        self._kube: KubernetesSource | None = None
        if config.source == "kubernetes":
            # Filled by start(), once every kind has been listed.
            self.watcher = DestinationWatcher(Manifest(services={}, source="kubernetes"))
        else:
            self._source = ManifestFileSource(
                config.manifest,
                self._on_manifest,
                self.metrics,
                poll_interval_s=config.poll_interval_s,
            )
            # Raises ManifestError: a replica refuses to start on a broken manifest.
            self.watcher = DestinationWatcher(self._source.load_initial())
        self.metrics.publishers = lambda: self.watcher.publisher_count
        self._server: grpc.aio.Server | None = None
        self._admin = AdminServer(self.metrics, self.ready)
        self._poller: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()
        self.grpc_address: Address | None = None
        self.admin_address: Address | None = None
        self.http_address: Address | None = None
        self._viz: HttpApi | None = None
        self._identity: IdentityService | None = None
        self.serving: ServingCertificate | None = None
        self._renewer: asyncio.Task[None] | None = None
        self.policy: PolicyIndex | None = None
        self.webhook_address: Address | None = None
        self._webhook: InjectionWebhook | None = None
        if config.http_addr is not None and http_api is not None:
            self._viz = http_api(self)

    @property
    def kubernetes(self) -> KubernetesSource | None:
        """The Kubernetes source, once `start()` has listed everything (source "kubernetes")."""
        return self._kube

    def ready(self) -> bool:
        return self._server is not None and not self._stopped.is_set()

    def _on_manifest(self, manifest: Manifest) -> None:
        changed = self.watcher.update_manifest(manifest)
        if self.policy is not None:
            self.policy.update_manifest(manifest)
        log.info("manifest change sent to %d watched authorities", changed)

    async def start(self) -> None:
        """Listen and start watching; raises OSError (after cleaning up) if a port is taken."""
        canonical = None
        if self.config.source == "kubernetes":
            await self._start_kubernetes()
            canonical = self._canonical
        server = grpc.aio.server(options=SERVER_OPTIONS)
        service = DestinationService(
            self.watcher,
            self.metrics,
            queue_capacity=self.config.queue_capacity,
            canonical=canonical,
        )
        pb_grpc.add_DestinationServicer_to_server(service, server)
        if self.config.identity_dir is not None:
            from tulle.control.identity_service import add_identity_servicer

            authenticator = None
            if self._kube is not None:
                from tulle.control.kubernetes.tokens import ServiceAccountAuthenticator

                authenticator = ServiceAccountAuthenticator(
                    self._kube.client,
                    self.config.trust_domain,
                    audience=self.config.token_audience,
                )
            # Raises IdentityStoreError (a clear message) on an unusable directory.
            self._identity = add_identity_servicer(
                server,
                self.config.identity_dir,
                leaf_ttl_s=self.config.identity_leaf_ttl_s,
                authenticator=authenticator,
            )
            self.metrics.extra = self._identity.render_prometheus
        self.policy = add_policy_servicer(
            server, self.watcher.manifest, self.metrics, queue_capacity=self.config.queue_capacity
        )
        target = format_address(self.config.grpc_addr)
        credentials = self._serving_credentials()
        try:
            if credentials is None:
                bound = server.add_insecure_port(target)
            else:
                bound = server.add_secure_port(target, credentials)
        except RuntimeError:
            bound = 0
        if bound == 0:
            raise OSError(f"cannot listen for gRPC on {target}: address in use or not local")
        await server.start()
        self._server = server
        if self.serving is not None:
            self._renewer = asyncio.create_task(self.serving.run(), name="serving-tls-renewal")
        self.grpc_address = (self.config.grpc_addr[0], bound)
        try:
            self.admin_address = await self._admin.start(*self.config.admin_addr)
        except OSError as exc:
            await self.stop()
            admin = format_address(self.config.admin_addr)
            raise OSError(f"cannot listen for admin on {admin}: {exc.strerror or exc}") from None
        if self._viz is not None and self.config.http_addr is not None:
            try:
                self.http_address = await self._viz.start(*self.config.http_addr)
            except OSError as exc:
                http = format_address(self.config.http_addr)
                if self.config.http_optional:
                    log.warning("metrics API off: cannot listen on %s: %s", http, exc.strerror)
                    await self._viz.stop()
                    self._viz = None
                else:
                    await self.stop()
                    raise OSError(
                        f"cannot listen for HTTP on {http}: {exc.strerror or exc}"
                    ) from None
        if self.config.webhook_addr is not None:
            try:
                await self._start_webhook(self.config.webhook_addr)
            except OSError as exc:
                await self.stop()
                where = format_address(self.config.webhook_addr)
                raise OSError(f"cannot listen for the webhook on {where}: {exc}") from None
        if self._source is not None:
            self._poller = asyncio.create_task(self._source.run(), name="manifest-poller")
        elif self._kube is not None:
            self._poller = asyncio.create_task(self._kube.run(), name="kubernetes-source")

    def _serving_credentials(self) -> grpc.ServerCredentials | None:
        """TLS with the replica's own leaf when it holds an issuer; None for plaintext."""
        if self._identity is None or self._identity.store is None or self.config.grpc_plaintext:
            why = "--grpc-plaintext" if self.config.grpc_plaintext else "no --identity-dir"
            log.warning(
                "gRPC API on %s is PLAINTEXT (%s): keep it on loopback or a trusted network",
                format_address(self.config.grpc_addr),
                why,
            )
            return None
        from tulle.control.serving_tls import ServingCertificate

        self.serving = ServingCertificate(
            self._identity.store,
            self.config.grpc_tls_names,
            ttl_s=self.config.identity_leaf_ttl_s,
        )
        try:
            credentials = self.serving.credentials()
        except IssuerUnavailable as error:
            raise IdentityStoreError(f"no serving certificate for the gRPC API: {error}") from None
        log.info(
            "gRPC API on %s served over TLS as %s (DNS %s)",
            format_address(self.config.grpc_addr),
            self.serving.identity,
            ", ".join(self.config.grpc_tls_names),
        )
        return credentials

    async def _start_webhook(self, address: Address) -> None:
        """The injection webhook, on the replica's serving leaf; raises OSError."""
        from tulle.control.kubernetes.client import KubeError
        from tulle.control.webhook import InjectionWebhook
        from tulle.k8s.inject import native_sidecar_supported

        if self._kube is None or self.serving is None or self._identity is None:
            raise OSError("the webhook needs --source kubernetes and --identity-dir (TLS)")
        native = self.config.native_sidecar == "true"
        if self.config.native_sidecar == "auto":
            try:
                version, _ = await self._kube.client.server_version()
            except KubeError as exc:
                raise OSError(f"cannot read the API server's version: {exc}") from None
            native = native_sidecar_supported(
                str(version.get("major", "")), str(version.get("minor", ""))
            )
        log.info("injection webhook: proxy as a %s", "native sidecar" if native else "container")
        client = self._kube.client
        store = self._identity.store

        def inject_config() -> InjectConfig:
            from tulle.k8s.inject import InjectConfig

            ns = self.config.control_namespace
            domain = self.config.cluster_domain
            bundle = store.current().bundle.pem().decode() if store is not None else ""
            return InjectConfig(
                image=self.config.proxy_image,
                control_addr=f"{CONTROL_SERVICE}.{ns}.svc.{domain}:{GRPC_PORT}",
                control_name=f"{CONTROL_SERVICE}.{ns}.svc",
                control_namespace=ns,
                trust_anchors_pem=bundle,
                trust_domain=self.config.trust_domain,
                token_audience=self.config.token_audience,
                native_sidecar=native,
            )

        async def namespace_annotations(namespace: str) -> dict[str, str]:
            found = await client.get(f"/api/v1/namespaces/{namespace}")
            annotations = (found.get("metadata") or {}).get("annotations") or {}
            return {str(k): str(v) for k, v in annotations.items()}

        inject_config()  # fails now, not on the first pod, if the issuer is unusable
        webhook = self._webhook = InjectionWebhook(inject_config, namespace_annotations)
        identity_metrics = self._identity.render_prometheus
        self.metrics.extra = lambda: identity_metrics() + webhook.render_prometheus()
        self.webhook_address = await self._webhook.start(*address, self.serving.ssl_context())

    async def _start_kubernetes(self) -> None:
        """List everything once; raises KubeError with a clear message when it cannot."""
        from tulle.control.kubernetes.client import KubeClient, KubeConfig
        from tulle.control.kubernetes.source import KubernetesSource
        from tulle.control.kubernetes.translate import Settings

        client = KubeClient(KubeConfig.load(self.config.kubeconfig))
        self._kube = KubernetesSource(
            client,
            self._on_manifest,
            self.metrics,
            settings=Settings(
                cluster_domain=self.config.cluster_domain, trust_domain=self.config.trust_domain
            ),
        )
        try:
            self.watcher.update_manifest(await self._kube.load_initial())
        except BaseException:
            await client.aclose()
            raise

    def _canonical(self, path: str, context_token: str) -> str:
        from tulle.control.kubernetes.translate import caller_namespace, expand_authority

        return expand_authority(path, caller_namespace(context_token), self.config.cluster_domain)

    async def stop(self) -> None:
        if self._stopped.is_set():
            return
        self._stopped.set()
        if self._viz is not None:
            await self._viz.stop()
        if self._webhook is not None:
            await self._webhook.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        if self._kube is not None:
            await self._kube.close()
            await self._kube.client.aclose()
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        if self._identity is not None:
            await self._identity.close()
        if self._server is not None:
            await self._server.stop(STOP_GRACE_S)
        await self._admin.close()

    async def wait(self) -> None:
        await self._stopped.wait()


async def serve(config: ControlConfig, http_api: HttpApiFactory | None = None) -> None:
    """Run a replica until SIGTERM or SIGINT."""
    plane = ControlPlane(config, http_api)
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await plane.start()
    assert plane.grpc_address is not None and plane.admin_address is not None
    # One parseable line on stdout: tests and `tulle up` read the bound ports
    # from it when they asked for port 0.
    print(
        f"tulle control ready grpc={format_address(plane.grpc_address)} "
        f"admin={format_address(plane.admin_address)}"
        + (f" http={format_address(plane.http_address)}" if plane.http_address else "")
        + (f" webhook={format_address(plane.webhook_address)}" if plane.webhook_address else ""),
        flush=True,
    )
    try:
        await stop_requested.wait()
    finally:
        log.info("stopping")
        await plane.stop()


def run(config: ControlConfig, http_api: HttpApiFactory | None = None) -> None:
    """Run `serve` on uvloop when it is installed (plain asyncio otherwise)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config, http_api))
        return
    uvloop.run(serve(config, http_api))
