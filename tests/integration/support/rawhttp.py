"""A small blocking HTTP/1 client over a raw socket, for exact-byte tests.

It sends exactly the bytes a test gives it and parses responses strictly
enough to check framing (Content-Length, chunked with trailers, close-delimited,
no body for HEAD/1xx/204/304). Every read has a timeout, so a proxy that hangs
fails the test instead of stalling it.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

DEFAULT_TIMEOUT_S = 5.0


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes = b""
    trailers: list[tuple[str, str]] = field(default_factory=list)
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]

    @property
    def proxy_error(self) -> str | None:
        return self.header("tulle-proxy-error")


class ConnectionClosed(Exception):
    """The peer closed before a complete response arrived."""


class RawHttpConnection:
    """One TCP connection; send bytes, read whole responses or raw bytes."""

    def __init__(self, host: str, port: int, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = bytearray()
        self.timeout = timeout

    def __enter__(self) -> RawHttpConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        """Read once into the buffer; False on EOF (a reset counts as one)."""
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False
        if not chunk:
            return False
        self._buffer += chunk
        return True

    def read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            if not self._fill():
                raise ConnectionClosed(f"EOF after {len(self._buffer)} of {size} bytes")
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read_line(self) -> bytes:
        while b"\r\n" not in self._buffer:
            if not self._fill():
                raise ConnectionClosed(f"EOF inside a line: {bytes(self._buffer)!r}")
        index = self._buffer.index(b"\r\n")
        line = bytes(self._buffer[:index])
        del self._buffer[: index + 2]
        return line

    def read_until_close(self, limit: int = 1 << 30) -> bytes:
        while len(self._buffer) < limit and self._fill():
            pass
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def read_some(self) -> bytes:
        """What is buffered, or one read; b"" at EOF."""
        if not self._buffer:
            self._fill()
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def read_head(self) -> RawResponse:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > 1 << 20:
                raise ValueError("response head over 1 MiB")
            if not self._fill():
                raise ConnectionClosed(f"EOF before a response head: {bytes(self._buffer)!r}")
        end = self._buffer.index(b"\r\n\r\n")
        raw_head = bytes(self._buffer[: end + 4])
        del self._buffer[: end + 4]
        lines = raw_head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        status_text, _, reason = rest.partition(" ")
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        return RawResponse(version, int(status_text), reason, headers, raw_head=raw_head)

    def read_response(
        self, head_request: bool = False, skip_informational: bool = True
    ) -> RawResponse:
        """One complete response, framed as RFC 9112 section 6.3 says."""
        response = self.read_head()
        while skip_informational and 100 <= response.status < 200 and response.status != 101:
            response = self.read_head()
        if head_request or response.status < 200 or response.status in (204, 304):
            return response
        transfer_encoding = (response.header("transfer-encoding") or "").lower()
        content_length = response.header("content-length")
        if "chunked" in transfer_encoding:
            response.body, response.trailers = self._read_chunked()
        elif content_length is not None:
            response.body = self.read_exactly(int(content_length))
        else:
            response.body = self.read_until_close()
        return response

    def _read_chunked(self) -> tuple[bytes, list[tuple[str, str]]]:
        body = bytearray()
        while True:
            size_line = self.read_line()
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                break
            body += self.read_exactly(size)
            if self.read_exactly(2) != b"\r\n":
                raise ValueError("chunk not followed by CRLF")
        trailers = []
        while line := self.read_line():
            name, _, value = line.decode("latin-1").partition(":")
            trailers.append((name, value.strip()))
        return bytes(body), trailers

    def closed_by_peer(self, within: float = 2.0) -> bool:
        """True when the peer closes (EOF or reset) within `within` seconds."""
        deadline = time.monotonic() + within
        self.sock.settimeout(0.1)
        try:
            while time.monotonic() < deadline:
                try:
                    if not self.sock.recv(65536):
                        return True
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    return True
            return False
        finally:
            self.sock.settimeout(self.timeout)


def request_bytes(
    method: str,
    target: str,
    host: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    """A request with Host first and a Content-Length when there is a body."""
    lines = [f"{method} {target} {version}", f"Host: {host}"]
    for name, value in headers or []:
        lines.append(f"{name}: {value}")
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def exchange(host: str, port: int, data: bytes, head_request: bool = False) -> RawResponse:
    """Send one request on a fresh connection and read one response."""
    with RawHttpConnection(host, port) as connection:
        connection.send(data)
        return connection.read_response(head_request=head_request)
