"""The dashboard's side of the control plane's HTTP port: its assets and `/api/overview`.

The dashboard is plain ES modules and CSS under `tulle/viz/static/`, shipped
in the package and served from here, so it works without internet and
without a build step. `GET /` and `GET /dashboard` give `index.html`;
`GET /static/<file>` gives the assets.

Caching: `index.html` is never cached, and names its two entry points with a
`?v=<content hash>` query; a request carrying the hash of the current file is
cached for a year (`immutable`), since a new package changes the hash. Every
other asset (the modules `app.js` imports) is revalidated with its ETag,
which costs one 304 on loopback.

`/api/overview` exists for the dashboard only: the overview needs every
service's figures and sparkline, and one `/api/timeseries` call per service
every two seconds would be fifty calls with fifty services.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from tulle.viz import aggregate
from tulle.viz.api_context import MAX_WINDOW_S, ApiContext, ApiError, query_seconds, read_window
from tulle.viz.prometheus import PrometheusError

INDEX_PATHS = frozenset({"/", "/dashboard", "/index.html"})
STATIC_PREFIX = "/static/"
VERSIONED_ENTRY_POINTS = ("app.js", "style.css")
DEFAULT_SPARK_WINDOW_S = 300.0
DEFAULT_SPARK_STEP_S = 10.0

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".json": "application/json",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}

_NO_CACHE = "no-cache"
_IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


@dataclass(frozen=True, slots=True)
class AssetResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def to_bytes(self, include_body: bool = True) -> bytes:
        reason = {200: "OK", 304: "Not Modified", 404: "Not Found"}.get(self.status, "OK")
        head = f"HTTP/1.1 {self.status} {reason}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in self.headers)
        head += "connection: close\r\n\r\n"
        return head.encode() + (self.body if include_body else b"")


def _static_root() -> Any:
    return resources.files("tulle.viz").joinpath("static")


@cache
def load_asset(name: str) -> Asset | None:
    """The file `name` under static/, or None when it is not one (or escapes the folder).

    Cached for the life of the process: the package's files do not change
    under a running control plane.
    """
    parts = PurePosixPath(name).parts
    if not parts or any(part in ("..", ".", "") or part.startswith(".") for part in parts):
        return None
    suffix = PurePosixPath(name).suffix
    if suffix not in CONTENT_TYPES:
        return None
    node = _static_root()
    for part in parts:
        node = node.joinpath(part)
    if not node.is_file():
        return None
    body: bytes = node.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    if name == "index.html":
        body = _stamp_versions(body)
    return Asset(body, CONTENT_TYPES[suffix], f'"{digest}"')


def asset_version(name: str) -> str:
    asset = load_asset(name)
    return asset.etag.strip('"') if asset is not None else "missing"


def _stamp_versions(index: bytes) -> bytes:
    text = index.decode()
    for name in VERSIONED_ENTRY_POINTS:
        text = text.replace(f"/static/{name}", f"/static/{name}?v={asset_version(name)}")
    return text.encode()


def serve_asset(path: str, query: dict[str, str], headers: dict[str, str]) -> AssetResponse | None:
    """The response for a dashboard path, or None when `path` is not the dashboard's."""
    if path in INDEX_PATHS:
        name, cache_control = "index.html", _NO_CACHE
    elif path.startswith(STATIC_PREFIX):
        name = path.removeprefix(STATIC_PREFIX)
        versioned = name in VERSIONED_ENTRY_POINTS and query.get("v") == asset_version(name)
        cache_control = _IMMUTABLE if versioned else _NO_CACHE
    else:
        return None
    asset = load_asset(name)
    if asset is None:
        body = f"no such dashboard file {path}\n".encode()
        return AssetResponse(
            404,
            (
                ("content-type", "text/plain; charset=utf-8"),
                ("content-length", str(len(body))),
                ("cache-control", "no-store"),
            ),
            body,
        )
    common = (("cache-control", cache_control), ("etag", asset.etag))
    if headers.get("if-none-match") == asset.etag:
        return AssetResponse(304, common, b"")
    return AssetResponse(
        200,
        (
            ("content-type", asset.content_type),
            ("content-length", str(len(asset.body))),
            ("x-content-type-options", "nosniff"),
            *common,
        ),
        asset.body,
    )


async def overview(context: ApiContext, query: dict[str, str]) -> dict[str, Any]:
    """Every service's golden figures over `window` and its sparkline over `spark`.

    `{"window_s", "source", "generated_at", "step_s", "rows": [stat row +
    "points": [{"ts", "rps", "success_rate", "p99_ms"}]], "traces_url"}`: one call per
    poll however many services there are. Sparkline steps are aggregated
    once for all services (one pass per step, not one per service and step).
    """
    spark_s = query_seconds(query, "spark", DEFAULT_SPARK_WINDOW_S, MAX_WINDOW_S)
    step_s = query_seconds(query, "step", DEFAULT_SPARK_STEP_S, MAX_WINDOW_S)
    if step_s < 1:
        raise ApiError(400, "step must be at least 1s")
    data = await read_window(context, query)
    try:
        slices = await context.source.steps(spark_s, step_s)
    except PrometheusError as exc:
        raise ApiError(502, str(exc)) from None
    rows = aggregate.stat_services(data)
    points: dict[str, list[dict[str, Any]]] = {row["service"]: [] for row in rows}
    for end, step_data in slices:
        by_service = {row["service"]: row for row in aggregate.stat_services(step_data)}
        for service, series in points.items():
            figures = by_service.get(service)
            series.append(
                {
                    "ts": round(end, 3),
                    "rps": figures["rps"] if figures else 0.0,
                    "success_rate": figures["success_rate"] if figures else None,
                    "p99_ms": figures["latency_ms"]["p99"] if figures else None,
                }
            )
    for row in rows:
        row["points"] = points[row["service"]]
    return {
        "window_s": round(data.seconds, 3),
        "source": context.source_name,
        "generated_at": round(time.time(), 3),
        "step_s": step_s,
        "rows": rows,
        # The mesh's trace receiver (`tulle up --trace-receiver`), linked from the page.
        "traces_url": context.traces_url,
    }
