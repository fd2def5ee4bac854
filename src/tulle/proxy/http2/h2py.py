"""The pure-Python HTTP/2 codec: h2's `H2Connection` behind the `H2Codec` surface.

It runs when the native codec (`tulle.codec._h2native`) is not there; see
`tulle.proxy.http2.codec`. h2, hpack and hyperframe are imported only with
this module, so a proxy on the native codec never loads them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.events as ev
import h2.settings
import hyperframe.frame
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from tulle.codec.http2 import Header

from .codec import (
    DATA,
    DATA_END,
    EMPTY_DATA,
    END,
    GOAWAY,
    INFORMATIONAL,
    PING,
    REQUEST,
    RESET,
    RESPONSE,
    SETTINGS,
    TRAILERS,
    WINDOW,
    Event,
    H2Limits,
)

# RFC 9113 defaults; a larger connection window than 64 KiB is what lets a
# single stream reach line rate across the proxy.
_DEFAULT_WINDOW = 65_535


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


class PyH2Codec:
    """The pure-Python codec: h2's H2Connection, its events turned into the tuples."""

    def __init__(self, *, client_side: bool, limits: H2Limits) -> None:
        self.conn = new_h2_connection(client_side=client_side, limits=limits)

    @property
    def highest_inbound_stream_id(self) -> int:
        return int(self.conn.highest_inbound_stream_id)

    @property
    def peer_max_concurrent_streams(self) -> int:
        return int(self.conn.remote_settings.max_concurrent_streams)

    @property
    def max_outbound_frame_size(self) -> int:
        return int(self.conn.max_outbound_frame_size)

    def receive_data(self, data: bytes | memoryview) -> list[Event]:
        out: list[Event] = []
        folded: ev.StreamEnded | None = None  # the StreamEnded a DATA_END stands for
        for event in self.conn.receive_data(data):
            if isinstance(event, ev.DataReceived):
                if not event.data and event.stream_ended is None:
                    out.append((EMPTY_DATA, event.stream_id, None, None))
                    if event.flow_controlled_length:
                        out.append((DATA, event.stream_id, b"", event.flow_controlled_length))
                elif event.data and event.stream_ended is not None:
                    folded = event.stream_ended
                    out.append(
                        (DATA_END, event.stream_id, event.data, event.flow_controlled_length)
                    )
                else:
                    out.append((DATA, event.stream_id, event.data, event.flow_controlled_length))
            elif isinstance(event, ev.RequestReceived):
                out.append(
                    (REQUEST, event.stream_id, event.headers, event.stream_ended is not None)
                )
            elif isinstance(event, ev.ResponseReceived):
                out.append(
                    (RESPONSE, event.stream_id, event.headers, event.stream_ended is not None)
                )
            elif isinstance(event, ev.StreamEnded):
                if event is not folded:
                    out.append((END, event.stream_id, None, None))
            elif isinstance(event, ev.TrailersReceived):
                out.append((TRAILERS, event.stream_id, event.headers, None))
            elif isinstance(event, ev.InformationalResponseReceived):
                out.append((INFORMATIONAL, event.stream_id, event.headers, False))
            elif isinstance(event, ev.WindowUpdated):
                out.append((WINDOW, event.stream_id, None, None))
            elif isinstance(event, ev.StreamReset):
                out.append((RESET, event.stream_id, int(event.error_code or 0), None))
            elif isinstance(event, ev.PingReceived):
                out.append((PING, 0, None, None))
            elif isinstance(event, ev.RemoteSettingsChanged):
                window = h2.settings.SettingCodes.INITIAL_WINDOW_SIZE in event.changed_settings
                out.append((SETTINGS, 0, window, None))
            elif isinstance(event, ev.ConnectionTerminated):
                out.append((GOAWAY, event.last_stream_id or 0, int(event.error_code or 0), None))
        return out

    def data_to_send(self) -> bytes:
        return bytes(self.conn.data_to_send())

    def clear_outbound_data_buffer(self) -> None:
        self.conn.clear_outbound_data_buffer()

    def send_request(self, headers: Sequence[Header], end_stream: bool) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)
        return stream_id

    def send_headers(
        self, stream_id: int, headers: Sequence[Header], end_stream: bool = False
    ) -> None:
        self.conn.send_headers(stream_id, headers, end_stream=end_stream)

    def send_data(self, stream_id: int, data: bytes | memoryview, end_stream: bool = False) -> None:
        self.conn.send_data(stream_id, data, end_stream=end_stream)

    def end_stream(self, stream_id: int) -> None:
        self.conn.end_stream(stream_id)

    def reset_stream(self, stream_id: int, error_code: int = 0) -> None:
        self.conn.reset_stream(stream_id, error_code)

    def acknowledge_received_data(self, acknowledged_size: int, stream_id: int) -> None:
        self.conn.acknowledge_received_data(acknowledged_size, stream_id)

    def local_flow_control_window(self, stream_id: int) -> int:
        return int(self.conn.local_flow_control_window(stream_id))

    def close_connection(self, error_code: int = 0) -> None:
        self.conn.close_connection(error_code=error_code)

    def stream_open(self, stream_id: int) -> bool:
        stream = self.conn.streams.get(stream_id)
        return stream is not None and not stream.closed

    def ping(self, opaque_data: bytes) -> None:
        self.conn.ping(opaque_data)
