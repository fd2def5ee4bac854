"""A minimal asyncio HTTP/1.1 client for the metrics API's own calls.

The API reads proxies' `/metrics` and `/tap` and Prometheus' query API: plain
HTTP on trusted addresses, one request per connection. Every call has a
bounded timeout, so one stuck proxy cannot hold a scrape round.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from tulle.core.discovery import format_address, parse_address

MAX_BODY = 64 * 1024 * 1024


class FetchError(Exception):
    """A request that failed: nothing listening, a timeout, or a broken answer."""


def split_url(url: str) -> tuple[str, int, str]:
    """`http://host:port/base` -> (host, port, base path without trailing slash)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise ValueError(f"only http:// URLs are supported, got {url!r}")
    host, port = parse_address(parts.netloc or "", default_host="127.0.0.1")
    return host, port, parts.path.rstrip("/")


async def _open(
    host: str,
    port: int,
    method: str,
    path: str,
    body: bytes,
    content_type: str,
    headers: dict[str, str] | None = None,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int, dict[str, str]]:
    reader, writer = await asyncio.open_connection(host, port)
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: {format_address((host, port))}\r\nconnection: close\r\n"
        f"user-agent: tulle-viz\r\naccept: */*\r\n"
    )
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    if body or method in ("POST", "PUT"):
        head += f"content-type: {content_type}\r\ncontent-length: {len(body)}\r\n"
    writer.write(head.encode() + b"\r\n" + body)
    await writer.drain()
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status_parts = lines[0].split(" ", 2)
    if len(status_parts) < 2 or not status_parts[1].isdigit():
        raise FetchError(f"not an HTTP response: {lines[0][:80]!r}")
    answer: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            answer[name.strip().lower()] = value.strip()
    return reader, writer, int(status_parts[1]), answer


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                return b"".join(chunks)
            total += size
            if total > MAX_BODY:
                raise FetchError("response body too large")
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if length is not None:
        if int(length) > MAX_BODY:
            raise FetchError("response body too large")
        return await reader.readexactly(int(length))
    return await reader.read(MAX_BODY)


async def request(
    addr: str,
    path: str,
    *,
    method: str = "GET",
    body: bytes = b"",
    content_type: str = "application/json",
    timeout: float = 2.0,
) -> tuple[int, bytes]:
    """One request to HOST:PORT; (status, body). Raises FetchError."""
    try:
        host, port = parse_address(addr)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer, status, headers = await _open(
                host, port, method, path, body, content_type
            )
            return status, await _read_body(reader, headers)
    except TimeoutError:
        raise FetchError(f"no answer from {addr} within {timeout:g} s") from None
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise FetchError(f"{addr}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def stream_lines(
    addr: str, path: str, *, connect_timeout: float = 2.0, headers: dict[str, str] | None = None
) -> AsyncIterator[bytes]:
    """GET a close-delimited (or chunked) line stream; yields each line without its newline."""
    try:
        host, port = parse_address(addr)
    except ValueError as exc:
        raise FetchError(str(exc)) from None
    writer: asyncio.StreamWriter | None = None
    try:
        try:
            async with asyncio.timeout(connect_timeout):
                reader, writer, status, answer = await _open(
                    host, port, "GET", path, b"", "", headers
                )
        except TimeoutError:
            raise FetchError(f"no answer from {addr} within {connect_timeout:g} s") from None
        if status != 200:
            text = (await _read_body(reader, answer))[:500].decode(errors="replace").strip()
            raise FetchError(f"{addr} answered {status}: {text}")
        chunked = answer.get("transfer-encoding", "").lower() == "chunked"
        pending = b""
        while True:
            if chunked:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    break
                data = await reader.readexactly(size)
                await reader.readexactly(2)
            else:
                data = await reader.read(65536)
                if not data:
                    break
            pending += data
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
        if pending.strip():
            yield pending
    except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise FetchError(f"{addr}: {exc.strerror if isinstance(exc, OSError) else exc}") from None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
