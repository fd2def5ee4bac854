"""Opaque TCP forwarding: bytes both ways, with backpressure and half-close.

Used for opaque connections, CONNECT tunnels and upgraded (WebSocket)
connections. Each direction pauses reading on its source while the sink's
write buffer is above its high-water mark, so memory stays bounded whatever
the speeds of the two peers. An EOF from one side is passed on as a write-EOF
(`shutdown(SHUT_WR)`) to the other, and the pair closes once both directions
are done or either side resets.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from tulle.proxy.metrics import TcpStats


class TunnelSide(asyncio.Protocol):
    """One end of a tunnel: reads from its transport and writes to the peer side."""

    __slots__ = ("_eof", "_held", "_lost", "peer", "stats", "transport", "tunnel")

    def __init__(self, tunnel: Tunnel, stats: TcpStats | None) -> None:
        self.tunnel = tunnel
        self.stats = stats
        self.transport: asyncio.Transport | None = None
        self.peer: TunnelSide | None = None
        self._eof = False
        self._lost = False
        # Bytes read before the peer was attached (a server-speaks-first banner
        # can arrive first); handed over by `release()`.
        self._held: list[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if self.stats is not None:
            self.stats.opens += 1
        peer = self.peer
        if peer is None or peer.transport is None:
            # Nothing to write to yet (e.g. a server-speaks-first banner before
            # the client side is attached): hold the bytes in the kernel.
            self.transport.pause_reading()

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if self.stats is not None:
            self.stats.read_bytes += len(data)
        if peer is None or peer.transport is None:
            # The transport may have started reading despite the pause in
            # connection_made: keep the bytes, and pause now that it counts.
            if self._held is None:
                self._held = []
            self._held.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        if peer._lost:
            return
        if peer.stats is not None:
            peer.stats.write_bytes += len(data)
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self._eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return True  # passed on by release() once the peer is attached
        if not peer._lost:
            if peer.transport.can_write_eof():
                peer.transport.write_eof()
            else:  # TLS cannot half-close: finish the whole tunnel
                self.tunnel.close()
                return False
        if peer is not None and peer._eof:
            self.tunnel.close()
            return False
        return True  # keep our write side open for the other direction

    def release(self) -> None:
        """The peer is attached: hand over what was held, then any EOF."""
        held, self._held = self._held, None
        peer = self.peer
        if peer is None or peer.transport is None or peer._lost:
            return
        for data in held or ():
            if peer.stats is not None:
                peer.stats.write_bytes += len(data)
            peer.transport.write(data)
        if self._eof:
            self._eof = False
            self.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        if self.stats is not None:
            self.stats.closes += 1
        self.tunnel.close(abort=exc is not None)

    # Backpressure: our transport's buffer is full, so stop reading from the peer.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None and not self.peer._lost:
            self.peer.transport.resume_reading()


class Tunnel:
    """A pair of `TunnelSide`s joined together."""

    __slots__ = ("_closed", "downstream", "on_close", "upstream")

    def __init__(self, down_stats: TcpStats | None, up_stats: TcpStats | None) -> None:
        self.downstream = TunnelSide(self, down_stats)
        self.upstream = TunnelSide(self, up_stats)
        self.downstream.peer = self.upstream
        self.upstream.peer = self.downstream
        self._closed = False
        # Called once when the tunnel closes (e.g. to end the balancer's count).
        self.on_close: Callable[[], None] | None = None

    def start(self) -> None:
        """Both sides are attached: let bytes flow."""
        for side in (self.downstream, self.upstream):
            side.release()
        for side in (self.downstream, self.upstream):
            t = side.transport
            if t is not None and not t.is_closing() and not side._eof:
                t.resume_reading()

    def close(self, abort: bool = False) -> None:
        if self._closed:
            return
        self._closed = True
        if self.on_close is not None:
            self.on_close()
        for side in (self.downstream, self.upstream):
            t = side.transport
            if t is not None and not t.is_closing():
                if abort:
                    t.abort()
                else:
                    t.close()
