"""What the manifest injects into a service's routes, as `tulle routes` shows it.

`describe(route)` turns a route's fault, mirror and outbound rate limit into
short texts (`abort 30% 503; delay 50% 400ms`, `search-v2 10%`, `50/s burst
20`); an unset one is "". The metrics API puts them on each row of
`/api/routes` next to the counts of what they did in the window.
"""

from __future__ import annotations

from tulle.core.discovery import FaultSpec, MirrorSpec, Route
from tulle.core.ratelimit import LimitSpec


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
