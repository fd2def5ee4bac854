"""Traffic mirroring through real processes (HTTP/1): copies reach the mirror, answers are
dropped, and a mirror that is down or 5 s slow costs the original requests nothing.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import pytest
from meshkit import named_backend, start_control, wait_until
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK, refused_port
from support.process import ProcessGroup

pytestmark = pytest.mark.integration


def call(
    proxy: Proxy, method: str, path: str, count: int, body: bytes | None = None
) -> list[float]:
    """Latencies of `count` requests over one keep-alive connection (each must succeed)."""
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=15)
    latencies = []
    for _ in range(count):
        start = time.monotonic()
        conn.request(method, f"http://books{path}", body=body)
        response = conn.getresponse()
        text = response.read().decode().strip()
        latencies.append(time.monotonic() - start)
        assert (response.status, text) == (200, "books")
    conn.close()
    return latencies


def test_copies_reach_the_mirror_and_a_bad_mirror_costs_nothing(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    books = named_backend(processes, "books", log_requests=True)
    shadow = named_backend(processes, "shadow", log_requests=True)
    slow = named_backend(processes, "slow", delay_ms=5000, log_requests=True)
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: books
    endpoints: [{books.addr}]
    routes:
      - {{name: all, matches: [{{path: {{value: /all}}}}], mirror: {{service: shadow}}}}
      - name: half
        matches: [{{path: {{value: /half}}}}]
        mirror: {{service: shadow, percent: 50}}
      - {{name: down, matches: [{{path: {{value: /down}}}}], mirror: {{service: gone}}}}
      - {{name: slow, matches: [{{path: {{value: /slow}}}}], mirror: {{service: slow}}}}
  - name: shadow
    endpoints: [{shadow.addr}]
  - name: gone
    endpoints: [{LOOPBACK}:{refused_port()}]
  - name: slow
    endpoints: [{slow.addr}]
"""
    )
    control = start_control(processes, manifest)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr])

    def mirrored(prefix: str) -> list[str]:
        return [
            line
            for line in shadow.seen()
            if f" http://books{prefix}" in line or f" {prefix}" in line
        ]

    call(proxy, "GET", "/all", 20)
    call(proxy, "POST", "/all", 5, body=b"x" * 1000)
    wait_until(lambda: len(mirrored("/all")) == 25, 15, "25 copies")
    assert sum(1 for line in mirrored("/all") if line.startswith("POST")) == 5

    call(proxy, "GET", "/half", 200)
    metrics = proxy.metrics()
    wait_until(
        lambda: proxy.metrics().total("mirror_requests_total", dst_service="shadow") >= 25 + 72,
        15,
        "the copies of /half",
    )
    half = len(mirrored("/half"))
    # p = 0.5, n = 200: sd ~= 7.1; +-28 is ~4 sd.
    assert 72 <= half <= 128, (half, proxy.metrics().matching("mirror_requests_total"))

    # A mirror that refuses connections, and one that takes 5 s to answer:
    # the originals' latencies stay far below what waiting for either would cost.
    down = call(proxy, "GET", "/down", 20)
    slowed = call(proxy, "GET", "/slow", 20)
    assert max(down) < 1.0, max(down)
    assert max(slowed) < 1.0, max(slowed)
    wait_until(lambda: len(slow.seen()) == 20, 15, "the slow mirror to get its copies")
    wait_until(
        lambda: (
            proxy.metrics().total("mirror_requests_total", dst_service="gone", result="failed")
            == 20
        ),
        15,
        "the failed copies to be counted",
    )
    metrics = proxy.metrics()
    assert metrics.total("mirror_requests_total", dst_service="shadow", result="sent") >= 25
    # Counted per route of the service whose requests are copied.
    assert metrics.total(
        "mirror_requests_total", route_service="books", route="all", result="sent"
    ) == len(mirrored("/all"))
    assert metrics.total("mirror_requests_total", route_service="books", route="half") == half
    assert metrics.total("mirror_requests_total", route_service="books", route="down") == 20
    # The books backend saw every original exactly once.
    assert len(books.seen()) == 20 + 5 + 200 + 20 + 20
