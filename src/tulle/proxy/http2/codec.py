"""The HTTP/2 codec under each proxied connection: native (libnghttp2) or pure Python (h2).

Both codecs offer one sans-IO surface, `H2Codec`: bytes in, events out as
tuples `(kind, stream_id, a, b)` (the kinds below), frames queued by the
send methods, bytes to write from `data_to_send()`. The native one is
`tulle.codec._h2native` (src/tulle/codec/_h2native.c): nghttp2 parses,
HPACK-codes and keeps the stream states, flow control and limits in C, and
Python sees one tuple per event. The pure-Python one adapts h2's
`H2Connection` to the same surface; it runs when the extension was not
built or cannot load (no compiler or no libnghttp2 at install time), or
when `TULLE_H2_CODEC=python` asks for it.

Which codec runs is decided once per process (`CODEC`), logged once when
it is the fallback, and exported as `tulle_http2_codec_info{codec=...}`.

Events, by kind:

| kind | stream_id | a | b |
|---|---|---|---|
| REQUEST, RESPONSE | stream | headers | ended (bool) |
| INFORMATIONAL | stream | headers (1xx) | False |
| TRAILERS | stream | headers | None |
| DATA | stream | bytes | flow-controlled length |
| DATA_END | stream | bytes | flow-controlled length: DATA, then END, as one event |
| END | stream (the peer ended its side) | None | None |
| RESET | stream | error code | None |
| WINDOW | stream, or 0 for the connection | None | None |
| PING, SETTINGS | 0 | (SETTINGS: initial window changed) | None |
| GOAWAY | last stream id | error code | None |
| EMPTY_DATA | stream (an empty DATA frame not ending it) | None | None |

Errors: a connection error raises `h2.exceptions.ProtocolError` from
`receive_data`, with the GOAWAY already queued; sending on a stream that is
gone raises `h2.exceptions.StreamClosedError` (both are `H2Error`s).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import h2.exceptions

from tulle.codec.http2 import Header

REQUEST = 1
RESPONSE = 2
INFORMATIONAL = 3
TRAILERS = 4
DATA = 5
END = 6
RESET = 7
WINDOW = 8
PING = 9
SETTINGS = 10
GOAWAY = 11
EMPTY_DATA = 12
# A DATA frame with END_STREAM whose bytes came in this read: handled in one
# step (one pump; the end leaves with the DATA, not as an empty frame after it).
DATA_END = 13

Event = tuple[int, int, Any, Any]


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


class NativeCodecError(h2.exceptions.H2Error):
    """nghttp2 refused a call for a reason other than a closed stream."""


class H2Codec(Protocol):
    """What the proxy asks of an HTTP/2 connection's codec (see the module docstring)."""

    @property
    def highest_inbound_stream_id(self) -> int: ...
    @property
    def peer_max_concurrent_streams(self) -> int: ...
    @property
    def max_outbound_frame_size(self) -> int: ...

    def receive_data(self, data: bytes | memoryview) -> list[Event]: ...
    def data_to_send(self) -> bytes: ...
    def clear_outbound_data_buffer(self) -> None: ...
    def send_request(self, headers: Sequence[Header], end_stream: bool) -> int: ...
    def send_headers(
        self, stream_id: int, headers: Sequence[Header], end_stream: bool = False
    ) -> None: ...
    def send_data(
        self, stream_id: int, data: bytes | memoryview, end_stream: bool = False
    ) -> None: ...
    def end_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, error_code: int = 0) -> None: ...
    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None: ...
    def local_flow_control_window(self, stream_id: int) -> int: ...
    def close_connection(self, error_code: int = 0) -> None: ...
    def stream_open(self, stream_id: int) -> bool: ...
    def ping(self, opaque_data: bytes) -> None: ...


def _load_native() -> tuple[Any, str]:
    """The native module and its library version, or (None, why not)."""
    try:
        from tulle.codec import _h2native  # type: ignore[attr-defined]
    except ImportError as exc:
        return None, str(exc)
    _h2native.configure(
        h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError, NativeCodecError
    )
    return _h2native, str(_h2native.library_version())


def _choose() -> tuple[Any, str, str]:
    """(native module or None, codec name, detail) for this process."""
    wanted = os.environ.get("TULLE_H2_CODEC", "auto")
    if wanted == "python":
        return None, "python", "TULLE_H2_CODEC=python"
    native, detail = _load_native()
    if native is None:
        return None, "python", detail
    return native, "nghttp2", detail


NATIVE, CODEC, CODEC_DETAIL = _choose()
