"""Golden metrics from window increments: per service, instance, route, and edges.

Which side counts where, as in Linkerd viz:

* a service's own figures come from the **inbound** side of its proxies (the
  server's view: every caller, meshed or not). A service that has no scraped
  proxy of its own (an external or unmeshed one) is shown from its callers'
  **outbound** metrics instead, and says so (`source: "outbound"`);
* routes of a service come from its callers' outbound metrics (that is where
  the route table lives), else from its own inbound metrics;
* an edge X -> Y is the outbound metrics of X's proxies whose `dst_service`
  is Y. Identities come from `server_id` (outbound) and, for the client, from
  `client_id` on Y's inbound side when that identity names X's service
  account (`.../sa/X`; for a Kubernetes service `ns/X`, `.../ns/ns/sa/X`);
  both are empty until mTLS labels exist.

Success rate is `classification="success"` over all responses; the TLS share
is the share of responses carrying `tls="true"`; latency quantiles come from
the summed bucket increments (see `quantile.py`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tulle.codec.promtext import Labels
from tulle.core.scrape import ScrapeTarget
from tulle.proxy.metrics import LATENCY_BUCKETS_MS
from tulle.viz.quantile import histogram_quantile
from tulle.viz.window import Delta, WindowData

DEFAULT_ROUTE = "[default]"


@functools.lru_cache(maxsize=65536)
def _as_dict(labels: Labels) -> dict[str, str]:
    # Series repeat in every delta of a window: each label set is read once.
    return dict(labels)


def _label(labels: Labels, name: str) -> str:
    return _as_dict(labels).get(name, "")


@functools.lru_cache(maxsize=4096)
def _le(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.inf


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


@dataclass(slots=True)
class Golden:
    """Accumulates one group's increments; `to_json(seconds)` gives the figures."""

    responses: float = 0.0
    successes: float = 0.0
    tls: float = 0.0
    retries: float = 0.0
    timeouts: float = 0.0
    # What a route's fault and outbound rate limit did (only `routes` shows them).
    faults: float = 0.0
    rate_limited: float = 0.0
    # Copies of the route's requests its mirror sent (`result="sent"`).
    mirrored: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)
    client_ids: set[str] = field(default_factory=set)
    server_ids: set[str] = field(default_factory=set)
    status_codes: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, labels: Labels, value: float) -> None:
        if name == "response_total":
            get = _as_dict(labels).get
            self.responses += value
            if get("classification") == "success":
                self.successes += value
            if get("tls") == "true":
                self.tls += value
            code = get("status_code", "")
            self.status_codes[code] = self.status_codes.get(code, 0.0) + value
            client = get("client_id")
            if client:
                self.client_ids.add(client)
            server = get("server_id")
            if server:
                self.server_ids.add(server)
        elif name == "response_latency_ms_bucket":
            le = _le(_label(labels, "le"))
            self.buckets[le] = self.buckets.get(le, 0.0) + value
        elif name == "retry_total":
            self.retries += value
        elif name == "timeout_total":
            self.timeouts += value
        elif name == "fault_injected_total":
            self.faults += value
        elif name == "outbound_http_ratelimit_total" and _label(labels, "decision") == "limit":
            self.rate_limited += value
        elif name == "mirror_requests_total" and _label(labels, "result") == "sent":
            self.mirrored += value

    def _histogram(self) -> dict[float, float]:
        """The summed buckets, with the empty ones below the first observation.

        Only increments are stored, and a cumulative bucket gains nothing only
        when it lies below every observation of the window; the proxies'
        bounds are Linkerd's, so those missing bounds are known to be 0.
        """
        if not self.buckets:
            return self.buckets
        lowest = min(self.buckets)
        filled = dict.fromkeys((b for b in LATENCY_BUCKETS_MS if b < lowest), 0.0)
        filled.update(self.buckets)
        return filled

    def to_json(self, seconds: float) -> dict[str, Any]:
        seconds = max(seconds, 1e-9)
        total = self.responses
        histogram = self._histogram()
        return {
            "requests": round(total),
            "rps": round(total / seconds, 3),
            "success_rate": _rounded(self.successes / total, 4) if total else None,
            "latency_ms": {
                "p50": _rounded(histogram_quantile(0.5, histogram)),
                "p95": _rounded(histogram_quantile(0.95, histogram)),
                "p99": _rounded(histogram_quantile(0.99, histogram)),
            },
            "tls_share": round(self.tls / total, 4) if total else 0.0,
            "retries": round(self.retries),
            "retry_rps": round(self.retries / seconds, 3),
            "status_codes": {code: round(n) for code, n in sorted(self.status_codes.items())},
            "client_ids": sorted(self.client_ids),
            "server_ids": sorted(self.server_ids),
        }


