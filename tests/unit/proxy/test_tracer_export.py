"""The tracer's queue and OTLP encoding, without sockets: spans round-trip
through the receiver's decoder; a full queue drops and counts."""

from __future__ import annotations

import pytest

from tulle.core.trace import parse_traceparent
from tulle.proxy.config import TracingConfig
from tulle.proxy.tracing import KIND_CLIENT, Tracer, encode_spans
from tulle.viz.otlp_receiver import Receiver, decode_spans

CALLER = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_spans_round_trip_through_otlp() -> None:
    tracer = Tracer(TracingConfig(endpoint="http://collector:4318", sample_rate=0.0))
    span = tracer.start({b"traceparent": CALLER}.get, inbound=False)
    assert span.decision.sampled  # the caller's decision, not the rate
    tracer.finish(span, "outbound GET books", (("http.response.status_code", 200),), False)
    assert len(tracer.queue) == 1
    body = encode_spans(list(tracer.queue), "web")
    [decoded] = decode_spans(body)
    assert decoded["service"] == "web"
    assert decoded["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert decoded["parent_span_id"] == "00f067aa0ba902b7"
    assert decoded["span_id"] == span.decision.span_id.hex()
    assert decoded["kind"] == KIND_CLIENT
    assert decoded["attributes"] == {"http.response.status_code": 200}
    assert decoded["end_ns"] >= decoded["start_ns"] > 0
    forwarded = parse_traceparent(span.decision.forward or b"")
    assert forwarded is not None and forwarded.parent_id == span.decision.span_id


def test_unsampled_spans_are_not_queued() -> None:
    tracer = Tracer(TracingConfig(endpoint="http://c:4318", sample_rate=1.0))
    span = tracer.start({b"traceparent": CALLER[:-2] + b"00"}.get, inbound=True)
    tracer.finish(span, "inbound GET", (), False)
    assert not tracer.queue


def test_full_queue_drops_and_counts() -> None:
    tracer = Tracer(TracingConfig(endpoint="http://c:4318", max_queue=3, max_batch=10))
    for _ in range(5):
        tracer.finish(tracer.start({}.get, inbound=False), "x", (), False)
    assert len(tracer.queue) == 3
    assert tracer.dropped == 2


def test_receiver_refuses_garbage() -> None:
    receiver = Receiver(keep=2)
    with pytest.raises(ValueError):
        receiver.accept(b"\xff\xff\xff")
    tracer = Tracer(TracingConfig(endpoint="http://c:4318"))
    batch = []
    for _ in range(3):
        span = tracer.start({}.get, inbound=False)
        batch.append((span, span.start_ns + 1, "x", (), False))
    assert receiver.accept(encode_spans(batch, "s")) == 3
    assert receiver.received == 3 and len(receiver.spans) == 2  # bounded
