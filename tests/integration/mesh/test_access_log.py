"""Access logs through real `tulle proxy` processes: JSON lines, chosen fields, sampling, scope.

Every line must parse as JSON; counts are exact where no sampling applies
and within about four standard deviations of the configured share where it
does. Lines are flushed at most every half second, so tests wait for them.
"""

from __future__ import annotations

import http.client
import json
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshkit import named_backend, start_control, wait_until
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def get_many(proxy: Proxy, paths: list[str], host: str = "books") -> list[int]:
    conn = http.client.HTTPConnection(*proxy.outbound, timeout=15)
    statuses = []
    for path in paths:
        conn.request("GET", f"http://{host}{path}")
        response = conn.getresponse()
        response.read()
        statuses.append(response.status)
    conn.close()
    return statuses


def test_every_request_gets_one_json_line(
    processes: ProcessGroup, http_backend: Backend, tmp_path: Path
) -> None:
    log = tmp_path / "access.log"
    proxy = start_proxy(
        processes, static_dst={"books": [http_backend.addr]}, extra=["--access-log", str(log)]
    )
    statuses = get_many(proxy, [f"/status/{200 + i % 3}" for i in range(20)])
    statuses += get_many(proxy, ["/"], host="nowhere")
    wait_until(lambda: len(lines(log)) >= 21, 15, "21 lines")
    entries = lines(log)
    assert len(entries) == 21
    assert [e["status"] for e in entries] == statuses
    first = entries[0]
    assert first["direction"] == "outbound"
    assert first["method"] == "GET"
    assert first["path"] == "/status/200"
    assert first["authority"] == "books"
    assert first["dst_service"] == "books"
    assert first["dst"] == http_backend.addr
    assert first["attempts"] == 1
    assert first["ts"].endswith("Z")
    assert first["latency_ms"] >= 0
    assert "error" not in first  # empty values are left out
    assert entries[-1]["error"] == "unknown-service"


def test_fields_are_selectable_and_sampling_keeps_its_share(
    processes: ProcessGroup, http_backend: Backend, tmp_path: Path
) -> None:
    log = tmp_path / "sampled.log"
    proxy = start_proxy(
        processes,
        static_dst={"books": [http_backend.addr]},
        extra=[
            "--access-log", str(log),
            "--access-log-fields", "status,path",
            "--access-log-sample", "0.3",
        ],
    )  # fmt: skip
    total = 400
    get_many(proxy, [f"/status/200?n={i}" for i in range(total)])
    # A graceful stop flushes the lines still buffered: then the file is complete.
    proxy.process.signal(signal.SIGTERM)
    assert proxy.process.wait_exit(30) == 0
    entries = lines(log)
    # p = 0.3, n = 400: sd ~= 9.2 lines; +-40 is ~4.4 sd.
    assert 80 <= len(entries) <= 160, len(entries)
    assert all(list(e) == ["status", "path"] for e in entries)
    assert len({e["path"] for e in entries}) == len(entries)


def test_scope_routes_logs_only_chosen_routes_on_http1_and_grpc(
    processes: ProcessGroup, tmp_path: Path
) -> None:
    books = named_backend(processes, "books")
    echo = start_grpc_server(processes, "echo")
    manifest = tmp_path / "mesh.yaml"
    manifest.write_text(
        f"""\
services:
  - name: books
    endpoints: [{books.addr}]
    routes:
      - {{name: logged, matches: [{{path: {{value: /logged}}}}], accessLog: true}}
      - {{name: quiet, matches: [{{path: {{value: /quiet}}}}]}}
  - name: echo
    protocol: grpc
    endpoints: [{echo.addr}]
    routes:
      - name: fail
        matches: [{{path: {{type: Exact, value: /tulle.test.echo.Echo/Fail}}}}]
        accessLog: true
"""
    )
    control = start_control(processes, manifest)
    log = tmp_path / "routes.log"
    proxy = start_proxy(
        processes,
        extra=[
            "--control-addr", control.grpc_addr,
            "--access-log", str(log),
            "--access-log-scope", "routes",
        ],
    )  # fmt: skip
    get_many(proxy, ["/quiet", "/logged", "/quiet", "/logged/x", "/other"])
    channel = grpc.insecure_channel(
        f"{proxy.outbound[0]}:{proxy.outbound[1]}", options=[("grpc.default_authority", "echo")]
    )
    with channel:
        stub = echo_pb2_grpc.EchoStub(channel)
        stub.Unary(echo_pb2.EchoRequest(payload=b"x"), timeout=10)
        with pytest.raises(grpc.RpcError):
            stub.Fail(echo_pb2.EchoRequest(status_code=5, message="no"), timeout=10)
    wait_until(lambda: len(lines(log)) >= 3, 15, "3 lines")
    entries = lines(log)
    assert [(e["route"], e["path"]) for e in entries[:2]] == [
        ("logged", "/logged"),
        ("logged", "/logged/x"),
    ]
    (grpc_line,) = entries[2:]
    assert grpc_line["route"] == "fail"
    assert grpc_line["path"] == "/tulle.test.echo.Echo/Fail"
    assert grpc_line["status"] == 200
    assert grpc_line["grpc_status"] == 5
