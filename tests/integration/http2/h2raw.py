"""A raw HTTP/2 client for tests: hand-built frames in, parsed frames out.

For the cases a well-behaved client cannot produce (floods, oversized or
malformed frames, more streams than allowed) and for exact checks (which
GOAWAY code, which trailers). Frames are built with `hyperframe` and header
blocks with `hpack`, so nothing here enforces the protocol on our side.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterable

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_FRAME_HEADER = 9


class RawH2:
    """One connection; `send` frames, `read_until` a predicate on received frames."""

    def __init__(self, port: int, settings: dict[int, int] | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.buffer = b""
        self.frames: list[Frame] = []
        # The peer is gone: a read hit EOF or a reset, or a write failed.
        self.closed = False
        # Reading hit EOF or a reset. A failed write alone does not stop
        # reading: what the peer sent before it closed (its GOAWAY) may still
        # be there to read.
        self._eof = False
        hello = SettingsFrame(0)
        for key, value in (settings or {}).items():
            hello.settings[key] = value
        self.sock.sendall(PREFACE + hello.serialize())

    def close(self) -> None:
        self.sock.close()

    def handshake(self) -> SettingsFrame:
        """Wait for the server's SETTINGS and acknowledge them (so its limits apply)."""
        self.read_until(SettingsFrame)
        for frame in self.frames:
            if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                ack = SettingsFrame(0)
                ack.flags.add("ACK")
                self.send(ack)
                return frame
        raise AssertionError("the server sent no SETTINGS")

    def send(self, *frames: Frame) -> None:
        self.send_bytes(b"".join(f.serialize() for f in frames))

    def send_bytes(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def header_block(self, headers: Iterable[tuple[str, str]]) -> bytes:
        return bytes(self.encoder.encode(list(headers)))

    def headers(
        self, stream_id: int, headers: Iterable[tuple[str, str]], end_stream: bool = False
    ) -> HeadersFrame:
        frame = HeadersFrame(stream_id)
        frame.data = self.header_block(headers)
        frame.flags.add("END_HEADERS")
        if end_stream:
            frame.flags.add("END_STREAM")
        return frame

    def request(
        self, stream_id: int, authority: str, path: str = "/", method: str = "GET", **extra: str
    ) -> HeadersFrame:
        headers = [(":method", method), (":scheme", "http"), (":authority", authority)]
        headers.append((":path", path))
        headers += [(k.replace("_", "-"), v) for k, v in extra.items()]
        return self.headers(stream_id, headers, end_stream=method == "GET")

    def read_until(self, done: type[Frame] | None = None, timeout: float = 5.0) -> list[Frame]:
        """Read frames until one of type `done` arrives, the peer closes, or `timeout`."""
        deadline = time.monotonic() + timeout
        start = len(self.frames)
        while time.monotonic() < deadline and not self._eof:
            if done is not None and any(isinstance(f, done) for f in self.frames[start:]):
                break
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(1 << 16)
            except TimeoutError:
                break
            except OSError:
                self.closed = self._eof = True
                break
            if not chunk:
                self.closed = self._eof = True
                break
            self.buffer += chunk
            self._parse()
        return self.frames[start:]

    def _parse(self) -> None:
        while len(self.buffer) >= _FRAME_HEADER:
            frame, length = Frame.parse_frame_header(memoryview(self.buffer[:_FRAME_HEADER]))
            if len(self.buffer) < _FRAME_HEADER + length:
                return
            frame.parse_body(memoryview(self.buffer[_FRAME_HEADER : _FRAME_HEADER + length]))
            self.buffer = self.buffer[_FRAME_HEADER + length :]
            if isinstance(frame, HeadersFrame | ContinuationFrame) and frame.data:
                frame.decoded = self.decoder.decode(frame.data, raw=True)  # type: ignore[attr-defined]
            self.frames.append(frame)

    def goaway(self) -> GoAwayFrame | None:
        for frame in self.frames:
            if isinstance(frame, GoAwayFrame):
                return frame
        return None

    def headers_of(self, stream_id: int) -> list[list[tuple[bytes, bytes]]]:
        return [
            frame.decoded  # type: ignore[attr-defined]
            for frame in self.frames
            if isinstance(frame, HeadersFrame) and frame.stream_id == stream_id
        ]

    def data_of(self, stream_id: int) -> bytes:
        return b"".join(
            bytes(f.data)
            for f in self.frames
            if isinstance(f, DataFrame) and f.stream_id == stream_id
        )


def flood_streams(raw: RawH2, authority: str, batches: int = 40, until: float | None = None) -> int:
    """HEADERS + RST_STREAM pairs, 250 per write, until the proxy closes (or `batches`
    writes, or the monotonic time `until`); the streams sent."""
    sent = 0
    for batch in range(batches):
        if until is not None and time.monotonic() > until:
            break
        frames = []
        for i in range(250):
            stream_id = 2 * (batch * 250 + i) + 1
            frames += [raw.request(stream_id, authority, "/"), rst(stream_id)]
        raw.send(*frames)
        if raw.closed:
            break
        sent += 250
    return sent


def data(stream_id: int, payload: bytes, end_stream: bool = False) -> DataFrame:
    frame = DataFrame(stream_id)
    frame.data = payload
    if end_stream:
        frame.flags.add("END_STREAM")
    return frame


def rst(stream_id: int, code: int = 8) -> RstStreamFrame:
    frame = RstStreamFrame(stream_id)
    frame.error_code = code
    return frame


def ping(payload: bytes = b"12345678") -> PingFrame:
    frame = PingFrame(0)
    frame.opaque_data = payload
    return frame


def settings(values: dict[int, int] | None = None) -> SettingsFrame:
    frame = SettingsFrame(0)
    for key, value in (values or {}).items():
        frame.settings[key] = value
    return frame


def window_update(stream_id: int, increment: int) -> WindowUpdateFrame:
    frame = WindowUpdateFrame(stream_id)
    frame.window_increment = increment
    return frame


def continuation(stream_id: int, block: bytes, end_headers: bool) -> ContinuationFrame:
    frame = ContinuationFrame(stream_id)
    frame.data = block
    if end_headers:
        frame.flags.add("END_HEADERS")
    return frame


def grpc_message(payload: bytes) -> bytes:
    """One length-prefixed gRPC message (uncompressed)."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload
