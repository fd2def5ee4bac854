"""Wires the proxy together: listeners, detection hand-off, sweeper, drain, workers.

`run(config)` is what `tulle proxy` calls. With one worker everything runs in
one process and one event loop. With `--workers N` the parent process keeps
the admin listener and forks N workers that each bind the inbound and
outbound listeners with SO_REUSEPORT (the kernel spreads connections over
them); `/metrics` asks every worker for a snapshot over a socketpair and
serves the sum, so there is one `/metrics` for all of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

from tulle.codec.detect import Kind, detect
from tulle.core.accesslog import FIELDS
from tulle.core.discovery import Address, Endpoint, Resolver, StaticResolver
from tulle.core.outcome import FAILURE, SUCCESS
from tulle.net.descriptors import DescriptorBudget
from tulle.net.dial import DialFailed, dial
from tulle.net.listen import (
    FIRST_BYTES_TIMEOUT_S,
    Acceptor,
    bind,
    first_bytes,
    is_local_address,
)
from tulle.net.mtls import (
    ALPN_H2,
    ALPN_HTTP1,
    ALPN_OPAQUE,
    MeshTls,
    transport_peer_identity,
)
from tulle.proxy import inbound, outbound
from tulle.proxy.accesslog import AccessLog
from tulle.proxy.admin import AdminServer, AdminState
from tulle.proxy.config import ProxyConfig
from tulle.proxy.context import ProxyContext
from tulle.proxy.destinations import DestinationGuard
from tulle.proxy.heap import trim_heap
from tulle.proxy.http1 import EndpointPool, Http1Server, original_authority
from tulle.proxy.inbound import INBOUND, tcp_allowed
from tulle.proxy.metrics import Labels, Metrics, Snapshot
from tulle.proxy.outbound import OUTBOUND
from tulle.proxy.router import PoolHandle, Router
from tulle.proxy.side import Side
from tulle.proxy.tap import TapHub
from tulle.proxy.tcp import Tunnel
from tulle.proxy.tracing import Tracer
from tulle.proxy.wiring import Dispatch, Route

if TYPE_CHECKING:
    from tulle.api.control_tls import ControlTls
    from tulle.api.policy_client import PolicyWatcher
    from tulle.proxy.http2.server import H2Service

log = logging.getLogger("tulle.proxy")
_T = TypeVar("_T")

SWEEP_INTERVAL_S = 0.25
# A loop that has not run the sweeper, or a listener that has not been able to
# accept, for this long is wedged: /live answers 503 so a supervisor restarts it.
STALL_S = 30.0
# With workers, /live waits this long for each worker's answer.
WORKER_ANSWER_S = 5.0


_PASSTHROUGH_TCP = (("direction", "outbound"), ("protocol", "tcp"))


def install_loop() -> None:
    """uvloop when available (the default); the asyncio loop otherwise."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def make_resolver(config: ProxyConfig, tls: ControlTls | None) -> Resolver:
    if config.control_addrs:
        from tulle.api.destination_client import ControlResolver, context_token

        return ControlResolver(list(config.control_addrs), context_token(config.workload), tls=tls)
    return StaticResolver(config.static_dst)


def control_tls(config: ProxyConfig) -> ControlTls | None:
    """How to dial the control plane: TLS against --trust-anchors, else plaintext."""
    if not config.control_trust_anchors:
        return None
    from tulle.api.control_tls import ControlTls, load_trust_anchors

    # Checked by the flag parser; a file gone since then fails the start loudly.
    return ControlTls(load_trust_anchors(config.control_trust_anchors), config.control_name)


def make_guard(config: ProxyConfig) -> DestinationGuard:
    """The outbound's destination rules (tulle.proxy.destinations) for this proxy."""
    return DestinationGuard(
        own=(
            ("inbound", config.inbound_addr),
            ("outbound", config.outbound_addr),
            ("admin", config.admin_addr),
        ),
        denied=config.deny_dst,
        raw_mode=config.outbound_raw_addresses,
        is_local=is_local_address,
    )