def _series(
    deltas: Iterable[Delta],
) -> Iterable[tuple[ScrapeTarget, str, Labels, float]]:
    for delta in deltas:
        for (name, labels), value in delta.increments.items():
            yield delta.target, name, labels, value


# Counted per route only: a mirror's copies are not the mirror's traffic in
# stat or edges (its own proxies count what it serves), and an inbound limit's
# decisions are listed by `inbound_limit_counts`.
_ROUTE_ONLY = frozenset({"mirror_requests_total", "inbound_http_ratelimit_total"})


def _group(
    data: WindowData,
    key: Callable[[ScrapeTarget, str, Labels], str | tuple[str, ...] | None],
    with_mirrors: bool = False,
) -> dict[Any, Golden]:
    groups: dict[Any, Golden] = {}
    for target, name, labels, value in _series(data.deltas):
        if name in _ROUTE_ONLY and not (with_mirrors and name == "mirror_requests_total"):
            continue
        group = key(target, name, labels)
        if group is None:
            continue
        golden = groups.get(group)
        if golden is None:
            golden = groups[group] = Golden()
        golden.add(name, labels, value)
    return groups


def _direction(labels: Labels) -> str:
    return _label(labels, "direction")


def stat_services(data: WindowData, service: str | None = None) -> list[dict[str, Any]]:
    """One row per service: inbound figures of its proxies, else its callers' outbound ones."""
    own = {target.service for target in data.targets}

    def inbound(target: ScrapeTarget, name: str, labels: Labels) -> str | None:
        if name == "retry_total":
            # Retries are made by callers: count them for the service called.
            dst = _label(labels, "dst_service")
            return dst or None
        return target.service if _direction(labels) == "inbound" else None

    def outbound(target: ScrapeTarget, name: str, labels: Labels) -> str | None:
        dst = _label(labels, "dst_service")
        if _direction(labels) != "outbound" or not dst or dst in own or name == "retry_total":
            return None
        return dst

    served = _group(data, inbound)
    called = _group(data, outbound)
    instances: dict[str, int] = {}
    for target in data.targets:
        instances[target.service] = instances.get(target.service, 0) + 1
    rows: list[dict[str, Any]] = []
    for name in sorted(own | set(called) | {s for s in served if s in own}):
        if service is not None and name != service:
            continue
        golden = served.get(name) if name in own else called.get(name)
        row: dict[str, Any] = {
            "service": name,
            "instances": instances.get(name, 0),
            "source": "inbound" if name in own else "outbound",
        }
        row.update((golden or Golden()).to_json(data.seconds))
        rows.append(row)
    return rows


def stat_instances(data: WindowData, service: str | None = None) -> list[dict[str, Any]]:
    """One row per proxy instance, from its inbound side."""

    def key(target: ScrapeTarget, name: str, labels: Labels) -> tuple[str, ...] | None:
        if _direction(labels) != "inbound":
            return None
        return (target.service, target.instance)

    groups = _group(data, key)
    rows: list[dict[str, Any]] = []
    for target in data.targets:
        if service is not None and target.service != service:
            continue
        row: dict[str, Any] = {
            "service": target.service,
            "instance": target.instance,
            "admin": target.admin,
        }
        golden = groups.get((target.service, target.instance), Golden())
        row.update(golden.to_json(data.seconds))
        rows.append(row)
    return rows


def stat_workloads(data: WindowData, workload: str | None = None) -> list[dict[str, Any]]:
    """One row per Kubernetes workload (`deploy/web` of a namespace), from its pods' inbound side.

    `workload` is `KIND/NAME` or just `KIND` (every workload of that kind)."""

    def key(target: ScrapeTarget, name: str, labels: Labels) -> tuple[str, ...] | None:
        if _direction(labels) != "inbound" or not target.workload:
            return None
        return (target.namespace, target.workload)

    def wanted(target: ScrapeTarget) -> bool:
        if not target.workload:
            return False
        if workload is None:
            return True
        return target.workload == workload or target.workload.partition("/")[0] == workload

    groups = _group(data, key)
    instances: dict[tuple[str, str], int] = {}
    for target in data.targets:
        if wanted(target):
            group = (target.namespace, target.workload)
            instances[group] = instances.get(group, 0) + 1
    rows: list[dict[str, Any]] = []
    for namespace, name in sorted(instances):
        row: dict[str, Any] = {
            "namespace": namespace,
            "workload": name,
            "instances": instances[(namespace, name)],
        }
        row.update(groups.get((namespace, name), Golden()).to_json(data.seconds))
        rows.append(row)
    return rows


