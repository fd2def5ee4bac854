"""The API handlers without sockets, the check report, and how the CLI finds the API."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import pytest

from tulle.cli.observe import DEFAULT_CONTROL_URL, resolve_control_url
from tulle.codec.promtext import parse
from tulle.core.checks import FAIL, OK, WARN, CheckReport
from tulle.core.scrape import ScrapeTarget
from tulle.proxy.metrics import Metrics, render
from tulle.viz.api import MetricsApi
from tulle.viz.api_context import ApiContext, ApiError, StoreSource
from tulle.viz.checks import port_free
from tulle.viz.window import WindowStore

BOOKS = ScrapeTarget("books", "books-0", "127.0.0.1:1")


def _api(store: WindowStore) -> MetricsApi:
    return MetricsApi(
        ApiContext(
            targets=lambda: [BOOKS],
            source=StoreSource(store),
            ready=lambda: True,
            manifest=lambda: None,
        )
    )


def test_stat_and_routes_handlers() -> None:
    store = WindowStore()
    metrics = Metrics()
    now = time.time()
    store.ingest(BOOKS, now - 2, parse(render(metrics.snapshot())))
    stats = metrics.http("inbound", "books", "127.0.0.1:9", "", "")
    for status in (200, 200, 200, 503):
        stats.requests += 1
        stats.record_response(status, status < 500, 0.002)
    store.ingest(BOOKS, now - 1, parse(render(metrics.snapshot())))
    api = _api(store)
    document = asyncio.run(api.stat({"kind": "service", "window": "1m"}))
    assert document["source"] == "scrape"
    assert [(r["service"], r["requests"]) for r in document["rows"]] == [("books", 4)]
    assert document["rows"][0]["success_rate"] == 0.75
    assert 2.0 <= document["window_s"] < 5.0
    instances = asyncio.run(api.stat({"kind": "instance"}))
    assert instances["rows"][0]["instance"] == "books-0"
    with pytest.raises(ApiError, match="kind"):
        asyncio.run(api.stat({"kind": "pod"}))
    with pytest.raises(ApiError, match="window"):
        asyncio.run(api.stat({"window": "soon"}))
    with pytest.raises(ApiError, match="service"):
        asyncio.run(api.routes({}))


def test_check_report_round_trips_and_fails_only_on_failures() -> None:
    report = CheckReport()
    category = report.category("proxies")
    category.add("a ready", True)
    category.add("traffic flowing", False, "0 requests", "send traffic", warn=True)
    assert report.ok
    assert [c.status for c in category.checks] == [OK, WARN]
    category.add("b ready", False, "refused", "start it")
    assert not report.ok
    again = CheckReport.from_json(json.loads(json.dumps(report.to_json())))
    assert again.to_json() == report.to_json()
    assert again.categories[0].checks[2].status == FAIL
    assert again.categories[0].checks[0].hint == ""  # hints only where something is wrong


def test_port_free_sees_a_listener() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert not port_free(listener.getsockname()[1])


def test_control_url_from_flag_state_file_or_default(tmp_path: Path) -> None:
    nested = tmp_path / "project" / "sub"
    nested.mkdir(parents=True)
    assert resolve_control_url("", nested) == DEFAULT_CONTROL_URL
    state = tmp_path / "project" / ".tulle"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"control": {"http": "http://127.0.0.1:5555/"}}))
    assert resolve_control_url("", nested) == "http://127.0.0.1:5555"
    assert resolve_control_url("127.0.0.1:7777", nested) == "http://127.0.0.1:7777"
    (state / "state.json").write_text("{not json")
    assert resolve_control_url("", nested) == DEFAULT_CONTROL_URL
