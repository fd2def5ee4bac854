"""The metrics source for meshes scraped by Prometheus: PromQL over HTTP.

With `--prometheus-url`, the API does not scrape; it asks Prometheus for the
`increase()` of the same counters the scraper would have diffed, per series,
and hands the answers to the same aggregation code as `WindowData`. Series are
attributed to a proxy by the `tulle_service` / `tulle_instance` labels of the
scrape config (docs/observability.md), else by matching Prometheus' `instance`
label to a known target's admin address, else to `job`.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any
from urllib.parse import urlencode

from tulle.codec.promtext import Labels
from tulle.core.scrape import ScrapeTarget
from tulle.viz.http_client import FetchError, request, split_url
from tulle.viz.window import KEPT_COUNTERS, Delta, SeriesKey, WindowData

QUERY_TIMEOUT_S = 5.0
_PROMETHEUS_LABELS = frozenset({"job", "instance", "tulle_service", "tulle_instance"})


class PrometheusError(Exception):
    """Prometheus could not answer; the message says why."""


class PrometheusSource:
    def __init__(self, url: str, known: list[ScrapeTarget] | None = None) -> None:
        host, port, base = split_url(url)
        self.url = url
        self._addr = f"{host}:{port}"
        self._base = base
        self._known = {target.admin: target for target in known or []}

    async def _api(self, endpoint: str, params: dict[str, str]) -> list[dict[str, Any]]:
        path = f"{self._base}/api/v1/{endpoint}?{urlencode(params)}"
        try:
            status, body = await request(self._addr, path, timeout=QUERY_TIMEOUT_S)
        except FetchError as exc:
            raise PrometheusError(f"Prometheus at {self.url}: {exc}") from None
        try:
            document = json.loads(body)
        except json.JSONDecodeError:
            raise PrometheusError(f"Prometheus answered {status} with non-JSON") from None
        if status != 200 or document.get("status") != "success":
            raise PrometheusError(f"Prometheus query failed ({status}): {document.get('error')}")
        result: list[dict[str, Any]] = document["data"]["result"]
        return result

    def _target(self, metric: dict[str, str]) -> ScrapeTarget:
        service = metric.get("tulle_service")
        instance = metric.get("tulle_instance") or metric.get("instance", "")
        admin = metric.get("instance", "")
        if service:
            return ScrapeTarget(service, instance, admin)
        known = self._known.get(admin)
        if known is not None:
            return known
        return ScrapeTarget(metric.get("job", "unknown"), instance, admin)

    @staticmethod
    def _series(metric: dict[str, str]) -> SeriesKey:
        labels: Labels = tuple(
            sorted(
                (k, v) for k, v in metric.items() if k not in _PROMETHEUS_LABELS and k != "__name__"
            )
        )
        return metric.get("__name__", ""), labels

    @staticmethod
    def _query_text(name: str, seconds: float) -> str:
        return f"increase({name}[{max(round(seconds), 1)}s])"

    async def targets(self) -> list[ScrapeTarget]:
        result = await self._api("query", {"query": "up"})
        return sorted({self._target(item["metric"]) for item in result} | set(self._known.values()))

    async def up(self) -> dict[ScrapeTarget, bool]:
        result = await self._api("query", {"query": "up"})
        return {self._target(item["metric"]): item["value"][1] == "1" for item in result}

    def _delta(
        self, ts: float, by_target: dict[ScrapeTarget, dict[SeriesKey, float]]
    ) -> list[Delta]:
        return [Delta(ts, target, increments) for target, increments in by_target.items()]

    def _add(
        self,
        by_target: dict[ScrapeTarget, dict[SeriesKey, float]],
        name: str,
        metric: dict[str, str],
        value: str,
    ) -> None:
        number = float(value)
        if math.isnan(number) or number <= 0:
            return
        # `increase()` drops the metric name; the query knows it.
        named = {**metric, "__name__": name}
        target = self._target(named)
        increments = by_target.setdefault(target, {})
        key = self._series(named)
        increments[key] = increments.get(key, 0.0) + number

    async def window(self, seconds: float) -> WindowData:
        now = time.time()
        by_target: dict[ScrapeTarget, dict[SeriesKey, float]] = {}
        for name in sorted(KEPT_COUNTERS):
            params = {"query": self._query_text(name, seconds), "time": f"{now:.3f}"}
            for item in await self._api("query", params):
                self._add(by_target, name, item["metric"], item["value"][1])
        return WindowData(self._delta(now, by_target), seconds, await self.targets())

    async def steps(self, seconds: float, step: float) -> list[tuple[float, WindowData]]:
        now = time.time()
        count = max(1, min(int(seconds / step), 600))
        start = now - (count - 1) * step
        slots: dict[float, dict[ScrapeTarget, dict[SeriesKey, float]]] = {}
        for name in sorted(KEPT_COUNTERS):
            params = {
                "query": self._query_text(name, step),
                "start": f"{start:.3f}",
                "end": f"{now:.3f}",
                "step": f"{step:g}",
            }
            for item in await self._api("query_range", params):
                for ts, value in item["values"]:
                    self._add(slots.setdefault(float(ts), {}), name, item["metric"], value)
        targets = await self.targets()
        out: list[tuple[float, WindowData]] = []
        for index in range(count):
            ts = start + index * step
            nearest = min(slots, key=lambda t: abs(t - ts), default=None)
            by_target = (
                slots.get(nearest, {})
                if nearest is not None and abs(nearest - ts) < step / 2
                else {}
            )
            out.append((ts, WindowData(self._delta(ts, by_target), step, targets)))
        return out
