"""From a request's authority to the place it goes: targets, routes, balancers, pools.

Built once per logical service (cached by authority bytes) and followed live:

    authority -> ServiceTarget (discovery view + profile)
              -> route match (per-route timeout and retry policy)
              -> traffic split (weighted backends, each a ServiceTarget)
              -> Balancer (P2C over peak-EWMA) -> EndpointState
              -> EndpointPool (idle keep-alive upstream connections)

The request path only reads these objects; discovery updates rebuild the
balancer's endpoint set through a listener, so endpoints join and leave
without disturbing requests in flight (a removed endpoint's in-flight
requests finish on it; its idle connections are closed).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

from tulle.core.accesslog import Sampler
from tulle.core.concurrency import PendingLimit
from tulle.core.discovery import (
    Address,
    Endpoint,
    Profile,
    Resolver,
    RetryBudgetSpec,
    Route,
    RouteMatch,
    ServiceView,
)
from tulle.core.fault import FaultInjector
from tulle.core.policy import identity_pattern
from tulle.core.ratelimit import LimitSpec
from tulle.core.retry_budget import RetryBudget
from tulle.core.split import WeightedPicker
from tulle.proxy.affinity import AffinityPicker
from tulle.proxy.balance import Balancer, EndpointState
from tulle.proxy.destinations import DestinationGuard, Refusal, normalize_ip
from tulle.proxy.metrics import Metrics
from tulle.proxy.ratelimit import OutboundLimit

# The header a trusted caller sends to pick a split backend (requestOverride).
OVERRIDE_HEADER = b"tulle-backend"


class PoolHandle:
    """What a target needs of a connection pool: close idle connections."""

    def close_idle(self) -> None:  # pragma: no cover - overridden
        return None


PoolFactory = Callable[[Endpoint], PoolHandle]


@dataclass(frozen=True, slots=True)
class RoutePolicy:
    """Per-request settings picked by route matching."""

    name: str
    timeout_s: float
    retryable: bool | None  # None: the default rule (idempotent methods)
    retry_statuses: frozenset[int]
    # Faults to inject (outbound, chaos testing); None for nearly every route,
    # so the request path pays one test for the feature.
    fault: FaultInjector | None = None
    # The route asks for access-log lines (--access-log-scope routes).
    access_log: bool = False
    # Traffic mirroring: where copies go and which share (tulle.proxy.mirror).
    mirror: MirrorPolicy | None = None

    # gRPC statuses retried on a retryable route (`retry.grpcStatuses`); a
    # gRPC status outside it is the application's answer.
    retry_grpc_statuses: frozenset[int] = frozenset()
    # Outbound rate limit (`rateLimit`, tulle.proxy.ratelimit); None: none.
    rate_limit: OutboundLimit | None = None


@dataclass(frozen=True, slots=True)
class MirrorPolicy:
    target: ServiceTarget
    sampler: Sampler
    # Whose route's requests are copied: the `route_service` and `route`
    # labels of `mirror_requests_total` (names from the manifest: bounded).
    route_service: str = ""
    route: str = ""


DEFAULT_ROUTE = RoutePolicy("default", 0.0, None, frozenset())


class _CompiledRoute:
    __slots__ = ("matches", "policy")

    def __init__(
        self,
        route: Route,
        default_timeout: float,
        service: Callable[[str], ServiceTarget],
        limit: Callable[[Route], OutboundLimit] | None = None,
        owner: str = "",
    ) -> None:
        """`owner`: the service whose route this is (`service` gives other services)."""
        timeout = route.timeout_s if route.timeout_s is not None else default_timeout
        mirror = route.mirror
        self.policy = RoutePolicy(
            route.name,
            timeout or 0.0,
            route.retryable,
            frozenset(route.retry_statuses),
            FaultInjector(route.fault) if route.fault is not None else None,
            route.access_log,
            MirrorPolicy(
                service(mirror.service), Sampler(mirror.percent / 100.0), owner, route.name
            )
            if mirror is not None
            else None,
            retry_grpc_statuses=frozenset(route.retry_grpc_statuses),
            rate_limit=limit(route) if limit is not None and route.rate_limit is not None else None,
        )
        self.matches = [
            (m, re.compile(m.path_regex) if m.path_regex else None) for m in route.matches
        ]

    def matches_request(
        self, method: bytes, path: str, header: Callable[[bytes], bytes | None]
    ) -> bool:
        if not self.matches:
            return True
        return any(_match_one(m, regex, method, path, header) for m, regex in self.matches)


def _match_one(
    m: RouteMatch,
    regex: re.Pattern[str] | None,
    method: bytes,
    path: str,
    header: Callable[[bytes], bytes | None],
) -> bool:
    if m.method is not None and m.method.encode() != method:
        return False
    if m.path_exact is not None and path != m.path_exact:
        return False
    if m.path_prefix is not None:
        prefix = m.path_prefix.rstrip("/")
        if prefix and not (path == prefix or path.startswith(prefix + "/")):
            return False
    if regex is not None and regex.fullmatch(path) is None:
        return False
    for hm in m.headers:
        got = header(hm.name.encode())
        if got is None:
            return False
        text = got.decode("latin-1")
        if hm.regex:
            if re.fullmatch(hm.value, text) is None:
                return False
        elif text != hm.value:
            return False
    return True


class ServiceTarget:
    """One logical service as the proxy sees it, kept in step with discovery."""

    __slots__ = (
        "_backend_picker",
        "_make_pool",
        "_router",
        "_routes",
        "affinity",
        "authority_label",
        "balancer",
        "budget",
        "budget_spec",
        "default_retryable",
        "default_route",
        "metrics_labels",
        "name",
        "override",
        "passthrough",
        "pending",
        "refusal",
        "view",
    )

    def __init__(
        self,
        router: Router,
        name: str,
        view: ServiceView,
        make_pool: PoolFactory,
        max_pending: int,
        *,
        default_retryable: bool | None = None,
    ) -> None:
        self._router = router
        self.name = name
        self.view = view
        self._make_pool = make_pool
        self.balancer = Balancer(on_removed=self._endpoint_removed)
        self.pending = PendingLimit(max_pending)
        self.budget_spec = RetryBudgetSpec()
        self.budget = RetryBudget.from_spec(self.budget_spec)
        self._routes: list[_CompiledRoute] = []
        # The retry rule of requests no route matches (None: the default rule).
        self.default_retryable = default_retryable
        self.default_route = DEFAULT_ROUTE
        self._backend_picker: WeightedPicker[ServiceTarget] | None = None
        # Session affinity (tulle.proxy.affinity); None for nearly every service.
        self.affinity: AffinityPicker | None = None
        # Per-request override: backend names a `tulle-backend` header may
        # pick (empty: this proxy's identity may not); None: not offered.
        self.override: dict[bytes, ServiceTarget] | None = None
        self.authority_label = name
        self.metrics_labels = name
        # Set when every endpoint is a destination this proxy refuses (its own
        # listeners, a denied address): requests get that answer at once.
        self.refusal: Refusal | None = None
        # A raw address no discovery knows: forwarded as it is (counted).
        self.passthrough = False
        view.subscribe(self._on_view)
        self._on_view(view)

    def _endpoint_removed(self, state: EndpointState) -> None:
        pool = state.pool
        if isinstance(pool, PoolHandle):
            pool.close_idle()

    def _on_view(self, view: ServiceView) -> None:
        endpoints = view.endpoints.values()
        guard = self._router.guard
        refusal: Refusal | None = None
        if guard is not None and endpoints:
            # Once per discovery update, not per request.
            allowed = []
            for ep in endpoints:
                refused = guard.check_endpoint(ep.address)
                if refused is None:
                    allowed.append(ep)
                elif refusal is None:
                    refusal = refused
            if refusal is not None:
                endpoints = allowed  # type: ignore[assignment]
                if allowed:
                    refusal = None
        self.refusal = refusal
        self.balancer.set_endpoints(endpoints)
        self._apply_profile(view.profile)

    def _apply_profile(self, profile: Profile) -> None:
        default_timeout = profile.timeout_s or 0.0
        self._routes = [
            _CompiledRoute(r, default_timeout, self._service_named, self._outbound_limit, self.name)
            for r in profile.routes
        ]
        self.default_route = RoutePolicy(
            "default", default_timeout, self.default_retryable, frozenset()
        )
        spec = profile.retry_budget
        if spec != self.budget_spec:
            # A new budget starts empty; keep the old one while the spec is unchanged.
            self.budget_spec = spec
            self.budget = RetryBudget.from_spec(spec)
        backends = [b for b in profile.backends if b.weight > 0]
        if backends and not (len(backends) == 1 and backends[0].service == self.name):
            items: list[tuple[ServiceTarget, int]] = []
            for b in backends:
                target = self if b.service == self.name else self._router.service(b.service)
                items.append((target, b.weight))
            self._backend_picker = WeightedPicker(items)
        else:
            self._backend_picker = None
        self.override = self._override_table(profile)
        affinity = profile.affinity
        # Rebuilt on every endpoint or profile change (called from _on_view too).
        self.affinity = (
            AffinityPicker(affinity, self.balancer.states(), self._router.metrics, self.name)
            if affinity is not None
            else None
        )

    def _outbound_limit(self, route: Route) -> OutboundLimit:
        return self._router.outbound_limit(self.name, route)

    def _service_named(self, name: str) -> ServiceTarget:
        # Itself by name: this target may not be in the router's table yet.
        return self if name == self.name else self._router.service(name)

    def _override_table(self, profile: Profile) -> dict[bytes, ServiceTarget] | None:
        if not profile.override_identities:
            return None
        own = self._router.own_identity
        if not own or not any(
            identity_pattern(p).fullmatch(own) for p in profile.override_identities
        ):
            return {}
        table: dict[bytes, ServiceTarget] = {self.name.encode(): self}
        # Every backend of the split, those of weight 0 too: a version that
        # takes no traffic yet is what a tester sends single requests to.
        for b in profile.backends:
            target = self if b.service == self.name else self._router.service(b.service)
            table[b.service.encode()] = target
        return table

    def overridden(
        self, header: Callable[[bytes], bytes | None], backend: ServiceTarget
    ) -> ServiceTarget:
        """The backend a `tulle-backend` header picks, when this proxy may; else `backend`."""
        override = self.override
        asked = header(OVERRIDE_HEADER)
        if asked is None or override is None:
            return backend
        chosen = override.get(asked.strip().lower())
        result = "applied" if chosen is not None else "refused"
        self._router.metrics.inc(
            "request_override_total", (("dst_service", self.name), ("result", result))
        )
        return chosen if chosen is not None else backend

    def route(
        self, method: bytes, path: bytes, header: Callable[[bytes], bytes | None]
    ) -> RoutePolicy:
        routes = self._routes
        if not routes:
            return self.default_route
        text = path.split(b"?", 1)[0].decode("latin-1")
        for r in routes:
            if r.matches_request(method, text, header):
                return r.policy
        return self.default_route

    def backend(self) -> ServiceTarget:
        """The service that serves this request after the traffic split."""
        picker = self._backend_picker
        if picker is None:
            return self
        return picker.pick()

    def pool_for(self, state: EndpointState) -> PoolHandle:
        pool = state.pool
        if pool is None:
            pool = state.pool = self._make_pool(state.endpoint)
        return pool  # type: ignore[return-value]

    def close(self) -> None:
        self.view.unsubscribe(self._on_view)


class Router:
    """Maps authorities to targets for one direction."""

    def __init__(
        self,
        resolver: Resolver,
        make_pool: PoolFactory,
        metrics: Metrics,
        *,
        max_pending: int,
        fixed_target: Address | None = None,
        guard: DestinationGuard | None = None,
    ) -> None:
        # Outbound: the destinations never to forward to (checked once per
        # authority or endpoint); None for the inbound, which has a fixed target.
        self.guard = guard
        self._resolver = resolver
        self._make_pool = make_pool
        self._metrics = metrics
        self.metrics = metrics
        # This proxy's own SPIFFE ID (--identity): whom per-request overrides trust.
        self.own_identity = ""
        self._max_pending = max_pending
        self._by_authority: dict[bytes, ServiceTarget] = {}
        self._services: dict[str, ServiceTarget] = {}
        self._fixed: ServiceTarget | None = None
        self._by_port: dict[int, ServiceTarget] = {}
        # Outbound rate limits by (service, route, spec): a profile update
        # that leaves a limit unchanged keeps its bucket.
        self._limits: dict[tuple[str, str, LimitSpec], OutboundLimit] = {}
        if fixed_target is not None:
            view = ServiceView("app")
            view.apply_reset([Endpoint(fixed_target)])
            # Inbound: retries belong to the caller's side (the outbound proxy,
            # which can pick another endpoint); the local app is one address.
            # Only requests the app never received are resent.
            fixed = ServiceTarget(
                self, "app", view, make_pool, max_pending, default_retryable=False
            )
            fixed.authority_label = ""
            fixed.metrics_labels = ""
            self._fixed = fixed

    def outbound_limit(self, service: str, route: Route) -> OutboundLimit:
        """The live bucket of a route's `rateLimit` (kept while its spec is unchanged)."""
        spec = route.rate_limit
        assert spec is not None
        key = (service, route.name, spec)
        limit = self._limits.get(key)
        if limit is None:
            if len(self._limits) >= 10_000:
                self._limits.clear()  # bounded: buckets start full again
            limit = self._limits[key] = OutboundLimit(service, route.name, spec, self.metrics)
        return limit

    @property
    def fixed(self) -> ServiceTarget | None:
        return self._fixed

    def fixed_at(self, port: int) -> ServiceTarget:
        """Inbound, captured: the app at the port the caller was connecting to.

        The app's host is `--app-addr`'s; the port is the original
        destination's (an app listening on several ports gets each caller
        on the port it called). Built once per port; the caller has checked
        that the port is not one of the proxy's own."""
        fixed = self._fixed
        assert fixed is not None, "fixed_at is for the inbound"
        host, app_port = next(iter(fixed.view.endpoints))
        if port == app_port:
            return fixed
        target = self._by_port.get(port)
        if target is None:
            view = ServiceView("app")
            view.apply_reset([Endpoint((host, port))])
            target = ServiceTarget(
                self, "app", view, self._make_pool, self._max_pending, default_retryable=False
            )
            target.authority_label = ""
            target.metrics_labels = ""
            self._by_port[port] = target
        return target

    def service(self, name: str) -> ServiceTarget:
        target = self._services.get(name)
        if target is None:
            view = self._resolver.resolve(name)
            target = ServiceTarget(self, name, view, self._make_pool, self._max_pending)
            self._services[name] = target
        return target

    def for_authority(self, authority: bytes) -> ServiceTarget:
        """Cached; the first call for an authority normalises and resolves it."""
        target = self._by_authority.get(authority)
        if target is None:
            target = self._resolve_authority(authority)
            if len(self._by_authority) < 10_000:
                self._by_authority[authority] = target
        return target

    def _resolve_authority(self, authority: bytes) -> ServiceTarget:
        text = authority.decode("latin-1").strip().lower()
        host, port = split_authority(text)
        ip = normalize_ip(host) if is_ip(host) else None
        if ip is not None and port is not None:
            host = ip
            name = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
            target = self._services.get(name)
            if target is None:
                refusal = self.guard.check_raw(host, port) if self.guard is not None else None
                if refusal is not None:
                    return self._refused(name, refusal)
                target = self._raw_target(name, (host, port))
                self._services[name] = target
            return target
        host = host.rstrip(".")
        if port is not None and port != 80:
            with_port = f"{host}:{port}"
            known = self._services.get(with_port)
            if known is not None:
                return known
        return self.service(host)

    def _raw_target(self, name: str, address: Address) -> ServiceTarget:
        """A raw `IP:PORT` (an IP authority, or a captured connection's original
        destination), routed by what discovery knows of that address.

        Discovery is asked for the name `IP:PORT`: a service's virtual address
        (a Kubernetes ClusterIP) gets that service's endpoints, identities,
        routes and split. Otherwise, an address that is an endpoint of a
        service this proxy follows is called with that endpoint's identity
        (mTLS); anything else is forwarded as it is (passthrough: the outbound
        is not a firewall), with `dst_service` empty and
        `outbound_passthrough_total` counting it. The first request waits for
        discovery's answer at most `RAW_DISCOVERY_WAIT_S`, then passes through.
        """
        view = ServiceView(name)
        target = ServiceTarget(self, name, view, self._make_pool, self._max_pending)
        target.metrics_labels = ""
        _AddressMirror(self, target, address, self._resolver.resolve(name))
        return target

    def endpoint_at(self, address: Address, exclude: ServiceTarget) -> Endpoint | None:
        """An endpoint of a followed service at `address` (its identity), if any.

        Called once per discovery answer about a raw address, never per request."""
        for target in self._services.values():
            if target is exclude or target.passthrough:
                continue
            ep = target.view.endpoints.get(address)
            if ep is not None:
                return ep
        return None

    def _refused(self, name: str, refusal: Refusal) -> ServiceTarget:
        """A target that only answers `refusal` (kept out of `targets()`)."""
        view = ServiceView(name)
        view.apply_no_endpoints(exists=True)
        target = ServiceTarget(self, name, view, self._make_pool, self._max_pending)
        target.metrics_labels = ""
        target.refusal = refusal
        return target

    def targets(self) -> list[ServiceTarget]:
        out = list(self._services.values())
        if self._fixed is not None:
            out.append(self._fixed)
        out.extend(self._by_port.values())
        return out


