"""The proxy's metrics: plain counters on the request path, Prometheus text on scrape.

Label sets are fixed per (direction, authority, target, ...) key and looked up
once per request in a dict; counters are plain ints and float sums, rendered
only when `/metrics` is scraped. Several worker processes each keep their own
`Metrics`; the admin process merges their `snapshot()`s (sums) into one page.

Names and meanings follow Linkerd's proxy metrics: `request_total`,
`response_total` (`status_code`, `classification`), `response_latency_ms`
(histogram), and the `tcp_*` family.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from typing import Any

from tulle.core.fault import FaultDecision

# Linkerd's latency buckets (ms).
LATENCY_BUCKETS_MS: tuple[float, ...] = (
    1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
    1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
)  # fmt: skip
# The same bounds as floats, for the per-request bisect: float-to-float
# comparisons take CPython's fast path, int-to-float ones do not (half the cost).
_BUCKET_BOUNDS = tuple(float(bound) for bound in LATENCY_BUCKETS_MS)

Labels = tuple[tuple[str, str], ...]
# A snapshot: family -> (type, help, {labels: value}); histogram values are
# [bucket counts..., +Inf count, sum].
Snapshot = dict[str, tuple[str, str, dict[Labels, Any]]]


class HttpStats:
    """Counters of one (direction, authority, target, ...) label set."""

    __slots__ = ("buckets", "labels", "latency_count", "latency_sum_ms", "requests", "responses")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.requests = 0
        # (status_code, classification, error, grpc_status or -1) -> count
        self.responses: dict[tuple[int, str, str, int], int] = {}
        self.buckets = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self.latency_sum_ms = 0.0
        self.latency_count = 0

    def record_response(
        self, status: int, success: bool, latency_s: float, error: str = "", grpc_status: int = -1
    ) -> None:
        key = (status, "success" if success else "failure", error, grpc_status)
        responses = self.responses
        responses[key] = responses.get(key, 0) + 1
        ms = latency_s * 1000.0
        self.buckets[bisect.bisect_left(_BUCKET_BOUNDS, ms)] += 1
        self.latency_sum_ms += ms
        self.latency_count += 1


class TcpStats:
    __slots__ = ("closes", "labels", "opens", "read_bytes", "write_bytes")

    def __init__(self, labels: Labels) -> None:
        self.labels = labels
        self.opens = 0
        self.closes = 0
        self.read_bytes = 0
        self.write_bytes = 0


class Metrics:
    """All metrics of one worker process."""

    def __init__(self) -> None:
        self._http: dict[tuple[str, ...], HttpStats] = {}
        self._tcp: dict[tuple[str, ...], TcpStats] = {}
        self.proxy_errors: dict[tuple[str, str], int] = {}
        self.counters: dict[tuple[str, Labels], float] = {}
        self.gauges: dict[tuple[str, Labels], Callable[[], float]] = {}
        self.start_time = time.time()

    def http(
        self,
        direction: str,
        authority: str,
        target_addr: str,
        dst_service: str,
        route: str,
        peer_id: str = "",
    ) -> HttpStats:
        """Stats of one label set. `peer_id` is the verified mTLS identity of the
        peer (`client_id` inbound, `server_id` outbound); empty means plaintext."""
        key = (direction, authority, target_addr, dst_service, route, peer_id)
        stats = self._http.get(key)
        if stats is None:
            labels: Labels = (
                ("direction", direction),
                ("authority", authority),
                ("target_addr", target_addr),
                ("dst_service", dst_service),
                ("route", route),
                ("tls", "true" if peer_id else "false"),
            )
            if peer_id:
                name = "client_id" if direction == "inbound" else "server_id"
                labels = (*labels, (name, peer_id))
            stats = self._http[key] = HttpStats(labels)
        return stats

    def tcp(self, direction: str, peer: str, target_addr: str) -> TcpStats:
        key = (direction, peer, target_addr)
        stats = self._tcp.get(key)
        if stats is None:
            labels: Labels = (
                ("direction", direction),
                ("peer", peer),
                ("target_addr", target_addr),
            )
            stats = self._tcp[key] = TcpStats(labels)
        return stats

    def proxy_error(self, direction: str, reason: str) -> None:
        key = (direction, reason)
        self.proxy_errors[key] = self.proxy_errors.get(key, 0) + 1

    def inc(self, name: str, labels: Labels = (), by: float = 1) -> None:
        key = (name, labels)
        self.counters[key] = self.counters.get(key, 0) + by

    def gauge(self, name: str, labels: Labels, read: Callable[[], float]) -> None:
        self.gauges[(name, labels)] = read

    def snapshot(self) -> Snapshot:
        snap: Snapshot = {}

        def fam(name: str, kind: str, help_text: str) -> dict[Labels, Any]:
            if name not in snap:
                snap[name] = (kind, help_text, {})
            return snap[name][2]

        req = fam("request_total", "counter", "Total count of HTTP requests.")
        resp = fam("response_total", "counter", "Total count of HTTP responses.")
        lat = fam(
            "response_latency_ms",
            "histogram",
            "Elapsed times between a request's headers being received and its response ending.",
        )
        for stats in self._http.values():
            req[stats.labels] = req.get(stats.labels, 0) + stats.requests
            for (status, classification, error, grpc_status), n in stats.responses.items():
                labels = (
                    *stats.labels,
                    ("status_code", str(status)),
                    ("classification", classification),
                )
                if grpc_status >= 0:
                    labels = (*labels, ("grpc_status_code", str(grpc_status)))
                if error:
                    labels = (*labels, ("error", error))
                resp[labels] = resp.get(labels, 0) + n
            if stats.latency_count:
                lat[stats.labels] = [*stats.buckets, stats.latency_sum_ms]
        opens = fam("tcp_open_total", "counter", "Total count of opened connections.")
        closes = fam("tcp_close_total", "counter", "Total count of closed connections.")
        openg = fam("tcp_open_connections", "gauge", "Number of currently-open connections.")
        rd = fam("tcp_read_bytes_total", "counter", "Total count of bytes read from peers.")
        wr = fam("tcp_write_bytes_total", "counter", "Total count of bytes written to peers.")
        for t in self._tcp.values():
            opens[t.labels] = t.opens
            closes[t.labels] = t.closes
            openg[t.labels] = t.opens - t.closes
            rd[t.labels] = t.read_bytes
            wr[t.labels] = t.write_bytes
        errs = fam("proxy_error_total", "counter", "Responses the proxy made itself, by cause.")
        for (direction, reason), n in self.proxy_errors.items():
            errs[(("direction", direction), ("reason", reason))] = n
        for (name, labels), value in self.counters.items():
            fam(name, "counter", name.replace("_", " "))[labels] = value
        for (name, labels), read in self.gauges.items():
            fam(name, "gauge", name.replace("_", " "))[labels] = read()
        fam("process_start_time_seconds", "gauge", "Start time of the process.")[()] = (
            self.start_time
        )
        return snap


_FAULT_LABELS: dict[tuple[str, str, str, float, bool], Labels] = {}


def fault_labels(direction: str, dst_service: str, route: str, decision: FaultDecision) -> Labels:
    """Labels of `fault_injected_total`: `fault` is "delay", "abort" or
    "delay-abort". Cached (bounded): only requests a fault hits get here."""
    key = (direction, dst_service, route, decision.delay_s, decision.abort)
    labels = _FAULT_LABELS.get(key)
    if labels is None:
        kind = "abort" if decision.delay_s <= 0.0 else "delay-abort" if decision.abort else "delay"
        labels = (
            ("direction", direction),
            ("dst_service", dst_service),
            ("route", route),
            ("fault", kind),
        )
        if len(_FAULT_LABELS) < 10_000:
            _FAULT_LABELS[key] = labels
    return labels


def merge(snapshots: Iterable[Snapshot]) -> Snapshot:
    """Sum the snapshots of several workers (histograms bucket by bucket)."""
    out: Snapshot = {}
    for snap in snapshots:
        for name, (kind, help_text, values) in snap.items():
            if name not in out:
                out[name] = (kind, help_text, {})
            target = out[name][2]
            for raw_labels, value in values.items():
                labels: Labels = tuple((str(k), str(v)) for k, v in raw_labels)
                if name == "process_start_time_seconds":
                    target[labels] = min(target.get(labels, value), value)
                elif isinstance(value, list):
                    prev = target.get(labels)
                    target[labels] = (
                        list(value)
                        if prev is None
                        else [a + b for a, b in zip(prev, value, strict=False)]
                    )
                else:
                    target[labels] = target.get(labels, 0) + value
    return out


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _fmt_labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _fmt_value(value: float) -> str:
    if isinstance(value, int) or float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def render(snap: Snapshot) -> str:
    """Prometheus text exposition format 0.0.4."""
    lines: list[str] = []
    for name, (kind, help_text, values) in snap.items():
        if not values:
            continue
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in values.items():
            if kind == "histogram":
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS_MS, value[:-2], strict=False):
                    cumulative += count
                    le = f'le="{_fmt_value(bound)}"'
                    lines.append(f"{name}_bucket{_fmt_labels(labels, le)} {cumulative}")
                cumulative += value[-2]
                inf = 'le="+Inf"'
                lines.append(f"{name}_bucket{_fmt_labels(labels, inf)} {cumulative}")
                lines.append(f"{name}_sum{_fmt_labels(labels)} {_fmt_value(value[-1])}")
                lines.append(f"{name}_count{_fmt_labels(labels)} {cumulative}")
            else:
                lines.append(f"{name}{_fmt_labels(labels)} {_fmt_value(value)}")
    lines.append("")
    return "\n".join(lines)
