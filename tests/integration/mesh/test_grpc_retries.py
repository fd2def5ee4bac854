"""One request path for HTTP/1 and gRPC, through a real `tulle proxy`.

* A gRPC service whose endpoints fail every other call with UNAVAILABLE, on a
  route that names UNAVAILABLE in `retry.grpcStatuses`, is seen at 100 %
  success by its caller, `retry_total` counting the retries; a status the
  route does not name goes back to the caller as it is.
* The same fault gives the same `tulle-proxy-error` reason over HTTP/1 and
  gRPC (docs/architecture.md, "Proxy-made errors").
"""

from __future__ import annotations

import http.client
import sys
from pathlib import Path

import grpc
import pytest
from meshkit import named_backend, start_control, write_manifest
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK, free_ports
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from grpc_service.server import EVERY_OTHER  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

UNAVAILABLE = grpc.StatusCode.UNAVAILABLE.value[0]
NOT_FOUND = grpc.StatusCode.NOT_FOUND.value[0]
CALLS = 60


def _channel(proxy: Proxy, authority: str) -> grpc.Channel:
    return grpc.insecure_channel(
        f"{LOOPBACK}:{proxy.outbound_port}", options=[("grpc.default_authority", authority)]
    )


def _manifest(addrs: list[str]) -> str:
    return (
        "services:\n"
        "  - name: echo\n"
        f"    endpoints: [{', '.join(addrs)}]\n"
        "    routes:\n"
        "      - name: fail\n"
        "        matches: [{path: {type: Exact, value: /tulle.test.echo.Echo/Fail}}]\n"
        "        retry: {grpcStatuses: [UNAVAILABLE]}\n"
        # Enough budget that every failure may be retried: what is under
        # test is the rule, not the budget (unit-tested in test_plan.py).
        "    retryBudget: {retryRatio: 5, minRetriesPerSecond: 100}\n"
    )


def _flaky(stub: echo_pb2_grpc.EchoStub, code: int) -> grpc.StatusCode:
    try:
        stub.Fail(
            echo_pb2.EchoRequest(payload=b"x", status_code=code, message=EVERY_OTHER), timeout=10
        )
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def test_grpc_calls_failing_every_other_time_are_retried_on_a_route_that_names_the_status(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    servers = [start_grpc_server(processes, f"flaky-{i}") for i in range(2)]
    manifest = tmp_path / "mesh.yaml"
    write_manifest(manifest, _manifest([s.addr for s in servers]))
    control = start_control(processes, manifest)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr], name="caller")
    with _channel(proxy, "echo") as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        seen = [_flaky(stub, UNAVAILABLE) for _ in range(CALLS)]
        assert seen == [grpc.StatusCode.OK] * CALLS, [s.name for s in seen]
        metrics = proxy.metrics()
        retries = metrics.total("retry_total", direction="outbound", dst_service="echo")
        # Each endpoint fails every other call it gets: about one retry per two calls.
        assert CALLS // 4 <= retries <= CALLS * 3, retries
        assert (
            metrics.total(
                "response_total", direction="outbound", route="fail", grpc_status_code="0"
            )
            == CALLS
        )
        # A status the route does not name is the application's answer.
        other = [_flaky(stub, NOT_FOUND) for _ in range(20)]
        assert other.count(grpc.StatusCode.NOT_FOUND) >= 5, other
        assert proxy.metrics().total("retry_total", direction="outbound") == retries


def _http1(proxy: Proxy, authority: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection(LOOPBACK, proxy.outbound_port, timeout=15)
    try:
        connection.request("GET", f"http://{authority}/")
        response = connection.getresponse()
        response.read()
        return response.status, response.headers.get("tulle-proxy-error", "")
    finally:
        connection.close()


def _grpc(proxy: Proxy, authority: str, method: str) -> tuple[grpc.StatusCode, str]:
    with _channel(proxy, authority) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        call = getattr(stub, method)
        try:
            call(echo_pb2.EchoRequest(payload=b"x", delay_ms=5000), timeout=15)
        except grpc.RpcError as exc:
            metadata = dict(exc.trailing_metadata() or ())  # type: ignore[attr-defined]
            return exc.code(), str(metadata.get("tulle-proxy-error", ""))  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def test_the_same_fault_has_the_same_reason_over_http1_and_grpc(processes: ProcessGroup) -> None:
    slow_http = named_backend(processes, "slow-http", delay_ms=5000)
    slow_grpc = start_grpc_server(processes, "slow-grpc")
    (closed,) = free_ports(1)
    down = f"{LOOPBACK}:{closed}"
    proxy = start_proxy(
        processes,
        static_dst={
            "slow-http": [f"{LOOPBACK}:{slow_http.port}"],
            "slow-grpc": [slow_grpc.addr],
            # One name per protocol: each one's attempts (the first and its
            # retries) count towards ejecting the endpoint of its own service.
            "down-http": [down],
            "down-grpc": [down],
        },
        extra=["--response-timeout", "0.5"],
        name="faults",
    )
    cases = {
        # fault: (HTTP/1 authority, gRPC authority, HTTP status, gRPC status, reason)
        "refused": ("down-http", "down-grpc", 502, grpc.StatusCode.UNAVAILABLE, "connect-refused"),
        "unknown": ("nowhere", "nowhere", 503, grpc.StatusCode.UNAVAILABLE, "unknown-service"),
        "slow": ("slow-http", "slow-grpc", 504, grpc.StatusCode.DEADLINE_EXCEEDED,
                 "response-timeout"),
    }  # fmt: skip
    for fault, (http_name, grpc_name, status, code, reason) in cases.items():
        assert _http1(proxy, http_name) == (status, reason), fault
        assert _grpc(proxy, grpc_name, "Slow") == (code, reason), fault
    metrics = proxy.metrics()
    for _, _, _, _, reason in cases.values():
        assert metrics.total("proxy_error_total", direction="outbound", reason=reason) == 2, reason
    assert metrics.total("timeout_total", direction="outbound") == 2
