"""What both ends of the HTTP/2 proxy share: the codec of a connection, and write batching.

Theory of operation. One `asyncio.Protocol` per TCP connection drives one
sans-IO codec (`H2Codec`, tulle.proxy.http2.codec: nghttp2 in C, or h2 when
the extension is missing). A read may touch several connections: a batch of
frames from a client can start streams on three upstream connections. Each
touched connection is marked dirty in a shared `Outbox`, and the entry point
that received the bytes (or fired the timer) flushes the outbox once at the
end, so every connection gets at most one `transport.write` per batch.
"""

from __future__ import annotations

import asyncio
import logging
import struct

from .codec import CODEC_DETAIL, NATIVE, H2Codec, H2Limits

_log = logging.getLogger(__name__)
_fallback_logged = False

__all__ = ["H2Limits", "H2Peer", "Outbox", "goaway_frame", "new_codec"]


def new_codec(*, client_side: bool, limits: H2Limits) -> H2Codec:
    """A codec for one connection: the native one when this process has it."""
    global _fallback_logged
    if NATIVE is not None:
        session: H2Codec = NATIVE.Session(
            client_side,
            limits.max_concurrent_streams,
            limits.stream_window,
            limits.connection_window,
            limits.max_frame_size,
            limits.max_header_list_size,
        )
        return session
    from .h2py import PyH2Codec

    if not _fallback_logged:
        _fallback_logged = True
        _log.warning(
            "HTTP/2 runs on the pure-Python codec (h2), several times slower: %s", CODEC_DETAIL
        )
    return PyH2Codec(client_side=client_side, limits=limits)


def goaway_frame(last_stream_id: int, error_code: int = 0) -> bytes:
    """A GOAWAY built by hand, sent on a drain while accepted streams go on."""
    # 9-byte frame header: length 8 (24 bits) and type 7 in one word, flags, stream 0.
    return struct.pack("!IBIII", 8 << 8 | 0x7, 0, 0, last_stream_id & 0x7FFFFFFF, error_code)


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

    h2: H2Codec
    transport: asyncio.Transport | None
    dirty: bool
    writable: bool = True
    # The outbox this peer is flushed by (set by each subclass's __init__).
    outbox: Outbox

    def mark_dirty(self) -> None:
        # `Outbox.add`, inlined: called several times per stream and frame.
        if not self.dirty:
            self.dirty = True
            self.outbox.peers.append(self)

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

    __slots__ = ("peers",)

    def __init__(self) -> None:
        # Appended to by `H2Peer.mark_dirty` (a peer whose `dirty` was False).
        self.peers: list[H2Peer] = []

    def add(self, peer: H2Peer) -> None:
        if not peer.dirty:
            peer.dirty = True
            self.peers.append(peer)

    def flush(self) -> None:
        dirty = self.peers
        # Flushing can mark more peers dirty only through callbacks, never
        # re-entrantly, so one pass over a swapped list is enough.
        while dirty:
            self.peers = []
            for peer in dirty:
                peer.dirty = False
                peer.flush_now()
            dirty = self.peers
