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

from tulle.codec.detect import Kind
from tulle.core.discovery import Address
from tulle.net.listen import original_dst
from tulle.proxy.context import ProxyContext
from tulle.proxy.side import Side
from tulle.proxy.wiring import Dispatch, Wiring, attach_http, opaque_destination

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
        if attach_http(worker, ctx, sock, peer, kind, orig):
            return
        # TLS and unknown bytes: opaque TCP to where the connection was going.
        dst = opaque_destination(worker, ctx, sock, peer, data, orig, late, route)
        if dst is None:
            return
        refusal = guard.check_raw(*dst)
        if refusal is not None:
            ctx.metrics.proxy_error(ctx.direction, refusal.reason)
            sock.close()
            return
        loop.create_task(worker.opaque_outbound(ctx, sock, dst))

    return dispatch
