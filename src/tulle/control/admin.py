"""The control plane's admin HTTP listener: `/metrics`, `/ready`, `/live`.

Scraped every few seconds, never on a request path, so it is a deliberately
small HTTP/1.1 server on asyncio streams: one request per connection (read by
net/small_http.py), answers closed after writing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from tulle.control.metrics import ControlMetrics
from tulle.net.small_http import CLIENT_GONE, bound_address, close_server, parse_head, read_head

_MAX_HEAD = 8192


class AdminServer:
    def __init__(self, metrics: ControlMetrics, ready: Callable[[], bool]) -> None:
        self._metrics = metrics
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, host, port)
        return bound_address(self._server)

    async def close(self) -> None:
        await close_server(self._server)

    def _answer(self, method: str, target: str) -> tuple[str, str, str]:
        path = target.split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            return "405 Method Not Allowed", "text/plain", "method not allowed\n"
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4", self._metrics.render()
        if path == "/live":
            return "200 OK", "text/plain", "live\n"
        if path == "/ready":
            if self._ready():
                return "200 OK", "text/plain", "ready\n"
            return "503 Service Unavailable", "text/plain", "not ready\n"
        return "404 Not Found", "text/plain", "not found: try /metrics, /ready or /live\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await read_head(reader)
            if len(head) > _MAX_HEAD:
                return
            request = parse_head(head)
            if request is None:
                status, ctype, body = "400 Bad Request", "text/plain", "bad request\n"
                method = "GET"
            else:
                method = request.method
                status, ctype, body = self._answer(method, request.target)
            payload = body.encode()
            response = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
            ).encode()
            writer.write(response if method == "HEAD" else response + payload)
            await writer.drain()
        except CLIENT_GONE:
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
