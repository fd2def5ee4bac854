"""The dashboard's serving and `/api/overview`, in-process (no sockets, no browser).

`serve_asset` is checked on the packaged files (types, cache headers,
versioned entry points, 304s, refusals); `overview` on a real `WindowStore`
fed with scrapes in the proxies' metric names.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from tulle.cli.dashboard import dashboard_url
from tulle.codec.promtext import Sample
from tulle.core.scrape import ScrapeTarget
from tulle.viz.api import MetricsApi
from tulle.viz.api_context import ApiContext, ApiError, StoreSource
from tulle.viz.dashboard import asset_version, overview, serve_asset
from tulle.viz.window import WindowStore


def _headers(response: object) -> dict[str, str]:
    return dict(response.headers)  # type: ignore[attr-defined]


@pytest.mark.parametrize("path", ["/", "/dashboard", "/index.html"])
def test_index_is_served_uncached_and_names_versioned_entry_points(path: str) -> None:
    response = serve_asset(path, {}, {})
    assert response is not None and response.status == 200
    headers = _headers(response)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"
    assert f"/static/app.js?v={asset_version('app.js')}".encode() in response.body
    assert f"/static/style.css?v={asset_version('style.css')}".encode() in response.body


def test_a_versioned_entry_point_is_immutable_and_others_revalidate() -> None:
    current = serve_asset("/static/app.js", {"v": asset_version("app.js")}, {})
    assert current is not None and current.status == 200
    assert "immutable" in _headers(current)["cache-control"]
    assert _headers(current)["content-type"] == "text/javascript; charset=utf-8"
    stale = serve_asset("/static/app.js", {"v": "an-older-build"}, {})
    assert stale is not None and _headers(stale)["cache-control"] == "no-cache"
    module = serve_asset("/static/topology.js", {}, {})
    assert module is not None and _headers(module)["cache-control"] == "no-cache"
    again = serve_asset("/static/topology.js", {}, {"if-none-match": _headers(module)["etag"]})
    assert again is not None and again.status == 304 and again.body == b""
    css = serve_asset("/static/style.css", {}, {})
    assert css is not None and _headers(css)["content-type"] == "text/css; charset=utf-8"
    icon = serve_asset("/static/favicon.svg", {}, {})
    assert icon is not None and _headers(icon)["content-type"] == "image/svg+xml"


@pytest.mark.parametrize(
    "path", ["/static/../api.py", "/static/.hidden.js", "/static/dashboard.py", "/static/none.js"]
)
def test_files_outside_the_assets_are_not_served(path: str) -> None:
    response = serve_asset(path, {}, {})
    assert response is not None and response.status == 404


def test_api_paths_are_left_to_the_api() -> None:
    assert serve_asset("/api/stat", {}, {}) is None
    assert serve_asset("/api", {}, {}) is None


def test_head_responses_have_no_body() -> None:
    response = serve_asset("/", {}, {})
    assert response is not None
    raw = response.to_bytes(include_body=False)
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n") and raw.endswith(b"\r\n\r\n")
    assert f"content-length: {len(response.body)}".encode() in raw


def _scrape(ok: float, failed: float) -> list[Sample]:
    def labels(classification: str) -> tuple[tuple[str, str], ...]:
        return (
            ("classification", classification),
            ("direction", "inbound"),
            ("status_code", "200"),
        )

    return [
        Sample("response_total", labels("success"), ok),
        Sample("response_total", labels("failure"), failed),
    ]


def test_overview_gives_every_service_with_its_sparkline() -> None:
    store = WindowStore()
    books = ScrapeTarget("books", "books-0", "127.0.0.1:1")
    web = ScrapeTarget("web", "web-0", "127.0.0.1:2")
    now = time.time()
    for target in (books, web):
        store.ingest(target, now - 40, _scrape(0, 0))
    store.ingest(books, now - 25, _scrape(18, 2))
    store.ingest(books, now - 5, _scrape(36, 4))
    store.ingest(web, now - 5, _scrape(10, 0))
    api = MetricsApi(
        ApiContext(
            targets=lambda: [books, web],
            source=StoreSource(store),
            ready=lambda: True,
            manifest=lambda: None,
        )
    )
    document = asyncio.run(overview(api.context, {"window": "60s", "spark": "60s", "step": "10s"}))
    rows = {row["service"]: row for row in document["rows"]}
    assert set(rows) == {"books", "web"}
    assert rows["books"]["requests"] == 40 and rows["books"]["success_rate"] == 0.9
    points = rows["books"]["points"]
    assert document["step_s"] == 10.0 and len(points) == 6
    assert sum(point["rps"] for point in points) * 10 == pytest.approx(40)
    assert [p["ts"] for p in points] == sorted(p["ts"] for p in points)
    assert sum(point["rps"] for point in rows["web"]["points"]) * 10 == pytest.approx(10)
    with pytest.raises(ApiError, match="step must be at least 1s"):
        asyncio.run(overview(api.context, {"step": "0.5"}))


def test_cli_builds_the_dashboard_url() -> None:
    assert dashboard_url("http://127.0.0.1:8084") == "http://127.0.0.1:8084/"
    assert dashboard_url("http://h:1", "web api") == "http://h:1/#/service/web%20api"
