"""What every handler of the metrics API shares: its context, its error, its query durations.

`tulle.viz.api` serves the API and registers the handlers; the dashboard's
(`tulle.viz.dashboard`) and the authorization report's (`tulle.viz.authz_report`)
handlers live beside it. They all read the control plane through an
`ApiContext` and refuse a request with an `ApiError`, both defined here, below
all of them, so that none imports the server that registers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tulle.control.manifest import Manifest
from tulle.core.duration import DurationError, parse_duration
from tulle.core.scrape import ScrapeTarget
from tulle.viz.prometheus import PrometheusError
from tulle.viz.targets import GivenUp
from tulle.viz.window import WindowData, WindowStore

DEFAULT_WINDOW_S = 60.0
MAX_WINDOW_S = 600.0


class MetricsSource(Protocol):
    async def window(self, seconds: float) -> WindowData: ...

    async def steps(self, seconds: float, step: float) -> list[tuple[float, WindowData]]: ...


class StoreSource:
    """The built-in scraper's window store as a `MetricsSource`."""

    def __init__(self, store: WindowStore) -> None:
        self.store = store

    async def window(self, seconds: float) -> WindowData:
        return self.store.window(seconds)

    async def steps(self, seconds: float, step: float) -> list[tuple[float, WindowData]]:
        now = time.time()
        slices = self.store.steps(seconds, step, now)
        first = now - len(slices) * step
        return [(first + (index + 1) * step, data) for index, data in enumerate(slices)]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ApiContext:
    """What the API needs from the control plane around it."""

    targets: Callable[[], list[ScrapeTarget]]
    source: MetricsSource
    ready: Callable[[], bool]
    manifest: Callable[[], Manifest | None]
    manifest_path: Path | None = None
    source_name: str = "scrape"
    target_error: Callable[[], str] = lambda: ""
    # Processes of a `tulle up` mesh that its supervisor gave up (state.json).
    given_up: Callable[[], list[GivenUp]] = lambda: []
    # The bearer token writes and tap need (docs/api.md, "Credentials"); empty:
    # they are refused.
    api_token: str = ""
    # Host names (besides IP addresses and localhost) this API answers to.
    allowed_hosts: tuple[str, ...] = ()
    # What the tap relay sends to the proxies' admin `/tap`.
    proxy_admin_token: str = ""
    # The traces page the dashboard links to (`tulle control --traces-url`); empty: none.
    traces_url: str = ""


def query_seconds(query: dict[str, str], key: str, default: float, high: float) -> float:
    text = query.get(key, "").strip()
    if not text:
        return default
    if text.replace(".", "", 1).isdigit():
        value = float(text)  # plain seconds too (docs/api.md)
    else:
        try:
            value = parse_duration(text, field=key)
        except DurationError:
            value = 0.0
    if value <= 0:
        raise ApiError(400, f"{key}: expected a duration like 60s or 10m, got {text!r}")
    return min(value, high)


async def read_window(context: ApiContext, query: dict[str, str]) -> WindowData:
    """The figures over the query's `window` (60 s unless it says; 600 s at most)."""
    seconds = query_seconds(query, "window", DEFAULT_WINDOW_S, MAX_WINDOW_S)
    try:
        return await context.source.window(seconds)
    except PrometheusError as exc:
        raise ApiError(502, str(exc)) from None
