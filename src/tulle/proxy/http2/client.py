"""Pooled, multiplexed HTTP/2 connections to upstream endpoints.

`H2ClientPool` keeps a few `H2ClientConnection`s per (address, TLS) key. A
new stream goes to the first connection with a free slot under the peer's
SETTINGS_MAX_CONCURRENT_STREAMS; when every connection is full, another is
opened (up to `max_connections_per_endpoint`), and past that the stream waits
for a slot on the least loaded one. Streams queued on a connection that is
still connecting start when its SETTINGS arrive.

Server push is refused at the source (SETTINGS_ENABLE_PUSH=0, and h2 treats a
PUSH_PROMISE after that as a connection error). A GOAWAY from upstream takes
the connection out of the pool: streams it accepted finish, streams above its
last-stream-id were never processed and get a proxy error (UNAVAILABLE).
Idle connections close after `idle_timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import h2.exceptions
from h2.errors import ErrorCodes

from tulle.core.discovery import Address
from tulle.net.dial import DialFailed, dial
from tulle.net.mtls import verify_identity
from tulle.proxy.errors import ProxyError
from tulle.proxy.http2.dispatch import H2Counters

from .codec import (
    DATA,
    DATA_END,
    END,
    GOAWAY,
    INFORMATIONAL,
    RESET,
    RESPONSE,
    SETTINGS,
    TRAILERS,
    WINDOW,
    Event,
)
from .connection import H2Limits, H2Peer, Outbox, new_codec
from .idle import IdleTimer
from .stream import ProxyStream

_log = logging.getLogger(__name__)

# Until the peer's SETTINGS arrive its stream limit is unknown; RFC 9113
# recommends peers allow at least 100.
_ASSUMED_PEER_STREAMS = 100
_LAST_STREAM_ID = 2**31 - 1
# ALPN names that mean HTTP/2 inside TLS: the standard one and the mesh's own.
_H2_ALPNS = frozenset({"h2", "tulle.h2"})


_UPSTREAM_LIMITS = H2Limits(max_concurrent_streams=100)


@dataclass(frozen=True, slots=True)
class PoolSettings:
    limits: H2Limits = _UPSTREAM_LIMITS
    max_connections_per_endpoint: int = 4
    connect_timeout_s: float = 3.0
    idle_timeout_s: float = 60.0


PoolKey = tuple[Address, ssl.SSLContext | None, str | None, str | None]


def _error_name(code: int) -> str:
    try:
        return repr(ErrorCodes(code))
    except ValueError:
        return str(code)


class H2ClientConnection(H2Peer):
    """One upstream HTTP/2 connection carrying many proxied streams."""

    def __init__(self, pool: H2ClientPool, key: PoolKey) -> None:
        self.pool = pool
        self.outbox = pool.outbox
        self.key = key
        self.h2 = new_codec(client_side=True, limits=pool.settings.limits)
        self.transport: asyncio.Transport | None = None
        self.dirty = False
        self.streams: dict[int, ProxyStream] = {}
        self.waiting: deque[ProxyStream] = deque()
        self.settings_seen = False  # the peer's first SETTINGS (its stream limit) arrived
        self.capacity = _ASSUMED_PEER_STREAMS
        self.accepting = True  # may take new streams (no GOAWAY, ids left)
        self.closed = False
        # Why the TLS peer was refused (wrong ALPN or identity), before any byte went out.
        self.peer_problem: str | None = None
        self._loop = asyncio.get_running_loop()
        self._idle = IdleTimer(
            self._loop,
            pool.settings.idle_timeout_s,
            lambda: bool(self.streams or self.waiting),
            self._close,
        )

    # -- capacity ------------------------------------------------------------
    # `capacity` (set in __init__, then at each of the peer's SETTINGS): the
    # streams this connection may carry; an attribute, read for every stream.

    @property
    def load(self) -> int:
        return len(self.streams) + len(self.waiting)

    def enqueue(self, stream: ProxyStream) -> None:
        # (No idle timer to cancel: it finds the stream when it fires, tulle.proxy.http2.idle.)
        if self.transport is not None and len(self.streams) < self.capacity and not self.waiting:
            self._start(stream)
        else:
            self.waiting.append(stream)

    def _start_waiting(self) -> None:
        waiting = self.waiting
        while waiting and self.transport is not None and len(self.streams) < self.capacity:
            stream = waiting.popleft()
            if not stream.closed and not self._start(stream):
                break

    def _start(self, stream: ProxyStream) -> bool:
        """Open the upstream stream; False (stream queued again) when h2 says the peer is full."""
        headers = stream.request_headers
        if headers is None:
            return True
        call = stream.call
        if call is not None and call.edits is not None:
            headers = call.edits.request_headers(headers)
        end = stream.request.end and not stream.request.chunks and stream.request.trailers is None
        try:
            stream_id = self.h2.send_request(headers, end)
        except h2.exceptions.TooManyStreamsError:
            # h2 still counts streams we have let go of; retry when one closes.
            self.waiting.appendleft(stream)
            return False
        if end:
            stream.request.end_sent = True
        if stream_id >= _LAST_STREAM_ID - 2:
            self._stop_accepting()
        self.streams[stream_id] = stream
        self.mark_dirty()
        stream.bind_upstream(self, stream_id)
        return True

    # -- UpSide ----------------------------------------------------------------
    def release_stream(self, stream_id: int) -> None:
        if self.streams.pop(stream_id, None) is None:
            return
        if self.waiting:
            self._start_waiting()
        elif not self.streams:
            if not self.accepting:
                self._close()
            else:
                self._idle.arm()

    # -- asyncio.Protocol ------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        (host, port), ssl_context, _, expected_identity = self.key
        if ssl_context is not None:
            # Check the peer before anything is sent: requests go out from here on.
            ssl_object = transport.get_extra_info("ssl_object")
            alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
            if alpn not in _H2_ALPNS:
                self.peer_problem = f"{host}:{port} did not agree to h2"
            elif expected_identity:
                try:
                    verify_identity(ssl_object, expected_identity)
                except ssl.SSLError as exc:
                    self.peer_problem = f"{host}:{port}: {exc}"
            if self.peer_problem is not None:
                cast(asyncio.Transport, transport).abort()
                return
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.counters.upstream_connections_open += 1
        self.mark_dirty()
        # Requests may go out before the peer's SETTINGS: that saves a round trip.
        self._start_waiting()
        self.pool.outbox.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.pool.counters.protocol_errors += 1
            self.flush_now()
            self._fail_all(ProxyError.UPSTREAM_CLOSED, f"upstream protocol error: {exc}")
            self._close()
            self.pool.outbox.flush()
            return
        try:
            self._handle(events)
        except Exception:
            _log.exception("upstream HTTP/2 connection failed; closing it")
            self._fail_all(ProxyError.UPSTREAM_CLOSED, "proxy error on upstream connection")
            self._close()
        self.pool.outbox.flush()

    def _handle(self, events: list[Event]) -> None:
        streams = self.streams
        for kind, stream_id, a, b in events:
            if kind == DATA:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_data(a, b)
                elif b:
                    # Late data for a stream already given up: free the window.
                    self.h2.acknowledge_received_data(b, stream_id)
            elif kind == DATA_END:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_data(a, b, True)
                elif b:
                    self.h2.acknowledge_received_data(b, stream_id)
            elif kind == RESPONSE:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_headers(a, b)
            elif kind == END:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_end(None)
            elif kind == TRAILERS:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_end(a)
            elif kind == WINDOW:
                self._window_opened(stream_id)
            elif kind == RESET:
                stream = streams.pop(stream_id, None)
                if stream is not None:
                    stream.on_upstream_reset(a)
            elif kind == INFORMATIONAL:
                stream = streams.get(stream_id)
                if stream is not None:
                    stream.on_response_headers(a, False)
            elif kind == SETTINGS:
                self._settings_changed(bool(a))
            elif kind == GOAWAY:
                self._goaway(stream_id, a)
        self.mark_dirty()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.pool.counters.upstream_connections_open -= 1
        self.transport = None
        self._idle.cancel()
        self.pool.forget(self)
        self.closed = True
        self.accepting = False
        if self.peer_problem is not None:
            self._fail_all(ProxyError.IDENTITY_MISMATCH, self.peer_problem)
        else:
            self._fail_all(ProxyError.UPSTREAM_CLOSED, "upstream connection closed")
        self.pool.outbox.flush()

    # -- events ------------------------------------------------------------------
    def _settings_changed(self, window_changed: bool) -> None:
        self.settings_seen = True
        # The peer's stream limit changes only with its SETTINGS.
        self.capacity = min(self.h2.peer_max_concurrent_streams, 1 << 16)
        if window_changed:
            self._window_opened(0)
        self._start_waiting()

    def writable_again(self) -> None:
        self._window_opened(0)
        self.pool.outbox.flush()

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.pump_request()
            return
        for stream in list(self.streams.values()):
            if stream.request.chunks or (stream.request.end and not stream.request.end_sent):
                stream.pump_request()

    def _goaway(self, last: int, error_code: int) -> None:
        self._stop_accepting()
        if error_code != ErrorCodes.NO_ERROR:
            name = _error_name(error_code)
            self._fail_all(ProxyError.UPSTREAM_CLOSED, f"upstream GOAWAY {name}")
            self._close()
            return
        for stream_id in [sid for sid in self.streams if sid > last]:
            stream = self.streams.pop(stream_id)
            stream.on_upstream_failed(ProxyError.UPSTREAM_GOAWAY, "upstream is shutting down")
        # Streams still waiting for a slot here were never sent: place them elsewhere.
        waiting, self.waiting = self.waiting, deque()
        for stream in waiting:
            if not stream.closed:
                self.pool.attach(stream)
        if not self.streams:
            self._close()

    def _stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            self.pool.forget(self)

    def _fail_all(self, error: ProxyError, detail: str) -> None:
        streams, self.streams = self.streams, {}
        waiting, self.waiting = self.waiting, deque()
        for stream in streams.values():
            stream.on_upstream_failed(error, detail)
        for stream in waiting:
            stream.on_upstream_failed(error, detail)

    def _close(self) -> None:
        self._stop_accepting()
        self.closed = True
        self._idle.cancel()
        if self.transport is not None:
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.close_connection()
            self.flush_now()
            self.transport.close()

    # -- connecting ---------------------------------------------------------------
    async def connect(self) -> None:
        address, ssl_context, server_hostname, _ = self.key
        try:
            # The one dialler (tulle.net.dial); the peer's ALPN and identity
            # are checked in connection_made, before the preface goes out.
            await dial(
                lambda: self,
                address,
                timeout_s=self.pool.settings.connect_timeout_s,
                tls=ssl_context,
                server_hostname=server_hostname,
            )
        except DialFailed as failed:
            self._stop_accepting()
            self.closed = True
            self._fail_all(ProxyError.of(failed.reason), failed.message)
            self.pool.outbox.flush()
            return
        if self.peer_problem is not None:
            self._stop_accepting()
            self.closed = True
            self._fail_all(ProxyError.IDENTITY_MISMATCH, self.peer_problem)
            self.pool.outbox.flush()


class H2ClientPool:
    """Upstream HTTP/2 connections by (address, TLS), shared by every client connection."""

    def __init__(
        self,
        *,
        settings: PoolSettings | None = None,
        counters: H2Counters | None = None,
        outbox: Outbox | None = None,
    ) -> None:
        self.settings = settings or PoolSettings()
        self.counters = counters or H2Counters()
        self.outbox = outbox or Outbox()
        self._connections: dict[PoolKey, list[H2ClientConnection]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self, stream: ProxyStream) -> None:
        """Give `stream` an upstream stream now, or as soon as a connection has room."""
        routed = stream.routed
        key: PoolKey = (
            routed.address,
            routed.ssl_context,
            routed.server_hostname,
            routed.expected_identity,
        )
        connections = self._connections.get(key)
        if connections is None:
            connections = self._connections[key] = []
        for conn in connections:
            if conn.load < conn.capacity:
                conn.enqueue(stream)
                return
        if len(connections) < self.settings.max_connections_per_endpoint:
            conn = H2ClientConnection(self, key)
            connections.append(conn)
            conn.enqueue(stream)
            task = asyncio.get_running_loop().create_task(conn.connect())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return
        min(connections, key=lambda c: c.load).enqueue(stream)

    def forget(self, conn: H2ClientConnection) -> None:
        """Take a connection out of rotation (GOAWAY, failure, close)."""
        connections = self._connections.get(conn.key)
        if connections is not None and conn in connections:
            connections.remove(conn)
            if not connections:
                del self._connections[conn.key]

    def connections(self) -> Sequence[H2ClientConnection]:
        return [c for conns in self._connections.values() for c in conns]

    async def close(self) -> None:
        """Close every upstream connection (streams on them fail)."""
        for conn in self.connections():
            conn._close()
        for task in list(self._tasks):
            task.cancel()
        self._connections.clear()
        self.outbox.flush()
