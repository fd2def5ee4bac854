"""Routing HTTP/2 streams with the same targets, balancers and metrics as HTTP/1.

`MeshDispatcher` adapts one direction's `Router` to the HTTP/2 proxy's
`Dispatcher` seam (`tulle.proxy.http2.dispatch`): per stream it resolves the
`:authority` (outbound) or takes the local app (inbound), applies the route's
timeout, the traffic split and P2C + peak-EWMA balancing, and returns where
the stream goes -- with the mesh TLS context when the endpoint is meshed. The
completion callback feeds the balancer and records the stream in the same
`request_total` / `response_total` / `response_latency_ms` series as HTTP/1,
with a `grpc_status_code` label for gRPC.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from tulle.codec.http2 import Header
from tulle.core.discovery import Address
from tulle.core.outcome import CANCELLED, SUCCESS, Outcome
from tulle.net.mtls import ALPN_H2, transport_peer_identity
from tulle.proxy.accesslog import AccessLog, timestamp
from tulle.proxy.balance import EndpointState, ejected_detail
from tulle.proxy.context import ProxyContext
from tulle.proxy.destinations import LOOP_DETECTED, Refusal
from tulle.proxy.http2.dispatch import CompletionCallback, Pending, RefusalKind, Refused, Routed
from tulle.proxy.http2.server import H2ServerProtocol, H2Service
from tulle.proxy.metrics import fault_labels
from tulle.proxy.router import OVERRIDE_HEADER, ServiceTarget
from tulle.proxy.tracing import Span

_monotonic = time.monotonic


class MeshDispatcher:
    """The `Dispatcher` of one direction (inbound or outbound) of a worker."""

    def __init__(
        self,
        ctx: ProxyContext,
        client_id: str = "",
        client_ip: str = "",
        app_dst: Address | None = None,
    ) -> None:
        self.ctx = ctx
        # Inbound over mesh TLS: the verified identity of the calling proxy.
        self.client_id = client_id
        self.client_ip = client_ip
        # Inbound, captured: the app at the original port, with that port's policy.
        self.app_dst = app_dst

    def route(
        self, authority: str, method: str, path: str, headers: Sequence[Header]
    ) -> Routed | Refused | Pending:
        ctx = self.ctx
        router = ctx.router
        app_dst = self.app_dst
        target = router.fixed if app_dst is None else router.fixed_at(app_dst[1])
        authz = ctx.authz
        if authz is not None and target is not None:
            policy = authz.policy_at(app_dst)
            decision = policy.authorize_http(
                self.client_id or None,
                self.client_ip,
                method.encode("latin-1"),
                path.encode("latin-1"),
                _lookup(headers),
            )
            authz.record("http", decision, self.client_id)
            if not decision.allowed:
                who = self.client_id or "an unauthenticated client"
                return Refused(
                    RefusalKind.FORBIDDEN, f"{who} may not call this ({decision.policy})"
                )
            if policy.rate_limited:
                # After authorization: a denied request takes no token.
                limited = authz.limits.check(policy, decision.route, self.client_id, self.client_ip)
                if limited is not None:
                    return Refused(
                        RefusalKind.RATE_LIMITED,
                        f"rate limit {limited.limit!r} reached",
                        headers=((b"retry-after", b"%d" % limited.retry_after_s),),
                    )
        if target is None:
            if not authority:
                return Refused(RefusalKind.BAD_REQUEST, "no :authority")
            target = router.for_authority(authority.encode("latin-1"))
            if target.refusal is not None:
                return self._refused(target.refusal)
        view = target.view
        wait_s = ctx.config.timeouts.discovery_s
        if not view.ready:
            # The first stream for a name: wait for discovery (endpoints and
            # profile, so that a split is known), then route again.
            return Pending(lambda: view.wait_known(wait_s), f"discovery of {target.name!r}")
        if view.exists is False:
            return Refused(RefusalKind.UNKNOWN_SERVICE, f"no service named {target.name!r}")
        backend = target.backend()
        drop_header = None
        if target.override is not None:
            backend = target.overridden(_lookup(headers), backend)
            # Read by this proxy only: never forwarded.
            drop_header = OVERRIDE_HEADER
        backend_view = backend.view
        if not backend_view.ready:
            return Pending(
                lambda: backend_view.wait_known(wait_s), f"discovery of {backend.name!r}"
            )
        lookup = _lookup(headers)
        route = target.route(method.encode("latin-1"), path.encode("latin-1"), lookup)
        delay_s = 0.0
        fault = route.fault
        if fault is not None:
            hit = fault.decide(lookup)
            if hit is not None:
                labels = fault_labels(ctx.direction, backend.metrics_labels, route.name, hit)
                ctx.metrics.inc("fault_injected_total", labels)
                if hit.abort:
                    # Before any pick: never an attempt, so never retried.
                    spec = fault.spec
                    return Refused(
                        RefusalKind.FAULT_INJECTED,
                        f"fault injected by route {route.name!r}",
                        status=spec.abort_status,
                        grpc_status=-1
                        if spec.abort_grpc_status is None
                        else spec.abort_grpc_status,
                        delay_s=hit.delay_s,
                    )
                delay_s = hit.delay_s
        now = _monotonic()
        balancer = backend.balancer
        affinity = backend.affinity
        if affinity is not None:
            # Session affinity: the key's endpoint on the ring, else the balancer.
            state = affinity.pick(lookup, now) or balancer.pick(now)
        else:
            state = balancer.pick(now)
        if state is None:
            if backend.refusal is not None:
                return self._refused(backend.refusal)
            if len(balancer):
                return Refused(
                    RefusalKind.ENDPOINTS_EJECTED, ejected_detail(backend.name, len(balancer))
                )
            return Refused(RefusalKind.NO_ENDPOINTS, f"service {backend.name!r} has no endpoints")
        if not target.pending.try_acquire():
            return Refused(RefusalKind.OVERLOADED, f"too many pending requests for {target.name!r}")
        state.on_start()
        endpoint = state.endpoint
        ssl_context = None
        if endpoint.identity and ctx.mesh is not None:
            ssl_context = ctx.mesh.client_context(ALPN_H2)
            if ssl_context is None:
                state.on_end(now, 0.0, CANCELLED)
                target.pending.release()
                return Refused(RefusalKind.NO_ENDPOINTS, "no workload certificate yet")
        target.budget.deposit(now)
        label = f"{endpoint.address[0]}:{endpoint.address[1]}"
        stats_key = (
            ctx.direction,
            target.authority_label if router.fixed is None else authority,
            label,
            backend.metrics_labels,
            route.name,
            self.client_id
            if router.fixed is not None
            else ((endpoint.identity or "") if ssl_context is not None else ""),
        )
        done = self._completion(target, state, stats_key)
        access = ctx.access_log
        if access is not None and access.wants(route.access_log):
            done = self._logged(done, access, stats_key, method, path)
        tracer = ctx.tracer
        span = None
        if tracer is not None:
            span = tracer.start(_lookup(headers), router.fixed is not None)
        if span is not None:
            done = self._traced(
                done, span, method, path, label, backend.metrics_labels, route.name, headers
            )
        return Routed(
            endpoint.address,
            done=done,
            ssl_context=ssl_context,
            server_hostname=None,
            expected_identity=endpoint.identity if ssl_context is not None else None,
            timeout_s=route.timeout_s or ctx.config.timeouts.response_s or None,
            delay_s=delay_s,
            traceparent=span.decision.forward if span is not None else None,
            drop_header=drop_header,
        )

    @staticmethod
    def _refused(refusal: Refusal) -> Refused:
        """A destination the proxy refuses (itself, a denied or a raw address)."""
        kind = (
            RefusalKind.LOOP_DETECTED
            if refusal.reason == LOOP_DETECTED
            else RefusalKind.DESTINATION_FORBIDDEN
        )
        return Refused(kind, refusal.detail)

    def _traced(
        self,
        done: CompletionCallback,
        span: Span,
        method: str,
        path: str,
        endpoint: str,
        dst_service: str,
        route: str,
        headers: Sequence[Header],
    ) -> CompletionCallback:
        """`done`, then this stream's span handed to the tracer (one per attempt)."""
        ctx = self.ctx
        tracer = ctx.tracer
        if tracer is None or not span.decision.sampled:
            return done
        authority = ""
        is_grpc = False
        for name, value in headers:
            if name == b":authority":
                authority = value.decode("latin-1")
            elif name == b"content-type":
                is_grpc = value.startswith(b"application/grpc")
        peer = self.client_id

        def traced(
            status: int, grpc_status: int | None, latency_s: float, outcome: Outcome
        ) -> None:
            done(status, grpc_status, latency_s, outcome)
            attributes: list[tuple[str, str | int]] = [
                ("http.request.method", method),
                ("url.path", path),
                ("server.address", authority),
                ("http.response.status_code", status),
                ("tulle.direction", ctx.direction),
                ("tulle.protocol", "grpc" if is_grpc else "h2"),
                ("tulle.dst_service", dst_service),
                ("tulle.endpoint", endpoint),
            ]
            if route:
                attributes.append(("tulle.route", route))
            if peer:
                attributes.append(("tulle.client_id", peer))
            if grpc_status is not None:
                attributes.append(("rpc.grpc.status_code", grpc_status))
            if outcome is CANCELLED:
                attributes.append(("tulle.error", "cancelled"))
            failed = outcome is not SUCCESS or status >= 500 or bool(grpc_status)
            tracer.finish(
                span, f"{ctx.direction} {method} {route or authority}", tuple(attributes), failed
            )

        return traced

    def _completion(
        self, target: ServiceTarget, state: EndpointState, key: tuple[str, str, str, str, str, str]
    ) -> CompletionCallback:
        metrics = self.ctx.metrics

        def done(status: int, grpc_status: int | None, latency_s: float, outcome: Outcome) -> None:
            state.on_end(_monotonic(), latency_s, outcome)
            target.pending.release()
            stats = metrics.http(*key)
            stats.requests += 1
            # Metrics record what the client saw: a cancelled call is not a success.
            stats.record_response(
                status,
                outcome is SUCCESS,
                latency_s,
                "",
                -1 if grpc_status is None else grpc_status,
            )

        return done

    def _logged(
        self,
        done: CompletionCallback,
        access: AccessLog,
        key: tuple[str, str, str, str, str, str],
        method: str,
        path: str,
    ) -> CompletionCallback:
        """`done`, then an access-log line (only for the streams the log keeps)."""
        direction, authority, dst, service, route, peer = key
        inbound = direction == "inbound"
        src = self.client_ip

        def logged(
            status: int, grpc_status: int | None, latency_s: float, outcome: Outcome
        ) -> None:
            done(status, grpc_status, latency_s, outcome)
            access.write(
                {
                    "ts": timestamp(),
                    "direction": direction,
                    "method": method,
                    "authority": authority,
                    "path": path,
                    "status": status,
                    "grpc_status": grpc_status,
                    "latency_ms": round(latency_s * 1000.0, 3),
                    "route": route,
                    "dst_service": service,
                    "dst": dst,
                    "src": src,
                    "client_id": peer if inbound else "",
                    "server_id": "" if inbound else peer,
                    "error": "client-gone" if outcome is CANCELLED else "",
                    "attempts": 1,
                }
            )

        return logged


