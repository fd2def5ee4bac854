"""Failure accrual through a real `tulle proxy`: what ejects an endpoint, and what callers are told.

A client that gives up on a call (an HTTP/1 client that disconnects while its
request is in flight, a gRPC call cancelled with RST_STREAM CANCEL) says
nothing about the endpoint: more such cancellations than failure accrual's
threshold (7) must leave a healthy endpoint in service. An endpoint that
really fails is ejected, and then the error says so (`endpoints-ejected`),
not that the service has no endpoints.
"""

from __future__ import annotations

import socket
import struct
import sys
from pathlib import Path

import grpc
import pytest
from support.mesh import Backend, Proxy, start_backend, start_proxy
from support.ports import LOOPBACK, refused_port
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection, exchange, request_bytes

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2raw import RawH2, flood_streams  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402
from hyperframe.frame import GoAwayFrame  # noqa: E402

pytestmark = pytest.mark.integration

# More than failure accrual's 7 consecutive failures.
CANCELLATIONS = 10
# The slow calls must outlive the test's cancellations by far.
SLOW_MS = 20_000
WAIT_S = 20.0


@pytest.fixture(scope="module")
def backend(module_processes: ProcessGroup) -> Backend:
    return start_backend(module_processes, "http")


@pytest.fixture(scope="module")
def grpc_server(module_processes: ProcessGroup) -> Server:
    return start_grpc_server(module_processes, "accrual-grpc")


@pytest.fixture(scope="module")
def proxy(module_processes: ProcessGroup, backend: Backend, grpc_server: Server) -> Proxy:
    return start_proxy(
        module_processes,
        static_dst={
            "books": [backend.addr],
            "echo": [grpc_server.addr],
            # Nothing listens: every attempt fails, so the endpoint is ejected.
            "dead-h1": [f"{LOOPBACK}:{refused_port()}"],
            "dead-grpc": [f"{LOOPBACK}:{refused_port()}"],
            "dead-flood": [f"{LOOPBACK}:{refused_port()}"],
        },
        name="accrual-proxy",
    )


def _endpoints_ejected(proxy: Proxy, service: str) -> float:
    return proxy.metrics().total("endpoints_ejected", direction="outbound", dst_service=service)


def _rst_close(connection: RawHttpConnection) -> None:
    """Close with a TCP RST (SO_LINGER 0): the proxy sees the client vanish at once."""
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()


def test_http1_clients_that_disconnect_do_not_eject_the_endpoint(
    proxy: Proxy, backend: Backend
) -> None:
    served_before = backend.stats()["requests"]
    connections = []
    try:
        for _ in range(CANCELLATIONS):
            connection = RawHttpConnection(*proxy.outbound)
            connection.send(request_bytes("GET", f"/delay/{SLOW_MS}", "books"))
            connections.append(connection)
        # Every request has reached the backend and waits there.
        proxy.process.wait_for(
            lambda: backend.stats()["requests"] - served_before >= CANCELLATIONS,
            "every slow request at the backend",
            WAIT_S,
        )
    finally:
        for connection in connections:
            _rst_close(connection)
    proxy.process.wait_for(
        lambda: (
            proxy.metrics().total("response_total", direction="outbound", status_code="499")
            >= CANCELLATIONS
        ),
        "the cancellations counted",
        WAIT_S,
    )
    response = exchange(*proxy.outbound, request_bytes("GET", "/", "books"))
    assert response.status == 200, (response.raw_head, response.body)
    assert _endpoints_ejected(proxy, "books") == 0


def _stub(proxy: Proxy, authority: str) -> tuple[grpc.Channel, echo_pb2_grpc.EchoStub]:
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{proxy.outbound_port}", options=[("grpc.default_authority", authority)]
    )
    return channel, echo_pb2_grpc.EchoStub(channel)


def test_cancelled_grpc_calls_do_not_eject_the_endpoint(proxy: Proxy, grpc_server: Server) -> None:
    channel, stub = _stub(proxy, "echo")
    with channel:
        calls = [
            stub.Slow.future(
                echo_pb2.EchoRequest(payload=f"c{i}".encode(), delay_ms=SLOW_MS), timeout=WAIT_S
            )
            for i in range(CANCELLATIONS)
        ]
        proxy.process.wait_for(
            lambda: proxy.metrics().total("h2_streams_open", direction="outbound") >= CANCELLATIONS,
            "every slow call in flight through the proxy",
            WAIT_S,
        )
        for call in calls:
            call.cancel()
        # Each cancellation reached the proxy as a client reset.
        proxy.process.wait_for(
            lambda: (
                proxy.metrics().total("h2_streams_reset_by_client_total", direction="outbound")
                >= CANCELLATIONS
            ),
            "every cancellation at the proxy",
            WAIT_S,
        )
        reply = stub.Unary(echo_pb2.EchoRequest(payload=b"still there"), timeout=WAIT_S)
    assert reply.payload == b"still there"
    assert _endpoints_ejected(proxy, "echo") == 0


def _eject(proxy: Proxy, service: str) -> list[str | None]:
    """Call `service` over HTTP/1 until the proxy says its endpoints are ejected."""
    reasons = []
    for _ in range(30):
        response = exchange(*proxy.outbound, request_bytes("GET", "/", service))
        reasons.append(response.proxy_error)
        if response.proxy_error == "endpoints-ejected":
            assert response.status == 503
            assert (
                f"the only endpoint of '{service}' is ejected by failure accrual".encode()
                in response.body
            ), response.body
            return reasons
    pytest.fail(f"never ejected: {reasons}")


def test_http1_error_says_the_endpoints_are_ejected(proxy: Proxy) -> None:
    reasons = _eject(proxy, "dead-h1")
    # Until then the caller saw why each attempt failed, never "no endpoints".
    assert "no-endpoints" not in reasons, reasons
    assert _endpoints_ejected(proxy, "dead-h1") == 1


def test_grpc_error_says_the_endpoints_are_ejected(proxy: Proxy) -> None:
    channel, stub = _stub(proxy, "dead-grpc")
    reasons = []
    with channel:
        for _ in range(30):
            with pytest.raises(grpc.RpcError) as failed:
                stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=WAIT_S)
            error = failed.value
            assert error.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
            trailers = dict(error.trailing_metadata() or ())  # type: ignore[attr-defined]
            reason = trailers.get("tulle-proxy-error")
            reasons.append(reason)
            if reason == "endpoints-ejected":
                details = error.details()  # type: ignore[attr-defined]
                assert "the only endpoint of 'dead-grpc' is ejected by failure accrual" in details
                break
        else:
            pytest.fail(f"never ejected: {reasons}")
    assert "no-endpoints" not in reasons, reasons


def test_rapid_reset_of_streams_to_an_ejected_service_is_cut(proxy: Proxy) -> None:
    """Once every endpoint is ejected, every stream is refused at once: opening and
    resetting them is a rapid-reset flood like any other, and is cut."""
    _eject(proxy, "dead-flood")
    raw = RawH2(proxy.outbound_port)
    try:
        raw.handshake()
        flood_streams(raw, "dead-flood")
        raw.read_until(GoAwayFrame, timeout=WAIT_S)
        goaway = raw.goaway()
        assert goaway is not None and goaway.error_code == 0xB  # ENHANCE_YOUR_CALM
        assert goaway.last_stream_id < 2 * 2000
    finally:
        raw.close()
    # The proxy goes on serving the healthy service.
    response = exchange(*proxy.outbound, request_bytes("GET", "/", "books"))
    assert response.status == 200, (response.raw_head, response.body)
