"""What the manifest injects into a service's routes, as `tulle routes` shows it.

`describe(route)` turns a route's fault, mirror and outbound rate limit into
short texts (`abort 30% 503; delay 50% 400ms`, `search-v2 10%`, `50/s burst
20`); an unset one is "". The metrics API puts them on each row of
`/api/routes` next to the counts of what they did in the window.

`inbound_limits(policy, service)` lists the `policy.rateLimits` that protect
the service's own servers and policy routes (the inbound side), found as
`authz_report` finds the service's policy: servers whose workload is the
service, and the policy routes of those servers.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from tulle.core.discovery import FaultSpec, MirrorSpec, Route
from tulle.core.policy import PolicySpec
from tulle.core.ratelimit import LimitSpec, RateLimitSpec


def _number(value: float) -> str:
    return f"{value:g}"


def fault_text(fault: FaultSpec | None) -> str:
    if fault is None:
        return ""
    parts: list[str] = []
    if fault.abort_percent > 0.0:
        statuses = [str(fault.abort_status)] if fault.abort_status else []
        if fault.abort_grpc_status is not None:
            statuses.append(f"grpc {fault.abort_grpc_status}")
        parts.append(f"abort {_number(fault.abort_percent)}% {' '.join(statuses)}".rstrip())
    if fault.delay_percent > 0.0 and fault.delay_s > 0.0:
        parts.append(f"delay {_number(fault.delay_percent)}% {_number(fault.delay_s * 1000)}ms")
    if fault.headers:
        names = ",".join(h.name for h in fault.headers)
        parts.append(f"only with {names}")
    return "; ".join(parts)


def mirror_text(mirror: MirrorSpec | None) -> str:
    return "" if mirror is None else f"{mirror.service} {_number(mirror.percent)}%"


def limit_text(limit: LimitSpec | None) -> str:
    if limit is None:
        return ""
    return f"{_number(limit.requests_per_second)}/s burst {_number(limit.size)}"


def describe(route: Route | None) -> dict[str, str]:
    """The route's `fault`, `mirror` and `rate_limit` texts ("" when unset)."""
    if route is None:
        return {"fault": "", "mirror": "", "rate_limit": ""}
    return {
        "fault": fault_text(route.fault),
        "mirror": mirror_text(route.mirror),
        "rate_limit": limit_text(route.rate_limit),
    }


def _per_caller_text(limit: RateLimitSpec) -> str:
    parts = [limit_text(limit.identity)] if limit.identity is not None else []
    parts.extend(f"{limit_text(o.limit)} for {' | '.join(o.identities)}" for o in limit.overrides)
    return "; ".join(parts)


def inbound_limits(
    policy: PolicySpec, service: str, workloads: Collection[str] | None = None
) -> list[dict[str, Any]]:
    """The inbound rate limits protecting `service`, one JSON-ready dict each.

    `workloads`: the policy workloads that make up `service` when they are not
    named after it (Kubernetes: its pods), as in `authz_report.describe`.
    `server` is the server the limit's requests arrive at, `route` its policy
    route ("" for a whole server's limit): the `server` and `route` labels of
    `inbound_http_ratelimit_total` for the requests it is asked about."""
    names = {service} if workloads is None else set(workloads)
    servers = {s.name for s in policy.servers if s.workload in names}
    route_server = {r.name: r.server for r in policy.http_routes if r.server in servers}
    found: list[dict[str, Any]] = []
    for spec in policy.rate_limits:
        if spec.target_server in servers:
            server, route, target = spec.target_server, "", f"server {spec.target_server}"
        elif spec.target_route in route_server:
            route = spec.target_route
            server, target = route_server[route], f"httpRoute {route}"
        else:
            continue
        limit = spec.limit
        found.append(
            {
                "name": spec.name,
                "target": target,
                "server": server,
                "route": route,
                "total": limit_text(limit.total),
                "per_caller": _per_caller_text(limit),
            }
        )
    return found