def inbound_limit_counts(data: WindowData, service: str) -> dict[tuple[str, str], dict[str, int]]:
    """What the inbound rate limits of `service`'s own proxies decided in the window.

    Keyed by (limit, policy route) from `inbound_http_ratelimit_total{server,
    route, limit, decision}`: `allowed` and `limited` requests."""
    counts: dict[tuple[str, str], list[float]] = {}
    for target, name, labels, value in _series(data.deltas):
        if name != "inbound_http_ratelimit_total" or target.service != service:
            continue
        get = _as_dict(labels).get
        entry = counts.setdefault((get("limit", ""), get("route", "")), [0.0, 0.0])
        entry[1 if get("decision") == "limit" else 0] += value
    return {
        key: {"allowed": round(allowed), "limited": round(limited)}
        for key, (allowed, limited) in counts.items()
    }


def routes(data: WindowData, service: str, configured: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Per-route figures of `service`: its callers' outbound view, else its inbound one.

    `configured`: the routes the manifest gives the service; one without
    traffic in the window is listed too, with zero counts (as `linkerd viz
    routes` lists a service profile's routes). `rate_limited` is what the
    callers' outbound limit refused plus what the service's inbound limits
    refused on a policy route of the same name (`rate_limited_outbound`,
    `rate_limited_inbound`); every inbound limit's own counts are in
    `inbound_limit_counts`."""

    def outbound(target: ScrapeTarget, name: str, labels: Labels) -> str | None:
        if _direction(labels) != "outbound" or name == "retry_total":
            return None
        # A copy's `dst_service` is the mirror; the route it copies is `route_service`'s.
        whose = "route_service" if name == "mirror_requests_total" else "dst_service"
        if _label(labels, whose) != service:
            return None
        return _label(labels, "route") or DEFAULT_ROUTE

    def inbound(target: ScrapeTarget, name: str, labels: Labels) -> str | None:
        if target.service != service or _direction(labels) != "inbound":
            return None
        return _label(labels, "route") or DEFAULT_ROUTE

    groups = _group(data, outbound, with_mirrors=True)
    source = "outbound"
    if not groups:
        groups = _group(data, inbound)
        source = "inbound"
    refused_inbound: dict[str, int] = {}
    for (_, route), counts in inbound_limit_counts(data, service).items():
        if route:
            refused_inbound[route] = refused_inbound.get(route, 0) + counts["limited"]
    rows: list[dict[str, Any]] = []
    for route in sorted(set(groups) | set(configured)):
        row: dict[str, Any] = {"service": service, "route": route, "source": source}
        golden = groups.get(route) or Golden()
        row.update(golden.to_json(data.seconds))
        row["faults_injected"] = round(golden.faults)
        row["mirrored"] = round(golden.mirrored)
        outbound_limited = round(golden.rate_limited)
        inbound_limited = refused_inbound.get(route, 0)
        row["rate_limited_outbound"] = outbound_limited
        row["rate_limited_inbound"] = inbound_limited
        row["rate_limited"] = outbound_limited + inbound_limited
        rows.append(row)
    return rows


def edges(data: WindowData) -> list[dict[str, Any]]:
    """Who calls whom: one row per (client service, destination service)."""

    def outbound(target: ScrapeTarget, name: str, labels: Labels) -> tuple[str, ...] | None:
        dst = _label(labels, "dst_service")
        if _direction(labels) != "outbound" or not dst:
            return None
        return (target.service, dst)

    def inbound_clients(target: ScrapeTarget, name: str, labels: Labels) -> str | None:
        return target.service if _direction(labels) == "inbound" else None

    groups = _group(data, outbound)
    seen_by_server = _group(data, inbound_clients)
    rows: list[dict[str, Any]] = []
    for src, dst in sorted(groups):
        golden = groups[(src, dst)]
        figures = golden.to_json(data.seconds)
        clients = seen_by_server.get(dst, Golden()).client_ids
        # A Kubernetes service `ns/name`: its account `.../ns/<ns>/sa/<name>`.
        namespace, _, name = src.rpartition("/")
        account = f"/ns/{namespace}/sa/{name}" if namespace else f"/sa/{src}"
        client_ids = sorted(c for c in clients if c.rstrip("/").endswith(account))
        row: dict[str, Any] = {
            "src": src,
            "dst": dst,
            "client_id": client_ids[0] if len(client_ids) == 1 else "",
            "server_id": figures["server_ids"][0] if len(figures["server_ids"]) == 1 else "",
            "secured": figures["requests"] > 0 and figures["tls_share"] >= 1.0,
        }
        row.update(figures)
        rows.append(row)
    return rows


def timeseries(slices: list[tuple[float, WindowData]], service: str) -> list[dict[str, Any]]:
    """Per-step rps, success rate and p99 of `service` (the sparkline data)."""
    points: list[dict[str, Any]] = []
    for end, data in slices:
        rows = stat_services(data, service)
        figures = rows[0] if rows else Golden().to_json(data.seconds)
        points.append(
            {
                "ts": round(end, 3),
                "rps": figures["rps"],
                "success_rate": figures["success_rate"],
                "p99_ms": figures["latency_ms"]["p99"],
            }
        )
    return points
