"""`tulle control --prometheus-url`: the API answers from a REAL Prometheus.

Prometheus (the Debian binary) scrapes two real `tulle proxy` processes every
second with the scrape config of docs/observability.md; the control plane
queries it with PromQL.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from support.mesh import Backend, start_proxy
from support.ports import LOOPBACK, free_port
from support.process import ProcessGroup, http_status
from support.tools import require_binary
from viz_mesh import Mesh, eventually, manifest_text, start_control

pytestmark = pytest.mark.integration

OK_REQUESTS = 30
FAILED_REQUESTS = 10

SCRAPE_CONFIG = """\
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: tulle-proxies
    metrics_path: /metrics
    static_configs:
      - targets: ["{web}"]
        labels: {{tulle_service: web, tulle_instance: web-0}}
      - targets: ["{books}"]
        labels: {{tulle_service: books, tulle_instance: books-0}}
"""


def _query(port: int, promql: str) -> list[dict[str, Any]]:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        result: list[dict[str, Any]] = json.loads(connection.getresponse().read())["data"]["result"]
        return result
    finally:
        connection.close()


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=5)
    try:
        connection.request("GET", path, headers={"Host": "books"})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_stat_routes_and_edges_from_prometheus(
    processes: ProcessGroup, http_backend: Backend, tmp_path: Path
) -> None:
    prometheus_binary = require_binary("prometheus")
    books = start_proxy(processes, app_addr=http_backend.addr, name="proxy-books")
    web = start_proxy(
        processes, static_dst={"books": [f"{LOOPBACK}:{books.inbound_port}"]}, name="proxy-web"
    )
    config = tmp_path / "prometheus.yml"
    config.write_text(
        SCRAPE_CONFIG.format(
            web=f"{LOOPBACK}:{web.admin_port}", books=f"{LOOPBACK}:{books.admin_port}"
        )
    )
    prometheus_port = free_port()
    prometheus = processes.start(
        "prometheus",
        [
            prometheus_binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={LOOPBACK}:{prometheus_port}",
        ],
    )
    prometheus.wait_for(
        lambda: http_status(LOOPBACK, prometheus_port, "/-/ready") == 200, "ready", 20.0
    )
    # First requests create the series, so that `increase` sees the traffic after them
    # (Prometheus cannot know how much of a series' first sample is new).
    assert _get(web.outbound_port, "/status/200") == 200
    assert _get(web.outbound_port, "/status/500") == 500
    eventually(
        lambda: len(_query(prometheus_port, "count_over_time(response_total[1m]) >= 2")) >= 4,
        "two scrapes of the proxies' response_total",
        20.0,
    )
    started = time.monotonic()
    for _ in range(OK_REQUESTS):
        assert _get(web.outbound_port, "/status/200") == 200
    for _ in range(FAILED_REQUESTS):
        assert _get(web.outbound_port, "/status/500") == 500

    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(manifest_text(books.inbound_port))
    _, _, api = start_control(
        processes,
        manifest,
        "",
        extra=("--prometheus-url", f"http://{LOOPBACK}:{prometheus_port}"),
    )
    mesh = Mesh.__new__(Mesh)
    mesh.api_url = api
    window = f"{int(time.monotonic() - started) + 20}s"
    total = OK_REQUESTS + FAILED_REQUESTS

    def books_row() -> dict[str, Any] | None:
        rows = mesh.cli_json("stat", "books", "--window", window)["rows"]
        return rows[0] if rows and rows[0]["requests"] >= total * 0.8 else None

    row = eventually(books_row, "books in tulle stat from Prometheus", 20.0)
    assert row["source"] == "inbound"
    # Prometheus' increase() extrapolates to the window's edges: close, not exact.
    assert total * 0.8 <= row["requests"] <= total * 2
    assert row["success_rate"] == pytest.approx(OK_REQUESTS / total, abs=0.06)
    assert row["latency_ms"]["p99"] is not None
    document = mesh.cli_json("stat", "--window", window)
    assert document["source"] == "prometheus"
    edges = mesh.cli_json("edges", "--window", window)["rows"]
    assert [(e["src"], e["dst"]) for e in edges] == [("web", "books")]
    routes = mesh.cli_json("routes", "books", "--window", window)["rows"]
    assert sum(r["requests"] for r in routes) >= total * 0.8

    def busy_points() -> list[dict[str, Any]]:
        points: list[dict[str, Any]] = mesh.api("/api/timeseries?service=books&window=60s&step=5s")[
            "points"
        ]
        assert len(points) == 12
        return [point for point in points if point["rps"] > 0]

    busy = eventually(busy_points, "sparkline points with traffic", 10.0)
    assert all(point["success_rate"] is not None for point in busy)
    check = mesh.cli("check")
    assert "Prometheus answers" in check.stdout