def _lookup(headers: Sequence[Header]) -> Callable[[bytes], bytes | None]:
    def header(name: bytes) -> bytes | None:
        for key, value in headers:
            if key == name:
                return value
        return None

    return header


class MeshH2Protocol(H2ServerProtocol):
    """An HTTP/2 server connection that knows its mTLS peer.

    The dispatcher seam sees streams, not connections, so a connection whose
    client presented a mesh identity gets its own dispatcher carrying it (for
    the `client_id` label and, later, authorization)."""

    def __init__(
        self, service: H2Service, ctx: ProxyContext, app_dst: Address | None = None
    ) -> None:
        super().__init__(
            service.dispatcher,
            service.pool,
            limits=service.limits,
            flood_limits=service.flood_limits,
            idle_timeout_s=service.idle_timeout_s,
        )
        self._ctx = ctx
        self._app_dst = app_dst
        service.connections.add(self)
        self.on_closed = service.connections.discard
        metrics, direction = ctx.metrics, ctx.direction
        self.on_refused = lambda reason: metrics.proxy_error(direction, reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        client_id = transport_peer_identity(ssl_object) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else ""
        self.dispatcher = MeshDispatcher(self._ctx, client_id or "", client_ip, self._app_dst)
        if self._ctx.direction == "inbound":
            self.client_id = (client_id or "").encode()
        super().connection_made(transport)
