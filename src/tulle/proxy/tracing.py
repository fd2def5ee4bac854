"""A span per proxy hop, exported over OTLP/HTTP (protobuf), off the request path.

The request path (HTTP/1 `Exchange`, the HTTP/2 dispatcher) calls `start`
once routing has chosen a service and `finish` when the request ends; both
only touch plain Python objects. A finished, sampled span is appended to a
bounded queue; when the queue is full the span is dropped and counted,
never waited for. One exporter task per worker takes batches off the queue
every `interval_s` (or as soon as a batch is full), builds the
`ExportTraceServiceRequest` (opentelemetry-proto) and POSTs it to
`<endpoint>/v1/traces`. A collector that is down, slow or answering errors
costs the requests nothing: the POST has its own deadline, a failed batch
is dropped and counted (`trace_spans_total{result="failed"}`) and the
exporter backs off. Nothing here logs per span.

With tracing off (`TracingConfig.endpoint` empty) there is no `Tracer`:
the request path pays one `is not None` test.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import ssl
import time
import urllib.parse
from typing import TYPE_CHECKING

from tulle.core.backoff import Backoff, BackoffSpec
from tulle.core.trace import HeaderLookup, HopDecision, Sampler, decide
from tulle.proxy.config import TracingConfig

if TYPE_CHECKING:
    from tulle.proxy.metrics import Metrics

log = logging.getLogger("tulle.proxy.tracing")

# OTLP span kinds (opentelemetry.proto.trace.v1.Span.SpanKind).
KIND_SERVER = 2
KIND_CLIENT = 3
# OTLP status codes (Status.StatusCode).
_STATUS_UNSET = 0
_STATUS_ERROR = 2

_time_ns = time.time_ns
# A collector that is down is retried at most every 10 s.
_EXPORT_BACKOFF = BackoffSpec(min_s=0.5, max_s=10.0)


class Span:
    """One hop's span in flight: its decision and its start (wall clock, ns)."""

    __slots__ = ("decision", "kind", "start_ns")

    def __init__(self, decision: HopDecision, kind: int, start_ns: int) -> None:
        self.decision = decision
        self.kind = kind
        self.start_ns = start_ns


# A finished span as queued: (span, end_ns, name, attributes, error).
Finished = tuple[Span, int, str, tuple[tuple[str, str | int], ...], bool]


class Tracer:
    """One worker's tracer: the sampling decision, the queue and its exporter."""

    __slots__ = ("_backoff", "_task", "_wake", "config", "dropped", "metrics", "queue", "sampler")

    def __init__(self, config: TracingConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.sampler = Sampler(config.sample_rate)
        self.queue: collections.deque[Finished] = collections.deque()
        self.metrics = metrics
        self.dropped = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(_EXPORT_BACKOFF)

    # -- the request path ------------------------------------------------------
    def start(self, header: HeaderLookup, inbound: bool) -> Span:
        """The hop's span and the `traceparent` to forward (`span.decision.forward`)."""
        return Span(
            decide(header, self.sampler), KIND_SERVER if inbound else KIND_CLIENT, _time_ns()
        )

    def finish(
        self,
        span: Span,
        name: str,
        attributes: tuple[tuple[str, str | int], ...],
        error: bool,
    ) -> None:
        """Queue a sampled span; drop (and count) it when the queue is full."""
        if not span.decision.sampled:
            return
        queue = self.queue
        if len(queue) >= self.config.max_queue:
            self.dropped += 1
            return
        queue.append((span, _time_ns(), name, attributes, error))
        if len(queue) >= self.config.max_batch:
            self._wake.set()

    # -- the exporter ----------------------------------------------------------
    def start_exporter(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None:
            self._task = loop.create_task(self._export_loop())

    async def close(self) -> None:
        """Export what is queued (one bounded try), then stop."""
        task = self._task
        self._task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.queue:
            await self._export_once()

    def _count(self, result: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.inc("trace_spans_total", (("result", result),), n)

    async def _export_loop(self) -> None:
        interval = self.config.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            while self.queue:
                if not await self._export_once():
                    await asyncio.sleep(self._backoff.next_delay())
                    break
                self._backoff.reset()

    async def _export_once(self) -> bool:
        """One batch off the queue to the collector; False when it failed."""
        if self.dropped:
            self._count("dropped", self.dropped)
            self.dropped = 0
        batch = [self.queue.popleft() for _ in range(min(len(self.queue), self.config.max_batch))]
        if not batch:
            return True
        body = encode_spans(batch, self.config.service_name)
        try:
            ok = await asyncio.wait_for(
                post_protobuf(self.config.endpoint, "/v1/traces", body),
                self.config.export_timeout_s,
            )
        except (OSError, TimeoutError, ValueError) as exc:
            log.debug("exporting %d spans failed: %s", len(batch), exc)
            ok = False
        self._count("exported" if ok else "failed", len(batch))
        return ok


def encode_spans(batch: list[Finished], service_name: str) -> bytes:
    """An OTLP `ExportTraceServiceRequest` holding `batch`, serialised."""
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
    from opentelemetry.proto.common.v1 import common_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.append(
        common_pb2.KeyValue(
            key="service.name", value=common_pb2.AnyValue(string_value=service_name)
        )
    )
    scope = resource_spans.scope_spans.add()
    scope.scope.name = "tulle-proxy"
    for span, end_ns, name, attributes, error in batch:
        decision = span.decision
        out = scope.spans.add()
        out.trace_id = decision.trace_id
        out.span_id = decision.span_id
        if decision.parent_id is not None:
            out.parent_span_id = decision.parent_id
        out.name = name
        out.kind = span.kind  # type: ignore[assignment]
        out.start_time_unix_nano = span.start_ns
        out.end_time_unix_nano = end_ns
        out.flags = 0x100  # SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK: is_remote unknown
        for key, value in attributes:
            attr = out.attributes.add()
            attr.key = key
            if isinstance(value, int):
                attr.value.int_value = value
            else:
                attr.value.string_value = value
        out.status.code = _STATUS_ERROR if error else _STATUS_UNSET  # type: ignore[assignment]
    return request.SerializeToString()


async def post_protobuf(endpoint: str, path: str, body: bytes) -> bool:
    """POST `body` (application/x-protobuf) to `endpoint` + `path`; True on a 2xx.

    One connection per batch (a batch a second at most), closed after the answer."""
    url = urllib.parse.urlsplit(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"OTLP endpoint must be http(s)://host[:port], not {endpoint!r}")
    tls = url.scheme == "https"
    port = url.port or (443 if tls else 80)
    context = ssl.create_default_context() if tls else None
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=context)
    try:
        base = url.path.rstrip("/")
        host = url.netloc.encode()
        writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n"
            % ((base + path).encode(), host, len(body))
        )
        writer.write(body)
        await writer.drain()
        status_line = await reader.readline()
        parts = status_line.split(b" ", 2)
        return len(parts) >= 2 and parts[1][:1] == b"2"
    finally:
        writer.close()
