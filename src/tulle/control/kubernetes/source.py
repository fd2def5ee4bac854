"""The Kubernetes API as a live source: reflectors in, whole `Manifest`s out.

One reflector per kind (Services, EndpointSlices, Pods, Tulle's and Gateway
API's resources). Any change marks the state dirty; a rebuild runs at most
every `batch_s` (50 ms by default) and then hands the new `Manifest` to
`on_change`, exactly as `ManifestFileSource` does after an edit, so that the
rest of the control plane cannot tell the sources apart. Batching bounds the
work when many objects change at once (a rollout, a relist) while keeping
propagation well under a second.

EndpointSlices are read as `discovery.k8s.io/v1` when the server has it and
`v1beta1` otherwise (Kubernetes 1.20 and older); both have the fields used.

The metrics API reads the same Pods and Services (`pods.py`): the meshed
pods' proxies to scrape (found again when it asks after a change), and the
Service names their metrics' `dst_service` labels are renamed to (followed
at each rebuild).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tulle.control.kubernetes.client import KubeClient, KubeError, Resource
from tulle.control.kubernetes.pods import DestinationNames, PodTargets
from tulle.control.kubernetes.reflector import Reflector
from tulle.control.kubernetes.translate import (
    ClusterState,
    Settings,
    TranslationCache,
    translate,
)
from tulle.control.manifest import Manifest
from tulle.control.metrics import ControlMetrics
from tulle.core.scrape import ScrapeTarget

log = logging.getLogger("tulle.control.kubernetes")

DEFAULT_BATCH_S = 0.05
GATEWAY_GROUP = "gateway.networking.k8s.io"
DISCOVERY_GROUP = "discovery.k8s.io"

SERVICES = Resource("", "v1", "services")
PODS = Resource("", "v1", "pods")
HTTP_ROUTES = Resource(GATEWAY_GROUP, "v1", "httproutes")
GRPC_ROUTES = Resource(GATEWAY_GROUP, "v1", "grpcroutes")
SERVICE_PROFILES = Resource("tulle.io", "v1alpha1", "serviceprofiles")
SERVERS = Resource("policy.tulle.io", "v1alpha1", "servers")
MESH_TLS_AUTHENTICATIONS = Resource("policy.tulle.io", "v1alpha1", "meshtlsauthentications")
NETWORK_AUTHENTICATIONS = Resource("policy.tulle.io", "v1alpha1", "networkauthentications")
AUTHORIZATION_POLICIES = Resource("policy.tulle.io", "v1alpha1", "authorizationpolicies")


def watched_kinds(slice_resource: Resource) -> dict[str, Resource]:
    """What the source reflects, by `ClusterState` field (`tulle install`'s RBAC reads it)."""
    return {
        "services": SERVICES,
        "endpoint_slices": slice_resource,
        "pods": PODS,
        "http_routes": HTTP_ROUTES,
        "grpc_routes": GRPC_ROUTES,
        "service_profiles": SERVICE_PROFILES,
        "servers": SERVERS,
        "mesh_tls_authentications": MESH_TLS_AUTHENTICATIONS,
        "network_authentications": NETWORK_AUTHENTICATIONS,
        "authorization_policies": AUTHORIZATION_POLICIES,
    }


async def endpoint_slice_resource(client: KubeClient) -> Resource:
    """`discovery.k8s.io/v1` when served, else `v1beta1`."""
    try:
        group = await client.get(f"/apis/{DISCOVERY_GROUP}")
    except KubeError as exc:
        raise KubeError(f"the API server serves no EndpointSlices: {exc}", exc.status) from None
    versions = {v.get("version") for v in group.get("versions") or [] if isinstance(v, dict)}
    version = "v1" if "v1" in versions else "v1beta1"
    return Resource(DISCOVERY_GROUP, version, "endpointslices")


class KubernetesSource:
    def __init__(
        self,
        client: KubeClient,
        on_change: Callable[[Manifest], None],
        metrics: ControlMetrics,
        *,
        settings: Settings = Settings(),
        batch_s: float = DEFAULT_BATCH_S,
    ) -> None:
        self.client = client
        self.settings = settings
        self._on_change = on_change
        self._metrics = metrics
        self._batch_s = batch_s
        self._dirty = asyncio.Event()
        self._reflectors: dict[str, Reflector] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._reported: set[str] = set()
        self._cache = TranslationCache()
        # For the metrics API (tulle.viz.service): the pods' proxies, found again
        # when it asks after a change (every scrape round at most), not per rebuild.
        self._changes = 0
        self._pod_targets = PodTargets()
        self._targets: tuple[int, list[ScrapeTarget]] = (-1, [])
        self.names = DestinationNames(settings.cluster_domain)

    def _mark(self) -> None:
        self._changes += 1
        self._dirty.set()

    def proxy_targets(self) -> list[ScrapeTarget]:
        """The meshed pods' proxies (`pods.py`), as of the last change seen."""
        if self._targets[0] != self._changes:
            self._targets = (self._changes, self._pod_targets.current(self.state()))
        return self._targets[1]

    async def load_initial(self, timeout_s: float = 30.0) -> Manifest:
        """Start the reflectors and wait until every kind is listed once."""
        slice_resource = await endpoint_slice_resource(self.client)
        for name, resource in watched_kinds(slice_resource).items():
            reflector = Reflector(self.client, resource, self._mark, name=name)
            self._reflectors[name] = reflector
            self._tasks.append(asyncio.create_task(reflector.run(), name=f"reflect-{name}"))
        try:
            async with asyncio.timeout(timeout_s):
                for reflector in self._reflectors.values():
                    await reflector.synced.wait()
        except TimeoutError:
            await self.close()
            missing = [n for n, r in self._reflectors.items() if not r.synced.is_set()]
            raise KubeError(
                f"could not list {', '.join(missing)} within {timeout_s:.0f} s "
                f"from {self.client.config.server}"
            ) from None
        self._dirty.clear()
        return self._rebuild()

    def state(self) -> ClusterState:
        r = self._reflectors
        return ClusterState(**{name: reflector.store for name, reflector in r.items()})

    def _rebuild(self) -> Manifest:
        started = time.perf_counter()
        state = self.state()
        translation = translate(state, self.settings, self._cache)
        self.names.update(state.services)
        for problem in translation.problems:
            if problem not in self._reported:
                log.warning("ignoring an object: %s", problem)
        self._reported = set(translation.problems)
        self._metrics.reload_ok += 1
        self._metrics.last_reload_ok_at = time.time()
        self._metrics.services = len(translation.manifest.services)
        log.debug("rebuilt the model in %.1f ms", (time.perf_counter() - started) * 1e3)
        return translation.manifest

    async def run(self) -> None:
        """Rebuild and publish after changes, until cancelled."""
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self._batch_s)
            self._dirty.clear()
            try:
                manifest = self._rebuild()
            except Exception:
                # A bug met by some object must not stop the source: the last
                # good model keeps being served (fail static), and the next
                # change tries again.
                self._metrics.reload_error += 1
                log.exception("cannot rebuild the model; keeping the last good one")
                continue
            self._on_change(manifest)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