# How long the first request to a raw address waits for discovery's answer
# before it is forwarded as it is (availability over a slow control plane).
RAW_DISCOVERY_WAIT_S = 1.0


class _AddressMirror:
    """Keeps a raw address's target in step with discovery's view of it."""

    __slots__ = ("_address", "_router", "_target", "_timer")

    def __init__(
        self, router: Router, target: ServiceTarget, address: Address, discovered: ServiceView
    ) -> None:
        self._router = router
        self._target = target
        self._address = address
        self._timer: asyncio.TimerHandle | None = None
        discovered.subscribe(self._update)
        if discovered.exists is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._pass_through()
            else:
                self._timer = loop.call_later(RAW_DISCOVERY_WAIT_S, self._waited)
        else:
            self._update(discovered)

    def _waited(self) -> None:
        self._timer = None
        if self._target.view.exists is None:
            self._pass_through()

    def _update(self, discovered: ServiceView) -> None:
        if discovered.exists is None:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        view = self._target.view
        if discovered.exists and discovered.endpoints:
            self._target.passthrough = False
            # Discovery names no service for an address: the address is the label.
            self._target.metrics_labels = self._target.name
            view.apply_profile(discovered.profile)
            view.apply_reset(discovered.endpoints.values())
        else:
            self._pass_through()

    def _pass_through(self) -> None:
        target = self._target
        known = self._router.endpoint_at(self._address, target)
        target.passthrough = known is None
        target.metrics_labels = ""
        target.view.apply_reset([known if known is not None else Endpoint(self._address)])


def split_authority(text: str) -> tuple[str, int | None]:
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            return text, None
    return host, int(port) if port.isdigit() else None


def is_ip(host: str) -> bool:
    if ":" in host:
        return True
    parts = host.split(".")
    return len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)
