"""HTTP/2 and gRPC streams on the request plan: the mesh's `Dispatcher`.

`MeshDispatcher` adapts one direction's request plan (`tulle.proxy.plan`) to
the HTTP/2 proxy's `Dispatcher` seam (`tulle.proxy.http2.dispatch`). Per
stream it builds an `H2Call` -- the stream's `RequestPlan` -- and runs the
same steps as HTTP/1: authorization (inbound), the `:authority`'s service
(or the local app; a captured connection's original destination when the
authority names no service), the pending limit, the split and route match,
then the pick; it answers with where the stream goes (with the mesh TLS
context when the endpoint is meshed), a `Refused` carrying the one
`ProxyError`, or `Pending` while discovery has not answered. The stream asks
its call for every further attempt (`next_attempt`: the plan's retry rule and
budget, then a new pick) and tells it how it ended (`ended`: balancer
feedback, `request_total` / `response_total` / latency with the
`grpc_status_code` label, `proxy_error_total`, `timeout_total`, tap, the
access log), and copies the request to the route's mirror once the stream is
over (`copy`, `tulle.proxy.mirror`). A route's injected fault (`tulle.core.fault`) is decided once,
after the route match and before the first pick, as for HTTP/1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

from tulle.codec.http2 import Header, is_success
from tulle.core.outcome import CANCELLED, FAILURE, SUCCESS, Outcome
from tulle.core.retry import STATUS
from tulle.net.mtls import ALPN_H2, transport_peer_identity
from tulle.proxy.context import ProxyContext
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.http2.dispatch import Pending, Routed, StreamEdits
from tulle.proxy.http2.server import H2ServerProtocol, H2Service
from tulle.proxy.metrics import fault_labels
from tulle.proxy.plan import WAIT, RequestPlan
from tulle.proxy.router import OVERRIDE_HEADER, ServiceTarget
from tulle.proxy.tap import TapEvent
from tulle.proxy.tracing import Span

_monotonic = time.monotonic


class H2Call(RequestPlan):
    """The request plan of one HTTP/2 stream (the stream's `Call`)."""

    __slots__ = (
        "dispatcher",
        "drop_header",
        "edits",
        "grpc",
        "method",
        "mirrored",
        "path",
        "replay_limit",
        "span",
    )

    logs_grpc_status = True

    def __init__(self, dispatcher: MeshDispatcher, method: str, path: str, grpc: bool) -> None:
        pc = dispatcher.ctx.plan
        RequestPlan.__init__(self, pc, _monotonic())
        self.dispatcher = dispatcher
        self.method = method
        self.path = path
        self.grpc = grpc
        self.replay_limit = pc.max_replay_bytes
        self.peer_id = dispatcher.client_id if pc.inbound else ""
        # Distributed tracing: this call's span (one per stream, over its attempts).
        self.span: Span | None = None
        # A request header not forwarded (a per-request override's, once read).
        self.drop_header: bytes | None = None
        # Whether the route's mirror takes a copy of this stream (`copy`).
        self.mirrored = False
        # What the features above change upstream (`attempt`); None: nothing.
        self.edits: StreamEdits | None = None

    # -- the stream's Call --------------------------------------------------------
    def hold_headers(self) -> bool:
        route = self.route
        return route is not None and route.retryable is True and bool(route.retry_grpc_statuses)

    def next_attempt(
        self, failure: int, status: int, grpc_status: int, replayable: bool, complete: bool
    ) -> Routed | Refused | None:
        # A response is judged (a 5xx counts only on retryable routes); a
        # failed connection or a reset is the endpoint's failure.
        self.end_attempt(self.judge(status, grpc_status) if failure == STATUS else FAILURE)
        if not self.may_retry(
            failure, self.method.encode("latin-1"), replayable, complete, status, grpc_status
        ):
            return None
        self.count_retry()
        return self.dispatcher.attempt(self)

    def copy(
        self,
        headers: Sequence[Header] | None,
        body: list[bytes] | None,
        trailers: list[Header] | None,
    ) -> None:
        route = self.route
        if route is not None and route.mirror is not None:
            self.dispatcher.ctx.mirrors.send_h2(
                route.mirror, headers, body, trailers, self.drop_header
            )

    def ended(self, status: int, grpc_status: int | None, outcome: Outcome, error: str) -> None:
        grpc = -1 if grpc_status is None else grpc_status
        if self.span is not None:
            self._end_span(self.span, status, grpc_status, outcome, error)
        # A response passed on in full is judged as HTTP/1 judges one; a
        # cancellation says nothing about the endpoint.
        self.end_attempt(self.judge(status, grpc) if outcome is SUCCESS else outcome)
        if outcome is CANCELLED:
            self.finish(status, False, error or "client-gone", grpc)
            return
        self.finish(status, outcome is SUCCESS and is_success(status, grpc_status), error, grpc)

    def _end_span(
        self, span: Span, status: int, grpc_status: int | None, outcome: Outcome, error: str
    ) -> None:
        """Hand this call's span to the tracer (queued; exported off the request path)."""
        pc = self.pc
        tracer = self.dispatcher.ctx.tracer
        if tracer is None or not span.decision.sampled:
            return
        route = self.route_name()
        attributes: list[tuple[str, str | int]] = [
            ("http.request.method", self.method),
            ("url.path", self.path),
            ("server.address", self.authority),
            ("http.response.status_code", status),
            ("tulle.direction", pc.direction),
            ("tulle.protocol", "grpc" if self.grpc else "h2"),
            ("tulle.dst_service", self.dst_service()),
            ("tulle.endpoint", self.endpoint_label),
        ]
        if route:
            attributes.append(("tulle.route", route))
        if self.peer_id:
            name = "tulle.client_id" if pc.inbound else "tulle.server_id"
            attributes.append((name, self.peer_id))
        if grpc_status is not None:
            attributes.append(("rpc.grpc.status_code", grpc_status))
        if self.attempts > 1:
            attributes.append(("http.request.resend_count", self.attempts - 1))
        if outcome is CANCELLED:
            attributes.append(("tulle.error", "cancelled"))
        elif error:
            attributes.append(("tulle.error", error))
        failed = outcome is not SUCCESS or status >= 500 or bool(grpc_status)
        tracer.finish(
            span,
            f"{pc.direction} {self.method} {route or self.authority}",
            tuple(attributes),
            failed,
        )

    def refused(self, refusal: Refused) -> Refused:
        """Record a stream refused before it had an upstream (metrics, tap),
        with the status its answer will have (`http2.stream.error_response`)."""
        error = refusal.error
        self.end_attempt(CANCELLED)
        if self.grpc and (refusal.grpc_status >= 0 or not refusal.status):
            grpc = refusal.grpc_status if refusal.grpc_status >= 0 else error.grpc_status
            self.finish(200, False, error.reason, grpc)
        else:
            self.finish(refusal.status or error.http_status, False, error.reason)
        return refusal

    def tap_event(self, status: int, grpc_status: int, latency_s: float, error: str) -> TapEvent:
        pc = self.pc
        inbound = pc.inbound
        return TapEvent(
            ts=time.time(),
            direction=pc.direction,
            method=self.method,
            authority=self.authority,
            path=self.path,
            status=status,
            latency_ms=round(latency_s * 1000.0, 3),
            dst=self.endpoint_label,
            src=self.dispatcher.client_addr,
            tls=bool(self.peer_id),
            client_id=self.peer_id if inbound else "",
            server_id="" if inbound else self.peer_id,
            error=error,
            route=self.route_name(),
            dst_service=self.dst_service(),
            grpc_status=None if grpc_status < 0 else grpc_status,
        )


class MeshDispatcher:
    """The `Dispatcher` of one direction (inbound or outbound) for one client connection."""

    def __init__(
        self,
        ctx: ProxyContext,
        client_id: str = "",
        client_ip: str = "",
        *,
        client_addr: str = "",
        orig_dst: tuple[str, int] | None = None,
    ) -> None:
        self.ctx = ctx
        # Inbound over mesh TLS: the verified identity of the calling proxy.
        self.client_id = client_id
        self.client_ip = client_ip
        self.client_addr = client_addr or client_ip
        # A captured connection's original destination (transparent mode).
        self.orig_dst = orig_dst

    def route(
        self, authority: str, method: str, path: str, headers: Sequence[Header]
    ) -> Routed | Refused | Pending:
        ctx = self.ctx
        router = ctx.router
        call = H2Call(self, method, path, _is_grpc(headers))
        fixed = router.fixed
        method_b = method.encode("latin-1")
        path_b = path.encode("latin-1")
        header = _lookup(headers)
        refused: Refused | None
        if fixed is not None:
            orig = self.orig_dst
            # Captured inbound: the app port the caller was connecting to.
            call.target = fixed if orig is None else router.fixed_at(orig[1])
            call.authority = authority
            refused = call.authorize(self.client_id, self.client_ip, method_b, path_b, header, orig)
        elif not authority:
            refused = Refused(ProxyError.BAD_REQUEST, "no :authority")
        else:
            refused = call.resolve(authority.encode("latin-1"))
        if refused is not None:
            return call.refused(refused)
        step = call.admit(method_b, path_b, header, self.orig_dst if fixed is None else None)
        if step is WAIT:
            # The first stream for a name: wait for discovery (endpoints and
            # profile, so that a split is known), then route again.
            target = call.target
            assert target is not None
            return _pending(target, ctx.plan.discovery_s, call)
        if step is not None:
            return call.refused(step)  # type: ignore[arg-type]
        backend = call.backend
        assert backend is not None
        if not call.backend_ready():
            call.release()
            return _pending(backend, ctx.plan.discovery_s, call)
        target = call.target
        if target is not None and target.override is not None:
            # Read by this proxy only: never forwarded.
            call.drop_header = OVERRIDE_HEADER
        tracer = ctx.tracer
        if tracer is not None:
            call.span = tracer.start(header, fixed is not None)
        delay_s = 0.0
        route = call.route
        if route is not None and route.mirror is not None:
            # Decided now, sent when the stream is over (tulle.proxy.mirror).
            call.mirrored = route.mirror.sampler.keep()
        fault = route.fault if route is not None else None
        if fault is not None and route is not None:
            hit = fault.decide(header)
            if hit is not None:
                labels = fault_labels(ctx.direction, backend.metrics_labels, route.name, hit)
                ctx.metrics.inc("fault_injected_total", labels)
                if hit.abort:
                    # Before any pick: never an attempt, so never retried.
                    spec = fault.spec
                    return call.refused(
                        Refused(
                            ProxyError.FAULT_INJECTED,
                            f"fault injected by route {route.name!r}",
                            status=spec.abort_status,
                            grpc_status=-1
                            if spec.abort_grpc_status is None
                            else spec.abort_grpc_status,
                            delay_s=hit.delay_s,
                        )
                    )
                delay_s = hit.delay_s
        return self.attempt(call, header, delay_s)

    def attempt(
        self,
        call: H2Call,
        header: Callable[[bytes], bytes | None] | None = None,
        delay_s: float = 0.0,
    ) -> Routed | Refused:
        """Pick an endpoint for the call's next attempt (`header`: the first
        attempt's, for session affinity; `delay_s`: an injected delay)."""
        ctx = self.ctx
        state = call.pick(_monotonic(), header)
        if isinstance(state, Refused):
            return call.refused(state)
        endpoint = state.endpoint
        ssl_context = None
        if endpoint.identity and ctx.mesh is not None:
            ssl_context = ctx.mesh.client_context(ALPN_H2)
            if ssl_context is None:
                return call.refused(
                    Refused(
                        ProxyError.IDENTITY_NOT_READY, "no workload certificate yet for mesh TLS"
                    )
                )
        host, port = endpoint.address
        call.endpoint_label = f"{host}:{port}"
        if not ctx.plan.inbound:
            call.peer_id = (endpoint.identity or "") if ssl_context is not None else ""
        route = call.route
        timeout = route.timeout_s if route is not None else 0.0
        span = call.span
        if (
            span is not None
            or delay_s
            or call.drop_header is not None
            or call.claim_headers is not None
        ):
            # Only a stream a traffic feature touches pays for these.
            call.edits = StreamEdits(
                delay_s,
                span.decision.forward if span is not None else None,
                call.drop_header,
                call.claim_headers,
            )
        else:
            # (A retry after an injected delay goes without it.)
            call.edits = None
        return Routed(
            endpoint.address,
            ssl_context=ssl_context,
            server_hostname=None,
            expected_identity=endpoint.identity if ssl_context is not None else None,
            timeout_s=timeout or ctx.plan.response_s or None,
            call=call,
        )


def _pending(target: ServiceTarget, wait_s: float, call: H2Call) -> Pending:
    view = target.view
    return Pending(
        lambda: view.wait_known(wait_s),
        f"discovery of {target.name!r}",
        timed_out=call.discovery_timeout(target),
    )


def _is_grpc(headers: Sequence[Header]) -> bool:
    for key, value in headers:
        if key == b"content-type":
            return value.startswith(b"application/grpc")
    return False


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
    the `client_id` label and authorization)."""

    def __init__(
        self, service: H2Service, ctx: ProxyContext, orig_dst: tuple[str, int] | None = None
    ) -> None:
        super().__init__(
            service.dispatcher,
            service.pool,
            limits=service.limits,
            flood_limits=service.flood_limits,
            idle_timeout_s=service.idle_timeout_s,
        )
        self._ctx = ctx
        self._orig_dst = orig_dst
        service.connections.add(self)
        self.on_closed = service.connections.discard
        metrics, direction = ctx.metrics, ctx.direction
        self.on_refused = lambda reason: metrics.proxy_error(direction, reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        client_id = transport_peer_identity(ssl_object) if ssl_object is not None else None
        peer = transport.get_extra_info("peername")
        client_ip = peer[0] if isinstance(peer, tuple) else ""
        client_addr = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.dispatcher = MeshDispatcher(
            self._ctx, client_id or "", client_ip, client_addr=client_addr, orig_dst=self._orig_dst
        )
        if self._ctx.inbound:
            self.client_id = (client_id or "").encode()
        super().connection_made(transport)
