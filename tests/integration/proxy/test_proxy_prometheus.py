"""A real Prometheus scrapes the proxy's /metrics and can query the series."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support.mesh import Proxy
from support.ports import LOOPBACK, free_port
from support.process import ProcessGroup, http_status
from support.rawhttp import RawHttpConnection, request_bytes
from support.tools import require_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCRAPE_DEADLINE_S = 30.0


def _api(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://{LOOPBACK}:{port}{path}", timeout=5) as response:
        return json.loads(response.read())


def test_prometheus_scrapes_proxy(processes: ProcessGroup, one_hop: Proxy, tmp_path: Path) -> None:
    binary = require_binary("prometheus")
    with RawHttpConnection(*one_hop.outbound) as connection:
        for _ in range(3):
            connection.send(request_bytes("GET", "/", "books"))
            assert connection.read_response().status == 200
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n  - job_name: tulle-proxy\n    static_configs:\n"
        f"      - targets: ['{LOOPBACK}:{one_hop.admin_port}']\n"
    )
    port = free_port()
    prometheus = processes.start(
        "prometheus",
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
    )
    prometheus.wait_for(lambda: http_status(LOOPBACK, port, "/-/ready") == 200, "ready", 20)
    deadline = time.monotonic() + SCRAPE_DEADLINE_S
    target: dict[str, Any] = {}
    series: list[Any] = []
    while time.monotonic() < deadline:
        targets = _api(port, "/api/v1/targets")["data"]["activeTargets"]
        target = targets[0] if targets else {}
        if target.get("health") == "up":
            query = urllib.parse.quote('request_total{direction="outbound"}')
            series = _api(port, f"/api/v1/query?query={query}")["data"]["result"]
            if series:
                break
        time.sleep(0.5)
    assert target.get("health") == "up", (
        f"scrape failed: {target.get('lastError')}; /ready from here: "
        f"{http_status(LOOPBACK, one_hop.admin_port, '/ready')}\n{one_hop.process.describe()}\n"
        f"{prometheus.describe()}"
    )
    assert target.get("lastError") == ""
    assert sum(float(sample["value"][1]) for sample in series) >= 3
