"""First paint with 50 services under 1 s — against a FAKE metrics API.

The only dashboard test that does not use a real mesh: fifty services with
proxies and traffic would not fit on a 2-core test machine, and what is
measured here is the page (assets, one /api/overview call, rendering), not
the control plane. The fake serves the real packaged assets through
`tulle.viz.dashboard.serve_asset` and canned JSON in the documented shapes
(docs/api.md). The other browser tests (test_dashboard.py) use a real mesh.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent / "dashboard"))

from dashboard_browser import browser_page, chromium_or_skip

from tulle.viz.dashboard import serve_asset

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

SERVICES = 50
SPARK_POINTS = 30
FIRST_PAINT_BUDGET_MS = 1000.0


def _golden(index: int) -> dict[str, Any]:
    rps = 5.0 + index * 1.5
    return {
        "requests": int(rps * 60),
        "rps": rps,
        "success_rate": [1.0, 0.97, 0.9][index % 3],
        "latency_ms": {"p50": 1.0 + index % 7, "p95": 8.0 + index % 5, "p99": 20.0 + index},
        "tls_share": (index % 4) / 3 if index % 4 else 1.0,
        "retries": 0,
        "retry_rps": 0.0,
        "status_codes": {"200": int(rps * 60)},
        "client_ids": [],
        "server_ids": [],
    }


def fake_overview() -> dict[str, Any]:
    now = time.time()
    rows = []
    for index in range(SERVICES):
        points = [
            {
                "ts": now - (SPARK_POINTS - step) * 10,
                "rps": (step * (index + 3)) % 17 + 1.0,
                "success_rate": 1.0,
                "p99_ms": 20.0,
            }
            for step in range(SPARK_POINTS)
        ]
        rows.append(
            {
                "service": f"svc-{index:02d}",
                "instances": 2,
                "source": "inbound",
                **_golden(index),
                "points": points,
            }
        )
    return {"window_s": 60.0, "source": "scrape", "generated_at": now, "step_s": 10.0, "rows": rows}


class FakeApi(BaseHTTPRequestHandler):
    """Packaged assets, and canned answers for the endpoints the overview reads."""

    def do_GET(self) -> None:
        split = urlsplit(self.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        asset = serve_asset(split.path, dict(parse_qsl(split.query)), headers)
        if asset is not None:
            self.send_response(asset.status)
            for name, value in asset.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(asset.body)
            return
        document = fake_overview() if split.path == "/api/overview" else {"error": "not faked"}
        body = json.dumps(document).encode()
        self.send_response(200 if split.path == "/api/overview" else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def fake_api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_first_paint_with_50_services_is_under_one_second(fake_api_url: str) -> None:
    chromium_or_skip()
    with browser_page() as page:
        # A first load warms Chromium itself (process start, disk cache of the
        # binary); the measured load is a fresh navigation of the same page.
        page.goto(f"{fake_api_url}/")
        page.wait_for_function("() => window.tulleFirstData > 0")
        page.goto("about:blank")
        page.goto(f"{fake_api_url}/?measure")
        page.wait_for_function("() => window.tulleFirstData > 0")
        first_data_ms = page.evaluate("() => window.tulleFirstData")
        first_paint_ms = page.evaluate(
            "() => performance.getEntriesByName('first-contentful-paint')[0]?.startTime ?? 0"
        )
        rows = page.locator("tbody tr[data-service]").count()
        sparklines = page.locator("tr[data-service] svg.spark").count()
    print(
        f"first contentful paint {first_paint_ms:.0f} ms; "
        f"{SERVICES} services drawn at {first_data_ms:.0f} ms"
    )
    assert rows == SERVICES and sparklines == SERVICES
    assert first_data_ms < FIRST_PAINT_BUDGET_MS, f"{first_data_ms:.0f} ms"
