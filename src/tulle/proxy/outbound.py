"""The outbound side: connections from this workload's app to other services.

Owns what is outbound-only about an accepted connection: HTTP goes to the
request path (routed by authority, or by the original destination when none
names a service); anything else goes to where the connection was going (its
original destination, captured), refused when that is one of the proxy's own
listeners or a denied address, and balanced when discovery knows the
address. `OUTBOUND` is the side object the per-request code reads
(`ctx.inbound` is False) instead of comparing the direction string.
"""

from __future__ import annotations

import socket

from tulle.codec.detect import Kind, detect
from tulle.core.discovery import Address
from tulle.net.listen import original_dst
from tulle.proxy.context import ProxyContext
from tulle.proxy.http1 import Http1Server
from tulle.proxy.side import Side
from tulle.proxy.wiring import Dispatch, Wiring

OUTBOUND = Side("outbound", inbound=False, peer_id_attr="tulle.server_id")


def accepted(worker: Wiring, ctx: ProxyContext) -> Dispatch:
    """The dispatch of the outbound listener's detected connections."""
    loop = worker.loop
    guard = worker.guard

    def dispatch(sock: socket.socket, peer: Address, kind: Kind, data: bytes) -> None:
        route(sock, peer, kind, data, original_dst(sock))

    def route(
        sock: socket.socket,
        peer: Address,
        kind: Kind,
        data: bytes,
        orig: Address | None,
        late: bool = False,
    ) -> None:
        if kind is Kind.HTTP1:
            loop.create_task(worker.attach(sock, lambda: Http1Server(ctx, peer, orig)))
            return
        if kind is Kind.HTTP2:
            loop.create_task(worker.attach(sock, worker.h2_protocol(ctx, orig)))
            return
        # TLS and unknown bytes: opaque TCP to where the connection was going.
        if orig is None and not late and (not data or detect(data) is Kind.NEED_MORE):
            # Nothing (or only a prefix) within the detect timeout, and
            # no original destination to tunnel to: not a banner
            # protocol but a slow client (a busy machine); wait longer.
            loop.create_task(worker.late_first_bytes(sock, peer, orig, route))
            return
        if orig is None:
            ctx.metrics.proxy_error(ctx.direction, "opaque-no-destination")
            sock.close()
            return
        refusal = guard.check_raw(*orig)
        if refusal is not None:
            ctx.metrics.proxy_error(ctx.direction, refusal.reason)
            sock.close()
            return
        loop.create_task(worker.opaque_outbound(ctx, sock, orig))

    return dispatch
