"""Inbound rate limits: the live limiters of one proxy process, followed across policy updates.

The policy (`tulle.core.policy.InboundPolicy`, from the Policy API) names
the limits of the server and of its routes; `InboundRateLimits.check` is
asked once per authorized request whose policy has any
(`InboundPolicy.rate_limited`, one attribute test otherwise). Limiters are
kept by spec, so a policy update that leaves a limit unchanged keeps its
buckets, and a changed limit starts full. With `--workers N` each worker
enforces 1/N of every rate (connections are spread over workers by the
kernel), so the whole proxy holds the configured rate.

Counted in `inbound_http_ratelimit_total{server, route, limit, decision}`
(`decision` is `allow` or `limit`).

Outbound (`OutboundLimit`, a route's `rateLimit` in the manifest): one token
bucket per route of a service, on the calling side, total only (the caller is
one client); built with the route's policy, so a new profile for the service
starts its buckets full. Per worker process: with `--workers N` each worker
holds the rate (connections are spread over workers). Counted in
`outbound_http_ratelimit_total{dst_service, route, decision}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from tulle.core.policy import InboundPolicy
from tulle.core.ratelimit import LimitSpec, RateLimiter, RateLimitSpec, retry_after
from tulle.proxy.metrics import Labels, Metrics

RATE_LIMITED = "rate-limited"


class Limited:
    """A refusal: which limit, and the `Retry-After` seconds."""

    __slots__ = ("limit", "retry_after_s")

    def __init__(self, limit: str, retry_after_s: int) -> None:
        self.limit = limit
        self.retry_after_s = retry_after_s


class InboundRateLimits:
    def __init__(
        self, metrics: Metrics, workers: int = 1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._metrics = metrics
        self._workers = max(1, workers)
        self._clock = clock
        # Per app port: the policy last seen there, its server's limiter and
        # its routes' (a captured connection's original port picks its policy).
        self._compiled: dict[
            tuple[str, int], tuple[InboundPolicy, RateLimiter | None, dict[str, RateLimiter]]
        ] = {}
        self._by_spec: dict[RateLimitSpec, RateLimiter] = {}
        self._labels: dict[tuple[str, str, str, bool], Labels] = {}

    def _follow(
        self, policy: InboundPolicy
    ) -> tuple[InboundPolicy, RateLimiter | None, dict[str, RateLimiter]]:
        """Once per policy object, not per request."""
        now = self._clock()
        by_spec = self._by_spec

        def limiter(spec: RateLimitSpec) -> RateLimiter:
            found = by_spec.get(spec)
            if found is None:
                found = by_spec[spec] = RateLimiter(spec.scaled(self._workers), now)
            return found

        server = limiter(policy.rate_limit) if policy.rate_limit is not None else None
        routes = {
            route.name: limiter(route.rate_limit)
            for route in policy.routes
            if route.rate_limit is not None
        }
        compiled = self._compiled[(policy.workload, policy.port)] = (policy, server, routes)
        # Specs no policy names any more are dropped (their buckets with them).
        live = {id(limiter) for _, s, r in self._compiled.values() for limiter in (s, *r.values())}
        self._by_spec = {spec: lim for spec, lim in by_spec.items() if id(lim) in live}
        return compiled

    def check(
        self, policy: InboundPolicy, route: str, client_id: str, client_ip: str
    ) -> Limited | None:
        """None: the request may go on (its tokens are taken). The route's
        limit is asked first, then the server's."""
        compiled = self._compiled.get((policy.workload, policy.port))
        if compiled is None or compiled[0] is not policy:
            compiled = self._follow(policy)
        _, server_limiter, routes = compiled
        now = self._clock()
        limiter = routes.get(route) if route else None
        if limiter is not None:
            refused = self._ask(limiter, now, policy.server, route, client_id, client_ip)
            if refused is not None:
                return refused
        if server_limiter is not None:
            return self._ask(server_limiter, now, policy.server, route, client_id, client_ip)
        return None

    def _ask(
        self,
        limiter: RateLimiter,
        now: float,
        server: str,
        route: str,
        client_id: str,
        client_ip: str,
    ) -> Limited | None:
        wait_s = limiter.check(now, client_id or None, client_ip)
        name = limiter.spec.name
        key = (server, route, name, wait_s > 0.0)
        labels = self._labels.get(key)
        if labels is None:
            labels = (
                ("server", server),
                ("route", route),
                ("limit", name),
                ("decision", "limit" if wait_s > 0.0 else "allow"),
            )
            if len(self._labels) < 10_000:
                self._labels[key] = labels
        counters = self._metrics.counters
        counter_key = ("inbound_http_ratelimit_total", labels)
        counters[counter_key] = counters.get(counter_key, 0) + 1
        if wait_s > 0.0:
            return Limited(name, retry_after(wait_s))
        return None


class OutboundLimit:
    """A route's outbound token bucket and its counters' labels, built once per profile."""

    __slots__ = ("_allow", "_limit", "_limiter", "_metrics", "clock")

    def __init__(
        self,
        service: str,
        route: str,
        limit: LimitSpec,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._limiter = RateLimiter(RateLimitSpec(route, total=limit), clock())
        self._metrics = metrics
        base = (("direction", "outbound"), ("dst_service", service), ("route", route))
        self._allow = (*base, ("decision", "allow"))
        self._limit = (*base, ("decision", "limit"))

    def check(self) -> Limited | None:
        """None: the request may go on (its token is taken)."""
        wait_s = self._limiter.check(self.clock(), None, "")
        if wait_s > 0.0:
            self._metrics.inc("outbound_http_ratelimit_total", self._limit)
            return Limited(self._limiter.spec.name, retry_after(wait_s))
        self._metrics.inc("outbound_http_ratelimit_total", self._allow)
        return None
