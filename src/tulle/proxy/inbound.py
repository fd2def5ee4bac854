"""The accepted-connection dispatch: where a detected connection goes."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from tulle.codec.detect import Kind, detect
from tulle.core.discovery import Address
from tulle.net.listen import original_dst
from tulle.proxy.context import ProxyContext
from tulle.proxy.http1 import Http1Server


def accepted(self: Any, ctx: ProxyContext) -> Callable[[socket.socket, Address, Kind, bytes], None]:
    """The dispatch of one listener's detected connections."""
    loop = self.loop

    def dispatch(sock: socket.socket, peer: Address, kind: Kind, data: bytes) -> None:
        orig = original_dst(sock)
        if ctx.direction == "inbound" and orig is not None:
            # Captured inbound: the original port is the app's port.
            orig = self._inbound_app_port(ctx, orig)
            if orig is None:
                sock.close()
                return
            # ... and its policy Server: wait for the first answer about a
            # port seen for the first time, as for a new service name.
            authz = ctx.authz
            watcher = authz.watcher_for(orig[1]) if authz is not None else None
            if watcher is not None and not watcher.known:
                loop.create_task(self._await_policy(watcher, route, sock, peer, kind, data, orig))
                return
        route(sock, peer, kind, data, orig)

    def route(
        sock: socket.socket,
        peer: Address,
        kind: Kind,
        data: bytes,
        orig: Address | None,
        late: bool = False,
    ) -> None:
        if kind is Kind.TLS and ctx.direction == "inbound" and ctx.mesh is not None:
            alpn = self._mesh_alpn(data)
            if alpn is not None:
                loop.create_task(self._accept_mesh_tls(ctx, sock, peer, alpn, orig))
                return
        if kind is Kind.HTTP1:
            loop.create_task(self._attach(sock, lambda: Http1Server(ctx, peer, orig)))
            return
        if kind is Kind.HTTP2:
            loop.create_task(self._attach(sock, self._h2_protocol(ctx, orig)))
            return
        # TLS that is not the mesh's and unknown bytes: opaque TCP to where
        # the connection was going.
        dst = orig
        if ctx.direction == "inbound" and orig is None:
            dst = ctx.config.app_addr
        if dst is None and not late and (not data or detect(data) is Kind.NEED_MORE):
            # Nothing (or only a prefix) within the detect timeout, and
            # no original destination to tunnel to: not a banner
            # protocol but a slow client (a busy machine); wait longer.
            loop.create_task(self._late_first_bytes(sock, peer, orig, route))
            return
        if dst is None:
            ctx.metrics.proxy_error(ctx.direction, "opaque-no-destination")
            sock.close()
            return
        if orig is not None and ctx.direction == "outbound":
            refusal = self.guard.check_raw(*orig)
            if refusal is not None:
                ctx.metrics.proxy_error(ctx.direction, refusal.reason)
                sock.close()
                return
        if not self._tcp_allowed(ctx, None, peer, orig):
            sock.close()
            return
        if orig is not None and ctx.direction == "outbound":
            loop.create_task(self._opaque_outbound(ctx, sock, orig))
            return
        loop.create_task(self._opaque(ctx, sock, dst))

    return dispatch
