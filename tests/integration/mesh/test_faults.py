"""Fault injection through real processes: a control plane, `tulle proxy`, real backends.

The manifest's routes inject aborts and delays (docs/manifest.md, `fault`);
the calling proxy applies them on HTTP/1, HTTP/2 and gRPC. Measured shares
are checked within about four standard deviations of the configured
percentage (a false failure is rarer than one run in 10,000); an injected
abort is never retried (the backend never sees it, on a route that retries
503) and is labelled as such in the response and the metrics.
"""

from __future__ import annotations

import http.client
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from meshkit import NamedBackend, named_backend, start_control
from support.mesh import Proxy, start_proxy
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

UNARY = "/tulle.test.echo.Echo/Unary"


def _manifest(books: str, echo: str) -> str:
    return f"""\
services:
  - name: books
    endpoints: [{books}]
    routes:
      - name: abort
        matches: [{{path: {{value: /abort}}}}]
        # Retries 503s: an injected 503 must still never be retried.
        retry: {{codes: [503]}}
        fault: {{abort: {{status: 503, percent: 30}}}}
      - name: delay
        matches: [{{path: {{value: /delay}}}}]
        fault: {{delay: {{duration: 400ms, percent: 50}}}}
      - name: scoped
        matches: [{{path: {{value: /scoped}}}}]
        fault:
          abort: {{status: 418, percent: 100}}
          headers: [{{name: x-chaos, value: "1"}}]
  - name: echo
    protocol: grpc
    endpoints: [{echo}]
    routes:
      - name: unary-delayed
        matches:
          - path: {{value: {UNARY}, type: Exact}}
            headers: [{{name: x-delay, value: "1"}}]
        fault: {{delay: {{duration: 300ms, percent: 100}}}}
      - name: unary
        matches: [{{path: {{value: {UNARY}, type: Exact}}}}]
        fault: {{abort: {{grpcStatus: 14, percent: 40}}}}
"""


class Mesh:
    def __init__(self, proxy: Proxy, books: NamedBackend, echo: Server) -> None:
        self.proxy = proxy
        self.books = books
        self.echo = echo


