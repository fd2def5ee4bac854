"""Distributed tracing through real proxies: spans exported over OTLP/HTTP to
`tulle trace-receiver`, parent/child across two hops, on HTTP/1 and gRPC.

client -> proxy A outbound (`svc` = proxy B inbound) -> proxy B inbound -> app.
The app echoes the `traceparent` it received, so the test sees what the last
hop forwarded. A proxy whose collector is down still answers every request.
"""

from __future__ import annotations

import http.client
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from meshkit import header_echo, wait_until
from support.mesh import Proxy, start_proxy
from support.ports import LOOPBACK, free_port, refused_port
from support.process import ProcessGroup, http_status

HTTP2_TESTS = Path(__file__).resolve().parents[1] / "http2"
sys.path.insert(0, str(HTTP2_TESTS))

from grpc_service import echo_pb2, echo_pb2_grpc  # noqa: E402
from h2support import start_grpc_server  # noqa: E402

pytestmark = pytest.mark.integration

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
KIND_SERVER, KIND_CLIENT = 2, 3


class Receiver:
    def __init__(self, group: ProcessGroup, out: Path) -> None:
        self.port = free_port()
        self.out = out
        self.process = group.tulle(
            "trace-receiver",
            ["trace-receiver", "--listen", f"{LOOPBACK}:{self.port}", "--out", str(out)],
        )
        self.process.wait_for(
            lambda: http_status(LOOPBACK, self.port, "/ready") == 200, "receiver ready"
        )

    @property
    def endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def spans(self, trace_id: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(f"{self.endpoint}/traces", timeout=5) as response:
            document = json.loads(response.read())
        for trace in document["traces"]:
            if trace["trace_id"] == trace_id:
                return list(trace["spans"])
        return []

    def wait_spans(self, trace_id: str, count: int) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []

        def enough() -> bool:
            found[:] = self.spans(trace_id)
            return len(found) >= count

        wait_until(enough, 20, f"{count} spans of trace {trace_id}")
        return found


@pytest.fixture(scope="module")
def receiver(module_processes: ProcessGroup, tmp_path_factory: pytest.TempPathFactory) -> Receiver:
    return Receiver(module_processes, tmp_path_factory.mktemp("traces") / "spans.jsonl")


@pytest.fixture(scope="module")
def hops(module_processes: ProcessGroup, receiver: Receiver) -> tuple[Proxy, Proxy]:
    app = header_echo(module_processes, "traceparent-app", "traceparent")
    trace = ["--otlp-endpoint", receiver.endpoint]
    b = start_proxy(module_processes, app_addr=app, extra=trace, name="trace-b")
    a = start_proxy(
        module_processes,
        static_dst={"svc": [f"{LOOPBACK}:{b.inbound_port}"]},
        extra=trace,
        name="trace-a",
    )
    return a, b


def get(proxy: Proxy, headers: dict[str, str]) -> tuple[int, str]:
    connection = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    try:
        connection.request("GET", "/items/1", headers={"Host": "svc", **headers})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def parse(traceparent: str) -> tuple[str, str, str]:
    version, trace_id, parent, flags = traceparent.split("-")
    assert version == "00"
    return trace_id, parent, flags


def test_new_trace_spans_two_hops_parent_and_child(
    hops: tuple[Proxy, Proxy], receiver: Receiver
) -> None:
    a, _ = hops
    status, forwarded = get(a, {})
    assert status == 200
    trace_id, app_parent, flags = parse(forwarded)
    assert flags == "01"
    spans = receiver.wait_spans(trace_id, 2)
    by_kind = {span["kind"]: span for span in spans}
    outbound, inbound = by_kind[KIND_CLIENT], by_kind[KIND_SERVER]
    # A started the trace; B's span is A's child; the app's parent is B's span.
    assert outbound["parent_span_id"] == ""
    assert inbound["parent_span_id"] == outbound["span_id"]
    assert app_parent == inbound["span_id"]
    assert outbound["attributes"]["http.response.status_code"] == 200
    assert outbound["attributes"]["tulle.direction"] == "outbound"
    assert outbound["attributes"]["url.path"] == "/items/1"
    assert inbound["attributes"]["tulle.direction"] == "inbound"
    assert inbound["start_ns"] >= outbound["start_ns"]
    assert inbound["end_ns"] <= outbound["end_ns"]
    # The receiver also wrote them to its file, one JSON line each.
    lines = [json.loads(line) for line in receiver.out.read_text().splitlines()]
    assert {s["span_id"] for s in lines if s["trace_id"] == trace_id} == {
        outbound["span_id"],
        inbound["span_id"],
    }


def test_caller_sampled_trace_is_continued(hops: tuple[Proxy, Proxy], receiver: Receiver) -> None:
    a, _ = hops
    status, forwarded = get(a, {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"})
    assert status == 200
    assert parse(forwarded)[0] == CALLER_TRACE
    spans = receiver.wait_spans(CALLER_TRACE, 2)
    outbound = next(s for s in spans if s["kind"] == KIND_CLIENT)
    assert outbound["parent_span_id"] == CALLER_SPAN


def test_caller_unsampled_is_followed(hops: tuple[Proxy, Proxy], receiver: Receiver) -> None:
    a, _ = hops
    unsampled_trace = "a" * 32
    caller = f"00-{unsampled_trace}-{CALLER_SPAN}-00"
    status, forwarded = get(a, {"traceparent": caller})
    assert status == 200
    # Nobody recorded a span, so the caller's span is still the app's parent.
    assert forwarded == caller
    # A sampled request after it: once its spans are in, the unsampled
    # request's would have been exported before them (one queue per proxy).
    marker = "b" * 32
    get(a, {"traceparent": f"00-{marker}-{CALLER_SPAN}-01"})
    receiver.wait_spans(marker, 2)
    assert receiver.spans(unsampled_trace) == []


def test_b3_in_w3c_out(hops: tuple[Proxy, Proxy], receiver: Receiver) -> None:
    a, _ = hops
    b3_trace = "c" * 16  # a 64-bit B3 trace id, left-padded to 128 bits
    status, forwarded = get(a, {"b3": f"{b3_trace}-{CALLER_SPAN}-1"})
    assert status == 200
    trace_id = "0" * 16 + b3_trace
    assert parse(forwarded)[0] == trace_id
    spans = receiver.wait_spans(trace_id, 2)
    assert next(s for s in spans if s["kind"] == KIND_CLIENT)["parent_span_id"] == CALLER_SPAN


def test_grpc_spans_two_hops(module_processes: ProcessGroup, receiver: Receiver) -> None:
    server = start_grpc_server(module_processes, "trace-grpc")
    trace = ["--otlp-endpoint", receiver.endpoint]
    b = start_proxy(module_processes, app_addr=server.addr, extra=trace, name="trace-grpc-b")
    a = start_proxy(
        module_processes,
        static_dst={"echo": [f"{LOOPBACK}:{b.inbound_port}"]},
        extra=trace,
        name="trace-grpc-a",
    )
    channel = grpc.insecure_channel(
        f"{LOOPBACK}:{a.outbound_port}", options=[("grpc.default_authority", "echo")]
    )
    stub = echo_pb2_grpc.EchoStub(channel)
    trace_id = "d" * 32
    stub.Unary(
        echo_pb2.EchoRequest(payload=b"x"),
        timeout=10,
        metadata=[("traceparent", f"00-{trace_id}-{CALLER_SPAN}-01")],
    )
    channel.close()
    spans = receiver.wait_spans(trace_id, 2)
    outbound = next(s for s in spans if s["kind"] == KIND_CLIENT)
    inbound = next(s for s in spans if s["kind"] == KIND_SERVER)
    assert outbound["parent_span_id"] == CALLER_SPAN
    assert inbound["parent_span_id"] == outbound["span_id"]
    for span in (outbound, inbound):
        assert span["attributes"]["tulle.protocol"] == "grpc"
        assert span["attributes"]["rpc.grpc.status_code"] == 0


def test_collector_down_costs_requests_nothing(module_processes: ProcessGroup) -> None:
    app = header_echo(module_processes, "traceparent-app-2", "traceparent")
    proxy = start_proxy(
        module_processes,
        static_dst={"svc": [app]},
        extra=["--otlp-endpoint", f"http://{LOOPBACK}:{refused_port()}"],
        name="trace-down",
    )
    connection = http.client.HTTPConnection(*proxy.outbound, timeout=10)
    started = time.monotonic()
    for _ in range(300):
        connection.request("GET", "/", headers={"Host": "svc"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200
    elapsed = time.monotonic() - started
    connection.close()
    # Far below what one export deadline (2 s) per batch would cost, if it blocked.
    assert elapsed < 15, elapsed

    def failed() -> bool:
        return sum(v for _, v in proxy.metrics().matching("trace_spans_total", result="failed")) > 0

    wait_until(failed, 20, "trace_spans_total{result=failed}")
