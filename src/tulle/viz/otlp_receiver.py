"""A small OTLP/HTTP trace receiver: what `tulle trace-receiver` (and `tulle up
--trace-receiver`) runs when the user has no collector of their own.

It accepts `POST /v1/traces` with an `ExportTraceServiceRequest` in protobuf
(`application/x-protobuf`, optionally gzip-encoded), as the OTLP/HTTP spec
says a collector does, and keeps the last `keep` spans in memory (`GET
/traces`: JSON, newest last, grouped by trace) and, when given a file,
appends each span there as one JSON line. Anything else is refused with a
4xx; bodies are bounded (`MAX_BODY`), and so is the request head.
"""

from __future__ import annotations

import asyncio
import collections
import gzip
import io
import json
import zlib
from pathlib import Path
from typing import Any, TextIO

MAX_BODY = 8 * 1024 * 1024
MAX_HEAD_LINES = 100
_READ_TIMEOUT_S = 10.0


def decode_spans(body: bytes) -> list[dict[str, Any]]:
    """The spans of an OTLP `ExportTraceServiceRequest` as flat dicts (ids in hex).

    Raises ValueError when the body is not one."""
    from google.protobuf.message import DecodeError
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

    request = trace_service_pb2.ExportTraceServiceRequest()
    try:
        request.ParseFromString(body)
    except DecodeError as exc:
        raise ValueError(f"not an ExportTraceServiceRequest: {exc}") from None
    out: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                out.append(
                    {
                        "service": resource.get("service.name", ""),
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": int(span.kind),
                        "start_ns": span.start_time_unix_nano,
                        "end_ns": span.end_time_unix_nano,
                        "status": int(span.status.code),
                        "attributes": {kv.key: _value(kv.value) for kv in span.attributes},
                    }
                )
    return out


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind in ("string_value", "int_value", "bool_value", "double_value"):
        return getattr(value, kind)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return None


class Receiver:
    """The spans received so far (bounded), and where each is appended."""

    def __init__(self, keep: int = 10_000, out: TextIO | None = None) -> None:
        self.spans: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep)
        self.out = out
        self.received = 0

    def accept(self, body: bytes) -> int:
        spans = decode_spans(body)
        self.spans.extend(spans)
        self.received += len(spans)
        if self.out is not None and spans:
            self.out.write("".join(json.dumps(s, sort_keys=True) + "\n" for s in spans))
            self.out.flush()
        return len(spans)

    def traces(self) -> dict[str, Any]:
        grouped: dict[str, list[dict[str, Any]]] = {}
        for span in self.spans:
            grouped.setdefault(span["trace_id"], []).append(span)
        return {
            "received": self.received,
            "traces": [{"trace_id": tid, "spans": spans} for tid, spans in grouped.items()],
        }

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await asyncio.wait_for(self._one(reader, writer), _READ_TIMEOUT_S):
                pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection ends."""
        request_line = await reader.readline()
        if not request_line:
            return False
        parts = request_line.split()
        if len(parts) != 3:
            _answer(writer, 400, b"text/plain", b"bad request line\n")
            return False
        method, target = parts[0], parts[1]
        headers: dict[bytes, bytes] = {}
        for _ in range(MAX_HEAD_LINES):
            line = await reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        else:
            _answer(writer, 431, b"text/plain", b"too many header lines\n")
            return False
        if headers.get(b"transfer-encoding"):
            _answer(writer, 411, b"text/plain", b"send a Content-Length\n")
            return False
        try:
            length = int(headers.get(b"content-length", b"0"))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            _answer(writer, 413, b"text/plain", b"body too large or length invalid\n")
            return False
        body = await reader.readexactly(length)
        keep = headers.get(b"connection", b"").lower() != b"close"
        path = target.split(b"?", 1)[0]
        if method == b"POST" and path == b"/v1/traces":
            if headers.get(b"content-type", b"").split(b";")[0] != b"application/x-protobuf":
                _answer(writer, 415, b"text/plain", b"expected application/x-protobuf\n")
                return keep
            if headers.get(b"content-encoding") == b"gzip":
                try:
                    body = _gunzip(body)
                except (OSError, EOFError, zlib.error, ValueError):
                    _answer(writer, 400, b"text/plain", b"bad gzip body\n")
                    return keep
            try:
                self.accept(body)
            except ValueError as exc:
                _answer(writer, 400, b"text/plain", str(exc).encode() + b"\n")
                return keep
            # An empty ExportTraceServiceResponse: full success.
            _answer(writer, 200, b"application/x-protobuf", b"")
        elif method == b"GET" and path == b"/traces":
            _answer(writer, 200, b"application/json", json.dumps(self.traces()).encode())
        elif method == b"GET" and path == b"/ready":
            _answer(writer, 200, b"text/plain", b"ready\n")
        else:
            _answer(writer, 404, b"text/plain", b"POST /v1/traces or GET /traces\n")
        await writer.drain()
        return keep


def _gunzip(body: bytes) -> bytes:
    """Decompress, bounded: a small bomb must not take the receiver's memory."""
    with gzip.GzipFile(fileobj=io.BytesIO(body)) as f:
        data = f.read(MAX_BODY + 1)
    if len(data) > MAX_BODY:
        raise ValueError("decompressed body too large")
    return data


def _answer(writer: asyncio.StreamWriter, status: int, ctype: bytes, body: bytes) -> None:
    writer.write(
        b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
        % (status, b"OK" if status == 200 else b"Error", ctype, len(body))
        + body
    )


async def serve(host: str, port: int, out: Path | None, keep: int = 10_000) -> None:
    """Run the receiver until cancelled."""
    stream = out.open("a", encoding="utf-8") if out is not None else None
    receiver = Receiver(keep, stream)
    server = await asyncio.start_server(receiver.handle, host, port)
    try:
        async with server:
            await server.serve_forever()
    finally:
        if stream is not None:
            stream.close()
