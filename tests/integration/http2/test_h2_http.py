"""Plain HTTP/2 through two Tulle hops: curl, proxy errors, grpc-timeout, flow control, drain."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from grpc_service import echo_pb2
from h2raw import RawH2, data, grpc_message, rst, window_update
from h2support import Mesh, start_harness
from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, RstStreamFrame, SettingsFrame
from support.process import ProcessGroup, rss_kib
from support.tools import missing, require_binary

pytestmark = pytest.mark.integration


def _curl_h2() -> str:
    curl = require_binary("curl")
    features = subprocess.run([curl, "-V"], capture_output=True, text=True, check=False).stdout
    if "HTTP2" not in features:
        missing("a curl with HTTP/2", "apt-get install -y curl (Debian's is built with it)")
    return curl


def curl(port: int, authority: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_curl_h2(), "-sS", "--http2-prior-knowledge", "-H", f"Host: {authority}", "-i", *args,
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, timeout=20, check=False,
    )  # fmt: skip


def test_curl_prior_knowledge_get_and_post(mesh: Mesh) -> None:
    got = curl(mesh.hop_a.port, "web")
    assert got.returncode == 0, got.stderr
    assert got.stdout.startswith("HTTP/2 200")
    assert f"hello from {mesh.web.port}" in got.stdout
    posted = curl(mesh.hop_a.port, "web", "--data-binary", "a body to echo")
    assert posted.stdout.startswith("HTTP/2 200")
    assert posted.stdout.endswith("a body to echo")


@pytest.mark.parametrize(
    ("authority", "status", "reason"),
    [("empty", 503, "no-endpoints"), ("nowhere", 503, "unknown-service"),
     ("down", 502, "connect-refused")],
)  # fmt: skip
def test_proxy_errors_for_plain_http2(mesh: Mesh, authority: str, status: int, reason: str) -> None:
    result = curl(mesh.hop_a.port, authority)
    assert result.stdout.startswith(f"HTTP/2 {status}")
    assert f"tulle-proxy-error: {reason}" in result.stdout


def test_grpc_timeout_is_enforced_by_the_proxy(mesh: Mesh) -> None:
    """No client-side deadline at all: only the proxy can end this call in time."""
    marker = f"deadline-{time.monotonic_ns()}".encode()
    client = RawH2(mesh.hop_a.port)
    try:
        request = [
            (":method", "POST"), (":scheme", "http"), (":authority", "echo"),
            (":path", "/tulle.test.echo.Echo/Slow"), ("content-type", "application/grpc"),
            ("te", "trailers"), ("grpc-timeout", "300m"),
        ]  # fmt: skip
        body = echo_pb2.EchoRequest(payload=marker, delay_ms=20_000).SerializeToString()
        started = time.monotonic()
        client.send(client.headers(1, request), data(1, grpc_message(body), end_stream=True))
        client.read_until(HeadersFrame, timeout=5)
        elapsed = time.monotonic() - started
        blocks = client.headers_of(1)
        assert blocks, "no response"
        head = dict(blocks[0])
        assert head[b"grpc-status"] == b"4"
        assert head[b"tulle-proxy-error"] == b"response-timeout"
        assert 0.25 < elapsed < 2.0
    finally:
        client.close()

    def server_cancelled() -> bool:
        return any(f"CANCELLED {marker.decode()}" in s.process.output() for s in mesh.grpc_servers)

    deadline = time.monotonic() + 5
    while not server_cancelled() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server_cancelled()


def test_slow_reader_bounds_proxy_memory(mesh: Mesh) -> None:
    """A client that stops reading stops the backend: the proxies buffer windows, not bodies."""
    size = 64 << 20
    before = {hop: rss_kib(hop.process.pid) for hop in (mesh.hop_a, mesh.hop_b)}
    client = RawH2(mesh.hop_a.port)  # default 64 KiB windows, never updated below
    try:
        client.send(client.request(1, "web", f"/big/{size}"))
        client.read_until(None, timeout=3)
        received = len(client.data_of(1))
        assert 0 < received <= 65_535
        for hop in (mesh.hop_a, mesh.hop_b):
            grown_kib = rss_kib(hop.process.pid) - before[hop]
            assert grown_kib < 24 << 10, f"{hop.process.name} grew {grown_kib} KiB"
        # Opening the windows lets the rest flow.
        client.send(window_update(0, size), window_update(1, size))
        deadline = time.monotonic() + 20
        while len(client.data_of(1)) < size and time.monotonic() < deadline:
            client.read_until(None, timeout=0.5)
        assert len(client.data_of(1)) == size
    finally:
        client.close()


def test_reset_stream_leaves_the_connection_usable(mesh: Mesh) -> None:
    """Resetting a large download mid-way frees its share of the connection window."""
    client = RawH2(mesh.hop_a.port)
    try:
        client.send(client.request(1, "web", f"/big/{8 << 20}"))
        client.read_until(DataFrame, timeout=5)
        client.send(rst(1))
        # Hand back the connection window the reset stream's DATA used.
        client.send(window_update(0, 1 << 24))
        # Let the reset travel through both hops before the next request (a
        # loaded machine could otherwise race the upstream's own clean-up).
        client.read_until(None, timeout=0.3)
        client.send(client.request(3, "web", "/"))
        client.read_until(None, timeout=2)
        assert b"hello from" in client.data_of(3)
        assert client.goaway() is None
    finally:
        client.close()


def test_graceful_shutdown_finishes_streams_in_flight(mesh: Mesh, processes: ProcessGroup) -> None:
    hop = start_harness(processes, {"echo": [mesh.grpc_servers[0].addr]}, "draining-hop")
    client = RawH2(hop.port)
    try:
        request = [
            (":method", "POST"), (":scheme", "http"), (":authority", "echo"),
            (":path", "/tulle.test.echo.Echo/Slow"), ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]  # fmt: skip
        body = echo_pb2.EchoRequest(payload=b"drain", delay_ms=1000).SerializeToString()
        client.send(client.headers(1, request), data(1, grpc_message(body), end_stream=True))
        time.sleep(0.3)
        hop.process.signal(signal.SIGTERM)
        frames = client.read_until(RstStreamFrame, timeout=5)
        goaway = client.goaway()
        assert goaway is not None and goaway.error_code == 0
        assert goaway.last_stream_id == 1
        # The call in flight completed normally after the GOAWAY.
        trailers = [dict(block) for block in client.headers_of(1)]
        assert trailers and trailers[-1].get(b"grpc-status") == b"0"
        assert echo_pb2.EchoReply.FromString(client.data_of(1)[5:]).payload == b"drain"
        assert not any(isinstance(f, RstStreamFrame) for f in frames)
        assert hop.process.wait_exit(10) == 0
        assert isinstance(client.goaway(), GoAwayFrame)
    finally:
        client.close()


def test_upstream_drain_finishes_calls_through_the_first_hop(
    mesh: Mesh, processes: ProcessGroup
) -> None:
    """Hop B drains (GOAWAY to hop A): the call in flight still succeeds through hop A."""
    import grpc
    from grpc_service import echo_pb2_grpc

    hop_b = start_harness(processes, {"echo": [mesh.grpc_servers[1].addr]}, "drain-b")
    hop_a = start_harness(processes, {"echo": [hop_b.addr]}, "drain-a")
    target = f"127.0.0.1:{hop_a.port}"
    with grpc.insecure_channel(target, options=[("grpc.default_authority", "echo")]) as chan:
        stub = echo_pb2_grpc.EchoStub(chan)
        assert stub.Unary(echo_pb2.EchoRequest(payload=b"warm"), timeout=10).payload == b"warm"
        call = stub.Slow.future(echo_pb2.EchoRequest(payload=b"inflight", delay_ms=1000))
        time.sleep(0.3)
        hop_b.process.signal(signal.SIGTERM)
        assert call.result(timeout=10).payload == b"inflight"
        assert hop_b.process.wait_exit(10) == 0
        with pytest.raises(grpc.RpcError) as caught:
            stub.Unary(echo_pb2.EchoRequest(payload=b"after"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert "Traceback" not in hop_a.process.output()


def test_client_that_opens_windows_but_never_reads_is_bounded(mesh: Mesh) -> None:
    """Huge windows granted, socket never read: the proxies must not buffer the body."""
    size = 64 << 20
    hops = (mesh.hop_a, mesh.hop_b)
    before = {hop: rss_kib(hop.process.pid) for hop in hops}
    client = RawH2(mesh.hop_a.port, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
    try:
        client.send(window_update(0, 2**31 - 1 - 65_535))
        client.send(client.request(1, "web", f"/big/{size}"))
        time.sleep(3)  # read nothing at all meanwhile
        for hop in hops:
            grown_kib = rss_kib(hop.process.pid) - before[hop]
            assert grown_kib < 24 << 10, f"{hop.process.name} grew {grown_kib} KiB"
        deadline = time.monotonic() + 30
        while len(client.data_of(1)) < size and time.monotonic() < deadline:
            client.read_until(None, timeout=0.5)
        assert len(client.data_of(1)) == size
    finally:
        client.close()