def check_app_addr(config: ProxyConfig) -> str | None:
    """An inbound whose app is one of the proxy's own listeners would call itself."""
    if config.app_addr is None:
        return None
    refusal = make_guard(config).check_raw(*config.app_addr)
    if refusal is not None and refusal.status == 508:
        return f"--app-addr {_fmt(config.app_addr)}: {refusal.detail}"
    return None


class Worker:
    """One event loop's worth of proxy: both directions' listeners and state."""

    def __init__(self, config: ProxyConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.metrics = Metrics()
        self.tap = TapHub()
        # Read once: the resolver, the identity and the policy clients all dial with it.
        self.control_tls = control_tls(config)
        self.resolver = make_resolver(config, self.control_tls)
        self.contexts: list[ProxyContext] = []
        self.acceptors: list[Acceptor] = []
        self._sweeper: asyncio.Task[None] | None = None
        self.stopped = asyncio.Event()
        self.draining = False
        self.guard = make_guard(config)
        self.fds = DescriptorBudget()
        # The sweeper's last run (loop time): a stale one means a stalled loop.
        self.heartbeat = loop.time()
        # Off (None) unless --access-log: then one sink shared by both directions.
        self.access_log: AccessLog | None = None
        if config.access_log:
            self.access_log = AccessLog(
                loop,
                config.access_log,
                config.access_log_fields or FIELDS,
                config.access_log_sample,
                config.access_log_scope,
            )
        self.tracer: Tracer | None = None
        if config.tracing.endpoint:
            self.tracer = Tracer(config.tracing, self.metrics)
        self.outbound = self._context(OUTBOUND, None)
        self.inbound = self._context(INBOUND, config.app_addr)
        self.mesh: MeshTls | None = None
        self.h2_services: dict[str, H2Service] = {}
        self.policy_watcher: PolicyWatcher | None = None
        self._hold_timeout_logged = False

    async def start_identity(self) -> None:
        """With an identity configured: ask for a certificate (in the background).

        The proxy is not ready until it has one; meanwhile connections are
        held (`_hold`), at most `identity_wait_s`, then fail as usual (503
        identity-not-ready for calls to meshed endpoints)."""
        cfg = self.config
        if not cfg.identity:
            return
        from pathlib import Path

        from tulle.identity.client import CertManager

        if cfg.identity_issuer_dir:
            certs = CertManager.from_local_issuer(
                cfg.identity,
                Path(cfg.identity_issuer_dir),
                leaf_ttl_s=cfg.identity_leaf_ttl_s,
            )
        else:
            addrs = cfg.identity_addrs or cfg.control_addrs
            certs = CertManager.from_control_plane(
                cfg.identity,
                [f"{h}:{p}" for h, p in addrs],
                cfg.identity_token,
                token_file=cfg.identity_token_file,
                tls=self.control_tls,
            )
        self.mesh = MeshTls(certs)
        for ctx in self.contexts:
            ctx.mesh = self.mesh
        await certs.start()

    async def start_policy(self) -> None:
        """With a workload and a control plane: follow its inbound policy.

        Until the first answer every inbound call is denied (fail closed)."""
        cfg = self.config
        if not cfg.workload or not cfg.control_addrs:
            return
        from tulle.api.policy_client import PolicyWatcher
        from tulle.proxy.authz import InboundAuthz

        def watch(port: int) -> PolicyWatcher:
            # One per app port: a captured connection's original port picks its Server.
            watcher = PolicyWatcher(
                list(cfg.control_addrs), cfg.workload, port, tls=self.control_tls
            )
            watcher.start()
            return watcher

        port = cfg.app_addr[1] if cfg.app_addr is not None else 0
        watcher = watch(port)
        self.inbound.authz = InboundAuthz(watcher, self.metrics, watch, cfg.workers)
        self.policy_watcher = watcher
        if not await watcher.wait_known(self.config.timeouts.discovery_s):
            log.warning(
                "no authorization policy for workload %r port %d from the control plane yet: "
                "denying every inbound call until it answers (fail closed)",
                cfg.workload,
                port,
            )

    @property
    def ready(self) -> bool:
        return self.mesh is None or self.mesh.ready

    def extra_metrics(self) -> str:
        return self.mesh.certs.render_prometheus() if self.mesh is not None else ""

    def _context(self, side: Side, fixed: Address | None) -> ProxyContext:
        holder: list[ProxyContext] = []

        def make_pool(ep: Endpoint) -> PoolHandle:
            return EndpointPool(holder[0], ep.address, ep.identity)

        router = Router(
            self.resolver,
            make_pool,
            self.metrics,
            max_pending=self.config.limits.max_pending_per_service,
            fixed_target=fixed,
            guard=self.guard if fixed is None else None,
        )
        router.own_identity = self.config.identity
        ctx = ProxyContext(self.loop, side, self.config, router, self.metrics, self.tap)
        ctx.fds = self.fds
        ctx.access_log = self.access_log
        ctx.tracer = self.tracer
        holder.append(ctx)
        self.contexts.append(ctx)
        return ctx

    def listen(self, reuse_port: bool) -> None:
        cfg = self.config
        timeout = cfg.timeouts.detect_s
        sides = (
            (self.outbound, cfg.outbound_addr, outbound.accepted(self, self.outbound)),
            (self.inbound, cfg.inbound_addr, inbound.accepted(self, self.inbound)),
        )
        for ctx, addr, dispatch in sides:
            sock = bind(addr, reuse_port=reuse_port)
            self.acceptors.append(
                Acceptor(
                    self.loop,
                    sock,
                    self._detected_handler(ctx, dispatch),
                    detect_timeout_s=timeout,
                    budget=self.fds,
                    on_shed=self._shed_counter(ctx.direction),
                )
            )
        self._sweeper = self.loop.create_task(self._sweep())
        if self.tracer is not None:
            self.tracer.start_exporter(self.loop)

    def _shed_counter(self, direction: str) -> Callable[[], None]:
        labels = (("direction", direction),)
        return lambda: self.metrics.inc("accept_shed_total", labels)

    def _detected_handler(self, ctx: ProxyContext, dispatch: Dispatch) -> Dispatch:
        """Draining and the wait for a first certificate, then the side's dispatch."""
        loop = self.loop

        def on_detected(sock: socket.socket, peer: Address, kind: Kind, data: bytes) -> None:
            if self.draining:
                sock.close()
                return
            mesh = self.mesh
            if mesh is not None and not mesh.ready:
                # Before the first certificate: hold, do not fail (see _hold).
                loop.create_task(self._hold(ctx, mesh, dispatch, sock, peer, kind, data))
                return
            dispatch(sock, peer, kind, data)

        return on_detected

    async def late_first_bytes(
        self,
        sock: socket.socket,
        peer: Address,
        orig: Address | None,
        route: Callable[..., None],
    ) -> None:
        """Detect again once the first bytes came (bounded: FIRST_BYTES_TIMEOUT_S)."""
        data = await first_bytes(self.loop, sock, FIRST_BYTES_TIMEOUT_S)
        if self.draining:
            sock.close()
            return
        kind = detect(data) if data else Kind.OPAQUE
        if kind is Kind.NEED_MORE:
            kind = Kind.OPAQUE
        route(sock, peer, kind, data, orig, True)

    async def _hold(
        self,
        ctx: ProxyContext,
        mesh: MeshTls,
        dispatch: Dispatch,
        sock: socket.socket,
        peer: Address,
        kind: Kind,
        data: bytes,
    ) -> None:
        """A connection accepted before the proxy has its first certificate.

        An app started at the same time as its proxy (a pod's containers, a
        `tulle up` service) connects before the control plane has answered
        the CSR; failing that connection (503 identity-not-ready, or a closed
        mTLS handshake inbound) would be a startup error the app did nothing
        to cause. So it waits here, at most `identity_wait_s`, and then goes
        the usual way: with the certificate, or without it to the usual clear
        error. Only before the first certificate: after it, renewals never
        make the proxy unready (it keeps its leaf until expiry).
        """
        labels = (("direction", ctx.direction),)
        self.metrics.inc("identity_held_connections_total", labels)
        try:
            await mesh.certs.wait_ready(self.config.timeouts.identity_wait_s)
        except TimeoutError as exc:
            self.metrics.inc("identity_held_timeout_total", labels)
            if not self._hold_timeout_logged:
                self._hold_timeout_logged = True
                log.warning("connections held for a certificate go on without one: %s", exc)
        if self.draining or sock.fileno() < 0:
            sock.close()
            return
        dispatch(sock, peer, kind, data)

    async def await_policy(
        self,
        watcher: PolicyWatcher,
        route: Route,
        sock: socket.socket,
        peer: Address,
        kind: Kind,
        data: bytes,
        orig: Address,
    ) -> None:
        """A captured inbound connection to an app port whose policy is not known yet:
        wait for it (bounded); without an answer the port's policy stays fail-closed."""
        await watcher.wait_known(self.config.timeouts.discovery_s)
        if self.draining or sock.fileno() < 0:
            sock.close()
            return
        route(sock, peer, kind, data, orig)

    def h2_protocol(
        self, ctx: ProxyContext, orig: Address | None = None
    ) -> Callable[[], asyncio.Protocol]:
        """The HTTP/2 path of a direction, made on first use (inside the loop).

        h2 and the HTTP/2 layers are imported here, with the first HTTP/2
        connection, not at start: they are a third of the proxy's import
        time, which every pod's start would pay while many workloads never
        speak HTTP/2 (the first HTTP/2 connection pays it once instead)."""
        from tulle.proxy.h2_mesh import MeshDispatcher, MeshH2Protocol

        service = self.h2_services.get(ctx.direction)
        if service is None:
            from tulle.proxy.http2.connection import H2Limits
            from tulle.proxy.http2.server import H2Service

            service = H2Service(MeshDispatcher(ctx), limits=H2Limits(max_hops=ctx.max_hops))
            self.h2_services[ctx.direction] = service
        # A captured connection's original destination: inbound, the app at
        # its original port (and that port's policy); outbound, where a stream
        # whose :authority names no service goes.
        return lambda: MeshH2Protocol(service, ctx, orig)

    def inbound_app_port(self, ctx: ProxyContext, orig: Address) -> Address | None:
        """A captured inbound connection's app address: `--app-addr`'s host at
        the original port; None (counted) when that port is one of the
        proxy's own or a denied address (a caller must not reach the
        outbound, an open proxy, or the admin through the inbound)."""
        app = ctx.config.app_addr
        if app is None:
            return None
        dst = (app[0], orig[1])
        refusal = self.guard.check_endpoint(dst)
        if refusal is None and orig[1] == ctx.config.inbound_addr[1]:
            refusal = self.guard.check_raw(*dst)
        if refusal is not None:
            ctx.metrics.proxy_error(ctx.direction, refusal.reason)
            return None
        return dst

    async def accept_mesh_tls(
        self,
        ctx: ProxyContext,
        sock: socket.socket,
        peer: Address,
        alpn: str,
        orig: Address | None = None,
    ) -> None:
        """Terminate the mesh's mTLS; ALPN says what runs inside."""
        mesh = ctx.mesh
        server_ctx = mesh.server_context() if mesh is not None else None
        if server_ctx is None:
            ctx.metrics.proxy_error(ctx.direction, "identity-not-ready")
            sock.close()
            return
        app_addr = orig if orig is not None else ctx.config.app_addr
        factory: Callable[[], asyncio.Protocol]
        tunnel: Tunnel | None = None
        if alpn == ALPN_HTTP1:
            factory = lambda: Http1Server(ctx, peer, orig)  # noqa: E731
        elif alpn == ALPN_H2:
            factory = self.h2_protocol(ctx, orig)
        elif alpn == ALPN_OPAQUE and app_addr is not None:
            opaque = self._tunnel_to(ctx, app_addr)
            tunnel = opaque
            factory = lambda: opaque.downstream  # noqa: E731
        else:
            ctx.metrics.proxy_error(ctx.direction, "unsupported-mesh-protocol")
            sock.close()
            return
        try:
            transport, _ = await self.loop.connect_accepted_socket(
                factory, sock, ssl=server_ctx, ssl_handshake_timeout=10.0
            )
        except (OSError, TimeoutError) as exc:
            # A forged, expired or foreign certificate ends here.
            self.metrics.inc("tls_handshake_failure_total", (("direction", ctx.direction),))
            log.info("mesh TLS handshake from %s:%d failed: %s", peer[0], peer[1], exc)
            sock.close()
            return
        if tunnel is None or app_addr is None:
            return
        # Opaque: the caller's identity is known now; authorize, then connect.
        client_id = transport_peer_identity(transport.get_extra_info("ssl_object"))
        if not tcp_allowed(ctx, client_id, peer, orig):
            tunnel.close(abort=True)
            return
        if not await self._connect_upstream(ctx, tunnel, app_addr):
            tunnel.close(abort=True)
            return
        tunnel.start()

    async def attach(self, sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> None:
        try:
            await self.loop.connect_accepted_socket(factory, sock)
        except OSError:
            sock.close()

    @staticmethod
    def _tunnel_to(ctx: ProxyContext, dst: Address) -> Tunnel:
        label = f"{dst[0]}:{dst[1]}"
        return Tunnel(
            ctx.metrics.tcp(ctx.direction, "src", label),
            ctx.metrics.tcp(ctx.direction, "dst", label),
        )

    async def _connect_upstream(self, ctx: ProxyContext, tunnel: Tunnel, dst: Address) -> bool:
        """Open the tunnel's upstream side to `dst`; False (counted by the dial's
        reason, as HTTP names it) when that fails."""
        upstream = tunnel.upstream
        try:
            await dial(lambda: upstream, dst, timeout_s=ctx.config.timeouts.connect_s, fds=self.fds)
        except DialFailed as failed:
            ctx.metrics.proxy_error(ctx.direction, failed.reason)
            log.debug("opaque connect to %s:%d failed: %s", dst[0], dst[1], failed.message)
            return False
        return True

    async def opaque(self, ctx: ProxyContext, sock: socket.socket, dst: Address) -> None:
        tunnel = self._tunnel_to(ctx, dst)
        if not await self._connect_upstream(ctx, tunnel, dst):
            sock.close()
            return
        try:
            await self.loop.connect_accepted_socket(lambda: tunnel.downstream, sock)
        except OSError:
            tunnel.close(abort=True)
            return
        tunnel.start()

    async def opaque_outbound(self, ctx: ProxyContext, sock: socket.socket, orig: Address) -> None:
        """A captured connection that is not HTTP, routed by its original destination.

        An address discovery knows (a service's virtual address, an endpoint
        of a followed service) is balanced over that service's endpoints, with
        mTLS to the endpoint's identity (ALPN opaque, as `CONNECT` tunnels);
        any other address is forwarded as it is (`outbound_passthrough_total`).
        """
        target = ctx.router.for_authority(original_authority(orig))
        if not target.view.ready:
            await target.view.wait_known(ctx.config.timeouts.discovery_s)
        if target.passthrough or not target.view.ready or target.view.exists is False:
            ctx.metrics.inc("outbound_passthrough_total", _PASSTHROUGH_TCP)
            await self.opaque(ctx, sock, orig)
            return
        backend = target.backend()
        state = backend.balancer.pick(time.monotonic())
        if state is None:
            ctx.metrics.proxy_error(ctx.direction, "no-endpoints")
            sock.close()
            return
        pool: EndpointPool = backend.pool_for(state)  # type: ignore[assignment]
        tunnel = Tunnel(ctx.metrics.tcp(ctx.direction, "src", pool.label), pool.tcp_stats)
        started = time.monotonic()
        state.on_start()
        try:
            await pool.connect(lambda: tunnel.upstream, ALPN_OPAQUE)
        except DialFailed as failed:
            state.on_end(time.monotonic(), time.monotonic() - started, FAILURE)
            ctx.metrics.proxy_error(ctx.direction, failed.reason)
            tunnel.close(abort=True)
            sock.close()
            return
        connected_after = time.monotonic() - started
        tunnel.on_close = lambda: state.on_end(time.monotonic(), connected_after, SUCCESS)
        try:
            await self.loop.connect_accepted_socket(lambda: tunnel.downstream, sock)
        except OSError:
            tunnel.close(abort=True)
            return
        tunnel.start()

    def liveness(self) -> str:
        """Why this worker is wedged and should be restarted; "" when it is live.

        A supervisor acts on this through `/live`: the event loop stalled (the
        sweeper, which runs every 250 ms, has not for `STALL_S`), the sweeper
        died, a listener stopped accepting while not draining, or accepting
        has failed for want of resources for `STALL_S` on end. Shedding
        connections for want of descriptors is not wedged: it is the proxy
        protecting itself, and it recovers on its own."""
        now = self.loop.time()
        if now - self.heartbeat > STALL_S:
            return f"event loop stalled for {now - self.heartbeat:.1f}s"
        if self._sweeper is not None and self._sweeper.done():
            return "the connection sweeper stopped"
        if not self.draining:
            for acceptor in self.acceptors:
                if acceptor.closed:
                    return f"listener {_fmt(acceptor.address)} is closed"
                if acceptor.paused_since and now - acceptor.paused_since > STALL_S:
                    return f"accept() has failed for {now - acceptor.paused_since:.0f}s"
        return ""

    async def _sweep(self) -> None:
        timeouts = self.config.timeouts
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = self.loop.time()
            self.heartbeat = now
            for ctx in self.contexts:
                for conn in list(ctx.connections):
                    conn.sweep(now, timeouts.header_read_s, timeouts.idle_s, self.draining)

    async def drain(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), then stop."""
        if self.draining:
            return
        self.draining = True
        for acceptor in self.acceptors:
            acceptor.close()
            acceptor.close_pending()
        for ctx in self.contexts:
            ctx.draining = True
            for conn in list(ctx.connections):
                conn.close_if_idle()
        grace = self.config.timeouts.shutdown_grace_s
        h2_drains = [
            self.loop.create_task(service.drain(grace)) for service in self.h2_services.values()
        ]
        deadline = self.loop.time() + grace
        while self.loop.time() < deadline:
            if not any(ctx.connections for ctx in self.contexts):
                break
            await asyncio.sleep(0.05)
        for ctx in self.contexts:
            for conn in list(ctx.connections):
                conn.abort()
        if h2_drains:
            await asyncio.gather(*h2_drains, return_exceptions=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.tracer is not None:
            await self.tracer.close()
        if self.mesh is not None:
            await self.mesh.certs.close()
        if self.inbound.authz is not None:
            for policy_watcher in self.inbound.authz.watchers():
                await policy_watcher.close()
            await self.inbound.authz.close()
        await self.resolver.close()
        if self.access_log is not None:
            self.access_log.close()
        self.stopped.set()

    def describe(self) -> dict[str, Any]:
        services: dict[str, Any] = {}
        for ctx in self.contexts:
            for target in ctx.router.targets():
                services[f"{ctx.direction}/{target.name}"] = {
                    "exists": target.view.exists,
                    "endpoints": [
                        {
                            "address": f"{s.endpoint.address[0]}:{s.endpoint.address[1]}",
                            "pending": s.pending,
                            "state": s.accrual.state,
                        }
                        for s in target.balancer.states()
                    ],
                }
        return {"services": services}

    def snapshot(self) -> Snapshot:
        snap = self.metrics.snapshot()
        # Read from the live balancers and HTTP/2 services at scrape time.
        endpoints: dict[Labels, Any] = {}
        ejected: dict[Labels, Any] = {}
        for ctx in self.contexts:
            for target in ctx.router.targets():
                labels: Labels = (("direction", ctx.direction), ("dst_service", target.name))
                states = target.balancer.states()
                endpoints[labels] = len(states)
                ejected[labels] = sum(1 for s in states if s.accrual.state != "closed")
        snap["endpoints"] = ("gauge", "Endpoints discovery knows, per service.", endpoints)
        snap["endpoints_ejected"] = (
            "gauge",
            "Endpoints taken out by failure accrual (circuit breaking), per service.",
            ejected,
        )
        for direction, service in self.h2_services.items():
            labels = (("direction", direction),)
            for name, value in service.counters.snapshot().items():
                # `*_open` are current levels; the rest only ever grow.
                kind = "gauge" if name.endswith("_open") else "counter"
                family = snap.setdefault(
                    "h2_" + name, (kind, "HTTP/2 " + name.replace("_", " "), {})
                )
                family[2][labels] = value
        return snap


def _serve_snapshots(loop: asyncio.AbstractEventLoop, sock: socket.socket, worker: Worker) -> None:
    """Answer the parent's snapshot requests on a socketpair (one byte in, a frame out)."""
    sock.setblocking(False)

    def ready() -> None:
        try:
            cmd = sock.recv(1)
        except BlockingIOError:
            return
        except OSError:
            cmd = b""
        if not cmd:
            loop.remove_reader(sock.fileno())
            return
        payload = pickle.dumps(
            (
                worker.snapshot(),
                worker.describe(),
                worker.ready,
                worker.extra_metrics(),
                worker.liveness(),
            )
        )
        sock.setblocking(True)
        try:
            sock.sendall(struct.pack("!I", len(payload)) + payload)
        finally:
            sock.setblocking(False)

    loop.add_reader(sock.fileno(), ready)


def _install_signals(
    loop: asyncio.AbstractEventLoop, on_stop: Callable[[], Coroutine[Any, Any, None]]
) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(on_stop()))


async def _run_single(config: ProxyConfig) -> int:
    loop = asyncio.get_running_loop()
    worker = Worker(config, loop)
    try:
        worker.listen(reuse_port=False)
    except OSError as exc:
        print(f"tulle proxy: cannot listen: {exc}", file=sys.stderr)
        return 2
    await worker.start_identity()
    await worker.start_policy()
    state = AdminState(
        snapshot=lambda: _async_value([worker.snapshot()]),
        describe=lambda: _async_value([worker.describe()]),
        ready=lambda: _async_value(worker.ready and not worker.draining),
        shutdown=lambda: loop.create_task(worker.drain()),
        extra_metrics=lambda: _async_value(worker.extra_metrics()),
        tap=worker.tap,
        live=lambda: _async_value(worker.liveness()),
        token=config.admin_token,
        tap_networks=config.tap_networks,
    )
    try:
        admin = await AdminServer.start(loop, config.admin_addr, state)
    except OSError as exc:
        print(f"tulle proxy: cannot listen on admin {config.admin_addr}: {exc}", file=sys.stderr)
        return 2
    _install_signals(loop, worker.drain)
    log.info(
        "tulle proxy ready: outbound %s, inbound %s, admin %s",
        _fmt(config.outbound_addr),
        _fmt(config.inbound_addr),
        _fmt(config.admin_addr),
    )
    trim_heap()
    await worker.stopped.wait()
    admin.close()
    return 0


async def _async_value(value: _T) -> _T:
    return value


def _fmt(addr: Address) -> str:
    return f"{addr[0]}:{addr[1]}"


def _worker_main(config: ProxyConfig, sock: socket.socket) -> None:
    install_loop()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)

    async def main() -> int:
        worker = Worker(config, asyncio.get_running_loop())
        try:
            worker.listen(reuse_port=True)
        except OSError as exc:
            print(f"tulle proxy worker: cannot listen: {exc}", file=sys.stderr)
            return 2
        await worker.start_identity()
        await worker.start_policy()
        _serve_snapshots(asyncio.get_running_loop(), sock, worker)
        _install_signals(asyncio.get_running_loop(), worker.drain)
        trim_heap()
        await worker.stopped.wait()
        return 0

    code = loop.run_until_complete(main())
    os._exit(code)


