"""One HTTP/2 (and gRPC) mirror copy on its own connection, its answer discarded.

`tulle.proxy.mirror.Mirrors.send_h2` hands a copy here once the original
stream is over: the client's request headers (less the override header), its
DATA (whole, at most the call's replay limit) and trailers. `H2Copy` speaks
the client side of one HTTP/2 connection (prior knowledge, or mesh TLS with
ALPN `tulle.h2` when the endpoint has an identity: the pool dials), sends the
one stream within the peer's flow-control windows, reads the answer only to
acknowledge its DATA and see its end, and is done at the stream's end, a
reset, a GOAWAY or the connection's loss. The caller closes the connection
then, or at its timeout.

h2 is imported with this module, which `Mirrors` imports on the first HTTP/2
copy only: a proxy that mirrors nothing over HTTP/2 never loads it from here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from tulle.codec.http2 import Header

# Headers a copy never carries: connection-specific ones (RFC 9113 8.2.2),
# which a client may not send in HTTP/2 anyway, are dropped defensively.
_NOT_COPIED = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


def copy_headers(headers: Sequence[Header], drop: bytes | None) -> list[Header]:
    """The request headers a copy sends: the client's, less `drop` (the
    per-request override header, read by this proxy only) and hop-by-hop ones."""
    return [(k, v) for k, v in headers if k != drop and k not in _NOT_COPIED]


class H2Copy(asyncio.Protocol):
    """The client side of one connection carrying one copied stream."""

    def __init__(
        self,
        done: asyncio.Future[None],
        headers: list[Header],
        body: bytes,
        trailers: list[Header] | None,
    ) -> None:
        self.done = done
        self._headers = headers
        self._body = memoryview(body)
        self._trailers = trailers
        self._conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._transport: asyncio.WriteTransport | None = None
        self._stream_id = 0
        self._sent_end = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        conn = self._conn
        conn.initiate_connection()
        self._stream_id = conn.get_next_available_stream_id()
        last = not self._body and self._trailers is None
        conn.send_headers(self._stream_id, self._headers, end_stream=last)
        self._sent_end = last
        self._pump()

    def _pump(self) -> None:
        """Send what the windows allow of the body, then its end."""
        conn = self._conn
        sid = self._stream_id
        body = self._body
        while body and not self._sent_end:
            size = min(len(body), conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if size <= 0:
                break
            conn.send_data(sid, body[:size].tobytes())
            body = body[size:]
        self._body = body
        if not body and not self._sent_end:
            self._sent_end = True
            if self._trailers is not None:
                conn.send_headers(sid, self._trailers, end_stream=True)
            else:
                conn.end_stream(sid)
        self._flush()

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data and self._transport is not None:
            self._transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self._conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._finish()
            return
        sid = self._stream_id
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                if event.flow_controlled_length:
                    self._conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            elif isinstance(event, h2.events.WindowUpdated):
                if not self._sent_end:
                    self._pump()
            elif isinstance(event, h2.events.StreamEnded | h2.events.StreamReset):
                if event.stream_id == sid:
                    self._finish()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._finish()
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)
