"""What the two sides' connection dispatch (tulle.proxy.inbound, tulle.proxy.outbound)
asks of the worker (tulle.proxy.app.Worker): its loop, its destination guard
and the hand-offs a connection goes on to. A protocol, so that the side
modules do not import the worker that imports them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from tulle.codec.detect import Kind
from tulle.core.discovery import Address

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
