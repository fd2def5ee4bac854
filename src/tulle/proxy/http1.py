"""The HTTP/1.x path: downstream server connections, exchanges, upstream pooled clients.

One `Http1Server` per accepted connection parses requests with the sans-IO
codec and runs one `Exchange` per request, in order (pipelined requests wait
in a queue, so responses go back in request order). An exchange is the
request's plan (`tulle.proxy.plan.RequestPlan`, which authorizes, routes,
splits, admits, picks, judges retries and records, the same for HTTP/2) plus
the HTTP/1 bytes: it takes a pooled keep-alive `UpstreamConn` for each attempt
or opens one, streams bytes both ways, and maps a `ProxyError` onto an HTTP/1
error response.

The path is callback-driven rather than a coroutine per request: on this
machine class a task and its awaits per request cost more than the rest of
the proxy's work, and callbacks let each side coalesce everything produced by
one `data_received` into one `write` (one syscall per direction for a small
request, as nginx does). Backpressure is transport-level: a full write buffer
on one side pauses reading on the other.

The steps and why each sits where it does are `tulle.proxy.plan`'s; this
module owns connect/pool (per endpoint, so that a retry lands elsewhere) and
the route timeout's timer (armed once, covering every attempt).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, TypeVar, cast

from tulle.codec.http1 import (
    HOPS_LINES,
    REASONS,
    Http1Error,
    RequestDecoder,
    RequestHead,
    ResponseDecoder,
    ResponseHead,
    encode_chunk,
    encode_last_chunk,
    error_response,
)
from tulle.codec.path import normalize_target, origin_form, refusal_reason
from tulle.core.fault import FAULT_REASON, FaultDecision, FaultInjector
from tulle.core.outcome import CANCELLED, FAILURE, SUCCESS
from tulle.core.policy import CLIENT_ID_HEADER
from tulle.core.retry import NOT_SENT, RESET, STATUS
from tulle.net.dial import DESCRIPTORS_EXHAUSTED, DialFailed, dial
from tulle.net.mtls import ALPN_HTTP1, ALPN_OPAQUE, transport_peer_identity
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.metrics import fault_labels
from tulle.proxy.plan import WAIT, RequestPlan, original_authority
from tulle.proxy.router import OVERRIDE_HEADER, MirrorPolicy, PoolHandle, ServiceTarget
from tulle.proxy.tap import TapEvent
from tulle.proxy.tcp import Tunnel

if TYPE_CHECKING:
    from tulle.proxy.context import ProxyContext
    from tulle.proxy.metrics import TcpStats
    from tulle.proxy.tracing import Span

log = logging.getLogger(__name__)

_monotonic = time.monotonic
_CLIENT_ID_LINE = CLIENT_ID_HEADER + b":"


_P = TypeVar("_P", bound=asyncio.BaseProtocol)


class EndpointPool(PoolHandle):
    """Idle keep-alive connections to one endpoint address."""

    __slots__ = ("address", "closed", "ctx", "identity", "idle", "label", "max_idle", "tcp_stats")

    def __init__(self, ctx: ProxyContext, address: tuple[str, int], identity: str | None) -> None:
        self.ctx = ctx
        self.address = address
        # The identity the endpoint must present; None: plaintext (not meshed).
        self.identity = identity
        self.label = f"{address[0]}:{address[1]}"
        self.idle: list[UpstreamConn] = []
        self.closed = False
        self.max_idle = ctx.config.limits.max_idle_per_endpoint
        self.tcp_stats = ctx.metrics.tcp(ctx.direction, "dst", self.label)

    def tls_context(self, alpn: str) -> ssl.SSLContext | Literal[False] | None:
        """The client TLS context for this endpoint: None for plaintext, False
        when the endpoint is meshed but this proxy has no certificate yet."""
        if not self.identity or self.ctx.mesh is None:
            return None
        context = self.ctx.mesh.client_context(alpn)
        return context if context is not None else False

    async def connect(
        self, factory: Callable[[], _P], alpn: str
    ) -> tuple[asyncio.BaseTransport, _P, str]:
        """A new connection to this endpoint (`tulle.net.dial`): mesh TLS (with
        ALPN `alpn`) when it has an identity, whose SPIFFE ID is checked before
        anything is sent. Returns the transport, the protocol and the verified
        peer identity ("" in plaintext); raises `DialFailed`."""
        tls = self.tls_context(alpn)
        if tls is False:
            raise DialFailed(
                ProxyError.IDENTITY_NOT_READY.reason, "no workload certificate yet for mesh TLS"
            )
        ctx = self.ctx
        return await dial(
            factory,
            self.address,
            timeout_s=ctx.config.timeouts.connect_s,
            tls=tls,
            expected_identity=self.identity,
            fds=ctx.fds,
        )

    def take(self) -> UpstreamConn | None:
        idle = self.idle
        while idle:
            conn = idle.pop()
            if not conn.lost:
                conn.idle = False
                return conn
        return None

    def put(self, conn: UpstreamConn) -> None:
        if self.closed or conn.lost or len(self.idle) >= self.max_idle or self.ctx.draining:
            conn.close()
            return
        conn.idle = True
        conn.exchange = None
        self.idle.append(conn)

    def discard(self, conn: UpstreamConn) -> None:
        if conn in self.idle:
            self.idle.remove(conn)

    def close_idle(self) -> None:
        """The endpoint left discovery: in-flight requests finish, idle ones go."""
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.close()


class UpstreamConn(asyncio.Protocol):
    """One keep-alive connection to an endpoint, carrying one exchange at a time."""

    __slots__ = (
        "decoder",
        "exchange",
        "idle",
        "lost",
        "out",
        "peer_id",
        "pool",
        "transport",
        "written",
    )

    def __init__(self, pool: EndpointPool) -> None:
        self.pool = pool
        # The server's verified identity when the connection is mesh TLS.
        self.peer_id = ""
        self.transport: asyncio.Transport | None = None
        self.decoder = ResponseDecoder(self, pool.ctx.config.limits.max_head_bytes)
        self.exchange: Exchange | None = None
        self.out: list[bytes] = []
        self.lost = False
        self.idle = False
        # Whether any byte of the current exchange's request reached the
        # socket: until then a failure means the upstream never saw it.
        self.written = False

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.pool.tcp_stats.opens += 1

    def data_received(self, data: bytes) -> None:
        self.pool.tcp_stats.read_bytes += len(data)
        ex = self.exchange
        if ex is None:  # bytes on an idle connection: the server is confused
            self.close()
            return
        try:
            offset = self.decoder.feed(data)
        except Http1Error as err:
            self.abort()
            ex.upstream_failed(err.status, err.reason, err.detail)
            return
        except Exception:
            log.exception("unexpected error handling an upstream response")
            self.abort()
            ex.upstream_failed(502, "proxy-internal-error", "internal error")
            return
        if offset is not None:
            ex.upstream_upgraded(self, data[offset:])
            return
        ex.server.flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.tcp_stats.closes += 1
        if self.idle:
            self.pool.discard(self)
            return
        ex = self.exchange
        self.exchange = None
        if ex is None:
            return
        # exc is set on a reset: the upstream crashed or was killed mid-response.
        if self.decoder.connection_closed(clean=exc is None):
            ex.server.flush()
            return
        ex.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.server.pause_reading_for_upstream()

    def resume_writing(self) -> None:
        ex = self.exchange
        if ex is not None:
            ex.server.resume_reading_for_upstream()

    # -- ResponseHandler: only until the first exchange takes the events ------
    def on_response_head(self, head: ResponseHead) -> None:
        return None

    def on_response_body(self, data: bytes) -> None:
        return None

    def on_response_end(self, head: ResponseHead) -> None:
        return None

    # -- used by exchanges --------------------------------------------------
    def send(self, data: bytes) -> None:
        self.out.append(data)

    def flush(self) -> None:
        out = self.out
        if out and self.transport is not None and not self.lost:
            stats = self.pool.tcp_stats
            data = out[0] if len(out) == 1 else b"".join(out)
            stats.write_bytes += len(data)
            transport = self.transport
            transport.write(data)
            if not self.written:
                # A write that fails at once (the peer had already reset the
                # connection) leaves the transport closing: nothing was sent.
                self.written = not transport.is_closing()
        out.clear()

    def close(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        if self.transport is not None:
            self.transport.abort()


# The most common status line, not formatted per response.
_STATUS_200_OK = b"HTTP/1.1 200 OK\r\n"

# Exchange states
_ROUTING, _WAITING, _SENT, _DONE = 0, 1, 2, 3

# A peer proxy's `tulle-proxy-error` (on a 5xx) as the kind of failure it
# reports (`tulle.core.retry`); any other error is a plain status.
# The peer answered these without sending the request on (its app refused
# or failed the connection, or it had no app endpoint to pick): never received.
_PEER_FAILURES = {
    b"connect-refused": NOT_SENT,
    b"connect-error": NOT_SENT,
    b"connect-timeout": NOT_SENT,
    b"endpoints-ejected": NOT_SENT,
    b"no-endpoints": NOT_SENT,
    b"overloaded": NOT_SENT,
    b"descriptors-exhausted": NOT_SENT,
    b"upstream-reset": RESET,
}


class Exchange(RequestPlan):
    """One request/response through the proxy, across its attempts: the
    request's plan (the base class) and its HTTP/1 bytes."""

    __slots__ = (
        "close_after",
        "conn",
        "discarding",
        "expect_continue",
        "head",
        "outq",
        "outq_bytes",
        "replay",
        "replay_bytes",
        "req_done",
        "req_head",
        "resp_chunked",
        "resp_close_delimited",
        "resp_started",
        "resp_status",
        "reused_conn",
        "server",
        "span",
        "status",
        "timer",
    )

    def __init__(self, server: Http1Server, head: RequestHead) -> None:
        # RequestPlan.__init__, inline: one call less per request.
        self.pc = server.ctx.plan
        self.start = self.attempt_start = _monotonic()
        self.target = None
        self.backend = None
        self.route = None
        self.state = None
        self.failed_state = None
        self.attempts = 0
        self.admitted = False
        self.authority = ""
        self.endpoint_label = ""
        self.claim_headers = None
        self.server = server
        self.head = head
        self.status = _ROUTING
        self.conn: UpstreamConn | None = None
        self.req_head = b""
        self.req_done = False
        self.outq: list[bytes] = []
        self.outq_bytes = 0
        self.replay: list[bytes] | None = None
        self.replay_bytes = 0
        self.resp_started = False
        self.resp_status = 0
        self.resp_chunked = False
        self.resp_close_delimited = False
        self.discarding = False
        self.close_after = False
        self.reused_conn = False
        # Inbound: the client's verified identity; outbound: the server's.
        self.peer_id = server.client_id
        self.timer: asyncio.TimerHandle | None = None
        self.expect_continue = head.expect_continue
        self.span: Span | None = None

    # -- request side -------------------------------------------------------
    def begin(self) -> None:
        """Route the request; called when it becomes the connection's current one."""
        server = self.server
        ctx = server.ctx
        head = self.head
        if head.hops >= ctx.max_hops:
            # Every hop adds one: a request that went round a loop of proxies.
            self.fail(508, "loop-detected", f"request crossed {head.hops} proxy hops")
            return
        host = head.host
        target_bytes = head.target
        if ctx.router.fixed is not None:
            target = ctx.router.fixed
            if server.orig_dst is not None:
                # Captured inbound: the app port the caller was connecting to.
                target = ctx.router.fixed_at(server.orig_dst[1])
            self.target = target
            self.authority = host.decode("latin-1") if host else ""
            if head.method == b"CONNECT":
                self.fail(400, "connect-not-allowed", "CONNECT is only accepted on outbound")
                return
            if target_bytes[:1] != b"/":
                head.target = origin_form(target_bytes)
            normal = normalize_target(head.target)
            if normal is None:
                self._refuse_path()
                return
            head.target = normal
            if self.pc.authz is not None:
                refused = self.authorize(
                    server.client_id,
                    server.peer[0],
                    head.method,
                    head.target,
                    head.header,
                    server.orig_dst,
                )
                if refused is not None:
                    self.refuse(refused)
                    return
                if self.claim_headers is not None:
                    _apply_claim_headers(head, self.claim_headers)
        else:
            if head.method == b"CONNECT":
                authority = target_bytes
            elif target_bytes[:1] != b"/" and b"://" in target_bytes:
                absolute = self._absolute_form()
                if absolute is None:
                    return
                authority = absolute
            elif host:
                authority = host
            elif server.orig_dst is not None:
                authority = original_authority(server.orig_dst)
            else:
                self.fail(400, "missing-host", "request has no Host header and no absolute URI")
                return
            if head.method != b"CONNECT":
                # The one normalised path (`tulle.codec.path`) that policy and
                # routes match and that is forwarded; inline, as every request
                # runs it.
                normal = normalize_target(head.target)
                if normal is None:
                    self._refuse_path()
                    return
                head.target = normal
            # `resolve`, inline: every outbound request runs it, and a call
            # costs more than these lines (bench/instructions.py).
            target = ctx.router.for_authority(authority)
            self.target = target
            self.authority = target.authority_label
            if target.refusal is not None:
                self.refuse(self.resolve(authority))  # type: ignore[arg-type]
                return
        self._admit()

    def _absolute_form(self) -> bytes | None:
        """An absolute-form target (`http_proxy` clients, RFC 9112 3.2.2): its
        authority, which replaces Host and names the service, and the target
        made origin-form. None: refused (answered here).

        The authority ends at the first `/`, `?` or `#` (RFC 3986 3.2), so
        `http://echo?x=1` is service `echo`, path `/?x=1`. Userinfo is refused
        (RFC 9110 4.2.4). Only `http` is proxied: an `https://` target would
        have to be sent in plaintext, or its TLS made up by the proxy; a client
        that wants TLS through a proxy uses CONNECT (`https_proxy`), as with
        Envoy, which refuses an https scheme on a plaintext listener too.
        """
        head = self.head
        scheme, _, rest = head.target.partition(b"://")
        if scheme.lower() != b"http":
            shown = scheme[:16].decode("latin-1")
            self.fail(
                400,
                "unsupported-scheme",
                f"absolute-form {shown}:// is not proxied; only http:// is"
                " (for TLS through the proxy, use CONNECT, as https_proxy does)",
            )
            return None
        cut = len(rest)
        for mark in (b"/", b"?", b"#"):
            at = rest.find(mark, 0, cut)
            if at >= 0:
                cut = at
        authority = rest[:cut]
        if not authority or b"@" in authority:
            self.fail(400, "bad-request", "absolute-form target needs a host (and no user info)")
            return None
        path = rest[cut:]
        head.target = path if path[:1] == b"/" else b"/" + path
        if head.host != authority:
            # RFC 9112 3.2.2: the absolute-form authority replaces Host.
            head.headers = [(n, v) for n, v in head.headers if n.lower() != b"host"]
            head.headers.insert(0, (b"Host", authority))
            head.encoded = [line for line in head.encoded if line[:5].lower() != b"host:"]
            head.encoded.insert(0, b"Host: " + authority + b"\r\n")
            head.host = authority
        return authority

    def _refuse_path(self) -> None:
        """A target `normalize_target` refused (`tulle.codec.path`): a 400 saying why."""
        self.fail(400, "bad-path", refusal_reason(self.head.target))

    async def _await_known(self, target: ServiceTarget, then: Callable[[], None]) -> None:
        """Wait (bounded) for discovery's first answer about `target`, then go
        on with `then()` (a bound method: a closure in the caller would make
        its locals cells, which costs every request)."""
        known = await target.view.wait_known(self.pc.discovery_s)
        if self.status == _DONE:
            return
        if known:
            then()
        else:
            self.refuse(self.discovery_timeout(target))
        self.server.flush_all()

    def _admit(self) -> None:
        head = self.head
        step = self.admit(head.method, head.target, head.header, self.server.orig_dst)
        if step is not None:
            if step is WAIT:
                self.status = _WAITING
                target = self.target
                assert target is not None
                self.server.ctx.loop.create_task(self._await_known(target, self._admit))
            else:
                self.refuse(step)  # type: ignore[arg-type]
            return
        ctx = self.server.ctx
        route = self.route
        assert route is not None
        target = self.target
        if target is not None and target.override is not None:
            # Read by this proxy only: never forwarded.
            _drop_field(head, OVERRIDE_HEADER)
        tracer = ctx.tracer
        if tracer is not None:
            self.span = tracer.start(head.header, ctx.inbound)
        self.req_head = self._encode_request_head()
        if head.method != b"CONNECT" and head.upgrade is None:
            # Every request keeps its first bytes (bounded), retryable or not:
            # a stale pooled connection that never saw the request can always
            # be replaced transparently.
            self.replay = [self.req_head]
            self.replay_bytes = len(self.req_head)
        timeout = route.timeout_s or self.pc.response_s
        if timeout > 0:
            self.timer = ctx.loop.call_later(timeout, self._timed_out)
        fault = route.fault
        if fault is not None:
            decision = fault.decide(head.header)
            if decision is not None:
                self._inject_fault(fault, decision)
                return
        backend = self.backend
        assert backend is not None
        if not backend.view.ready:
            # A split backend that discovery has not answered for yet (it is
            # resolved when the split first arrives): wait for it, bounded.
            self.status = _WAITING
            ctx.loop.create_task(self._await_known(backend, self._send))
            return
        self._send()

    def _inject_fault(self, fault: FaultInjector, decision: FaultDecision) -> None:
        """A fault the route injects (chaos testing): wait, then abort or go on.

        Before any attempt, so an injected abort is never retried here; the
        answer carries `tulle-proxy-error: fault-injected` and the metrics'
        `error` label says so too."""
        ctx = self.server.ctx
        labels = fault_labels(ctx.direction, self.dst_service(), self.route_name(), decision)
        ctx.metrics.inc("fault_injected_total", labels)
        if decision.delay_s > 0.0:
            self.status = _WAITING
            ctx.loop.call_later(decision.delay_s, self._fault_delayed, fault, decision.abort)
        else:
            self._fault_abort(fault)

    def _fault_delayed(self, fault: FaultInjector, abort: bool) -> None:
        if self.status == _DONE:
            return
        backend = self.backend
        assert backend is not None
        if abort:
            self._fault_abort(fault)
        elif not backend.view.ready:
            self.server.ctx.loop.create_task(self._await_known(backend, self._send))
            return
        else:
            self._send()
        self.server.flush_all()

    def _fault_abort(self, fault: FaultInjector) -> None:
        status, _ = fault.abort_status(False)
        route = self.route.name if self.route is not None else ""
        self.fail(status, FAULT_REASON, f"fault injected by route {route!r}")

    def _send(self) -> None:
        if self.head.method == b"CONNECT":
            self._connect_tunnel()
        else:
            self._dispatch()

    def _encode_request_head(self) -> bytes:
        head = self.head
        out = [head.method, b" ", head.target, b" HTTP/1.1\r\n"]
        server = self.server
        span = self.span
        forward = span.decision.forward if span is not None else None
        inbound = server.ctx.inbound
        if forward is None and not (inbound and head.has_client_id):
            # The usual head: its end-to-end lines as they came, one bytes.
            out.append(head.end_to_end_block())
        else:
            lines = head.encoded_end_to_end()
            if inbound:
                # The app may trust `tulle-client-id`: only this proxy sets it,
                # from the verified mTLS identity; a client's own copy is dropped.
                lines = [line for line in lines if line[:16].lower() != _CLIENT_ID_LINE]
            if forward is not None:
                # This hop's span is the next hop's parent: its traceparent
                # replaces the caller's (tulle.core.trace).
                lines = [line for line in lines if line[:12].lower() != b"traceparent:"]
            out.extend(lines)
        if inbound and server.client_id:
            out.append(CLIENT_ID_HEADER + b": " + server.client_id.encode() + b"\r\n")
        if forward is not None:
            out.append(b"traceparent: " + forward + b"\r\n")
        if head.host is None:
            out.append(b"Host: ")
            out.append(self.authority.encode("latin-1") or b"localhost")
            out.append(b"\r\n")
        # Below the bound (checked in begin), so always within the table.
        out.append(HOPS_LINES[head.hops + 1])
        if head.chunked:
            out.append(b"Transfer-Encoding: ")
            out.append(head.transfer_encoding or b"chunked")
            out.append(b"\r\n")
        elif head.content_length is not None:
            out.append(b"Content-Length: %d\r\n" % head.content_length)
        if head.upgrade is not None:
            out.append(b"Connection: upgrade\r\nUpgrade: ")
            out.append(head.upgrade)
            out.append(b"\r\n")
        out.append(b"\r\n")
        return b"".join(out)

    def _dispatch(self) -> None:
        state = self.pick(_monotonic(), self.head.header)
        if isinstance(state, Refused):
            self.refuse(state)
            return
        self.status = _SENT
        backend = self.backend
        assert backend is not None
        pool: EndpointPool = backend.pool_for(state)  # type: ignore[assignment]
        self.endpoint_label = pool.label
        conn = pool.take()
        if conn is not None:
            self.reused_conn = True
            self._bind(conn)
        else:
            self.reused_conn = False
            self.server.ctx.loop.create_task(self._connect(pool))

    async def _connect(self, pool: EndpointPool) -> None:
        try:
            _, conn, peer_id = await pool.connect(lambda: UpstreamConn(pool), ALPN_HTTP1)
        except DialFailed as failed:
            self._attempt_failed(failed.reason, failed.message)
            return
        conn.peer_id = peer_id
        if self.status != _SENT or self.conn is not None:
            pool.put(conn)
            return
        self._bind(conn)
        self.server.flush_all()

    def _bind(self, conn: UpstreamConn) -> None:
        self.conn = conn
        if conn.peer_id:
            # Outbound over mesh TLS: the server's verified identity. (Inbound
            # keeps the client's; the hop to the local app is plaintext.)
            self.peer_id = conn.peer_id
        conn.exchange = self
        conn.written = False
        conn.decoder.expect(self, self.head.method == b"HEAD")
        if self.attempts > 1 and self.replay is not None:
            for chunk in self.replay:
                conn.send(chunk)
            self.outq = []
            self.outq_bytes = 0
        else:
            conn.send(self.req_head)
            if self.outq:
                for chunk in self.outq:
                    conn.send(chunk)
                self.outq = []
                self.outq_bytes = 0
                self.server.resume_reading_for_body()
        conn.flush()

    def on_request_body(self, data: bytes) -> None:
        if self.status == _DONE:
            return
        if self.head.chunked:
            parts: list[bytes] = []
            encode_chunk(parts, data)
            data = b"".join(parts)
        self._send_body(data)

    def on_request_end(self) -> None:
        self.req_done = True
        if self.status == _DONE:
            return
        if self.head.chunked:
            parts: list[bytes] = []
            encode_last_chunk(parts, self.head.trailers)
            self._send_body(b"".join(parts))

    def _send_body(self, data: bytes) -> None:
        replay = self.replay
        if replay is not None:
            self.replay_bytes += len(data)
            if self.replay_bytes <= self.pc.max_replay_bytes:
                replay.append(data)
            else:
                self.replay = None
        conn = self.conn
        if conn is not None:
            conn.send(data)
            return
        self.outq.append(data)
        self.outq_bytes += len(data)
        if self.outq_bytes > 65536:
            self.server.pause_reading_for_body()

    # -- response side --------------------------------------------------------
    def on_response_head(self, head: ResponseHead) -> None:
        status = head.status
        if status < 200 and status != 101:
            if status == 100 and self.expect_continue and not self.resp_started:
                self.server.out.append(b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        if status >= 500 and self.route is not None and self._retry_response(head, status):
            self.discarding = True
            return
        self.resp_started = True
        self.resp_status = status
        server = self.server
        out = server.out
        reason = head.reason or REASONS.get(status, b"")
        if status == 200 and reason == b"OK":
            out.append(_STATUS_200_OK)
        else:
            out.append(b"HTTP/1.1 %d %s\r\n" % (status, reason))
        client = self.head
        out.append(head.end_to_end_block())
        if self.attempts > 1:
            out.append(b"tulle-retry-attempts: %d\r\n" % (self.attempts - 1))
        close = not client.keep_alive or server.ctx.draining
        if status == 101:
            out.append(b"Connection: upgrade\r\nUpgrade: ")
            out.append(head.upgrade or b"")
            out.append(b"\r\n\r\n")
            return
        if client.method == b"HEAD" or status < 200 or status == 204 or status == 304:
            if head.content_length is not None and status != 204:
                out.append(b"Content-Length: %d\r\n" % head.content_length)
        elif head.content_length is not None:
            out.append(b"Content-Length: %d\r\n" % head.content_length)
        elif client.version == b"1.1":
            self.resp_chunked = True
            out.append(b"Transfer-Encoding: chunked\r\n")
        else:
            # An HTTP/1.0 client cannot take chunked: the body ends at close.
            self.resp_close_delimited = True
            close = True
        if close:
            self.close_after = True
            out.append(b"Connection: close\r\n\r\n")
        elif client.version != b"1.1":
            out.append(b"Connection: keep-alive\r\n\r\n")
        else:
            out.append(b"\r\n")

    def on_response_body(self, data: bytes) -> None:
        if self.discarding or not self.resp_started:
            return
        if self.resp_chunked:
            encode_chunk(self.server.out, data)
        else:
            self.server.out.append(data)

    def on_response_end(self, head: ResponseHead) -> None:
        status = head.status
        conn = self.conn
        if status < 200 or status == 101 or conn is None:
            return
        conn.exchange = None
        self.conn = None
        upstream_reusable = head.keep_alive and self.req_done and not conn.lost
        if upstream_reusable:
            conn.pool.put(conn)
        else:
            conn.close()
        if self.discarding:
            self.discarding = False
            self.end_attempt(FAILURE)
            self._retry_granted()
            return
        if self.resp_chunked:
            encode_last_chunk(self.server.out, head.trailers)
        if not self.req_done:
            # Answered before the request body ended: the rest of that body
            # would be read as a new request, so this connection ends here.
            self.close_after = True
        # A 5xx marks the endpoint unhealthy (failure accrual, EWMA) only on
        # routes declared retryable; elsewhere it is the application's answer.
        route = self.route
        # `judge`, inline for HTTP/1 (no gRPC status): a 5xx counts against
        # the endpoint only on a retryable route.
        self.end_attempt(
            SUCCESS if status < 500 or route is None or route.retryable is not True else FAILURE
        )
        self._finish(status, status < 500, "")
        if self.head.upgrade is not None:
            self.server.refuse_upgrade()

    def upstream_upgraded(self, conn: UpstreamConn, leftover: bytes) -> None:
        """The upstream switched protocols (101): join the two connections."""
        server = self.server
        conn.exchange = None
        self.conn = None
        self.end_attempt(SUCCESS)
        self._finish(101, True, "", keep_connection=True)
        server.flush()
        down, up = server.transport, conn.transport
        if down is None or up is None:
            conn.abort()
            server.abort()
            return
        tunnel = Tunnel(server.tcp_stats, conn.pool.tcp_stats)
        tunnel.downstream.transport = down
        tunnel.upstream.transport = up
        server.become_tunnel()
        down.set_protocol(tunnel.downstream)
        up.set_protocol(tunnel.upstream)
        if leftover:
            down.write(leftover)
        if server.stash:
            up.write(server.stash)
            server.stash = b""
        tunnel.start()

    # -- CONNECT --------------------------------------------------------------
    def _connect_tunnel(self) -> None:
        state = self.pick(_monotonic())
        if isinstance(state, Refused):
            self.refuse(state)
            return
        backend = self.backend
        assert backend is not None
        self.status = _SENT
        pool: EndpointPool = backend.pool_for(state)  # type: ignore[assignment]
        self.endpoint_label = pool.label
        self.server.ctx.loop.create_task(self._open_tunnel(pool))

    async def _open_tunnel(self, pool: EndpointPool) -> None:
        server = self.server
        tunnel = Tunnel(server.tcp_stats, pool.tcp_stats)
        try:
            await pool.connect(lambda: tunnel.upstream, ALPN_OPAQUE)
        except DialFailed as failed:
            tunnel.close(abort=True)
            self._attempt_failed(failed.reason, failed.message)
            return
        if self.status == _DONE or server.transport is None or server.closed:
            tunnel.close()
            return
        # TCP is balanced per connection: the endpoint stays "pending" while
        # the tunnel is open, so P2C sees open connections as load.
        state, self.state = self.state, None
        if state is not None:
            connected_after = _monotonic() - self.attempt_start
            tunnel.on_close = lambda: state.on_end(_monotonic(), connected_after, SUCCESS)
        self._finish(200, True, "", keep_connection=True)
        server.out.append(b"HTTP/1.1 200 Connection established\r\n\r\n")
        server.flush()
        down = server.transport
        tunnel.downstream.transport = down
        server.become_tunnel()
        down.set_protocol(tunnel.downstream)
        if server.stash and tunnel.upstream.transport is not None:
            tunnel.upstream.transport.write(server.stash)
            server.stash = b""
        tunnel.start()

    # -- failures, retries, completion ---------------------------------------
    def _retry_response(self, head: ResponseHead, status: int) -> bool:
        """Whether a 5xx response is discarded and the request retried.

        From an app it is a status, retried only on a `retryable: true` route.
        From a peer proxy, verified over mTLS, a proxy-made error says how the
        request failed at that proxy's app, and is judged as if this proxy
        had seen that failure itself: the app refused the connection (never
        received: retried) or reset it after the request was sent (idempotent
        methods retried when `retryable` is absent). So a killed app behind a
        sidecar costs its callers what a killed plain endpoint would.
        """
        failure = STATUS
        conn = self.conn
        if conn is not None and conn.peer_id:
            reason = head.header(b"tulle-proxy-error")
            if reason is not None:
                failure = _PEER_FAILURES.get(reason, STATUS)
        return self._may_retry(failure, status)

    def _may_retry(self, failure: int, status: int = 0) -> bool:
        """The plan's retry rule (`RequestPlan.may_retry`) for this request's bytes."""
        return self.may_retry(
            failure, self.head.method, self.replay is not None, self.req_done, status
        )

    def _retry_or_fail(self, status: int, reason: str, message: str, failure: int) -> None:
        if self.status == _DONE:
            return
        if self.attempts and self._may_retry(failure, status):
            self.count_retry()
            self._dispatch()
            return
        self.fail(status if status >= 500 else 502, reason, message)

    def _retry_granted(self) -> None:
        """A 5xx head was discarded because `_may_retry` granted a retry (and
        drew on the budget) when it arrived: send the next attempt."""
        self.count_retry()
        self._dispatch()

    def _attempt_failed(self, reason: str, message: str) -> None:
        """A connection attempt failed before any byte of response."""
        if self.status == _DONE:
            return
        status = ProxyError.of(reason).http_status
        # Running out of descriptors says nothing about the endpoint.
        self.end_attempt(CANCELLED if reason == DESCRIPTORS_EXHAUSTED else FAILURE)
        self._retry_or_fail(status, reason, message, NOT_SENT)
        # Called from connect tasks, outside any data_received: flush here.
        self.server.flush_all()

    def upstream_lost(self, conn: UpstreamConn, exc: Exception | None) -> None:
        self.conn = None
        if self.status == _DONE:
            return
        if self.resp_started:
            # Cut short mid-body (a reset, or a Content-Length or chunked body
            # that ended early): no last chunk, and a reset to the client, the
            # only signal a close-delimited HTTP/1.0 response has.
            # Reset before _finish: finishing may close the connection
            # cleanly (Connection: close), which would pass the cut for whole.
            self.end_attempt(FAILURE)
            self.server.abort()
            self._finish(self.resp_status, False, "upstream-reset-mid-response")
            return
        written = conn.written
        if not written and self.reused_conn and self.replay is not None:
            # A pooled connection found dead before any byte of the request
            # was written: the upstream never saw it, so it is sent again at
            # once, whatever the method (not counted as a retry).
            self.unpick()
            self._dispatch()
            self.server.flush_all()
            return
        self.end_attempt(FAILURE)
        if self.discarding:
            # Lost while discarding a 5xx whose retry was already granted.
            self.discarding = False
            self._retry_granted()
            self.server.flush()
            return
        detail = f"{conn.pool.label} closed the connection" + (f": {exc}" if exc else "")
        # Written: the upstream may have run the request (a reset, retried as
        # the route's rule says); not written: it never saw it.
        self._retry_or_fail(502, "upstream-reset", detail, RESET if written else NOT_SENT)
        self.server.flush()

    def upstream_failed(self, status: int, reason: str, message: str) -> None:
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.exchange = None
        if self.status == _DONE:
            return
        self.end_attempt(FAILURE)
        if self.resp_started:
            self.server.abort()
            self._finish(self.resp_status, False, reason)
            return
        self.fail(status, reason, message)
        self.server.flush()

    def _timed_out(self) -> None:
        self.timer = None
        if self.status == _DONE:
            return
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        self.end_attempt(FAILURE)
        timeout = self.route.timeout_s if self.route else 0.0
        timeout = timeout or self.pc.response_s
        # timeout_total is counted where the request is recorded (the plan).
        if self.resp_started:
            self.server.abort()
            self._finish(self.resp_status, False, "response-timeout")
            return
        self.fail(504, "response-timeout", f"no response within {timeout:g}s")
        self.server.flush()

    def refuse(self, refused: Refused) -> None:
        """Answer with the proxy error the plan decided on."""
        error = refused.error
        extra = b"".join(name + b": " + value + b"\r\n" for name, value in refused.headers)
        self.fail(refused.status or error.http_status, error.reason, refused.detail, extra)

    def fail(self, status: int, reason: str, message: str, extra: bytes = b"") -> None:
        """Answer with a proxy-made error (or cut the connection if too late);
        `extra` is more header lines for the answer."""
        if self.status == _DONE:
            return
        conn = self.conn
        if conn is not None:
            self.conn = None
            conn.exchange = None
            conn.abort()
        self.end_attempt(FAILURE)
        server = self.server
        self.proxy_error(reason)
        if self.resp_started:
            server.abort()
            self._finish(self.resp_status, False, reason)
            return
        close = not self.req_done or not self.head.keep_alive or server.ctx.draining
        server.out.append(error_response(status, reason, message, close=close, extra=extra))
        if close:
            self.close_after = True
        self._finish(status, False, reason)

    def _finish(
        self, status: int, success: bool, error: str, keep_connection: bool = False
    ) -> None:
        self.status = _DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.finish(status, success, error)
        if self.span is not None:
            self._end_span(self.span, status, error)
        route = self.route
        if route is not None and route.mirror is not None:
            self._mirror(route.mirror)
        self.server.exchange_done(self, keep_connection)

    def _mirror(self, mirror: MirrorPolicy) -> None:
        """A copy to the route's mirror, after the answer (tulle.proxy.mirror)."""
        if not mirror.sampler.keep():
            return
        whole = self.req_done and self.head.upgrade is None and self.head.method != b"CONNECT"
        self.server.ctx.mirrors.send(mirror, self.replay if whole else None)

    def tap_event(self, status: int, grpc_status: int, latency_s: float, error: str) -> TapEvent:
        server = self.server
        pc = self.pc
        head = self.head
        inbound = pc.inbound
        return TapEvent(
            ts=time.time(),
            direction=pc.direction,
            method=head.method.decode("latin-1"),
            authority=self.authority,
            path=head.target.decode("latin-1"),
            status=status,
            latency_ms=round(latency_s * 1000.0, 3),
            dst=self.endpoint_label,
            src=f"{server.peer[0]}:{server.peer[1]}",
            tls=bool(self.peer_id),
            client_id=self.peer_id if inbound else "",
            server_id="" if inbound else self.peer_id,
            error=error,
            route=self.route_name(),
            dst_service=self.dst_service(),
        )

    def _end_span(self, span: Span, status: int, error: str) -> None:
        """Hand this hop's span to the tracer (queued; exported off the request path)."""
        ctx = self.server.ctx
        tracer = ctx.tracer
        if tracer is None or not span.decision.sampled:
            return
        head = self.head
        method = head.method.decode("latin-1")
        route = self.route.name if self.route is not None else ""
        attributes: list[tuple[str, str | int]] = [
            ("http.request.method", method),
            ("url.path", head.target.decode("latin-1")),
            ("server.address", self.authority),
            ("http.response.status_code", status),
            ("tulle.direction", ctx.direction),
            ("tulle.protocol", "http/1.1"),
        ]
        if self.backend is not None:
            attributes.append(("tulle.dst_service", self.backend.metrics_labels))
        if route:
            attributes.append(("tulle.route", route))
        if self.endpoint_label:
            attributes.append(("tulle.endpoint", self.endpoint_label))
        if self.peer_id:
            attributes.append((ctx.side.peer_id_attr, self.peer_id))
        if self.attempts > 1:
            attributes.append(("http.request.resend_count", self.attempts - 1))
        if error:
            attributes.append(("tulle.error", error))
        tracer.finish(
            span,
            f"{ctx.direction} {method} {route or self.authority}",
            tuple(attributes),
            bool(error) or status >= 500,
        )

    def client_gone(self) -> None:
        """The client went away: abandon the request and its upstream connection."""
        if self.status == _DONE:
            return
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.exchange = None
            conn.abort()
        self.status = _DONE
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # The client gave up: that says nothing about the endpoint; 499 after
        # nginx: the client closed before the response was sent.
        self.cancelled(499)
        if self.span is not None:
            self._end_span(self.span, 499, "client-gone")


class Http1Server(asyncio.Protocol):
    """One downstream connection speaking HTTP/1.x."""

    __slots__ = (
        "_paused_for_body",
        "_paused_for_upstream",
        "_paused_pipeline",
        "client_id",
        "closed",
        "ctx",
        "current",
        "decoder",
        "deferred_error",
        "head_started",
        "last_active",
        "orig_dst",
        "out",
        "peer",
        "queue",
        "receiving",
        "stash",
        "tcp_stats",
        "transport",
        "tunnelled",
        "upgrading",
    )

    def __init__(
        self, ctx: ProxyContext, peer: tuple[str, int], orig_dst: tuple[str, int] | None
    ) -> None:
        self.ctx = ctx
        self.peer = peer
        self.orig_dst = orig_dst
        self.transport: asyncio.Transport | None = None
        self.decoder = RequestDecoder(self, ctx.config.limits.max_head_bytes)
        # The answer to bad input that followed pipelined requests still in
        # flight: sent once they are answered (`_bad_input`).
        self.deferred_error: bytes | None = None
        self.out: list[bytes] = []
        self.current: Exchange | None = None
        self.receiving: Exchange | None = None
        self.queue: deque[Exchange] = deque()
        self.closed = False
        self.tunnelled = False
        self.upgrading = False
        self.stash = b""
        self.last_active = ctx.loop.time()
        self.head_started = 0.0
        self._paused_for_body = False
        self._paused_for_upstream = False
        self._paused_pipeline = False
        self.tcp_stats: TcpStats = ctx.downstream_tcp
        # The client's verified mesh identity (inbound over mTLS), else "".
        self.client_id = ""

    # -- asyncio.Protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.tcp_stats.opens += 1
        self.ctx.connections.add(self)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.client_id = transport_peer_identity(ssl_object) or ""

    def data_received(self, data: bytes) -> None:
        self.tcp_stats.read_bytes += len(data)
        now = self.ctx.loop.time()
        self.last_active = now
        if self.upgrading:
            self.stash += data
            return
        if self.current is None and not self.head_started:
            self.head_started = now
        try:
            offset = self.decoder.feed(data)
        except Http1Error as err:
            self._bad_input(err)
            return
        except Exception:
            log.exception("unexpected error handling a request")
            self._bad_input(Http1Error(500, "proxy-internal-error", "internal error"))
            return
        if offset is not None:
            self._begin_upgrade(data[offset:])
        self.flush_all()

    def eof_received(self) -> bool:
        # A client that half-closes after its request still gets the response.
        return self.current is not None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.tcp_stats.closes += 1
        self.ctx.connections.discard(self)
        for ex in (self.current, *self.queue):
            if ex is not None and ex.status != _DONE:
                ex.client_gone()
        self.queue.clear()
        self.current = None

    def pause_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.conn is not None and ex.conn.transport is not None:
            ex.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        ex = self.current
        if ex is not None and ex.conn is not None and ex.conn.transport is not None:
            ex.conn.transport.resume_reading()

    # -- RequestHandler -------------------------------------------------------
    def on_request_head(self, head: RequestHead) -> None:
        self.head_started = 0.0
        ex = Exchange(self, head)
        self.receiving = ex
        if self.current is None:
            self.current = ex
            ex.begin()
        else:
            self.queue.append(ex)
            if (
                len(self.queue) >= self.ctx.config.limits.max_pipelined
                and not self._paused_pipeline
            ):
                self._paused_pipeline = True
                self._pause()

    def on_request_body(self, data: bytes) -> None:
        ex = self.receiving
        if ex is None:
            return
        if ex is self.current:
            ex.on_request_body(data)
        else:  # a pipelined request: keep its body until it runs
            ex.outq.append(data if not ex.head.chunked else _chunk(data))
            ex.outq_bytes += len(data)

    def on_request_end(self, head: RequestHead) -> None:
        ex = self.receiving
        if ex is None:
            return
        trailers = head.trailers
        if trailers and self.ctx.inbound:
            # Only this proxy speaks for the caller: a copy in the trailers goes too.
            head.trailers = [t for t in trailers if t[0].lower() != CLIENT_ID_HEADER]
            if ex.claim_headers is not None:
                strip = ex.claim_headers[0]
                head.trailers = [t for t in head.trailers if t[0].lower() not in strip]
        if ex is self.current:
            ex.on_request_end()
        else:
            ex.req_done = True
            if ex.head.chunked:
                parts: list[bytes] = []
                encode_last_chunk(parts, head.trailers)
                ex.outq.append(b"".join(parts))

    # -- used by exchanges ----------------------------------------------------
    def flush(self) -> None:
        out = self.out
        if out:
            transport = self.transport
            if transport is not None and not self.closed:
                data = out[0] if len(out) == 1 else b"".join(out)
                self.tcp_stats.write_bytes += len(data)
                transport.write(data)
            out.clear()

    def flush_all(self) -> None:
        # The emptiness checks inline: after most reads both sides have
        # already written, and two calls per request are worth saving.
        ex = self.current
        if ex is not None:
            conn = ex.conn
            if conn is not None and conn.out:
                conn.flush()
        if self.out:
            self.flush()

    def exchange_done(self, ex: Exchange, keep_connection: bool = False) -> None:
        if ex is not self.current:
            return
        if keep_connection:
            return
        self.current = None
        if ex.close_after or (self.ctx.draining and not self.queue):
            self.flush()
            self.close()
            return
        if self.queue:
            nxt = self.queue.popleft()
            if self._paused_pipeline and len(self.queue) < self.ctx.config.limits.max_pipelined:
                self._paused_pipeline = False
                self._resume()
            self.current = nxt
            if nxt.outq:
                # A pipelined request's body was buffered whole; keep it for replay.
                nxt.replay = None
            nxt.begin()
            if nxt.conn is not None:
                nxt.conn.flush()
        elif self.deferred_error is not None:
            # Every request before a bad one is answered: now its error.
            self.out.append(self.deferred_error)
            self.deferred_error = None
            self.flush()
            self.close()
        elif self.ctx.draining:
            self.flush()
            self.close()
        else:
            self.head_started = 0.0

    def pause_reading_for_body(self) -> None:
        if not self._paused_for_body:
            self._paused_for_body = True
            self._pause()

    def resume_reading_for_body(self) -> None:
        if self._paused_for_body:
            self._paused_for_body = False
            self._resume()

    def pause_reading_for_upstream(self) -> None:
        if not self._paused_for_upstream:
            self._paused_for_upstream = True
            self._pause()

    def resume_reading_for_upstream(self) -> None:
        if self._paused_for_upstream:
            self._paused_for_upstream = False
            self._resume()

    def _pause(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def _resume(self) -> None:
        if (
            self.transport is not None
            and not self.closed
            and not (self._paused_for_body or self._paused_for_upstream or self._paused_pipeline)
            and not self.upgrading
        ):
            self.transport.resume_reading()

    def _begin_upgrade(self, rest: bytes) -> None:
        """After a CONNECT or Upgrade head: hold further bytes until upstream answers."""
        self.upgrading = True
        self.stash = rest
        if self.transport is not None:
            self.transport.pause_reading()

    def refuse_upgrade(self) -> None:
        """The upstream did not switch protocols: go on parsing HTTP."""
        if not self.upgrading:
            return
        self.upgrading = False
        self.decoder.reset()
        rest, self.stash = self.stash, b""
        self._resume()
        if rest:
            self.data_received(rest)

    def become_tunnel(self) -> None:
        self.tunnelled = True
        self.upgrading = False
        self.ctx.connections.discard(self)

    def _bad_input(self, err: Http1Error) -> None:
        self.ctx.metrics.proxy_error(self.ctx.direction, err.reason)
        self.ctx.record_rejected(err.status, err.reason)
        response = error_response(err.status, err.reason, err.detail or err.reason, close=True)
        receiving = self.receiving
        if self.current is not None and (receiving is None or receiving.req_done):
            # Pipelined: the requests before the bad one are whole and on their
            # way, so they are answered first, in order; then this 400, then
            # the connection closes. Nothing after the bad bytes is read.
            self.deferred_error = response
            self.decoder.stop()
            self.flush_all()
            return
        self.out.append(response)
        self.flush()
        self.close()

    # -- ClientConnection (tulle.proxy.context): the worker's sweeper and drain --
    def sweep(self, now: float, header_read_s: float, idle_s: float, draining: bool) -> None:
        if self.current is not None or self.closed:
            return
        if self.head_started:
            if now - self.head_started > header_read_s:
                self.timeout_head()
        elif draining or now - self.last_active > idle_s:
            self.close()

    def close_if_idle(self) -> None:
        if self.current is None and not self.head_started:
            self.close()

    def timeout_head(self) -> None:
        """Called by the sweeper: the client is too slow sending a request head."""
        self._bad_input(
            Http1Error(408, "request-header-timeout", "request head not received in time")
        )

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Cut the connection with a TCP reset: the response in progress is broken.

        A plain close would tell a client reading a close-delimited body
        (HTTP/1.0) that it got all of it; a reset says it did not.
        """
        transport = self.transport
        if transport is not None and not self.closed:
            self.closed = True
            sock = transport.get_extra_info("socket")
            if sock is not None:
                # OSError: already gone, nothing left to cut.
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()


# SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


def _drop_field(head: RequestHead, lower_name: bytes) -> None:
    """Remove every field `lower_name` from a request head (not forwarded)."""
    prefix = lower_name + b":"
    size = len(prefix)
    head.encoded = [line for line in head.encoded if line[:size].lower() != prefix]
    head.headers = [(n, v) for n, v in head.headers if n.lower() != lower_name]


def _apply_claim_headers(
    head: RequestHead, edit: tuple[tuple[bytes, ...], tuple[tuple[bytes, bytes], ...]]
) -> None:
    """Inbound JWT: drop every caller copy of the claim headers, add the verified ones."""
    strip, add = edit
    for name in strip:
        _drop_field(head, name)
    for name, value in add:
        head.encoded.append(name + b": " + value + b"\r\n")
        head.headers.append((name, value))


def _chunk(data: bytes) -> bytes:
    parts: list[bytes] = []
    encode_chunk(parts, data)
    return b"".join(parts)


__all__ = ["EndpointPool", "Exchange", "Http1Server", "UpstreamConn", "original_authority"]
