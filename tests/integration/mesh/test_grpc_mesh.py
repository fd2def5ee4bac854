"""gRPC through real `tulle proxy` hops: plaintext and mTLS, balancing, statuses.

The gRPC test service lives beside the HTTP/2 tests (tests/integration/http2/
grpc_service); the proxies here are the real sidecar, not the HTTP/2 harness.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import grpc
import pytest
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

WEB = "spiffe://tulle.test/ns/default/sa/web"
ECHO = "spiffe://tulle.test/ns/default/sa/echo"


@pytest.fixture(scope="module")
def servers(module_processes: ProcessGroup) -> list[Server]:
    return [start_grpc_server(module_processes, f"grpc-{i}") for i in range(3)]


def stub_via(proxy: Proxy, authority: str = "echo") -> echo_pb2_grpc.EchoStub:
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{proxy.outbound_port}",
        options=[
            ("grpc.default_authority", authority),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ],
    )
    return echo_pb2_grpc.EchoStub(channel)


def test_one_channel_is_balanced_per_call(
    module_processes: ProcessGroup, servers: list[Server]
) -> None:
    proxy = start_proxy(
        module_processes, static_dst={"echo": [s.addr for s in servers]}, name="grpc-balance"
    )
    stub = stub_via(proxy)
    answered: Counter[str] = Counter()
    for _ in range(15):  # 15 rounds of 10 concurrent calls on one channel
        calls = [
            stub.Unary.future(echo_pb2.EchoRequest(payload=b"x"), timeout=5) for _ in range(10)
        ]
        for call in calls:
            answered[call.result().server] += 1
    # One HTTP/2 connection from the client, yet every server took a share.
    assert len(answered) == 3, answered
    assert min(answered.values()) >= 5, answered
    metrics = proxy.metrics()
    assert metrics.total("response_total", direction="outbound", grpc_status_code="0") == 150


@pytest.fixture(scope="module")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("grpc-identity") / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(directory),
         "--trust-domain", "tulle.test"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return directory


@pytest.mark.parametrize("meshed", [False, True], ids=["plaintext", "mtls"])
def test_two_hops_carry_every_call_kind(
    processes: ProcessGroup, servers: list[Server], issuer: Path, meshed: bool
) -> None:
    server_side_flags = ["--identity", ECHO, "--identity-issuer-dir", str(issuer)] if meshed else []
    client_side_flags = ["--identity", WEB, "--identity-issuer-dir", str(issuer)] if meshed else []
    inbound = start_proxy(
        processes, app_addr=servers[0].addr, extra=server_side_flags, name="grpc-inbound"
    )
    endpoint = f"{LOOPBACK}:{inbound.inbound_port}" + (f"@{ECHO}" if meshed else "")
    outbound = start_proxy(
        processes, static_dst={"echo": [endpoint]}, extra=client_side_flags, name="grpc-outbound"
    )
    stub = stub_via(outbound)
    assert stub.Unary(echo_pb2.EchoRequest(payload=b"one"), timeout=5).payload == b"one"
    replies = list(stub.ServerStream(echo_pb2.EchoRequest(payload=b"s", count=20), timeout=5))
    assert len(replies) == 20
    requests = (echo_pb2.EchoRequest(payload=bytes([i])) for i in range(10))
    assert stub.ClientStream(requests, timeout=5).received == 10
    bidi = stub.Bidi((echo_pb2.EchoRequest(payload=b"%d" % i) for i in range(5)), timeout=5)
    assert [r.payload for r in bidi] == [b"%d" % i for i in range(5)]
    with pytest.raises(grpc.RpcError) as info:
        stub.Fail(echo_pb2.EchoRequest(status_code=7, message="no"), timeout=5)
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as info:
        stub.Slow(echo_pb2.EchoRequest(delay_ms=3000), timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    big = b"z" * (16 * 1024 * 1024)  # the 16 MB message
    assert len(stub.Unary(echo_pb2.EchoRequest(payload=big), timeout=20).payload) == len(big)
    server_metrics = inbound.metrics()
    labels = {"direction": "inbound", "grpc_status_code": "7"}
    if meshed:
        labels["client_id"] = WEB
    assert server_metrics.total("response_total", **labels) == 1
    assert server_metrics.total("response_total", classification="failure", grpc_status_code="7")


def test_unknown_service_is_unavailable(processes: ProcessGroup) -> None:
    proxy = start_proxy(processes, static_dst={"other": [f"{LOOPBACK}:1"]}, name="grpc-unknown")
    with pytest.raises(grpc.RpcError) as info:
        stub_via(proxy, "nowhere").Unary(echo_pb2.EchoRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_wrong_server_identity_fails_the_call(
    processes: ProcessGroup, servers: list[Server], issuer: Path
) -> None:
    inbound = start_proxy(
        processes,
        app_addr=servers[0].addr,
        extra=["--identity", ECHO, "--identity-issuer-dir", str(issuer)],
        name="grpc-inbound-real",
    )
    impostor = "spiffe://tulle.test/ns/default/sa/payments"
    outbound = start_proxy(
        processes,
        static_dst={"echo": [f"{LOOPBACK}:{inbound.inbound_port}@{impostor}"]},
        extra=["--identity", WEB, "--identity-issuer-dir", str(issuer)],
        name="grpc-outbound-expects-other",
    )
    with pytest.raises(grpc.RpcError) as info:
        stub_via(outbound).Unary(echo_pb2.EchoRequest(), timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert inbound.metrics().total("request_total", direction="inbound") == 0


def test_first_call_waits_for_discovery(
    processes: ProcessGroup, servers: list[Server], tmp_path: Path
) -> None:
    """The very first stream to a name the proxy has never resolved is held
    until the control plane answers, then routed: no UNAVAILABLE."""
    from meshkit import start_control

    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"services:\n  - name: echo\n    protocol: grpc\n    endpoints: [{servers[1].addr}]\n"
    )
    control = start_control(processes, manifest)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr], name="grpc-cp")
    reply = stub_via(proxy).Unary(echo_pb2.EchoRequest(payload=b"first"), timeout=10)
    assert reply.payload == b"first" and reply.server == str(servers[1].port)
