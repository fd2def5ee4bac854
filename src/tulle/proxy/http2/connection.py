"""What both ends of the HTTP/2 proxy share: the h2 connection, its limits, and write batching.

Theory of operation. One `asyncio.Protocol` per TCP connection drives one
`h2.H2Connection` (sans-IO). A read may touch several connections: a batch of
frames from a client can start streams on three upstream connections. Each
touched connection is marked dirty in a shared `Outbox`, and the entry point
that received the bytes (or fired the timer) flushes the outbox once at the
end, so every connection gets at most one `transport.write` per batch.

`GracefulH2Connection` works around h2 treating any received GOAWAY as the
end of everything: after a NO_ERROR GOAWAY the peer still finishes the streams
it has accepted, so the connection must keep receiving and sending on them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
import hyperframe.frame
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

# RFC 9113 defaults; a larger connection window than 64 KiB is what lets a
# single stream reach line rate across the proxy.
_DEFAULT_WINDOW = 65_535


@dataclass(frozen=True, slots=True)
class H2Limits:
    """What a connection advertises and enforces (both to clients and to upstreams)."""

    max_concurrent_streams: int = 250
    # Per-stream receive window: the most one stream may buffer in the proxy.
    stream_window: int = 1 << 20
    # Per-connection receive window: the most all streams of one connection may buffer.
    connection_window: int = 4 << 20
    max_frame_size: int = 16_384
    max_header_list_size: int = 64 << 10
    # Proxy hops (`tulle-hops`) a request may already have crossed: more is a
    # loop of proxies, refused with 508 loop-detected (not advertised).
    max_hops: int = 16


class GracefulH2Connection(h2.connection.H2Connection):
    """An H2Connection that keeps working on accepted streams after a NO_ERROR GOAWAY."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Any], list[Any]]:
        if frame.error_code != ErrorCodes.NO_ERROR:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def _frame_repr(frame: hyperframe.frame.Frame) -> str:
    return f"{type(frame).__name__}(stream_id={frame.stream_id})"


def _cheap_frame_reprs() -> None:
    """Frames' repr without their flags and body, in a process that proxies HTTP/2.

    h2 formats `repr(frame)` for a trace log line on every frame it receives,
    whether or not anything logs it (`H2Connection._receive_frame`): the full
    repr renders the flags and the body, thousands of instructions per frame
    and three frames per proxied stream. The proxy never logs frames, so it
    keeps the class and stream id only (bench/instructions.py: docs/benchmarks.md).
    """
    hyperframe.frame.Frame.__repr__ = _frame_repr  # type: ignore[method-assign]


def new_h2_connection(*, client_side: bool, limits: H2Limits) -> GracefulH2Connection:
    """A connection configured for proxying: bytes headers, no outbound re-validation.

    Outbound validation is off because every header block the proxy sends was
    either validated by h2 on the way in or built by the proxy itself.
    """
    if hyperframe.frame.Frame.__repr__ is not _frame_repr:
        _cheap_frame_reprs()
    config = h2.config.H2Configuration(
        client_side=client_side,
        header_encoding=None,
        validate_outbound_headers=False,
        normalize_outbound_headers=False,
        validate_inbound_headers=True,
        normalize_inbound_headers=False,
    )
    conn = GracefulH2Connection(config=config)
    settings: dict[h2.settings.SettingCodes, int] = {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window,
        h2.settings.SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
    }
    if client_side:
        settings[h2.settings.SettingCodes.ENABLE_PUSH] = 0
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=settings)
    conn.initiate_connection()
    if limits.connection_window > _DEFAULT_WINDOW:
        conn.increment_flow_control_window(limits.connection_window - _DEFAULT_WINDOW)
    return conn


def goaway_frame(last_stream_id: int, error_code: int = ErrorCodes.NO_ERROR) -> bytes:
    """A GOAWAY built by hand: h2's own close_connection() forbids sending anything after it."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    return bytes(frame.serialize())


class H2Peer(asyncio.Protocol):
    """Base for both ends: an h2 connection, its transport, a dirty flag for the outbox,
    and write backpressure.

    Flow-control windows bound what a peer may *ask* for, not what it reads: a
    client can grant a 2 GiB window and never read its socket. So DATA is only
    handed to a transport that is `writable` (below its high-water mark); when
    it is not, DATA stays queued in the stream, unacknowledged upstream, and
    reading from this peer pauses too (its PINGs and SETTINGS would only queue
    more answers it does not read).
    """

    h2: GracefulH2Connection
    transport: asyncio.Transport | None
    dirty: bool
    writable: bool = True

    def flush_now(self) -> None:
        data = self.h2.data_to_send()
        transport = self.transport
        # A transport already closed whose connection_lost has not run yet
        # (two connections lost in one loop iteration): uvloop raises on write.
        if data and transport is not None and not transport.is_closing():
            transport.write(data)

    def pause_writing(self) -> None:
        self.writable = False
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writable = True
        if self.transport is not None:
            self.transport.resume_reading()
        self.writable_again()

    def writable_again(self) -> None:
        """Send what waited for this transport to drain."""


class Outbox:
    """Connections written to during the current callback, flushed once at its end."""

    __slots__ = ("_dirty",)

    def __init__(self) -> None:
        self._dirty: list[H2Peer] = []

    def add(self, peer: H2Peer) -> None:
        if not peer.dirty:
            peer.dirty = True
            self._dirty.append(peer)

    def flush(self) -> None:
        dirty = self._dirty
        # Flushing can mark more peers dirty only through callbacks, never
        # re-entrantly, so one pass over a swapped list is enough.
        while dirty:
            self._dirty = []
            for peer in dirty:
                peer.dirty = False
                peer.flush_now()
            dirty = self._dirty