class _WorkerHandle:
    def __init__(self, index: int) -> None:
        self.index = index
        self.pid = 0
        self.sock: socket.socket | None = None
        self.lock = asyncio.Lock()
        self.last_describe: dict[str, Any] = {}


async def _run_workers(config: ProxyConfig) -> int:
    # Check the addresses are free before forking so the error is one clear line.
    for addr in (config.outbound_addr, config.inbound_addr):
        try:
            bind(addr, reuse_port=True).close()
        except OSError as exc:
            print(f"tulle proxy: cannot listen on {_fmt(addr)}: {exc}", file=sys.stderr)
            return 2
    loop = asyncio.get_running_loop()
    handles = [_WorkerHandle(i) for i in range(config.workers)]
    stopping = False

    def spawn(h: _WorkerHandle) -> None:
        parent_sock, child_sock = socket.socketpair()
        pid = os.fork()
        if pid == 0:  # child
            parent_sock.close()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_DFL)
            _worker_main(config, child_sock)
        child_sock.close()
        parent_sock.setblocking(False)
        h.pid = pid
        h.sock = parent_sock

    for h in handles:
        spawn(h)

    async def ask(h: _WorkerHandle) -> tuple[Snapshot, dict[str, Any], bool, str, str] | None:
        if h.sock is None:
            return None
        async with h.lock:
            try:
                await loop.sock_sendall(h.sock, b"s")
                header = await _recv_exact(loop, h.sock, 4)
                (size,) = struct.unpack("!I", header)
                payload = await _recv_exact(loop, h.sock, size)
            except (OSError, EOFError):
                return None
        result: tuple[Snapshot, dict[str, Any], bool, str, str] = pickle.loads(payload)
        return result

    async def snapshots() -> list[Snapshot]:
        results = await asyncio.gather(*(ask(h) for h in handles))
        return [r[0] for r in results if r is not None]

    async def describes() -> list[dict[str, Any]]:
        results = await asyncio.gather(*(ask(h) for h in handles))
        return [r[1] for r in results if r is not None]

    async def ready() -> bool:
        if stopping:
            return False
        results = await asyncio.gather(*(ask(h) for h in handles))
        return all(r is not None and r[2] for r in results)

    async def extra() -> str:
        # Each worker holds its own certificate; report the soonest to expire.
        results = [r for r in await asyncio.gather(*(ask(h) for h in handles)) if r]
        texts = sorted((r[3] for r in results if r[3]), key=len)
        return texts[0] if texts else ""

    async def live() -> str:
        # A worker that cannot answer within the bound is as wedged as one that says so.
        async def one(h: _WorkerHandle) -> str:
            try:
                result = await asyncio.wait_for(ask(h), WORKER_ANSWER_S)
            except TimeoutError:
                return f"worker {h.index} (pid {h.pid}) did not answer in {WORKER_ANSWER_S:g}s"
            if result is None:
                return ""  # gone: the parent restarts it
            return f"worker {h.index}: {result[4]}" if result[4] else ""

        problems = [p for p in await asyncio.gather(*(one(h) for h in handles)) if p]
        return "; ".join(problems)

    stopped = asyncio.Event()

    async def stop() -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for h in handles:
            with contextlib.suppress(ProcessLookupError):
                os.kill(h.pid, signal.SIGTERM)
        stopped.set()

    state = AdminState(
        snapshot=snapshots,
        describe=describes,
        ready=ready,
        shutdown=lambda: loop.create_task(stop()),
        extra_metrics=extra,
        live=live,
        token=config.admin_token,
    )
    try:
        admin = await AdminServer.start(loop, config.admin_addr, state)
    except OSError as exc:
        print(f"tulle proxy: cannot listen on admin {config.admin_addr}: {exc}", file=sys.stderr)
        await stop()
        return 2
    _install_signals(loop, stop)
    trim_heap()
    restarts: dict[int, float] = {}
    while not stopped.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopped.wait(), 0.2)
        for h in handles:
            if stopping:
                break
            try:
                pid, status = os.waitpid(h.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = h.pid, 0
            if pid:
                # A worker died: start another, at most once a second per slot.
                log.warning("worker %d (pid %d) exited with %d; restarting", h.index, h.pid, status)
                wait = max(0.0, restarts.get(h.index, 0.0) + 1.0 - time.monotonic())
                await asyncio.sleep(wait)
                restarts[h.index] = time.monotonic()
                if h.sock is not None:
                    h.sock.close()
                spawn(h)
    deadline = time.monotonic() + config.timeouts.shutdown_grace_s + 2
    alive = {h.pid for h in handles}
    while alive and time.monotonic() < deadline:
        for pid in list(alive):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                alive.discard(pid)
        await asyncio.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    admin.close()
    return 0


async def _recv_exact(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError("worker closed its snapshot socket")
        buf += chunk
    return bytes(buf)


def run(config: ProxyConfig) -> int:
    """Run the proxy until SIGTERM/SIGINT or POST /shutdown; returns the exit code."""
    problem = check_app_addr(config)
    if problem is not None:
        print(f"tulle proxy: {problem}", file=sys.stderr)
        return 2
    install_loop()
    if config.workers > 1:
        return asyncio.run(_run_workers(config))
    return asyncio.run(_run_single(config))
