"""Injected faults on gRPC calls are visible in a real proxy's tap, as HTTP/1's are.

A route aborts calls carrying `x-chaos: 1` with UNAVAILABLE; the proxy
admin's `/tap` shows those calls with `error: fault-injected` and their
grpc-status, and the calls the fault did not hit as ordinary successes.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from meshkit import start_control
from support.mesh import start_proxy
from support.ports import LOOPBACK
from support.process import ProcessGroup

from tulle.core.credentials import ensure_token_file

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

UNARY = "/tulle.test.echo.Echo/Unary"


def test_grpc_fault_aborts_are_labelled_in_tap(processes: ProcessGroup, tmp_path: Path) -> None:
    echo = start_grpc_server(processes, "echo")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: echo
    protocol: grpc
    endpoints: [{echo.addr}]
    routes:
      - name: unary
        matches: [{{path: {{value: {UNARY}, type: Exact}}}}]
        fault:
          abort: {{grpcStatus: 14, percent: 100}}
          headers: [{{name: x-chaos, value: "1"}}]
"""
    )
    control = start_control(processes, manifest)
    token = ensure_token_file(tmp_path / "admin-token")
    proxy = start_proxy(
        processes,
        extra=[
            "--control-addr", control.grpc_addr,
            "--admin-token-file", str(tmp_path / "admin-token"),
        ],
        name="tapped",
    )  # fmt: skip
    events: list[dict[str, object]] = []

    def tap() -> None:
        connection = http.client.HTTPConnection(*proxy.admin, timeout=30)
        try:
            connection.request(
                "GET",
                "/tap?authority=echo&limit=6&duration=20",
                headers={"Authorization": f"Bearer {token}", "Host": "localhost"},
            )
            response = connection.getresponse()
            for line in response:
                event = json.loads(line)
                if "path" in event:
                    events.append(event)
        finally:
            connection.close()

    reader = threading.Thread(target=tap, daemon=True)
    reader.start()
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{proxy.outbound_port}",
        options=[("grpc.default_authority", "echo"), ("grpc.enable_retries", 0)],
    )
    stub = echo_pb2_grpc.EchoStub(channel)
    deadline = time.monotonic() + 20.0
    aborted = 0
    # Pairs of calls until the tap (subscribed a moment after this starts) has its events.
    while reader.is_alive() and time.monotonic() < deadline:
        stub.Unary(echo_pb2.EchoRequest(payload=b"ok"), timeout=5)
        try:
            stub.Unary(echo_pb2.EchoRequest(payload=b"x"), metadata=[("x-chaos", "1")], timeout=5)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            aborted += 1
        time.sleep(0.05)
    channel.close()
    reader.join(10)
    assert aborted > 0 and len(events) == 6, events
    faulted = [e for e in events if e["error"]]
    served = [e for e in events if not e["error"]]
    assert faulted and served, events
    for event in faulted:
        assert event["error"] == "fault-injected" and event["grpc_status"] == 14, event
        assert event["route"] == "unary" and event["dst"] == "", event  # never sent upstream
    for event in served:
        assert event["grpc_status"] == 0 and event["dst"] == echo.addr, event
