"""The admin listener: `/metrics`, `/ready`, `/live`, `POST /shutdown`, `/config`, `/tap`.

Served with the same sans-IO HTTP/1 codec as the data path. Handlers may be
asynchronous (with several workers, `/metrics` gathers every worker's
snapshot), so each request is answered from a task, in order.

`POST /shutdown` and `/tap` take a credential (docs/api.md, "Credentials"):
`Authorization: Bearer TOKEN` with the token of `--admin-token-file`, a
`Host` that is an address or localhost (DNS rebinding) and no foreign
`Origin` (cross-site). Without a configured token they are disabled, as
Linkerd disables its shutdown endpoint by default: loopback alone is no
credential once an ingress, a sidecar or an app can connect from loopback.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs

from tulle.codec.http1 import REASONS, Http1Error, RequestDecoder, RequestHead
from tulle.core.credentials import bearer, host_allowed, origin_allowed, token_matches
from tulle.core.discovery import Address
from tulle.proxy.metrics import Snapshot, merge, render
from tulle.proxy.tap import TapHub, serve_tap

log = logging.getLogger(__name__)


@dataclass
class AdminState:
    snapshot: Callable[[], Awaitable[list[Snapshot]]]
    describe: Callable[[], Awaitable[list[dict[str, Any]]]]
    ready: Callable[[], Awaitable[bool]]
    shutdown: Callable[[], object]
    # Extra text appended to /metrics (e.g. identity gauges).
    extra_metrics: Callable[[], Awaitable[str]] | None = None
    # The worker's tap hub; None with several workers (tap needs --workers 1).
    tap: TapHub | None = None
    # Why the process is wedged ("" when live): `/live` answers 503 with it.
    live: Callable[[], Awaitable[str]] | None = None
    # The bearer token of POST /shutdown and /tap; empty: they are disabled.
    token: str = ""
    # Whose clients may ask for /tap (CIDRs; `--tap-networks`).
    tap_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")


_DISABLED = (
    b"%s is disabled: start the proxy with --admin-token-file FILE (env "
    b"TULLE_PROXY_ADMIN_TOKEN_FILE) and send Authorization: Bearer <the token in FILE>\n"
)


def _codec_metric() -> str:
    """Which HTTP/2 codec this proxy runs: `nghttp2` (native) or `python` (h2, the fallback)."""
    from tulle.proxy.http2.codec import CODEC

    return (
        "# HELP tulle_http2_codec_info The HTTP/2 codec the proxy runs.\n"
        "# TYPE tulle_http2_codec_info gauge\n"
        f'tulle_http2_codec_info{{codec="{CODEC}"}} 1\n'
    )


def _in_networks(host: str, networks: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(cidr, strict=False) for cidr in networks)


class _AdminConnection(asyncio.Protocol):
    def __init__(self, state: AdminState) -> None:
        self.state = state
        self.decoder = RequestDecoder(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[RequestHead | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        try:
            self.decoder.feed(data)
        except Http1Error as err:
            self._write(err.status, b"text/plain", err.detail.encode() + b"\n", close=True)

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)

    def on_request_head(self, head: RequestHead) -> None:
        return None

    def on_request_body(self, data: bytes) -> None:
        return None

    def on_request_end(self, head: RequestHead) -> None:
        self.queue.put_nowait(head)

    async def _serve(self) -> None:
        while True:
            head = await self.queue.get()
            if head is None or self.transport is None or self.transport.is_closing():
                return
            try:
                await self._handle(head)
            except Exception:
                log.exception("admin request failed")
                self._write(500, b"text/plain", b"internal error\n", close=True)

    async def _handle(self, head: RequestHead) -> None:
        path = head.target.split(b"?", 1)[0]
        close = not head.keep_alive
        method = head.method
        state = self.state
        if path == b"/metrics" and method in (b"GET", b"HEAD"):
            snaps = await state.snapshot()
            text = render(merge(snaps)) + _codec_metric()
            if state.extra_metrics is not None:
                text += await state.extra_metrics()
            self._write(200, b"text/plain; version=0.0.4; charset=utf-8", text.encode(), close)
        elif path == b"/live":
            problem = await state.live() if state.live is not None else ""
            if problem:
                self._write(503, b"text/plain", b"wedged: " + problem.encode() + b"\n", close)
            else:
                self._write(200, b"text/plain", b"live\n", close)
        elif path == b"/ready":
            if await state.ready():
                self._write(200, b"text/plain", b"ready\n", close)
            else:
                self._write(503, b"text/plain", b"not ready\n", close)
        elif path == b"/shutdown":
            if method != b"POST":
                self._write(405, b"text/plain", b"use POST /shutdown\n", close)
                return
            if not self._authorized(head, path):
                return
            self._write(200, b"text/plain", b"shutting down\n", close)
            state.shutdown()
        elif path == b"/tap" and method == b"GET":
            if self._authorized(head, path):
                await self._tap(head)
        elif path == b"/config":
            described = await state.describe()
            body = json.dumps(described[0] if len(described) == 1 else described, indent=2)
            self._write(200, b"application/json", body.encode() + b"\n", close)
        else:
            self._write(
                404, b"text/plain", b"not found: try /metrics /ready /live /config\n", close
            )

    def _authorized(self, head: RequestHead, path: bytes) -> bool:
        """The credential checks of a sensitive endpoint; answers (and closes) when refused."""
        if not self.state.token:
            self._write(403, b"text/plain", _DISABLED % path, True)
            return False
        fields: dict[bytes, bytes] = {}
        for name, value in head.headers:
            fields.setdefault(name.lower(), value)
        host = head.host.decode("latin-1") if head.host is not None else None
        if not host_allowed(host):
            self._write(
                403,
                b"text/plain",
                b"Host must be an IP address or localhost (DNS rebinding)\n",
                True,
            )
            return False
        origin = fields.get(b"origin")
        if not origin_allowed(origin.decode("latin-1") if origin is not None else None, host):
            self._write(403, b"text/plain", b"cross-site requests are refused\n", True)
            return False
        authorization = fields.get(b"authorization")
        presented = bearer(authorization.decode("latin-1") if authorization is not None else None)
        if not token_matches(presented, self.state.token):
            self._write(
                401,
                b"text/plain",
                b"%s needs Authorization: Bearer <the token of --admin-token-file>\n" % path,
                True,
            )
            return False
        return True

    async def _tap(self, head: RequestHead) -> None:
        """Stream live requests. Only clients of `tap_networks` (loopback by
        default): tap shows request paths and identities, so it is for the
        control plane and operators on the host."""
        transport = self.transport
        if transport is None:
            return
        peer = transport.get_extra_info("peername")
        host = peer[0] if isinstance(peer, tuple) else ""
        if not _in_networks(host, self.state.tap_networks):
            self._write(403, b"text/plain", b"tap is not served to this client's address\n", True)
            return
        hub = self.state.tap
        if hub is None:
            self._write(503, b"text/plain", b"tap needs a single worker (--workers 1)\n", True)
            return
        _, _, raw_query = head.target.partition(b"?")
        query = {k: v[-1] for k, v in parse_qs(raw_query.decode("latin-1")).items()}
        await serve_tap(hub, query, transport.write, transport.is_closing)
        transport.close()

    def _write(self, status: int, ctype: bytes, body: bytes, close: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n" % (
            status,
            REASONS.get(status, b"Error"),
            ctype,
            len(body),
        )
        if close:
            head += b"connection: close\r\n"
        self.transport.write(head + b"\r\n" + body)
        if close:
            self.transport.close()


class AdminServer:
    def __init__(self, server: asyncio.AbstractServer) -> None:
        self._server = server

    @classmethod
    async def start(
        cls, loop: asyncio.AbstractEventLoop, addr: Address, state: AdminState
    ) -> AdminServer:
        server = await loop.create_server(
            lambda: _AdminConnection(state), addr[0], addr[1], reuse_address=True
        )
        return cls(server)

    def close(self) -> None:
        self._server.close()
