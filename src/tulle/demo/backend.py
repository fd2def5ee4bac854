"""The demo backend: a small, fast HTTP/1.1 server and two raw TCP servers.

It is what `tulle demo` puts behind the proxy, what the integration tests drive
the proxy against, and what `bench/` measures. It runs on uvloop + httptools
with `asyncio.Protocol`, keeps connections alive, answers pipelined requests in
order, and streams every body (request and response) with flow control both
ways, so a 1 GB upload or download never sits in memory.

HTTP routes (HEAD works on all of them and sends the GET head without a body):

* ``GET /`` -- ``Hello, Tulle\\n`` (13 bytes), head and body in one write: the
  benchmark response.
* ``/echo`` -- streams the request body back, chunked (close-delimited to
  HTTP/1.0 clients).
* ``/bytes/<n>`` -- n bytes with a Content-Length, written in bounded pieces.
* ``/sink`` -- reads a body of any size; answers ``{"bytes": n, "crc32": c}``.
* ``/status/<code>`` -- that status (no body for 1xx, 204 and 304).
* ``/delay/<ms>`` -- answers 200 after that many milliseconds.
* ``/headers`` -- the request head as JSON: method, target, version, headers in
  order, as received.
* ``/close`` -- answers with ``Connection: close`` and closes.
* ``/chunked`` -- a chunked response in several pieces with a trailer.
* ``/cached`` -- 200 with an ETag; 304 when ``If-None-Match`` matches.
* ``/reset`` -- resets the connection (RST) instead of answering.
* ``/stats`` -- JSON counters: connections accepted, requests served.
* ``/ws`` -- WebSocket (RFC 6455) echo.

TCP modes: ``tcp-echo`` echoes bytes with backpressure and answers a half-close
with its own half-close once everything is echoed; ``banner`` writes
``220 ready\\r\\n`` as soon as a client connects (a server-speaks-first
protocol, like SMTP), then echoes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import signal
import socket
import struct
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal, cast

import httptools

Mode = Literal["http", "tcp-echo", "banner"]

HELLO_BODY = b"Hello, Tulle\n"
BANNER = b"220 ready\r\n"
# Bytes handed to the kernel per write when streaming a large body: bounded so
# memory stays flat, large enough that syscalls stay few.
STREAM_PIECE = 64 * 1024
# Request-body bytes queued for a handler before the connection stops reading.
BODY_HIGH_WATER = 256 * 1024
BODY_LOW_WATER = 64 * 1024
WRITE_HIGH_WATER = 256 * 1024
MAX_WS_FRAME = 16 * 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_PATTERN_BLOCK = bytes(range(256)) * (STREAM_PIECE // 256)

# Prebuilt benchmark responses: the hot path does one dict lookup and one write.
_HELLO_HEAD_11 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n" % len(
    HELLO_BODY
)
_HELLO_HEAD_10_KEEP = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: keep-alive\r\n\r\n" % len(HELLO_BODY)
)
_HELLO_HEAD_CLOSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
    b"Connection: close\r\n\r\n" % len(HELLO_BODY)
)

_REASONS: dict[int, str] = {
    100: "Continue",
    101: "Switching Protocols",
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    301: "Moved Permanently",
    302: "Found",
    304: "Not Modified",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Content Too Large",
    417: "Expectation Failed",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


@dataclass
class BackendStats:
    """Counters shared by every connection of one server (read by ``/stats``)."""

    connections_accepted: int = 0
    requests: int = 0


@dataclass
class Request:
    """One parsed request; its body arrives while the handler runs."""

    method: str
    target: str
    path: str
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    fast: bool = False
    upgrade: bool = False
    body_done: bool = False
    continue_sent: bool = False
    body_buffered: int = 0
    body_chunks: deque[bytes] = field(default_factory=deque)
    body_ready: asyncio.Event = field(default_factory=asyncio.Event)

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def expects_continue(self) -> bool:
        expect = self.header("expect")
        return expect is not None and expect.lower() == "100-continue"


class HttpBackendProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: parse, queue in arrival order, answer in order."""

    def __init__(self, stats: BackendStats) -> None:
        self._stats = stats
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        self._in_headers = False
        self._current: Request | None = None
        self._pending: deque[Request] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False
        self._closed = False
        self._eof = False
        self._upgraded = False
        self._after_upgrade = bytearray()
        self._websocket: WebSocketEcho | None = None

    # -- transport callbacks -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._stats.connections_accepted += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._can_write.set()
        for request in self._pending:
            request.body_done = True
            request.body_ready.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        if self._websocket is not None:
            self._websocket.feed(data)
            return
        if self._upgraded:
            self._after_upgrade += data
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            offset = upgrade.args[0]
            self._upgraded = True
            self._after_upgrade += data[offset:]
            if self._current is not None and not self._current.body_done:
                self._finish_message()
        except httptools.HttpParserError:
            self._write(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            self._close()

    def eof_received(self) -> bool:
        # Let queued requests finish; the connection closes when they have.
        if self._worker is None and not self._pending:
            return False
        self._eof = True
        return True

    # -- parser callbacks ----------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._in_headers = True

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Trailers also arrive here; only the head is kept.
        if self._in_headers:
            self._headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_headers = False
        parser = self._parser
        method = parser.get_method().decode("ascii")
        target = self._url.decode("latin-1")
        path = target
        if not target.startswith("/"):
            # Absolute-form: route on its path.
            with contextlib.suppress(httptools.HttpParserInvalidURLError):
                path = (httptools.parse_url(self._url).path or b"/").decode("latin-1")
        path = path.split("?", 1)[0]
        request = Request(
            method=method,
            target=target,
            path=path,
            version=parser.get_http_version(),
            headers=self._headers,
            keep_alive=parser.should_keep_alive(),
            upgrade=parser.should_upgrade(),
        )
        request.fast = (
            path == "/"
            and method in ("GET", "HEAD")
            and not request.upgrade
            and self._worker is None
            and not self._pending
        )
        self._current = request
        if not request.fast:
            self._pending.append(request)
            if self._worker is None:
                self._worker = asyncio.get_running_loop().create_task(self._serve_queue())

    def on_body(self, body: bytes) -> None:
        request = self._current
        if request is None or request.fast:
            return
        request.body_chunks.append(body)
        request.body_buffered += len(body)
        request.body_ready.set()
        if request.body_buffered > BODY_HIGH_WATER and not self._reading_paused:
            self._reading_paused = True
            assert self._transport is not None
            self._transport.pause_reading()

    def on_message_complete(self) -> None:
        self._finish_message()

    def _finish_message(self) -> None:
        request = self._current
        self._current = None
        if request is None:
            return
        self._stats.requests += 1
        if request.fast:
            self._answer_hello(request)
            return
        request.body_done = True
        request.body_ready.set()

    # -- writing ---------------------------------------------------------------

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    async def drain(self) -> None:
        if not self._can_write.is_set():
            await self._can_write.wait()

    def _close(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.close()

    def _answer_hello(self, request: Request) -> None:
        if not request.keep_alive:
            head = _HELLO_HEAD_CLOSE
        elif request.version == "1.0":
            head = _HELLO_HEAD_10_KEEP
        else:
            head = _HELLO_HEAD_11
        self._write(head if request.method == "HEAD" else head + HELLO_BODY)
        if not request.keep_alive:
            self._close()

    def _head_bytes(
        self,
        request: Request,
        status: int,
        headers: list[tuple[str, str]],
        framing: Literal["length", "chunked", "close", "none"],
        length: int = 0,
    ) -> bytes:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{name}: {value}" for name, value in headers)
        if framing == "length":
            lines.append(f"Content-Length: {length}")
        elif framing == "chunked":
            lines.append("Transfer-Encoding: chunked")
        if framing == "close" or not request.keep_alive:
            lines.append("Connection: close")
        elif request.version == "1.0":
            lines.append("Connection: keep-alive")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def respond(
        self,
        request: Request,
        status: int,
        body: bytes = b"",
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """A whole response in one write (head and body together)."""
        all_headers = headers if headers is not None else [("Content-Type", "text/plain")]
        if status < 200 or status in (204, 304):
            head = self._head_bytes(request, status, all_headers, "none")
            self._write(head)
            return
        head = self._head_bytes(request, status, all_headers, "length", len(body))
        self._write(head if request.method == "HEAD" else head + body)

    def start_stream(
        self, request: Request, status: int, headers: list[tuple[str, str]], length: int | None
    ) -> bool:
        """Send a streaming response head; returns whether chunked framing is used."""
        if request.method != "HEAD" and request.expects_continue and not request.continue_sent:
            # A route that will read the body answers 100 first: a 100 after
            # the final head would be read as body bytes.
            request.continue_sent = True
            if not request.body_done and request.version != "1.0":
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if length is not None:
            self._write(self._head_bytes(request, status, headers, "length", length))
            return False
        if request.version == "1.0":
            request.keep_alive = False
            self._write(self._head_bytes(request, status, headers, "close"))
            return False
        self._write(self._head_bytes(request, status, headers, "chunked"))
        return True

    def write_chunk(self, data: bytes | memoryview, chunked: bool) -> None:
        if not data:
            return
        if chunked and self._transport is not None and not self._closed:
            self._transport.writelines([b"%x\r\n" % len(data), data, b"\r\n"])
        else:
            self._write(data)

    # -- request bodies ----------------------------------------------------------

    async def read_body(self, request: Request) -> bytes | None:
        """The next piece of the request body, or None at its end."""
        if request.expects_continue and not request.continue_sent:
            request.continue_sent = True
            if not request.body_done and request.version != "1.0":
                self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        while not request.body_chunks:
            if request.body_done or self._closed:
                return None
            request.body_ready.clear()
            await request.body_ready.wait()
        chunk = request.body_chunks.popleft()
        request.body_buffered -= len(chunk)
        if self._reading_paused and request.body_buffered < BODY_LOW_WATER:
            self._reading_paused = False
            if self._transport is not None and not self._closed:
                self._transport.resume_reading()
        return chunk

    async def _discard_body(self, request: Request) -> None:
        if request.expects_continue and not request.continue_sent and not request.body_done:
            # The client waits for 100 before sending a body we do not want.
            request.keep_alive = False
            return
        while await self.read_body(request) is not None:
            pass

    # -- the per-connection request loop -----------------------------------------

    async def _serve_queue(self) -> None:
        try:
            while self._pending and not self._closed:
                request = self._pending[0]
                await self._handle(request)
                if self._websocket is not None:
                    return
                await self._discard_body(request)
                self._pending.popleft()
                if not request.keep_alive or self._upgraded:
                    await self.drain()
                    self._close()
                    return
        finally:
            self._worker = None
        if self._eof and not self._closed:
            # The client half-closed while its requests were being answered.
            self._close()

    async def _handle(self, request: Request) -> None:
        path = request.path
        exact = self._exact_routes().get(path)
        if exact is not None:
            await exact(request, "")
            return
        for prefix, handler in self._prefix_routes():
            if path.startswith(prefix):
                await handler(request, path[len(prefix) :])
                return
        self.respond(request, 404, b"not found\n")

    def _exact_routes(self) -> dict[str, Callable[[Request, str], Awaitable[None]]]:
        return {
            "/": self._route_hello,
            "/echo": self._route_echo,
            "/sink": self._route_sink,
            "/headers": self._route_headers,
            "/close": self._route_close,
            "/chunked": self._route_chunked,
            "/cached": self._route_cached,
            "/reset": self._route_reset,
            "/stats": self._route_stats,
            "/ws": self._route_websocket,
        }

    def _prefix_routes(self) -> list[tuple[str, Callable[[Request, str], Awaitable[None]]]]:
        return [
            ("/bytes/", self._route_bytes),
            ("/status/", self._route_status),
            ("/delay/", self._route_delay),
        ]

    # -- routes ------------------------------------------------------------------

    async def _route_hello(self, request: Request, _: str) -> None:
        self._answer_hello(request)

    async def _route_echo(self, request: Request, _: str) -> None:
        content_type = request.header("content-type") or "application/octet-stream"
        chunked = self.start_stream(request, 200, [("Content-Type", content_type)], None)
        if request.method == "HEAD":
            if chunked:
                return
            request.keep_alive = False
            return
        while (piece := await self.read_body(request)) is not None:
            self.write_chunk(piece, chunked)
            await self.drain()
        if chunked:
            self._write(b"0\r\n\r\n")

    async def _route_bytes(self, request: Request, argument: str) -> None:
        if not argument.isdigit():
            self.respond(request, 400, b"usage: /bytes/<n>\n")
            return
        remaining = int(argument)
        self.start_stream(request, 200, [("Content-Type", "application/octet-stream")], remaining)
        if request.method == "HEAD":
            return
        block = memoryview(_PATTERN_BLOCK)
        while remaining > 0 and not self._closed:
            piece = block[: min(remaining, STREAM_PIECE)]
            self._write(piece)
            remaining -= len(piece)
            await self.drain()

    async def _route_sink(self, request: Request, _: str) -> None:
        received = 0
        crc = 0
        while (piece := await self.read_body(request)) is not None:
            received += len(piece)
            crc = zlib.crc32(piece, crc)
        body = json.dumps({"bytes": received, "crc32": crc}).encode() + b"\n"
        self.respond(request, 200, body, [("Content-Type", "application/json")])

    async def _route_status(self, request: Request, argument: str) -> None:
        if not argument.isdigit() or not 100 <= int(argument) <= 599:
            self.respond(request, 400, b"usage: /status/<code>\n")
            return
        code = int(argument)
        self.respond(request, code, f"status {code}\n".encode())

    async def _route_delay(self, request: Request, argument: str) -> None:
        if not argument.isdigit():
            self.respond(request, 400, b"usage: /delay/<ms>\n")
            return
        await asyncio.sleep(int(argument) / 1000)
        self.respond(request, 200, f"delayed {argument} ms\n".encode())

    async def _route_headers(self, request: Request, _: str) -> None:
        document = {
            "method": request.method,
            "target": request.target,
            "version": request.version,
            "headers": [[name, value] for name, value in request.headers],
        }
        body = json.dumps(document).encode() + b"\n"
        self.respond(request, 200, body, [("Content-Type", "application/json")])

    async def _route_close(self, request: Request, _: str) -> None:
        request.keep_alive = False
        self.respond(request, 200, b"closing\n")

    async def _route_chunked(self, request: Request, _: str) -> None:
        pieces = [b"first piece\n", b"second piece\n", b"third piece\n"]
        checksum = zlib.crc32(b"".join(pieces))
        if request.version == "1.0":
            self.respond(request, 200, b"".join(pieces))
            return
        head = self._head_bytes(
            request,
            200,
            [("Content-Type", "text/plain"), ("Trailer", "X-Checksum")],
            "chunked",
        )
        self._write(head)
        if request.method == "HEAD":
            return
        for piece in pieces:
            self.write_chunk(piece, chunked=True)
            await self.drain()
            # Separate writes so the pieces reach the proxy as separate reads.
            await asyncio.sleep(0.005)
        self._write(b"0\r\nX-Checksum: %d\r\n\r\n" % checksum)

    async def _route_cached(self, request: Request, _: str) -> None:
        etag = '"tulle-demo-v1"'
        if request.header("if-none-match") == etag:
            self.respond(request, 304, headers=[("ETag", etag)])
            return
        self.respond(request, 200, b"cacheable\n", [("ETag", etag), ("Content-Type", "text/plain")])

    async def _route_reset(self, request: Request, _: str) -> None:
        transport = self._transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 turns close into a RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._closed = True
        transport.abort()

    async def _route_stats(self, request: Request, _: str) -> None:
        document = {
            "connections_accepted": self._stats.connections_accepted,
            "requests": self._stats.requests,
        }
        body = json.dumps(document).encode() + b"\n"
        self.respond(request, 200, body, [("Content-Type", "application/json")])

    async def _route_websocket(self, request: Request, _: str) -> None:
        key = request.header("sec-websocket-key")
        upgrade = (request.header("upgrade") or "").lower()
        if not request.upgrade or upgrade != "websocket" or key is None:
            self.respond(request, 426, b"websocket upgrade required\n", [("Upgrade", "websocket")])
            return
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        self._write(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            ).encode()
        )
        assert self._transport is not None
        self._websocket = WebSocketEcho(self._transport)
        leftover = bytes(self._after_upgrade)
        self._after_upgrade.clear()
        if leftover:
            self._websocket.feed(leftover)


class WebSocketEcho:
    """Server side of RFC 6455 framing: echo data frames, answer ping and close."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._buffer = bytearray()
        self._closing = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        while not self._closing:
            frame = self._next_frame()
            if frame is None:
                return
            first_byte, payload = frame
            opcode = first_byte & 0x0F
            if opcode == 0x8:
                self._send(0x80 | 0x8, payload[:125])
                self._closing = True
                self._transport.close()
            elif opcode == 0x9:
                self._send(0x80 | 0xA, payload)
            elif opcode == 0xA:
                continue
            else:
                # Echo with the same FIN bit and opcode: fragmented messages
                # come back fragmented the same way, which stays valid.
                self._send(first_byte & 0x8F, payload)

    def _next_frame(self) -> tuple[int, bytes] | None:
        buffer = self._buffer
        if len(buffer) < 2:
            return None
        first_byte, second_byte = buffer[0], buffer[1]
        length = second_byte & 0x7F
        position = 2
        if length == 126:
            if len(buffer) < 4:
                return None
            length = int.from_bytes(buffer[2:4], "big")
            position = 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            length = int.from_bytes(buffer[2:10], "big")
            position = 10
        if length > MAX_WS_FRAME:
            self._send(0x88, struct.pack("!H", 1009))
            self._closing = True
            self._transport.close()
            return None
        mask = b""
        if second_byte & 0x80:
            if len(buffer) < position + 4:
                return None
            mask = bytes(buffer[position : position + 4])
            position += 4
        end = position + length
        if len(buffer) < end:
            return None
        payload = bytes(buffer[position:end])
        del buffer[:end]
        if mask:
            payload = _unmask(payload, mask)
        return first_byte, payload

    def _send(self, first_byte: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", first_byte, length)
        elif length < 65536:
            header = struct.pack("!BBH", first_byte, 126, length)
        else:
            header = struct.pack("!BBQ", first_byte, 127, length)
        self._transport.writelines([header, payload])


def _unmask(payload: bytes, mask: bytes) -> bytes:
    size = len(payload)
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(size, "big")


class TcpEchoProtocol(asyncio.Protocol):
    """Opaque echo with backpressure; a client's half-close is answered in kind.

    In banner mode the server speaks first, as SMTP and MySQL servers do.
    """

    def __init__(self, stats: BackendStats, banner: bytes = b"") -> None:
        self._stats = stats
        self._banner = banner
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        self._stats.connections_accepted += 1
        if self._banner:
            transport.write(self._banner)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._transport.write(data)

    def pause_writing(self) -> None:
        # The peer reads slower than it writes: stop reading so nothing piles up.
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def eof_received(self) -> bool:
        # write_eof flushes what is buffered first, then sends our FIN.
        if self._transport is not None and self._transport.can_write_eof():
            self._transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None


def parse_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) into a host and a port."""
    host, separator, port = addr.rpartition(":")
    if not separator or not port.isdigit():
        raise ValueError(f"expected HOST:PORT, got {addr!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


async def serve(
    host: str,
    port: int,
    mode: Mode = "http",
    ready: Callable[[tuple[str, int]], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT; ``ready`` is called with the bound address."""
    loop = asyncio.get_running_loop()
    stats = BackendStats()
    factory: Callable[[], asyncio.Protocol]
    if mode == "http":

        def factory() -> asyncio.Protocol:
            return HttpBackendProtocol(stats)

    elif mode == "tcp-echo":

        def factory() -> asyncio.Protocol:
            return TcpEchoProtocol(stats)

    else:

        def factory() -> asyncio.Protocol:
            return TcpEchoProtocol(stats, BANNER)

    server = await loop.create_server(factory, host, port, reuse_address=True, backlog=1024)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    bound = server.sockets[0].getsockname()
    if ready is not None:
        ready((bound[0], bound[1]))
    try:
        await stop.wait()
    finally:
        server.close()


def run(
    addr: str, mode: Mode = "http", ready: Callable[[tuple[str, int]], None] | None = None
) -> None:
    """Run a backend in this process on uvloop (asyncio's loop if uvloop is absent).

    The opaque modes (tcp-echo, banner) run on asyncio's own loop: under a
    busy machine, uvloop 0.22.1 and 0.23.0 aborted this echo server with
    glibc's "double free or corruption (!prev)" after some tens of short
    connections (reproduced with `stress-ng --cpu 3` beside
    tests/integration/proxy/test_proxy_opaque_tcp.py; the proxy in front then
    saw "connection refused"). Those modes carry test and demo traffic, not
    benchmarks, so they trade uvloop's speed for a loop that does not crash.
    """
    host, port = parse_addr(addr)
    if mode != "http":
        asyncio.run(serve(host, port, mode, ready))
        return
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(host, port, mode, ready))
        return
    uvloop.run(serve(host, port, mode, ready))
