"""Outbound rate limits through a real `tulle proxy`: a route's `rateLimit` is held by
the calling proxy, on HTTP/1 (429 with Retry-After) and gRPC (RESOURCE_EXHAUSTED).

Each route has a bucket of BURST tokens refilled at RATE a second; a quick run of
CALLS requests gets BURST plus what refilled while it ran (bounded by its measured
duration), the rest refused by the proxy itself: the backend never sees them.
"""

from __future__ import annotations

import http.client
import sys
import time
from pathlib import Path

import grpc
import pytest
from meshkit import named_backend, start_control
from support.mesh import start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

RATE = 2.0
BURST = 5
CALLS = 40


def allowed_at_most(elapsed_s: float) -> int:
    return BURST + int(RATE * elapsed_s) + 1


def test_outbound_limits_on_http1_and_grpc(processes: ProcessGroup, tmp_path: Path) -> None:
    books = named_backend(processes, "books", log_requests=True)
    echo = start_grpc_server(processes, "echo", "--log-calls")
    limit = f"{{requestsPerSecond: {RATE}, burst: {BURST}}}"
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: books
    endpoints: [{books.addr}]
    routes:
      - {{name: limited, matches: [{{path: {{value: /limited}}}}], rateLimit: {limit}}}
      - {{name: free, matches: [{{path: {{value: /}}}}]}}
  - name: echo
    protocol: grpc
    endpoints: [{echo.addr}]
    routes:
      - name: unary
        matches: [{{path: {{value: /tulle.test.echo.Echo/Unary}}}}]
        rateLimit: {limit}
"""
    )
    control = start_control(processes, manifest)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr], name="limiting")

    conn = http.client.HTTPConnection(*proxy.outbound, timeout=15)
    # The first request waits for discovery; the bucket is built with the profile.
    conn.request("GET", "http://books/free")
    assert conn.getresponse().read().decode().strip() == "books"
    statuses = []
    retry_after = set()
    start = time.monotonic()
    for _ in range(CALLS):
        conn.request("GET", "http://books/limited")
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
        if response.status == 429:
            assert response.getheader("tulle-proxy-error") == "rate-limited"
            retry_after.add(response.getheader("retry-after"))
    elapsed = time.monotonic() - start
    conn.close()
    ok = statuses.count(200)
    assert statuses.count(429) == CALLS - ok
    assert BURST <= ok <= allowed_at_most(elapsed), (ok, elapsed)
    assert retry_after and all(value is not None and int(value) >= 1 for value in retry_after)
    # Refused by the calling proxy: the backend saw only the allowed ones.
    assert sum(1 for line in books.seen() if "/limited" in line) == ok

    codes = []
    options = [("grpc.default_authority", "echo"), ("grpc.enable_retries", 0)]
    with grpc.insecure_channel(f"{LOOPBACK}:{proxy.outbound_port}", options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        start = time.monotonic()
        for _ in range(CALLS):
            try:
                stub.Unary(echo_pb2.EchoRequest(payload=b"limited"), timeout=15)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
        elapsed = time.monotonic() - start
    ok = codes.count(grpc.StatusCode.OK)
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == CALLS - ok, set(codes)
    assert BURST <= ok <= allowed_at_most(elapsed), (ok, elapsed)
    served = sum(1 for line in echo.process.output().splitlines() if line.startswith("CALL Unary"))
    assert served == ok

    metrics = proxy.metrics()
    for service in ("books", "echo"):
        limited = metrics.total(
            "outbound_http_ratelimit_total", dst_service=service, decision="limit"
        )
        allowed = metrics.total(
            "outbound_http_ratelimit_total", dst_service=service, decision="allow"
        )
        assert limited + allowed == CALLS and limited > 0 and allowed >= BURST, (service, limited)
