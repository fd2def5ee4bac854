"""The client-facing side of the HTTP/2 proxy: one `H2ServerProtocol` per accepted connection.

Every stream is a request, routed by `:authority` through the `Dispatcher`
and sent on its own to a pooled upstream HTTP/2 connection, so one long-lived
client connection spreads over all endpoints.

Handing a connection over after protocol detection. The listener has read
the first bytes (the preface `PRI * HTTP/2.0...` and maybe more); the
protocol replays them, so nothing read is lost. Construct it inside the
running loop (it takes `asyncio.get_running_loop()`); one `H2ClientPool` is
shared by every connection of a listener. Either of::

    # a raw socket after detection (as the proxy's Acceptor hands it over)
    await loop.connect_accepted_socket(
        lambda: H2ServerProtocol(dispatcher, pool, initial_data=first_bytes), sock)

    # or an existing transport
    protocol = H2ServerProtocol(dispatcher, pool, initial_data=first_bytes)
    transport.set_protocol(protocol)
    protocol.connection_made(transport)

After TLS with ALPN "h2" (or the mesh's "tulle.h2"), pass no initial_data:
the preface arrives through `data_received`. On drain, call
`protocol.shutdown(grace_s)`: it sends GOAWAY, lets accepted streams finish,
refuses new ones (REFUSED_STREAM, safe for clients to retry), and closes the
connection when they are done or the grace period ends; `await
protocol.wait_closed()` waits for that.

Defences: the advertised limits (`H2Limits`: concurrent streams, header list
size, frame size) are enforced by h2 as connection errors; rapid reset and
SETTINGS, PING and empty-DATA floods are counted with `FloodGuard` and end
the connection with GOAWAY(ENHANCE_YOUR_CALM). A stream the proxy refuses
(unknown authority, no or ejected endpoints, forbidden, malformed) counts as
a reset: refusing is cheap but not free, and a client can open refused
streams as fast as it writes. Bytes reach h2 in bounded slices, so a flood is
cut within one slice of its budget, and a refused stream the client has
already reset gets no answer built. Any h2 protocol error ends the
connection with a GOAWAY carrying h2's error code, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import cast

import h2.exceptions
from h2.errors import ErrorCodes

from tulle.codec.http2 import (
    FloodGuard,
    FloodKind,
    FloodLimit,
    Header,
    MalformedRequest,
    RequestHead,
    forward_headers,
    parse_request_head,
    with_hop,
    without_client_id,
)
from tulle.core.outcome import CANCELLED
from tulle.proxy.errors import ProxyError, Refused

from .client import H2ClientPool
from .codec import (
    DATA,
    DATA_END,
    EMPTY_DATA,
    END,
    GOAWAY,
    PING,
    REQUEST,
    RESET,
    SETTINGS,
    TRAILERS,
    WINDOW,
    Event,
)
from .connection import H2Limits, H2Peer, goaway_frame, new_codec
from .dispatch import Dispatcher, H2Counters, Pending, Routed
from .idle import IdleTimer
from .stream import ProxyStream, error_response

_log = logging.getLogger(__name__)

# The provisional route of a stream waiting for discovery (see `Pending`).
_UNROUTED = Routed(("0.0.0.0", 0))

# Discovery waits of one stream: its service, then a split backend's.
_PENDING_ROUNDS = 3

# The most bytes handed to h2 at once (see data_received).
_RECEIVE_SLICE = 16 << 10

# Refusal answers by (refusal, is_grpc): a client that keeps calling an unknown
# or ejected service gets the same few answers, built once.
_REFUSAL_CACHE: dict[tuple[Refused, bool], tuple[list[Header], bytes]] = {}
_REFUSAL_CACHE_MAX = 256


def _refusal_response(refusal: Refused, is_grpc: bool) -> tuple[list[Header], bytes]:
    key = (refusal, is_grpc)
    cached = _REFUSAL_CACHE.get(key)
    if cached is None:
        if len(_REFUSAL_CACHE) >= _REFUSAL_CACHE_MAX:
            # Bounded: many distinct details (one per unknown name) start over.
            _REFUSAL_CACHE.clear()
        cached = _REFUSAL_CACHE[key] = error_response(
            refusal.error,
            is_grpc,
            refusal.detail,
            status=refusal.status,
            grpc_status=refusal.grpc_status,
            extra=refusal.headers,
        )
    return cached


class H2ServerProtocol(H2Peer):
    """Proxies every stream of one client HTTP/2 connection."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        pool: H2ClientPool,
        *,
        initial_data: bytes = b"",
        limits: H2Limits | None = None,
        flood_limits: dict[FloodKind, FloodLimit] | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.pool = pool
        self.counters: H2Counters = pool.counters
        self.limits = limits or H2Limits()
        self.h2 = new_codec(client_side=False, limits=self.limits)
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.streams: dict[int, ProxyStream] = {}
        # The routing fields of streams still open, kept for a reroute.
        self._heads: dict[int, RequestHead] = {}
        self._initial_data = initial_data
        self._guard = FloodGuard(flood_limits)
        self._loop = asyncio.get_running_loop()
        self.outbox = self._outbox = pool.outbox
        # Set by shutdown(): streams above this id are refused.
        self._last_accepted: int | None = None
        self._peer_going_away = False
        self._closing = False
        self._force_close: asyncio.TimerHandle | None = None
        self._closed: asyncio.Future[None] = self._loop.create_future()
        # A connection without streams for this long is closed (GOAWAY NO_ERROR).
        self._idle = IdleTimer(
            self._loop,
            idle_timeout_s,
            lambda: bool(self.streams),
            lambda: self._close(ErrorCodes.NO_ERROR),
        )
        self._pending_routes: set[asyncio.Task[None]] = set()
        # Called once with this protocol when the connection is gone (H2Service's registry).
        self.on_closed: Callable[[H2ServerProtocol], None] | None = None
        # Inbound only: the caller's verified identity (b"" when it has none). Not
        # None means the app must see this identity or none: every `tulle-client-id`
        # the caller sent, in headers or trailers, is dropped (`forward_headers`).
        self.client_id: bytes | None = None
        # Called with the reason of every stream the proxy refuses itself
        # (the mesh counts them in proxy_error_total).
        self.on_refused: Callable[[str], None] | None = None

    # -- DownSide ----------------------------------------------------------------
    def forget_stream(self, stream_id: int) -> None:
        self._heads.pop(stream_id, None)
        if self.streams.pop(stream_id, None) is not None:
            self.counters.streams_open -= 1
            if self._closing:
                return
            if not self.streams:
                if self._last_accepted is not None or self._peer_going_away:
                    self._close(ErrorCodes.NO_ERROR)
                else:
                    self._idle.arm()

    # -- asyncio.Protocol --------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.counters.connections_open += 1
        self.counters.connections_total += 1
        self._idle.arm()
        self.mark_dirty()
        data, self._initial_data = self._initial_data, b""
        if data:
            self.data_received(data)
        else:
            self._outbox.flush()

    def data_received(self, data: bytes) -> None:
        if self.transport is None:
            return
        if len(data) <= _RECEIVE_SLICE:
            if not self._receive(data):
                return
        else:
            # h2 parses everything it is given before the flood accounting
            # sees a single event: one 256 KiB read of HEADERS + RST_STREAM
            # pairs is ~10,000 streams. Fed in slices, a flood is cut after
            # at most one slice past its budget.
            view = memoryview(data)
            for start in range(0, len(data), _RECEIVE_SLICE):
                if not self._receive(view[start : start + _RECEIVE_SLICE]):
                    return
        self.mark_dirty()
        self._outbox.flush()

    def _receive(self, data: bytes | memoryview) -> bool:
        """Feed bytes to h2 and act on its events; False once the connection is ending."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            # h2 has queued a GOAWAY with the right error code (PROTOCOL_ERROR,
            # FRAME_SIZE_ERROR, ENHANCE_YOUR_CALM for oversized headers...).
            self.counters.protocol_errors += 1
            self._abort()
            return False
        try:
            return self._handle(events)
        except Exception:
            # A bug, not the peer's fault: close this connection only, and say
            # why once (not per frame).
            _log.exception("HTTP/2 connection failed; closing it")
            self._close(ErrorCodes.INTERNAL_ERROR)
            return False

    def _handle(self, events: list[Event]) -> bool:
        """Act on one batch of events; False when the connection ended (flood, GOAWAY)."""
        guard = self._guard
        now = self._loop.time()
        streams = self.streams
        for kind, stream_id, a, b in events:
            if kind == DATA:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_request_data(a, b)
                elif b:
                    self.h2.acknowledge_received_data(b, stream_id)
            elif kind == DATA_END:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_request_data(a, b, True)
                elif b:
                    self.h2.acknowledge_received_data(b, stream_id)
            elif kind == REQUEST:
                if not self._on_request(stream_id, a, b, now):
                    return False
            elif kind == END:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_request_end(None)
            elif kind == TRAILERS:
                stream = streams.get(stream_id)
                if stream is not None:
                    trailers: list[Header] = a
                    if self.client_id is not None:
                        trailers = without_client_id(trailers)
                    # An empty trailer block is malformed: end with DATA then.
                    stream.on_request_end(trailers or None)
            elif kind == WINDOW:
                self._window_opened(stream_id)
            elif kind == RESET:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_client_reset()
                    if guard.record(FloodKind.RESET, now):
                        self._flood()
                        return False
            elif kind == EMPTY_DATA:
                if guard.record(FloodKind.EMPTY_DATA, now):
                    self._flood()
                    return False
            elif kind == PING:
                if guard.record(FloodKind.PING, now):
                    self._flood()
                    return False
            elif kind == SETTINGS:
                if guard.record(FloodKind.SETTINGS, now):
                    self._flood()
                    return False
                if a:
                    self._window_opened(0)
            elif kind == GOAWAY:
                self._peer_going_away = True
                if b != ErrorCodes.NO_ERROR or not streams:
                    self._abort()
                    return False
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return
        self.transport = None
        self.counters.connections_open -= 1
        for stream in list(self.streams.values()):
            stream.on_client_reset()
        self.streams.clear()
        if self._force_close is not None:
            self._force_close.cancel()
        self._idle.cancel()
        if not self._closed.done():
            self._closed.set_result(None)
        if self.on_closed is not None:
            self.on_closed(self)
        self._outbox.flush()

    # -- streams -------------------------------------------------------------------
    def _on_request(
        self, stream_id: int, headers: list[Header], request_ended: bool, now: float
    ) -> bool:
        """Start proxying one stream, or refuse it; False when that ended the connection.

        A refused stream costs the proxy a parse and an answer but nothing
        upstream, so a client can open and reset refused streams (an unknown
        authority, a service whose endpoints are all ejected) far faster than
        proxied ones: every refusal counts towards the connection's reset
        budget, as a client reset does. Streams refused while draining
        (REFUSED_STREAM after our GOAWAY) do not: a busy client has many in
        flight when the GOAWAY reaches it, and they are safe to retry.
        """
        if self._last_accepted is not None and stream_id > self._last_accepted:
            self._reset(stream_id, ErrorCodes.REFUSED_STREAM)
            return True
        try:
            head = parse_request_head(headers)
        except MalformedRequest:
            self._reset(stream_id, ErrorCodes.PROTOCOL_ERROR)
            return self._count_refusal(now)
        self.counters.streams_total += 1
        if head.path_problem:
            refusal = Refused(ProxyError.BAD_PATH, head.path_problem)
            self._refuse(stream_id, refusal, head.is_grpc, request_ended)
            return self._count_refusal(now)
        # What policy and routes match is what goes upstream: the normalised
        # `:path`, and on the inbound the verified identity only.
        forwarded = forward_headers(
            headers, head.path.encode("latin-1") if head.path_rewritten else None, self.client_id
        )
        if head.hops >= self.limits.max_hops:
            # Every hop adds one: a request that went round a loop of proxies.
            decision: Routed | Refused | Pending = Refused(
                ProxyError.LOOP_DETECTED, f"request crossed {head.hops} proxy hops"
            )
        else:
            decision = self.dispatcher.route(head.authority, head.method, head.path, forwarded)
        if isinstance(decision, Refused):
            if decision.delay_s > 0.0:
                # An injected fault: delayed, then aborted.
                self._loop.call_later(
                    decision.delay_s,
                    self._refuse_later,
                    stream_id,
                    decision,
                    head.is_grpc,
                    request_ended,
                )
                return self._count_refusal(now)
            self._refuse(stream_id, decision, head.is_grpc, request_ended)
            return self._count_refusal(now)
        pending = decision if isinstance(decision, Pending) else None
        routed = decision if isinstance(decision, Routed) else _UNROUTED
        stream = ProxyStream(
            self,
            stream_id,
            routed,
            with_hop(forwarded, head.hops),
            is_grpc=head.is_grpc,
            outbox=self._outbox,
            counters=self.counters,
            loop=self._loop,
        )
        self.streams[stream_id] = stream
        self.counters.streams_open += 1
        timeout = head.grpc_timeout_s
        if routed.timeout_s is not None and (timeout is None or routed.timeout_s < timeout):
            timeout = routed.timeout_s
        if timeout is not None:
            stream.set_deadline(timeout)
        if request_ended:
            stream.request.end = True
        stream.reroute = self._reroute
        stream.attach = self.pool.attach
        self._heads[stream_id] = head
        if pending is not None:
            task = self._loop.create_task(self._route_when_known(stream, pending))
            self._pending_routes.add(task)
            task.add_done_callback(self._pending_routes.discard)
            return True
        call = routed.call
        edits = call.edits if call is not None else None
        if edits is not None and edits.delay_s > 0.0:
            # An injected delay (a route's fault): the stream waits, its
            # request body held within flow control, as a pending one does.
            self._loop.call_later(edits.delay_s, self._attach_delayed, stream)
            return True
        self.pool.attach(stream)
        return True

    def _attach_delayed(self, stream: ProxyStream) -> None:
        if stream.closed:
            return
        self.pool.attach(stream)
        self._outbox.flush()

    def _refuse_later(
        self, stream_id: int, refusal: Refused, is_grpc: bool, request_ended: bool
    ) -> None:
        if self.transport is None:
            return
        # A body that ended meanwhile closes the stream with the answer; the
        # reset `_refuse` then sends for an unfinished one is refused by h2
        # (and ignored).
        self._refuse(stream_id, refusal, is_grpc, request_ended)
        self.mark_dirty()
        self._outbox.flush()

    def _count_refusal(self, now: float) -> bool:
        if self._guard.record(FloodKind.RESET, now):
            self._flood()
            return False
        return True

    async def _route_when_known(self, stream: ProxyStream, pending: Pending) -> None:
        """Route a stream whose authority discovery had not answered for yet.

        Up to `_PENDING_ROUNDS` waits: a split's backend (or an overridden
        one) is only looked up once the apex's profile is known, so the
        apex's answer can be followed by a wait for the backend's (HTTP/1
        waits for both too). A wait that timed out is answered as the
        `Pending` says (503 discovery-timeout)."""
        decision: Routed | Refused | Pending = pending
        for _ in range(_PENDING_ROUNDS):
            if not isinstance(decision, Pending):
                break
            known = await decision.ready()
            head = self._heads.get(stream.down_id)
            headers = stream.request_headers
            if stream.closed or head is None or headers is None:
                return
            if not known and decision.timed_out is not None:
                decision = decision.timed_out
                break
            decision = self.dispatcher.route(head.authority, head.method, head.path, headers)
        if isinstance(decision, Routed):
            stream.routed = decision
            stream.call = decision.call
            call = decision.call
            if call is not None:
                # The body that arrived meanwhile is all in the request queue
                # (nothing was sent yet): it is the start of what is kept.
                chunks = stream.request.chunks
                size = sum(len(data) for data, _ in chunks)
                stream.replay_headers = headers
                stream.replay_bytes = size
                stream.replay = (
                    [bytes(data) for data, _ in chunks] if size <= call.replay_limit else None
                )
            if decision.timeout_s is not None:
                stream.set_deadline(decision.timeout_s)
            self.pool.attach(stream)
        elif isinstance(decision, Refused):
            if self.on_refused is not None:
                self.on_refused(decision.error.reason)
            stream.fail(decision.error, decision.detail)
        else:
            stream.fail(ProxyError.DISCOVERY_TIMEOUT, decision.detail)
        self._outbox.flush()

    def _reset(self, stream_id: int, code: ErrorCodes) -> None:
        # The client may have reset or ended the stream in the same read.
        with contextlib.suppress(h2.exceptions.H2Error):
            self.h2.reset_stream(stream_id, code)

    def _reroute(self, stream: ProxyStream) -> bool:
        """Route a stream again after its endpoint refused the connection; False: give up."""
        head = self._heads.get(stream.down_id)
        headers = stream.request_headers
        if head is None or headers is None:
            return False
        decision = self.dispatcher.route(head.authority, head.method, head.path, headers)
        if not isinstance(decision, Routed) or decision.address == stream.routed.address:
            return False
        stream.routed = decision
        self.pool.attach(stream)
        return True

    def _refuse(self, stream_id: int, refusal: Refused, is_grpc: bool, request_ended: bool) -> None:
        self.counters.proxy_errors += 1
        if self.on_refused is not None:
            self.on_refused(refusal.error.reason)
        if not self.h2.stream_open(stream_id):
            # The client reset the stream in the same read (rapid reset): an
            # answer would only be encoded to be refused by h2.
            return
        headers, body = _refusal_response(refusal, is_grpc)
        try:
            self.h2.send_headers(stream_id, headers, end_stream=not body)
            if body:
                self.h2.send_data(stream_id, body, end_stream=True)
            if not request_ended:
                # The client may still be sending a body nobody will read.
                self.h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        except h2.exceptions.H2Error:
            # The client ended or reset the stream in the same read.
            pass

    def writable_again(self) -> None:
        self._window_opened(0)
        self._outbox.flush()

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.pump_response()
            return
        for stream in list(self.streams.values()):
            if stream.response.chunks or (stream.response.end and not stream.response.end_sent):
                stream.pump_response()

    # -- ending the connection --------------------------------------------------------
    def shutdown(self, grace_s: float = 30.0) -> None:
        """Graceful drain: GOAWAY now, finish accepted streams, close within `grace_s`."""
        if self.transport is None or self._last_accepted is not None:
            return
        self._last_accepted = self.h2.highest_inbound_stream_id
        self.flush_now()
        self.transport.write(goaway_frame(self._last_accepted))
        if not self.streams:
            self._close(ErrorCodes.NO_ERROR)
            return
        self._force_close = self._loop.call_later(grace_s, self._grace_expired)

    async def wait_closed(self) -> None:
        await asyncio.shield(self._closed)

    def _grace_expired(self) -> None:
        self._force_close = None
        for stream in list(self.streams.values()):
            # The proxy's own decision: says nothing about the endpoint.
            stream.fail(ProxyError.UPSTREAM_GOAWAY, "proxy is shutting down", CANCELLED)
        self._close(ErrorCodes.NO_ERROR)
        self._outbox.flush()

    def _flood(self) -> None:
        self.counters.flood_goaways += 1
        # Drop what h2 queued in answer to the flood (PING and SETTINGS ACKs).
        self.h2.clear_outbound_data_buffer()
        self._close(ErrorCodes.ENHANCE_YOUR_CALM)

    def _abort(self) -> None:
        """h2 has already queued its GOAWAY: send it and close."""
        self._closing = True
        self.flush_now()
        self._drop_streams()
        if self.transport is not None:
            self.transport.close()
        self._outbox.flush()

    def _close(self, code: ErrorCodes) -> None:
        if self.transport is None or self._closing:
            return
        self._closing = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=code)
        self.flush_now()
        self._drop_streams()
        self.transport.close()
        self._outbox.flush()

    def _drop_streams(self) -> None:
        for stream in list(self.streams.values()):
            stream.on_client_reset()
        self.streams.clear()


class H2Service:
    """Everything one listener needs for HTTP/2: the dispatcher, the shared upstream
    pool, limits, counters, and the live connections (so that a drain reaches them all).

        service = H2Service(dispatcher)
        await loop.connect_accepted_socket(lambda: service.protocol(first_bytes), sock)
        ...
        await service.drain(grace_s=30)  # GOAWAY everywhere, wait, close upstreams
    """

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        pool: H2ClientPool | None = None,
        limits: H2Limits | None = None,
        flood_limits: dict[FloodKind, FloodLimit] | None = None,
        idle_timeout_s: float | None = 300.0,
    ) -> None:
        self.dispatcher = dispatcher
        self.pool = pool or H2ClientPool()
        self.idle_timeout_s = idle_timeout_s
        self.counters = self.pool.counters
        self.limits = limits
        self.flood_limits = flood_limits
        self.connections: set[H2ServerProtocol] = set()

    def protocol(self, initial_data: bytes = b"") -> H2ServerProtocol:
        """A protocol for one accepted connection; call inside the running loop."""
        protocol = H2ServerProtocol(
            self.dispatcher,
            self.pool,
            initial_data=initial_data,
            limits=self.limits,
            flood_limits=self.flood_limits,
            idle_timeout_s=self.idle_timeout_s,
        )
        self.connections.add(protocol)
        protocol.on_closed = self.connections.discard
        return protocol

    async def drain(self, grace_s: float = 30.0) -> None:
        """Graceful shutdown of every connection, then of the upstream pool."""
        live = [c for c in self.connections if c.transport is not None]
        for connection in live:
            connection.shutdown(grace_s)
        if live:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(c.wait_closed() for c in live)), grace_s + 1.0
                )
        await self.pool.close()
