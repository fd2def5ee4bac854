"""The inbound side: connections from other workloads to this workload's app.

Owns what is inbound-only about an accepted connection: a captured
connection's original port names the app's port (and that port's policy
Server, waited for when first seen); the mesh's mTLS is terminated here;
bytes that are neither HTTP nor mesh TLS go opaque to the app, after the
inbound policy's TCP check. `INBOUND` is the side object the per-request code
reads (`ctx.inbound`) instead of comparing the direction string.
"""

from __future__ import annotations

import socket

from tulle.codec.detect import Kind
from tulle.codec.tls_hello import Incomplete, parse_client_hello
from tulle.core.discovery import Address
from tulle.net.listen import original_dst
from tulle.net.mtls import offered_mesh_alpn
from tulle.proxy.context import ProxyContext
from tulle.proxy.side import Side
from tulle.proxy.wiring import Dispatch, Wiring, attach_http, opaque_destination

INBOUND = Side("inbound", inbound=True, peer_id_attr="tulle.client_id")


def accepted(worker: Wiring, ctx: ProxyContext) -> Dispatch:
    """The dispatch of the inbound listener's detected connections."""
    loop = worker.loop

    def dispatch(sock: socket.socket, peer: Address, kind: Kind, data: bytes) -> None:
        orig = original_dst(sock)
        if orig is not None:
            # Captured inbound: the original port is the app's port.
            orig = worker.inbound_app_port(ctx, orig)
            if orig is None:
                sock.close()
                return
            # ... and its policy Server: wait for the first answer about a
            # port seen for the first time, as for a new service name.
            authz = ctx.authz
            watcher = authz.watcher_for(orig[1]) if authz is not None else None
            if watcher is not None and not watcher.known:
                loop.create_task(worker.await_policy(watcher, route, sock, peer, kind, data, orig))
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
        if kind is Kind.TLS and ctx.mesh is not None:
            alpn = mesh_alpn(data)
            if alpn is not None:
                loop.create_task(worker.accept_mesh_tls(ctx, sock, peer, alpn, orig))
                return
        if attach_http(worker, ctx, sock, peer, kind, orig):
            return
        # TLS that is not the mesh's and unknown bytes: opaque TCP to the app
        # (at the original port when captured).
        dst = opaque_destination(
            worker,
            ctx,
            sock,
            peer,
            data,
            orig if orig is not None else ctx.config.app_addr,
            late,
            route,
        )
        if dst is None:
            return
        if not tcp_allowed(ctx, None, peer, orig):
            sock.close()
            return
        loop.create_task(worker.opaque(ctx, sock, dst))

    return dispatch


def mesh_alpn(data: bytes) -> str | None:
    """The mesh protocol a ClientHello offers; None: not the mesh's TLS."""
    try:
        hello = parse_client_hello(data)
    except Incomplete:
        return None
    return offered_mesh_alpn(hello.alpn) if hello is not None else None


def tcp_allowed(
    ctx: ProxyContext, client_id: str | None, peer: Address, app_dst: Address | None
) -> bool:
    """Inbound policy for an opaque connection (denied: the caller closes it)."""
    authz = ctx.authz
    if authz is None:
        return True
    decision = authz.policy_at(app_dst).authorize_tcp(client_id or None, peer[0])
    authz.record("tcp", decision, client_id or "")
    return decision.allowed
