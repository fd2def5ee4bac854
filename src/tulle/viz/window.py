"""The 10-minute window of scraped samples, kept as per-scrape increments.

Each scrape of a target is compared with the previous one and only the
increments of counters are kept (a counter that went down was reset by a
restart: its new value is the increment, as Prometheus' `increase` assumes).
Rates, success rates and latency quantiles over any window or step are then
sums of increments, with no per-query alignment to do. Gauges keep only their
latest value. Prometheus' `increase()` answers have the same shape, so the
aggregation code serves both sources (see `WindowData`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from tulle.codec.promtext import Labels, Sample
from tulle.core.scrape import ScrapeTarget

SeriesKey = tuple[str, Labels]
DEFAULT_RETENTION_S = 600.0
MAX_INTERNED_SERIES = 200_000
# Families whose increments the aggregations read; other counters are not kept.
KEPT_COUNTERS = frozenset(
    {
        "request_total",
        "response_total",
        "response_latency_ms_bucket",
        "retry_total",
        "timeout_total",
        "fault_injected_total",
        "outbound_http_ratelimit_total",
        "inbound_http_ratelimit_total",
        "mirror_requests_total",
    }
)


@dataclass(frozen=True, slots=True)
class Delta:
    """What one target's counters gained between two scrapes, ending at `ts`."""

    ts: float
    target: ScrapeTarget
    increments: dict[SeriesKey, float]


@dataclass(frozen=True, slots=True)
class WindowData:
    """Increments over a window of `seconds`, from the scraper or from Prometheus."""

    deltas: list[Delta]
    seconds: float
    targets: list[ScrapeTarget] = field(default_factory=list)


@dataclass(slots=True)
class TargetHealth:
    last_ok: float | None = None
    last_error: str = ""
    last_attempt: float | None = None
    scrapes_ok: int = 0
    scrapes_failed: int = 0
    gauges: dict[SeriesKey, float] = field(default_factory=dict)


class WindowStore:
    """Increments of every target for the last `retention_s` seconds."""

    def __init__(self, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.retention_s = retention_s
        self._previous: dict[ScrapeTarget, dict[SeriesKey, float]] = {}
        self._first_seen: dict[ScrapeTarget, float] = {}
        self._deltas: deque[Delta] = deque()
        self.health: dict[ScrapeTarget, TargetHealth] = {}
        # Every scrape parses fresh label tuples; interning them makes the
        # thousands of deltas of a window share one key object per series.
        self._keys: dict[SeriesKey, SeriesKey] = {}

    def ingest(self, target: ScrapeTarget, ts: float, samples: Iterable[Sample]) -> None:
        counters: dict[SeriesKey, float] = {}
        gauges: dict[SeriesKey, float] = {}
        keys = self._keys
        if len(keys) > MAX_INTERNED_SERIES:
            keys.clear()
        for sample in samples:
            key = (sample.name, sample.labels)
            if sample.name in KEPT_COUNTERS:
                counters[keys.setdefault(key, key)] = sample.value
            elif not sample.name.endswith(("_total", "_bucket", "_sum", "_count")):
                gauges[key] = sample.value
        health = self.health.setdefault(target, TargetHealth())
        health.last_ok = health.last_attempt = ts
        health.last_error = ""
        health.scrapes_ok += 1
        health.gauges = gauges
        previous = self._previous.get(target)
        self._previous[target] = counters
        if previous is None:
            # The first scrape is the baseline: what happened before is unknown.
            self._first_seen.setdefault(target, ts)
            return
        increments: dict[SeriesKey, float] = {}
        for key, value in counters.items():
            before = previous.get(key, 0.0)
            gained = value - before if value >= before else value
            if gained > 0:
                increments[key] = gained
        if increments:
            self._deltas.append(Delta(ts, target, increments))
        self._expire(ts)

    def failed(self, target: ScrapeTarget, ts: float, error: str) -> None:
        health = self.health.setdefault(target, TargetHealth())
        health.last_attempt = ts
        health.last_error = error
        health.scrapes_failed += 1

    def forget(self, keep: Iterable[ScrapeTarget]) -> None:
        """Drop the state of targets no longer configured (their deltas age out)."""
        wanted = set(keep)
        for target in list(self._previous):
            if target not in wanted:
                del self._previous[target]
                self._first_seen.pop(target, None)
        for target in list(self.health):
            if target not in wanted:
                del self.health[target]

    def _expire(self, now: float) -> None:
        horizon = now - self.retention_s
        while self._deltas and self._deltas[0].ts <= horizon:
            self._deltas.popleft()

    def window(self, seconds: float, now: float | None = None) -> WindowData:
        """Increments of the last `seconds`; `seconds` shrinks to the time actually observed."""
        now = time.time() if now is None else now
        seconds = min(seconds, self.retention_s)
        start = now - seconds
        deltas = [delta for delta in self._deltas if start < delta.ts <= now]
        if self._first_seen:
            observed = now - min(self._first_seen.values())
            seconds = max(min(seconds, observed), 1e-9)
        return WindowData(deltas, seconds, sorted(self.health))

    def steps(self, seconds: float, step: float, now: float | None = None) -> list[WindowData]:
        """The window cut in `step`-second slices, oldest first (for sparklines)."""
        now = time.time() if now is None else now
        seconds = min(seconds, self.retention_s)
        count = max(1, min(int(seconds / step), 600))
        first = now - count * step
        slices: list[list[Delta]] = [[] for _ in range(count)]
        for delta in self._deltas:
            if first < delta.ts <= now:
                # Slices are (start, end]: a delta at a boundary ends the earlier one.
                index = min(max(math.ceil((delta.ts - first) / step) - 1, 0), count - 1)
                slices[index].append(delta)
        targets = sorted(self.health)
        return [WindowData(items, step, targets) for items in slices]
