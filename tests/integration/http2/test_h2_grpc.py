"""gRPC through two Tulle hops with real grpcio clients and servers.

client --(authority "echo")--> hop A --> hop B --> 3 gRPC servers
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import grpc
import pytest
from grpc_service import echo_pb2, echo_pb2_grpc
from h2support import Mesh

pytestmark = pytest.mark.integration

_MAX_MESSAGE = 64 << 20


def channel(port: int, authority: str) -> grpc.Channel:
    return grpc.insecure_channel(
        f"127.0.0.1:{port}",
        options=[
            ("grpc.default_authority", authority),
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.enable_retries", 0),
        ],
    )


@pytest.fixture
def echo(mesh: Mesh) -> Iterator[echo_pb2_grpc.EchoStub]:
    with channel(mesh.hop_a.port, "echo") as chan:
        yield echo_pb2_grpc.EchoStub(chan)


def requests(count: int, size: int = 10) -> Iterator[echo_pb2.EchoRequest]:
    for i in range(count):
        yield echo_pb2.EchoRequest(payload=bytes([65 + i % 26]) * size)


def test_unary(echo: echo_pb2_grpc.EchoStub) -> None:
    reply = echo.Unary(echo_pb2.EchoRequest(payload=b"hello"), timeout=10)
    assert reply.payload == b"hello"


def test_server_streaming(echo: echo_pb2_grpc.EchoStub) -> None:
    replies = list(echo.ServerStream(echo_pb2.EchoRequest(payload=b"s", count=200), timeout=10))
    assert len(replies) == 200
    assert all(r.payload == b"s" for r in replies)


def test_client_streaming(echo: echo_pb2_grpc.EchoStub) -> None:
    reply = echo.ClientStream(requests(300, size=100), timeout=10)
    assert reply.received == 300
    assert reply.payload == b"30000"


def test_bidi_streaming_long_stream(echo: echo_pb2_grpc.EchoStub) -> None:
    replies = [r.payload for r in echo.Bidi(requests(2000), timeout=30)]
    assert replies == [r.payload for r in requests(2000)]


@pytest.mark.parametrize(
    ("code", "message"),
    [(grpc.StatusCode.NOT_FOUND, "no such book"), (grpc.StatusCode.INVALID_ARGUMENT, "bad isbn")],
)
def test_error_status_passes_through(
    echo: echo_pb2_grpc.EchoStub, code: grpc.StatusCode, message: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        echo.Fail(echo_pb2.EchoRequest(status_code=code.value[0], message=message), timeout=10)
    error = caught.value
    assert error.code() == code  # type: ignore[attr-defined]
    assert error.details() == message  # type: ignore[attr-defined]


def test_messages_of_16_mib_both_ways(echo: echo_pb2_grpc.EchoStub) -> None:
    payload = bytes(range(256)) * (16 * 4096)  # 16 MiB
    reply = echo.Unary(echo_pb2.EchoRequest(payload=payload), timeout=60)
    assert reply.payload == payload


def test_one_channel_is_balanced_per_request(echo: echo_pb2_grpc.EchoStub, mesh: Mesh) -> None:
    servers = Counter(
        echo.Unary(echo_pb2.EchoRequest(payload=b"b"), timeout=10).server for _ in range(30)
    )
    assert set(servers) == {str(s.port) for s in mesh.grpc_servers}
    assert min(servers.values()) >= 5


def test_client_cancellation_reaches_the_server(echo: echo_pb2_grpc.EchoStub, mesh: Mesh) -> None:
    marker = f"cancel-{time.monotonic_ns()}"
    calls = [
        echo.Slow.future(echo_pb2.EchoRequest(payload=marker.encode(), delay_ms=20_000))
        for _ in range(3)
    ]
    time.sleep(0.5)
    for call in calls:
        call.cancel()

    def cancelled_upstream() -> int:
        return sum(s.process.output().count(f"CANCELLED {marker}") for s in mesh.grpc_servers)

    deadline = time.monotonic() + 5
    while cancelled_upstream() < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cancelled_upstream() == 3


def test_deadline_seen_by_client(echo: echo_pb2_grpc.EchoStub) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        echo.Slow(echo_pb2.EchoRequest(delay_ms=10_000), timeout=0.5)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
    assert time.monotonic() - started < 3


def _proxy_error(error: grpc.RpcError) -> str | None:
    metadata = list(error.trailing_metadata() or []) + list(error.initial_metadata() or [])  # type: ignore[attr-defined]
    for key, value in metadata:
        if key == "tulle-proxy-error":
            return str(value)
    return None


@pytest.mark.parametrize(
    ("authority", "reason"),
    [("empty", "no-endpoints"), ("nowhere", "unknown-service"), ("down", "connect-refused")],
)
def test_proxy_errors_are_grpc_statuses(mesh: Mesh, authority: str, reason: str) -> None:
    with channel(mesh.hop_a.port, authority) as chan:
        stub = echo_pb2_grpc.EchoStub(chan)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert _proxy_error(caught.value) == reason


def test_many_concurrent_calls_on_one_channel(echo: echo_pb2_grpc.EchoStub) -> None:
    futures = [
        echo.Unary.future(echo_pb2.EchoRequest(payload=str(i).encode()), timeout=20)
        for i in range(300)
    ]
    assert [f.result().payload for f in futures] == [str(i).encode() for i in range(300)]


def test_refused_connection_is_routed_again(mesh: Mesh) -> None:
    """Half of `flaky`'s endpoints refuse connections; the proxy re-routes, calls succeed."""
    with channel(mesh.hop_a.port, "flaky") as chan:
        stub = echo_pb2_grpc.EchoStub(chan)
        for i in range(6):
            payload = str(i).encode()
            assert stub.Unary(echo_pb2.EchoRequest(payload=payload), timeout=10).payload == payload


def test_bulk_server_stream_is_not_mistaken_for_a_ping_flood(echo: echo_pb2_grpc.EchoStub) -> None:
    """grpc-core sends BDP PINGs with bursts of DATA; 48 MiB must pass untouched."""
    request = echo_pb2.EchoRequest(count=96, reply_size=512 << 10)
    sizes = [len(r.payload) for r in echo.ServerStream(request, timeout=60)]
    assert sizes == [512 << 10] * 96
