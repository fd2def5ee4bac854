"""What the two sides' connection dispatch (tulle.proxy.inbound, tulle.proxy.outbound)
asks of the worker (tulle.proxy.app.Worker): its loop, its destination guard
and the hand-offs a connection goes on to. A protocol, so that the side
modules do not import the worker that imports them. Also the steps both sides
take alike: HTTP to the request path, and where opaque bytes may go."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from tulle.codec.detect import Kind, detect
from tulle.core.discovery import Address
from tulle.proxy.http1 import Http1Server

if TYPE_CHECKING:
    from tulle.api.policy_client import PolicyWatcher
    from tulle.proxy.context import ProxyContext
    from tulle.proxy.destinations import DestinationGuard

# A side's route step: (sock, peer, kind, first bytes, original destination).
Route = Callable[[socket.socket, Address, Kind, bytes, Address | None], None]
Dispatch = Callable[[socket.socket, Address, Kind, bytes], None]


class Wiring(Protocol):
    """The worker as a side's dispatch sees it."""

    loop: asyncio.AbstractEventLoop
    guard: DestinationGuard

    def attach(
        self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]
    ) -> Coroutine[Any, Any, None]: ...

    def h2_protocol(
        self, ctx: ProxyContext, orig: Address | None = None
    ) -> Callable[[], asyncio.Protocol]: ...

    def late_first_bytes(
        self,
        sock: socket.socket,
        peer: Address,
        orig: Address | None,
        route: Callable[..., None],
    ) -> Coroutine[Any, Any, None]: ...

    def inbound_app_port(self, ctx: ProxyContext, orig: Address) -> Address | None: ...

    def await_policy(
        self,
        watcher: PolicyWatcher,
        route: Route,
        sock: socket.socket,
        peer: Address,
        kind: Kind,
        data: bytes,
        orig: Address,
    ) -> Coroutine[Any, Any, None]: ...

    def accept_mesh_tls(
        self,
        ctx: ProxyContext,
        sock: socket.socket,
        peer: Address,
        alpn: str,
        orig: Address | None = None,
    ) -> Coroutine[Any, Any, None]: ...

    def opaque(
        self, ctx: ProxyContext, sock: socket.socket, dst: Address
    ) -> Coroutine[Any, Any, None]: ...

    def opaque_outbound(
        self, ctx: ProxyContext, sock: socket.socket, orig: Address
    ) -> Coroutine[Any, Any, None]: ...


def attach_http(
    worker: Wiring,
    ctx: ProxyContext,
    sock: socket.socket,
    peer: Address,
    kind: Kind,
    orig: Address | None,
) -> bool:
    """Hand an HTTP/1 or HTTP/2 connection to the request path; False: not HTTP."""
    if kind is Kind.HTTP1:
        worker.loop.create_task(worker.attach(sock, lambda: Http1Server(ctx, peer, orig)))
        return True
    if kind is Kind.HTTP2:
        worker.loop.create_task(worker.attach(sock, worker.h2_protocol(ctx, orig)))
        return True
    return False


def opaque_destination(
    worker: Wiring,
    ctx: ProxyContext,
    sock: socket.socket,
    peer: Address,
    data: bytes,
    dst: Address | None,
    late: bool,
    route: Callable[..., None],
) -> Address | None:
    """`dst`, where opaque bytes go; None when there is none and the connection
    was handed on to wait for more bytes, or closed."""
    if dst is not None:
        return dst
    if not late and (not data or detect(data) is Kind.NEED_MORE):
        # Nothing (or only a prefix) within the detect timeout, and nowhere
        # to tunnel to: not a banner protocol but a slow client (a busy
        # machine); wait longer. No destination: no original one either.
        worker.loop.create_task(worker.late_first_bytes(sock, peer, None, route))
        return None
    ctx.metrics.proxy_error(ctx.direction, "opaque-no-destination")
    sock.close()
    return None
