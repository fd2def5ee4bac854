"""Live tap through the control plane: `/api/tap`, `tulle tap` and `tulle top`.

The relay is tested against FAKE proxy admins (fake_tap_server.py: the real
TapHub and serve_tap behind a tiny listener) and against a real `tulle proxy`
as well.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_tap_server import FakeTapServer
from support.mesh import Backend, start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup
from viz_mesh import Mesh, admin_token_file, eventually, manifest_text, start_control

pytestmark = pytest.mark.integration

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"


@pytest.fixture
def fake_taps() -> Iterator[list[FakeTapServer]]:
    servers = [FakeTapServer().start(), FakeTapServer().start()]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_tulle_tap_merges_the_streams_of_every_proxy(
    processes: ProcessGroup, fake_taps: list[FakeTapServer], tmp_path: Path
) -> None:
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(manifest_text(1))
    targets = ",".join(f"books=books-{i}={server.admin}" for i, server in enumerate(fake_taps))
    _, _, api = start_control(processes, manifest, targets)
    mesh = Mesh.__new__(Mesh)
    mesh.api_url = api
    result = mesh.cli("tap", "books", "--json", "--limit", "20", "--method", "GET")
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 20
    assert {e["method"] for e in events} == {"GET"}
    assert {e["instance"] for e in events} == {"books-0", "books-1"}
    assert all(e["client_id"].endswith("/sa/web") for e in events)
    readable = mesh.cli("tap", "books", "--limit", "3", "--status", "5xx")
    assert readable.returncode == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert len(lines) == 3 and all("status=500" in line for line in lines)
    # The proxies' hubs go quiet again once the relay has ended.
    eventually(lambda: all(not server.hub.active for server in fake_taps), "hubs inactive", 5.0)
    top = mesh.cli_json("top", "--duration", "1")
    assert top["errors"] == []
    assert {row["path"] for row in top["rows"]} <= {"/items/0", "/items/1", "/items/2"}
    assert sum(row["count"] for row in top["rows"]) == top["events"] > 0
    unknown = mesh.cli("tap", "nothing", "--limit", "1")
    assert unknown.returncode == 1 and "no proxies" in unknown.stderr


def test_tap_against_a_real_proxy(
    processes: ProcessGroup, http_backend: Backend, tmp_path: Path
) -> None:
    proxy = start_proxy(
        processes,
        app_addr=http_backend.addr,
        extra=["--admin-token-file", str(admin_token_file(tmp_path))],
        name="proxy-tapped",
    )
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(manifest_text(proxy.inbound_port))
    _, _, api = start_control(processes, manifest, f"books=books-0={LOOPBACK}:{proxy.admin_port}")
    mesh = Mesh.__new__(Mesh)
    mesh.api_url = api
    stop = threading.Event()

    def traffic() -> None:
        # Paced and bounded in time: the tap subscribes a moment after this starts.
        deadline = time.monotonic() + 20.0
        while not stop.is_set() and time.monotonic() < deadline:
            connection = http.client.HTTPConnection(*proxy.inbound, timeout=5)
            try:
                connection.request("GET", "/status/201")
                connection.getresponse().read()
            except OSError:
                pass
            finally:
                connection.close()
            stop.wait(0.02)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        result = mesh.cli("tap", "books", "--json", "--limit", "5", "--duration", "10")
    finally:
        stop.set()
        sender.join(10)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 5
    assert all(e["status"] == 201 and e["path"] == "/status/201" for e in events)


def test_tap_shows_grpc_calls_with_their_status(processes: ProcessGroup, tmp_path: Path) -> None:
    """gRPC calls reach tap (and `tulle tap`) with their grpc-status, as HTTP/1 requests do."""
    sys.path.insert(0, str(HTTP2_TESTS))
    import grpc
    from grpc_service import echo_pb2, echo_pb2_grpc
    from h2support import start_grpc_server

    server = start_grpc_server(processes, "grpc-tapped")
    proxy = start_proxy(
        processes,
        static_dst={"echo": [server.addr]},
        extra=["--admin-token-file", str(admin_token_file(tmp_path))],
        name="proxy-grpc-tapped",
    )
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(manifest_text(proxy.inbound_port))
    _, _, api = start_control(processes, manifest, f"books=books-0={LOOPBACK}:{proxy.admin_port}")
    mesh = Mesh.__new__(Mesh)
    mesh.api_url = api
    stop = threading.Event()

    def traffic() -> None:
        channel = grpc.insecure_channel(
            f"{LOOPBACK}:{proxy.outbound_port}", options=[("grpc.default_authority", "echo")]
        )
        stub = echo_pb2_grpc.EchoStub(channel)
        deadline = time.monotonic() + 20.0
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(grpc.RpcError):
                    stub.Fail(echo_pb2.EchoRequest(status_code=5, message="gone"), timeout=5)
                stop.wait(0.02)
        finally:
            channel.close()

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        result = mesh.cli("tap", "books", "--json", "--limit", "5", "--duration", "10")
        readable = mesh.cli("tap", "books", "--limit", "2", "--duration", "10")
    finally:
        stop.set()
        sender.join(10)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(events) == 5
    for event in events:
        assert event["path"] == "/tulle.test.echo.Echo/Fail"
        assert event["method"] == "POST" and event["authority"] == "echo"
        assert event["status"] == 200 and event["grpc_status"] == 5, json.dumps(event)  # NOT_FOUND
    assert readable.returncode == 0, readable.stderr
    lines = readable.stdout.splitlines()
    assert len(lines) == 2 and all("grpc-status=5" in line for line in lines), lines
