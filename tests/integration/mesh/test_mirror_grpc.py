"""Traffic mirroring of gRPC through a real `tulle proxy` (grpcio client and servers):
copies reach the mirror service over HTTP/2, half of them at `percent: 50` (within a
stated tolerance), a message over the kept limit is not copied (counted as dropped),
and a mirror that is down or 5 s slow costs the primary calls nothing measurable.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from meshkit import start_control, wait_until
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK, refused_port
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import Server, start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration


def copies(server: Server, payload_prefix: str) -> int:
    """The Unary calls a `--log-calls` server got whose payload starts with the prefix."""
    return sum(
        1
        for line in server.process.output().splitlines()
        if line.startswith(f"CALL Unary {payload_prefix}")
    )


def unary(proxy: Proxy, authority: str, payload: bytes, count: int) -> list[float]:
    """Latencies of `count` Unary calls over one channel (each must succeed)."""
    options = [
        ("grpc.default_authority", authority),
        ("grpc.enable_retries", 0),
        ("grpc.max_send_message_length", 8 << 20),
    ]
    latencies = []
    with grpc.insecure_channel(f"{LOOPBACK}:{proxy.outbound_port}", options=options) as channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        for _ in range(count):
            start = time.monotonic()
            reply = stub.Unary(echo_pb2.EchoRequest(payload=payload), timeout=15)
            latencies.append(time.monotonic() - start)
            assert reply.payload == payload
    return latencies


def mirror_total(proxy: Proxy, service: str, result: str | None = None) -> int:
    labels = (
        {"dst_service": service} if result is None else {"dst_service": service, "result": result}
    )
    return int(proxy.metrics().total("mirror_requests_total", **labels))


def test_grpc_copies_reach_the_mirror_and_a_bad_mirror_costs_nothing(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    echo = start_grpc_server(processes, "echo", "--log-calls")
    shadow = start_grpc_server(processes, "shadow", "--log-calls")
    slow = start_grpc_server(processes, "slow", "--log-calls", "--delay-ms", "5000")
    manifest = tmp_path / "mesh.yaml"
    # One primary server behind four services, each mirroring its own way.
    service = (
        "    protocol: grpc\n    endpoints: [{addr}]\n    routes:\n"
        "      - {{name: all, matches: [{{path: {{value: /}}}}], mirror: {mirror}}}\n"
    )
    manifest.write_text(
        "services:\n"
        + "".join(
            f"  - name: {name}\n" + service.format(addr=echo.addr, mirror=mirror)
            for name, mirror in [
                ("echo-all", "{service: shadow}"),
                ("echo-half", "{service: shadow, percent: 50}"),
                ("echo-down", "{service: gone}"),
                ("echo-slow", "{service: slow}"),
            ]
        )
        + f"  - name: shadow\n    protocol: grpc\n    endpoints: [{shadow.addr}]\n"
        + f"  - name: gone\n    protocol: grpc\n    endpoints: [{LOOPBACK}:{refused_port()}]\n"
        + f"  - name: slow\n    protocol: grpc\n    endpoints: [{slow.addr}]\n"
    )
    control = start_control(processes, manifest)
    proxy = start_proxy(processes, extra=["--control-addr", control.grpc_addr], name="mirroring")

    # Every call copied, whole; a message over the kept limit (64 KiB) is not.
    unary(proxy, "echo-all", b"all", 20)
    wait_until(lambda: copies(shadow, "all") == 20, 15, "20 copies at the mirror")
    unary(proxy, "echo-all", b"big" + b"x" * (100 * 1024), 3)
    wait_until(lambda: mirror_total(proxy, "shadow", "dropped") == 3, 15, "the big copies dropped")
    assert copies(shadow, "big") == 0

    # percent: 50 over 200 calls: sd ~= 7.1; 72..128 is +-4 sd.
    unary(proxy, "echo-half", b"half", 200)
    wait_until(
        lambda: mirror_total(proxy, "shadow", "sent") >= 20 + 72, 15, "the copies of echo-half"
    )
    sent_half = mirror_total(proxy, "shadow", "sent") - 20
    assert 72 <= sent_half <= 128, proxy.metrics().matching("mirror_requests_total")
    wait_until(lambda: copies(shadow, "half") == sent_half, 15, "the half copies to arrive")
    # Counted per route of the service whose calls are copied.
    assert (
        proxy.metrics().total(
            "mirror_requests_total", route_service="echo-half", route="all", result="sent"
        )
        == sent_half
    )

    # A mirror that refuses connections, and one 5 s slow: the primary calls'
    # latencies stay far below what waiting for either would cost.
    baseline = unary(proxy, "echo-all", b"base", 20)
    down = unary(proxy, "echo-down", b"down", 20)
    slowed = unary(proxy, "echo-slow", b"slow", 20)
    assert max(down) < 1.0 and max(slowed) < 1.0, (max(baseline), max(down), max(slowed))
    wait_until(lambda: copies(slow, "slow") == 20, 15, "the slow mirror to get its copies")
    wait_until(lambda: mirror_total(proxy, "gone", "failed") == 20, 15, "the failed copies counted")
    # The primary saw every call exactly once; the mirrors' answers never reached a client.
    primary = 20 + 3 + 200 + 20 + 20 + 20
    assert (
        sum(copies(echo, prefix) for prefix in ("all", "big", "half", "base", "down", "slow"))
        == primary
    )


TD = "tulle.test"
WEB = f"spiffe://{TD}/ns/default/sa/web"
SHADOW = f"spiffe://{TD}/ns/default/sa/shadow"


def test_grpc_copies_go_over_mesh_tls_to_a_meshed_mirror(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    issuer = tmp_path / "issuer"
    subprocess.run(
        [sys.executable, "-m", "tulle", "identity", "init", "--dir", str(issuer),
         "--trust-domain", TD],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    echo = start_grpc_server(processes, "echo")
    shadow = start_grpc_server(processes, "shadow", "--log-calls")
    shadow_proxy = start_proxy(
        processes,
        app_addr=shadow.addr,
        extra=["--identity", SHADOW, "--identity-issuer-dir", str(issuer)],
        name="shadow-inbound",
    )
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: echo
    protocol: grpc
    endpoints: [{echo.addr}]
    routes:
      - {{name: all, matches: [{{path: {{value: /}}}}], mirror: {{service: shadow}}}}
  - name: shadow
    protocol: grpc
    identity: {SHADOW}
    endpoints: [{LOOPBACK}:{shadow_proxy.inbound_port}]
"""
    )
    control = start_control(processes, manifest)
    caller = start_proxy(
        processes,
        extra=[
            "--control-addr", control.grpc_addr,
            "--identity", WEB, "--identity-issuer-dir", str(issuer),
        ],
        name="meshed-caller",
    )  # fmt: skip
    unary(caller, "echo", b"meshed", 10)
    wait_until(lambda: copies(shadow, "meshed") == 10, 15, "10 copies through mesh TLS")
    # The mirror's proxy saw the copies over mTLS, from the caller's identity.
    inbound = shadow_proxy.metrics()
    assert inbound.total("request_total", direction="inbound", client_id=WEB) == 10
    assert mirror_total(caller, "shadow", "sent") == 10
