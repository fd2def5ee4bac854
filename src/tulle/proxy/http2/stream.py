"""One proxied HTTP/2 stream: a client stream joined to an upstream stream.

Theory of operation. A `ProxyStream` owns two one-way pipes (`HalfStream`):
the request (client -> upstream) and the response (upstream -> client). DATA
received on one side is queued in its pipe and sent on the other side as far
as that side's flow-control window allows. Received DATA is acknowledged to
its sender (`acknowledge_received_data`) only once it has been handed to the
other side, so a slow reader closes the window of a fast writer: the proxy
buffers at most one receive window per stream, and one connection window per
connection, whatever the peers do.

The stream ends normally when both pipes have sent their end (END_STREAM or
trailers). A response that ends while the request is still open ends the
request too (RST_STREAM NO_ERROR downstream, CANCEL upstream; RFC 9113 8.1).
A reset on either side resets the other. A failure the proxy sees (no
connection, upstream reset before a response, deadline) becomes a proper
error response when none has started: a trailers-only gRPC status for gRPC
requests, an HTTP status otherwise, each with `tulle-proxy-error` (the one
`ProxyError` table of `tulle.proxy.errors`).

Attempts. With a `Call` (the stream's request plan), a failure before any of
the response reached the client -- the connection failed, the upstream reset
the stream, a 5xx, or a gRPC status the route retries -- is offered to the
call, which may grant another attempt (`tulle.proxy.plan`'s rule, budget and
cap). The stream then keeps its request for replay: its headers and its DATA
up to the call's `replay_limit` (a copy: the client's window is still
acknowledged as the bytes go upstream, so flow control is unchanged). A new
attempt drops the old upstream stream and sends the kept request on a new
one; the stream's deadline (grpc-timeout or the route's) covers every
attempt. On a route that retries gRPC statuses, a gRPC response's headers
are held until its first message or its trailers, so that a status sent in
trailers with no message (not trailers-only) is retried too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from tulle.codec.http2 import GrpcStatus, Header, grpc_status_of, is_success
from tulle.core.outcome import CANCELLED, FAILURE, SUCCESS, Outcome
from tulle.core.retry import NOT_SENT, RESET, STATUS
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.http2.dispatch import H2Counters, Routed

from .codec import H2Codec
from .connection import Outbox

# Failures of the connection before this stream was sent on it: nothing
# reached the upstream (connect, TLS, identity; a GOAWAY above our stream).
_UNSENT_ERRORS = frozenset(
    {
        ProxyError.CONNECT_REFUSED,
        ProxyError.CONNECT_ERROR,
        ProxyError.CONNECT_TIMEOUT,
        ProxyError.TLS_HANDSHAKE_FAILED,
        ProxyError.IDENTITY_MISMATCH,
        ProxyError.UPSTREAM_GOAWAY,
    }
)
# Failures of a dial: the legacy reroute (no `Call`) tries another endpoint once.
_CONNECT_ERRORS = _UNSENT_ERRORS - {ProxyError.UPSTREAM_GOAWAY}


def error_response(
    error: ProxyError,
    is_grpc: bool,
    detail: str,
    *,
    status: int = 0,
    grpc_status: int = -1,
    extra: tuple[Header, ...] = (),
) -> tuple[list[Header], bytes]:
    """Headers and body of a proxy-generated response (gRPC: trailers-only, no body).

    `status` / `grpc_status` replace the error's own (an injected fault's
    configured answer); `extra` headers are added (`retry-after`). A gRPC
    caller gets the error's gRPC status unless `grpc_status` is set, or,
    when only `status` is set, that HTTP status (as a fault configured with
    an HTTP status alone answers every caller)."""
    reason = error.reason.encode()
    if is_grpc and (grpc_status >= 0 or not status):
        message = (detail or error.reason).encode("ascii", "replace")
        return [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-status", str(grpc_status if grpc_status >= 0 else error.grpc_status).encode()),
            (b"grpc-message", _percent_encode(message)),
            (b"tulle-proxy-error", reason),
            *extra,
        ], b""
    body = (detail or error.reason).encode("utf-8", "replace") + b"\n"
    return [
        (b":status", str(status or error.http_status).encode()),
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", str(len(body)).encode()),
        (b"tulle-proxy-error", reason),
        *extra,
    ], body


def _percent_encode(message: bytes) -> bytes:
    # grpc-message is percent-encoded outside printable ASCII (and '%' itself).
    out = bytearray()
    for byte in message:
        if 0x20 <= byte <= 0x7E and byte != 0x25:
            out.append(byte)
        else:
            out += b"%%%02X" % byte
    return bytes(out)


class DownSide(Protocol):
    """The client-facing connection as a stream sees it."""

    @property
    def h2(self) -> H2Codec: ...
    @property
    def writable(self) -> bool: ...

    # True while queued in the outbox: `mark_dirty` is then a no-op, skipped.
    dirty: bool

    def mark_dirty(self) -> None: ...
    def forget_stream(self, stream_id: int) -> None: ...


class UpSide(Protocol):
    """The upstream connection as a stream sees it."""

    @property
    def h2(self) -> H2Codec: ...
    @property
    def writable(self) -> bool: ...

    dirty: bool

    def mark_dirty(self) -> None: ...
    def release_stream(self, stream_id: int) -> None: ...


class HalfStream:
    """One direction of a stream: queued DATA not yet sent, and how it ends."""

    __slots__ = ("buffered", "chunks", "end", "end_sent", "trailers")

    def __init__(self) -> None:
        # (data, flow-controlled length to acknowledge once data is sent)
        self.chunks: deque[tuple[bytes | memoryview, int]] = deque()
        self.buffered = 0
        self.end = False  # the sender has ended this direction
        self.end_sent = False  # ...and the end has been passed on
        self.trailers: list[Header] | None = None

    def drop(self) -> int:
        """Forget queued data; the flow-controlled bytes to acknowledge for it."""
        flow = sum(f for _, f in self.chunks)
        self.chunks.clear()
        self.buffered = 0
        return flow


def pump(half: HalfStream, conn: H2Codec, stream_id: int) -> int:
    """Send what the window allows of `half` on `conn`; the flow-controlled bytes now sent."""
    acked = 0
    chunks = half.chunks
    while chunks:
        data, flow = chunks[0]
        size = len(data)
        window = conn.local_flow_control_window(stream_id)
        frame_max = conn.max_outbound_frame_size
        if size <= window and size <= frame_max:
            last = len(chunks) == 1 and half.end and half.trailers is None
            conn.send_data(stream_id, data, end_stream=last)
            chunks.popleft()
            acked += flow
            half.buffered -= size
            if last:
                half.end_sent = True
                return acked
            continue
        n = min(window, frame_max)
        if n <= 0:
            return acked
        view = memoryview(data)
        conn.send_data(stream_id, view[:n])
        chunks[0] = (view[n:], flow - n)
        acked += n
        half.buffered -= n
    if half.end and not half.end_sent:
        half.end_sent = True
        if half.trailers is not None:
            conn.send_headers(stream_id, half.trailers, end_stream=True)
        else:
            conn.end_stream(stream_id)
    return acked


class ProxyStream:
    """A client stream joined to at most one upstream stream."""

    __slots__ = (
        "_counters",
        "_deadline",
        "_loop",
        "_outbox",
        "attach",
        "call",
        "closed",
        "down",
        "down_id",
        "error",
        "grpc_status",
        "held",
        "is_grpc",
        "replay",
        "replay_bytes",
        "replay_headers",
        "request",
        "request_headers",
        "reroute",
        "response",
        "response_started",
        "routed",
        "started_at",
        "status",
        "up",
        "up_id",
        "up_open",
    )

    def __init__(
        self,
        down: DownSide,
        down_id: int,
        routed: Routed,
        request_headers: Sequence[Header],
        *,
        is_grpc: bool,
        outbox: Outbox,
        counters: H2Counters,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.down = down
        self.down_id = down_id
        self.routed = routed
        self.request_headers: Sequence[Header] | None = request_headers
        self.is_grpc = is_grpc
        self.up: UpSide | None = None
        self.up_id = 0
        # Whether the upstream stream is still open as far as h2 is concerned.
        self.up_open = False
        self.request = HalfStream()
        self.response = HalfStream()
        self.response_started = False
        self.status = 0
        self.grpc_status: int | None = None
        self.closed = False
        self._outbox = outbox
        self._counters = counters
        self._loop = loop
        self.started_at = loop.time()
        self._deadline: asyncio.TimerHandle | None = None
        # Set by the server: route this stream again after a failed connect
        # (once; nothing was sent, so any request may go elsewhere). Only
        # without a `Call`, which decides retries itself.
        self.reroute: Callable[[ProxyStream], bool] | None = None
        # Set by the server: give the stream an upstream stream (a new attempt).
        self.attach: Callable[[ProxyStream], None] | None = None
        # The reason of the proxy-made answer that ended the stream, if any.
        self.error = ""
        # A gRPC response's headers held back (see the module docstring).
        self.held: list[Header] | None = None
        self.call = routed.call
        # What a new attempt sends: the request's headers and DATA, while
        # within the call's replay limit (None: not kept, no replay).
        self.replay_headers: Sequence[Header] | None = None
        self.replay: list[bytes] | None = None
        self.replay_bytes = 0
        if self.call is not None:
            self.replay_headers = request_headers
            self.replay = []

    def set_deadline(self, seconds: float) -> None:
        """End the stream `seconds` from now, unless an earlier deadline is set."""
        when = self._loop.time() + seconds
        current = self._deadline
        if current is not None:
            if current.when() <= when:
                return
            current.cancel()
        self._deadline = self._loop.call_at(when, self._deadline_passed)

    # -- upstream binding -----------------------------------------------------
    def bind_upstream(self, up: UpSide, up_id: int) -> None:
        """The upstream stream exists (its HEADERS are queued); start sending the body."""
        self.up = up
        self.up_id = up_id
        self.up_open = True
        self.request_headers = None
        request = self.request
        if request.chunks or (request.end and not request.end_sent):
            self.pump_request()

    # -- client side ------------------------------------------------------------
    def on_request_data(self, data: bytes, flow: int, end: bool = False) -> None:
        """DATA from the client; `end`: the frame ended the request (codec's DATA_END)."""
        if self.closed:
            return
        if not data:
            # Nothing to forward (padding only): hand the window back at once.
            if flow:
                self.down.h2.acknowledge_received_data(flow, self.down_id)
                self.down.mark_dirty()
            if end:
                self.on_request_end(None)
            return
        request = self.request
        request.chunks.append((data, flow))
        request.buffered += len(data)
        if end:
            # As `on_request_end(None)`: no trailers to edit, one pump for both.
            request.end = True
            request.trailers = None
        replay = self.replay
        if replay is not None:
            self.replay_bytes += len(data)
            call = self.call
            if call is not None and self.replay_bytes <= call.replay_limit:
                replay.append(data)
            else:
                self.replay = None
        self.pump_request()

    def on_request_end(self, trailers: list[Header] | None) -> None:
        if self.closed:
            return
        self.request.end = True
        if trailers and self.call is not None:
            edits = self.call.edits
            if edits is not None and edits.claim_headers is not None:
                # Inbound JWT: a caller's claim header in the trailers goes too.
                strip = edits.claim_headers[0]
                trailers = [t for t in trailers if t[0] not in strip] or None
        self.request.trailers = trailers
        self.pump_request()

    def on_client_reset(self) -> None:
        """The client reset the stream (e.g. a cancelled gRPC call): cancel upstream."""
        if self.closed:
            return
        self._counters.streams_reset_by_client += 1
        status = self.status if self.response_started else 499
        grpc = GrpcStatus.CANCELLED if self.is_grpc else None
        self._reset_upstream(ErrorCodes.CANCEL)
        # The client gave up: nothing is learned about the endpoint.
        self.error = "client-gone"
        self._finish(status, grpc, CANCELLED)

    def pump_request(self) -> None:
        up = self.up
        request = self.request
        if up is None or not self.up_open or self.closed or request.end_sent:
            return
        if not request.chunks and not request.end:
            return  # nothing to send yet (a body still to come)
        if not up.writable:
            return  # resumed by the connection's writable_again()
        try:
            sent = pump(request, up.h2, self.up_id)
        except H2Error:
            # The upstream stream closed under us (its reset is on the way).
            return
        if not up.dirty:
            up.mark_dirty()
        if sent:
            down = self.down
            down.h2.acknowledge_received_data(sent, self.down_id)
            if not down.dirty:
                down.mark_dirty()

    # -- upstream side -----------------------------------------------------------
    def on_response_headers(self, headers: list[Header], end_stream: bool) -> None:
        if self.closed:
            return
        status = headers[0][1] if headers and headers[0][0] == b":status" else _find_status(headers)
        code = int(status) if status.isdigit() else 0
        if 100 <= code < 200:
            # Informational (100 Continue, 103 Early Hints): pass on, keep waiting.
            self._send_down_headers(headers, end_stream=False)
            return
        call = self.call
        if call is not None:
            grpc = grpc_status_of(headers) if self.is_grpc and end_stream else None
            if (code >= 500 or (grpc is not None and grpc != 0)) and self._retry(
                STATUS, code, -1 if grpc is None else grpc
            ):
                return
            if self.is_grpc and not end_stream and call.hold_headers():
                # Wait for the first message or the trailers (module docstring).
                self.status = code
                self.held = headers
                return
        self.status = code
        self.response_started = True
        if end_stream:
            self.grpc_status = grpc_status_of(headers) if self.is_grpc else None
            self.response.end = self.response.end_sent = True
        self._send_down_headers(headers, end_stream=end_stream)
        if end_stream:
            self._response_complete()

    def on_response_data(self, data: bytes, flow: int, end: bool = False) -> None:
        """DATA from the upstream; `end`: the frame ended the response (codec's DATA_END)."""
        up = self.up
        if self.closed or up is None:
            return
        if not data:
            if flow:
                up.h2.acknowledge_received_data(flow, self.up_id)
                up.mark_dirty()
            if end:
                self.on_response_end(None)
            return
        if self.held is not None:
            self._release_held()
        response = self.response
        response.chunks.append((data, flow))
        response.buffered += len(data)
        if end and not response.end:
            # As `on_response_end(None)` (the held headers went just above).
            response.end = True
            response.trailers = None
        self.pump_response()

    def on_response_end(self, trailers: list[Header] | None) -> None:
        if self.closed or self.response.end:
            return
        if trailers is not None and self.is_grpc:
            self.grpc_status = grpc_status_of(trailers)
        if self.held is not None:
            grpc = self.grpc_status
            if grpc is not None and grpc != 0 and self._retry(STATUS, self.status, grpc):
                return
            self._release_held()
        self.response.end = True
        self.response.trailers = trailers
        self.pump_response()

    def on_upstream_reset(self, error_code: int) -> None:
        if self.closed:
            return
        self._counters.streams_reset_by_upstream += 1
        self.up_open = False  # h2 has closed the upstream stream already
        if not self.response_started:
            # REFUSED_STREAM: the upstream did no work on it (RFC 9113 8.7).
            refused = error_code == ErrorCodes.REFUSED_STREAM
            if self._retry(NOT_SENT if refused else RESET, 0, -1):
                return
            self.fail(ProxyError.UPSTREAM_RESET, f"upstream reset the stream ({error_code})")
            return
        self._reset_down(error_code)
        self.error = "upstream-reset-mid-response"
        self._finish(self.status, self.grpc_status, FAILURE)

    def on_upstream_failed(self, error: ProxyError, detail: str) -> None:
        """The upstream connection failed or went away without this stream."""
        self.up_open = False
        if self.call is not None:
            if not self.response_started:
                # Never bound to an upstream stream, or refused above a GOAWAY:
                # the upstream never saw it.
                unsent = self.request_headers is not None or error in _UNSENT_ERRORS
                if self._retry(NOT_SENT if unsent else RESET, 0, -1):
                    return
            self.fail(error, detail)
            return
        reroute = self.reroute
        if (
            error in _CONNECT_ERRORS
            and reroute is not None
            and self.request_headers is not None
            and not self.closed
        ):
            self.reroute = None
            self.up = None
            # The balancer hears about the failed endpoint before the next pick.
            done = self.routed.done
            if done is not None:
                status = 200 if self.is_grpc else error.http_status
                grpc = error.grpc_status if self.is_grpc else None
                done(status, grpc, self._loop.time() - self.started_at, FAILURE)
            if reroute(self):
                return
        self.fail(error, detail)

    def pump_response(self) -> None:
        down = self.down
        if self.closed or not down.writable:
            return  # resumed by the connection's writable_again()
        try:
            sent = pump(self.response, down.h2, self.down_id)
        except H2Error:
            return
        if not down.dirty:
            down.mark_dirty()
        up = self.up
        if sent and up is not None:
            up.h2.acknowledge_received_data(sent, self.up_id)
            if not up.dirty:
                up.mark_dirty()
        if self.response.end_sent:
            self._response_complete()

    # -- failures ----------------------------------------------------------------
    def fail(self, error: ProxyError, detail: str = "", outcome: Outcome = FAILURE) -> None:
        """End the stream with a proxy-generated error, however far it had got.

        `outcome` is what the attempt tells about the endpoint: a failure,
        unless the proxy itself ended it (a drain), which is CANCELLED."""
        if self.closed:
            return
        self._counters.proxy_errors += 1
        self.error = error.reason
        call = self.call
        if call is not None:
            call.proxy_error(error)
        self._reset_upstream(ErrorCodes.CANCEL)
        down = self.down
        grpc: int | None
        if not self.response_started:
            headers, body = error_response(error, self.is_grpc, detail)
            self.status = error.http_status if not self.is_grpc else 200
            grpc = error.grpc_status if self.is_grpc else None
            try:
                down.h2.send_headers(self.down_id, headers, end_stream=not body)
                if body:
                    down.h2.send_data(self.down_id, body, end_stream=True)
            except H2Error:
                pass
            if not self.request.end:
                # The client may still be sending a body nobody will read.
                self._reset_down(ErrorCodes.NO_ERROR)
            down.mark_dirty()
            self._finish(self.status, grpc, outcome)
            return
        if self.is_grpc and not self.response.end_sent:
            # Mid-response: end it with a status in trailers, now, whatever the
            # window (trailers are not flow-controlled).
            grpc = error.grpc_status
            self.response.drop()
            trailers = [
                (b"grpc-status", str(grpc).encode()),
                (b"grpc-message", error.reason.encode()),
                (b"tulle-proxy-error", error.reason.encode()),
            ]
            with contextlib.suppress(H2Error):
                down.h2.send_headers(self.down_id, trailers, end_stream=True)
            if not self.request.end:
                self._reset_down(ErrorCodes.NO_ERROR)
            down.mark_dirty()
            self._finish(self.status, grpc, outcome)
            return
        self._reset_down(
            ErrorCodes.CANCEL if error is ProxyError.RESPONSE_TIMEOUT else ErrorCodes.INTERNAL_ERROR
        )
        self._finish(self.status, self.grpc_status, outcome)

    def _deadline_passed(self) -> None:
        self._deadline = None
        self.fail(ProxyError.RESPONSE_TIMEOUT, "deadline exceeded in proxy")
        self._outbox.flush()

    # -- endings -------------------------------------------------------------------
    def _response_complete(self) -> None:
        """The response has been passed on in full."""
        if not self.request.end_sent:
            # RFC 9113 8.1: a complete response ends the request; stop the
            # client sending and the upstream waiting.
            self._reset_upstream(ErrorCodes.CANCEL)
            if not self.request.end:
                self._reset_down(ErrorCodes.NO_ERROR)
        success = is_success(self.status, self.grpc_status)
        self._finish(self.status, self.grpc_status, SUCCESS if success else FAILURE)

    def _finish(self, status: int, grpc: int | None, outcome: Outcome) -> None:
        """Release both sides and report once."""
        if self.closed:
            return
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        # Give back the window of whatever was queued and will never be sent.
        if self.request.chunks:
            flow = self.request.drop()
            if flow:
                self.down.h2.acknowledge_received_data(flow, self.down_id)
                self.down.mark_dirty()
        up = self.up
        if up is not None:
            if self.response.chunks:
                flow = self.response.drop()
                if flow:
                    # Valid on a closed stream too: it frees the connection window.
                    up.h2.acknowledge_received_data(flow, self.up_id)
            up.release_stream(self.up_id)
            if not up.dirty:
                up.mark_dirty()
            self.up = None
            self.up_open = False
        self.down.forget_stream(self.down_id)
        call = self.call
        if call is not None and call.mirrored:
            # After the answer, so the copy never delays it; only a request
            # the client ended and whose body was kept whole is copied.
            request = self.request
            call.copy(
                self.replay_headers,
                self.replay if request.end else None,
                request.trailers,
            )
        self.replay = None
        if call is not None:
            # A response passed on in full is the endpoint's answer, whatever
            # its status: the call judges it (`RequestPlan.judge`).
            completed = outcome is not CANCELLED and not self.error
            call.ended(status, grpc, SUCCESS if completed else outcome, self.error)
        done = self.routed.done
        if done is not None:
            done(status, grpc, self._loop.time() - self.started_at, outcome)

    # -- attempts ------------------------------------------------------------------
    def _retry(self, failure: int, status: int, grpc_status: int) -> bool:
        """Offer the failed attempt to the call; True when the stream is taken
        care of (a new attempt is under way, or the refusal answered)."""
        call = self.call
        attach = self.attach
        if call is None or attach is None or self.closed or self.response_started:
            return False
        replayable = self.replay is not None and self.replay_headers is not None
        nxt = call.next_attempt(failure, status, grpc_status, replayable, self.request.end)
        if nxt is None:
            return False
        if isinstance(nxt, Refused):
            self.fail(nxt.error, nxt.detail)
            return True
        # Drop the failed upstream stream, keeping the client's window right.
        self._reset_upstream(ErrorCodes.CANCEL)
        up = self.up
        if up is not None:
            flow = self.response.drop()
            if flow:
                up.h2.acknowledge_received_data(flow, self.up_id)
            up.release_stream(self.up_id)
            up.mark_dirty()
            self.up = None
        request = self.request
        flow = request.drop()
        if flow:
            self.down.h2.acknowledge_received_data(flow, self.down_id)
            self.down.mark_dirty()
        # The kept request, again: its DATA was acknowledged when first sent.
        for data in self.replay or ():
            request.chunks.append((data, 0))
            request.buffered += len(data)
        request.end_sent = False
        self.response = HalfStream()
        self.status = 0
        self.grpc_status = None
        self.held = None
        self.routed = nxt
        headers = self.replay_headers
        deadline = self._deadline
        if deadline is not None and headers is not None and self.is_grpc:
            # The call's deadline covers every attempt: the next one is told
            # what is left of it, not the caller's whole timeout again.
            headers = with_grpc_timeout(headers, deadline.when() - self._loop.time())
        self.request_headers = headers
        attach(self)
        return True

    def _release_held(self) -> None:
        """Pass on the held response headers: the response has started."""
        held = self.held
        self.held = None
        if held is not None:
            self.response_started = True
            self._send_down_headers(held, end_stream=False)

    def _reset_upstream(self, code: int) -> None:
        up = self.up
        if up is None or not self.up_open:
            return
        self.up_open = False
        if self.request.end_sent and self.response.end:
            return  # closed at both ends already
        try:
            up.h2.reset_stream(self.up_id, code)
        except H2Error:
            return
        up.mark_dirty()

    def _reset_down(self, code: int) -> None:
        try:
            self.down.h2.reset_stream(self.down_id, code)
        except H2Error:
            return
        self.down.mark_dirty()

    def _send_down_headers(self, headers: list[Header], end_stream: bool) -> None:
        down = self.down
        try:
            down.h2.send_headers(self.down_id, headers, end_stream=end_stream)
        except H2Error:
            return
        if not down.dirty:
            down.mark_dirty()


def with_grpc_timeout(headers: Sequence[Header], remaining_s: float) -> Sequence[Header]:
    """`headers` with their `grpc-timeout` (if any) set to `remaining_s`, in
    milliseconds (at least 1: an expired deadline is the proxy's to enforce)."""
    value = b"%dm" % max(1, int(remaining_s * 1000))
    out: list[Header] = []
    found = False
    for name, old in headers:
        if name == b"grpc-timeout":
            found = True
            out.append((name, value))
        else:
            out.append((name, old))
    return out if found else headers


def _find_status(headers: Sequence[Header]) -> bytes:
    for name, value in headers:
        if name == b":status":
            return value
    return b""
