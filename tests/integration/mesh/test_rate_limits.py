"""Inbound rate limits through real processes: a control plane, `tulle proxy`, real apps.

Three workloads, each behind its own inbound proxy, each with one limit
(docs/policy.md, `rateLimits`): `books` a total bucket (held under a wrk
load, every 429 counted), `shelf` a per-client bucket (unauthenticated
callers keyed by source address), `echo` a gRPC route's bucket
(RESOURCE_EXHAUSTED). Counts are exact where the bucket size decides them
and within a stated tolerance where time does.
"""

from __future__ import annotations

import http.client
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from meshkit import start_control, wait_until, workload_proxy
from support.mesh import Backend, Proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

RATE = 50  # books: requests per second
BURST = 20  # books: bucket size
OPEN = "defaultPolicy: all-unauthenticated"


def _manifest(app: int, echo: int) -> str:
    return f"""\
services:
  - name: books
    endpoints: [{LOOPBACK}:{app}]
  - name: shelf
    endpoints: [{LOOPBACK}:{app}]
  - name: echo
    protocol: grpc
    endpoints: [{LOOPBACK}:{echo}]
policy:
  servers:
    - {{name: books-http, workload: books, port: {app}, {OPEN}}}
    - {{name: shelf-http, workload: shelf, port: {app}, {OPEN}}}
    - {{name: echo-grpc, workload: echo, port: {echo}, protocol: grpc, {OPEN}}}
  httpRoutes:
    - name: unary
      server: echo-grpc
      matches: [{{path: {{type: Exact, value: /tulle.test.echo.Echo/Unary}}}}]
  rateLimits:
    - name: books-total
      target: {{server: books-http}}
      total: {{requestsPerSecond: {RATE}, burst: {BURST}}}
    - name: shelf-per-client
      target: {{server: shelf-http}}
      identity: {{requestsPerSecond: 0.01, burst: 5}}
    - name: echo-unary
      target: {{httpRoute: unary}}
      total: {{requestsPerSecond: 0.01, burst: 5}}
"""


class World:
    def __init__(self, books: Proxy, shelf: Proxy, echo: Proxy) -> None:
        self.books = books
        self.shelf = shelf
        self.echo = echo


@pytest.fixture(scope="module")
def world(
    module_processes: ProcessGroup,
    http_backend: Backend,
    tmp_path_factory: pytest.TempPathFactory,
) -> World:
    echo_app: Server = start_grpc_server(module_processes, "echo-app")
    path = tmp_path_factory.mktemp("limits") / "mesh.yaml"
    path.write_text(_manifest(http_backend.port, echo_app.port))
    control = start_control(module_processes, path)

    def inbound(workload: str, app: str) -> Proxy:
        return workload_proxy(module_processes, control, workload, app)

    return World(
        inbound("books", http_backend.addr),
        inbound("shelf", http_backend.addr),
        inbound("echo", echo_app.addr),
    )


def _get(conn: http.client.HTTPConnection, path: str = "/status/200") -> http.client.HTTPResponse:
    conn.request("GET", path, headers={"host": "books"})
    response = conn.getresponse()
    response.read()
    return response


def test_total_limit_answers_429_with_retry_after_and_holds_under_wrk(world: World) -> None:
    proxy = world.books
    conn = http.client.HTTPConnection(*proxy.inbound, timeout=10)
    start = time.monotonic()
    responses = [_get(conn) for _ in range(200)]
    elapsed = time.monotonic() - start
    conn.close()
    passed = [r for r in responses if r.status == 200]
    limited = [r for r in responses if r.status == 429]
    assert len(passed) + len(limited) == 200, {r.status for r in responses}
    # The full bucket, then what refilled while the loop ran (+1: a partial token).
    assert BURST <= len(passed) <= BURST + RATE * elapsed + 1, (len(passed), elapsed)
    for response in limited:
        assert response.getheader("tulle-proxy-error") == "rate-limited"
        assert int(response.getheader("retry-after") or "0") >= 1
    metrics = proxy.metrics()
    assert metrics.total("inbound_http_ratelimit_total", limit="books-total", decision="limit") == (
        len(limited)
    )

    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    before = proxy.metrics()
    allowed_before = before.total("inbound_http_ratelimit_total", decision="allow")
    start = time.monotonic()
    run = subprocess.run(
        ["wrk", "-t1", "-c8", "-d3s", "-H", "Host: books", f"{proxy.inbound_url}/status/200"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    elapsed = time.monotonic() - start
    total = int(re.search(r"(\d+) requests in", run.stdout).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", run.stdout)
    refused = int(non_2xx.group(1)) if non_2xx else 0
    after = proxy.metrics()
    allowed = after.total("inbound_http_ratelimit_total", decision="allow") - allowed_before
    # wrk sent far more than the limit; what passed is the bucket plus the
    # rate over the run: at least 90 % of 3 s worth, at most the whole wall time.
    assert total > 3 * RATE * 2, run.stdout
    assert RATE * 3 * 0.9 <= allowed <= BURST + RATE * elapsed + 1, (allowed, elapsed)
    # Every answer wrk got that was not a 200 was a 429: wrk's counts and the
    # proxy's agree but for the requests of its 8 connections in flight when it stopped.
    assert abs(refused - (total - allowed)) <= 8, (refused, total, allowed)
    print(f"wrk: {total} requests in {elapsed:.2f}s, {allowed:g} allowed, {refused} got 429")
    assert after.total("proxy_error_total", reason="rate-limited") >= refused


def test_unauthenticated_clients_get_a_bucket_per_source_address(world: World) -> None:
    def statuses(source: str, count: int) -> list[int]:
        conn = http.client.HTTPConnection(
            *world.shelf.inbound, timeout=10, source_address=(source, 0)
        )
        result = [_get(conn).status for _ in range(count)]
        conn.close()
        return result

    assert statuses("127.0.0.1", 8) == [200] * 5 + [429] * 3
    # Another caller has its own bucket, untouched by the first one's refusals.
    assert statuses("127.0.0.2", 8) == [200] * 5 + [429] * 3
    assert statuses("127.0.0.1", 2) == [429, 429]
    metrics = world.shelf.metrics()
    assert metrics.total("inbound_http_ratelimit_total", decision="allow") == 10
    assert metrics.total("inbound_http_ratelimit_total", decision="limit") == 8


def test_grpc_route_limit_answers_resource_exhausted(world: World) -> None:
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{world.echo.inbound_port}",
        options=[("grpc.default_authority", "echo"), ("grpc.enable_retries", 0)],
    )
    codes: list[grpc.StatusCode] = []
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(8):
            try:
                stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                trailers = dict(exc.trailing_metadata() or ())
                assert trailers.get("tulle-proxy-error") == "rate-limited"
                assert int(trailers.get("retry-after", "0")) >= 1
        # Another route of the same server has no limit.
        replies = list(stub.ServerStream(echo_pb2.EchoRequest(payload=b"s", count=3), timeout=10))
    assert codes == [grpc.StatusCode.OK] * 5 + [grpc.StatusCode.RESOURCE_EXHAUSTED] * 3
    assert len(replies) == 3
    wait_until(
        lambda: (
            world.echo.metrics().total(
                "inbound_http_ratelimit_total", limit="echo-unary", route="unary", decision="limit"
            )
            == 3
        ),
        10,
        "the refusals to be counted",
    )