@pytest.fixture(scope="module")
def mesh(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Mesh:
    books = named_backend(module_processes, "books", log_requests=True)
    echo = start_grpc_server(module_processes, "echo")
    path = tmp_path_factory.mktemp("faults") / "mesh.yaml"
    path.write_text(_manifest(books.addr, echo.addr))
    control = start_control(module_processes, path)
    proxy = start_proxy(
        module_processes, extra=["--control-addr", control.grpc_addr], name="fault-proxy"
    )
    return Mesh(proxy, books, echo)


def _get(conn: http.client.HTTPConnection, path: str, **headers: str) -> tuple[int, str]:
    conn.request("GET", f"http://books{path}", headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status, response.getheader("tulle-proxy-error") or ""


def test_http1_abort_share_is_never_retried_and_is_labelled(mesh: Mesh) -> None:
    total = 400
    conn = http.client.HTTPConnection(*mesh.proxy.outbound, timeout=15)
    answers = [_get(conn, "/abort") for _ in range(total)]
    conn.close()
    aborted = answers.count((503, "fault-injected"))
    # Everything else reached the backend and succeeded.
    assert answers.count((200, "")) == total - aborted, set(answers)
    # p = 0.30, n = 400: sd ~= 9.2 requests; +-40 is ~4.4 sd.
    assert 80 <= aborted <= 160, aborted
    # The backend saw exactly the requests that were not aborted, once each.
    seen = [line for line in mesh.books.seen() if "/abort" in line]
    assert len(seen) == total - aborted
    metrics = mesh.proxy.metrics()
    assert metrics.total("fault_injected_total", route="abort", fault="abort") == aborted
    assert (
        metrics.total("response_total", route="abort", status_code="503", error="fault-injected")
        == aborted
    )


def test_http1_delay_share(mesh: Mesh) -> None:
    total, threads = 100, 20
    latencies: list[float] = []
    lock = threading.Lock()

    def run(count: int) -> None:
        conn = http.client.HTTPConnection(*mesh.proxy.outbound, timeout=15)
        for _ in range(count):
            start = time.monotonic()
            status, _ = _get(conn, "/delay")
            elapsed = time.monotonic() - start
            assert status == 200
            with lock:
                latencies.append(elapsed)
        conn.close()

    workers = [threading.Thread(target=run, args=(total // threads,)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert len(latencies) == total
    delayed = mesh.proxy.metrics().total("fault_injected_total", route="delay", fault="delay")
    # p = 0.5, n = 100: sd = 5; +-20 is 4 sd.
    assert 30 <= delayed <= 70, delayed
    # Every delayed request took the delay at least (others may be slow on a busy machine),
    # less the event loop's timer grain: uvloop's timers count whole milliseconds and
    # can fire up to one early.
    assert sum(1 for s in latencies if s >= 0.4 - 0.002) >= delayed


def test_headers_scope_the_fault_to_a_test_caller(mesh: Mesh) -> None:
    conn = http.client.HTTPConnection(*mesh.proxy.outbound, timeout=15)
    plain = [_get(conn, "/scoped") for _ in range(20)]
    other = [_get(conn, "/scoped", **{"x-chaos": "2"}) for _ in range(20)]
    marked = [_get(conn, "/scoped", **{"x-chaos": "1"}) for _ in range(20)]
    conn.close()
    assert set(plain) == {(200, "")}
    assert set(other) == {(200, "")}
    assert set(marked) == {(418, "fault-injected")}


def test_http2_abort_with_the_configured_status(mesh: Mesh) -> None:
    with httpx.Client(http1=False, http2=True, timeout=15) as client:
        url = f"http://{mesh.proxy.outbound[0]}:{mesh.proxy.outbound[1]}/scoped"
        response = client.get(url, headers={"host": "books", "x-chaos": "1"})
    assert response.http_version == "HTTP/2"
    assert response.status_code == 418
    assert response.headers["tulle-proxy-error"] == "fault-injected"


def _stub(proxy: Proxy) -> tuple[grpc.Channel, echo_pb2_grpc.EchoStub]:
    channel = grpc.insecure_channel(
        f"{proxy.outbound[0]}:{proxy.outbound[1]}",
        options=[("grpc.default_authority", "echo"), ("grpc.enable_retries", 0)],
    )
    return channel, echo_pb2_grpc.EchoStub(channel)


def test_grpc_abort_share_with_the_grpc_status(mesh: Mesh) -> None:
    total = 200
    channel, stub = _stub(mesh.proxy)
    codes: list[grpc.StatusCode] = []
    labelled = 0
    with channel:
        for _ in range(total):
            try:
                stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                trailers = dict(exc.trailing_metadata() or ())
                labelled += trailers.get("tulle-proxy-error") == "fault-injected"
    aborted = codes.count(grpc.StatusCode.UNAVAILABLE)
    assert codes.count(grpc.StatusCode.OK) == total - aborted, set(codes)
    assert labelled == aborted
    # p = 0.4, n = 200: sd ~= 6.9 calls; +-28 is ~4 sd.
    assert 52 <= aborted <= 108, aborted
    metrics = mesh.proxy.metrics()
    assert metrics.total("fault_injected_total", route="unary", fault="abort") == aborted


def test_grpc_delay_scoped_by_metadata(mesh: Mesh) -> None:
    channel, stub = _stub(mesh.proxy)
    with channel:
        for _ in range(5):
            start = time.monotonic()
            reply = stub.Unary(
                echo_pb2.EchoRequest(payload=b"slow"), timeout=10, metadata=(("x-delay", "1"),)
            )
            assert reply.payload == b"slow"
            assert time.monotonic() - start >= 0.3
    metrics = mesh.proxy.metrics()
    assert metrics.total("fault_injected_total", route="unary-delayed", fault="delay") == 5
