"""The plan of one proxied request, the same for HTTP/1, HTTP/2 and gRPC.

    authorization -> route -> split -> pending limit -> pick -> attempt
                  -> retry -> record

A `RequestPlan` holds what the proxy decided about one request across its
attempts (target, backend, route, endpoint, attempts, the endpoint that failed
last) and runs those steps; it never touches a socket or a codec. The
protocols drive it with callbacks and only move bytes: HTTP/1's `Exchange`
(`tulle.proxy.http1`) *is* a plan (a subclass, so that a request costs one
object), and an HTTP/2 stream gets an `H2Call` (`tulle.proxy.h2_mesh`). Each
step returns data: a `Refused` (a `ProxyError` and its detail, which the
protocol maps onto its wire), `WAIT` (discovery has not answered yet: wait
for the view, then run the step again), or a value to go on with.

The steps, innermost first, and why each sits where it does (the same as
linkerd2-proxy's outbound stack):

1. connect/pool (the protocol's): per endpoint, so a retry can land on
   another endpoint;
2. pick (P2C over peak EWMA) with failure accrual: per attempt, so a retry
   re-picks and avoids the endpoint that just failed; the pending limit is
   checked before the first pick (`tulle.proxy.balance`'s calling contract);
3. retry with the service's budget (`may_retry`): above the balancer, below
   the timeout, so the route's timeout bounds the whole request;
4. route timeout (the protocol's timer, armed once per request);
5. route match and traffic split (`admit`): once per request, before any
   attempt;
6. record (`finish`/`cancelled`): outermost, so metrics and tap see what the
   client saw.

Every attempt ends with one `Outcome` (`end_attempt`): a cancellation feeds
neither failure accrual nor the EWMA. The endpoint's outcome of a response
is `judge`'s: a 5xx (or, for gRPC, a status the route retries) counts against
the endpoint only on a route marked retryable -- elsewhere it is the
application's answer -- while metrics classify every response by `success`.

Hot path: plain attributes in `__slots__`, no allocation on the common path
(a `Refused` is built only when refusing), the clock read once per step.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from tulle.core.outcome import CANCELLED, FAILURE, SUCCESS, Outcome
from tulle.core.retry import NOT_SENT, retry_allowed
from tulle.proxy.accesslog import timestamp
from tulle.proxy.balance import ejected_detail
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.router import RoutePolicy, ServiceTarget
from tulle.proxy.side import Side

if TYPE_CHECKING:
    from tulle.core.policy import Decision, InboundPolicy
    from tulle.proxy.accesslog import AccessLog
    from tulle.proxy.authz import InboundAuthz
    from tulle.proxy.balance import EndpointState
    from tulle.proxy.metrics import HttpStats, Metrics
    from tulle.proxy.router import Router
    from tulle.proxy.tap import TapEvent, TapHub

_monotonic = time.monotonic

# Retries per request at most, whatever the budget allows.
MAX_RETRIES = 3


class _Wait:
    """Discovery has not answered for the target (or backend) yet."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WAIT"


WAIT: Final = _Wait()

_PASSTHROUGH_HTTP = (("direction", "outbound"), ("protocol", "http"))


class PlanContext:
    """What every plan of one direction of one worker reads: built once.

    Small and typed, so that a plan is built in a unit test from a router and
    a `Metrics` alone."""

    __slots__ = (
        "access_log",
        "authz",
        "direction",
        "discovery_s",
        "inbound",
        "max_replay_bytes",
        "metrics",
        "response_s",
        "retry_labels",
        "router",
        "tap",
        "timeout_labels",
    )

    def __init__(
        self,
        side: Side,
        router: Router,
        metrics: Metrics,
        tap: TapHub,
        *,
        discovery_s: float = 5.0,
        response_s: float = 0.0,
        max_replay_bytes: int = 64 * 1024,
    ) -> None:
        self.direction = side.direction
        self.inbound = side.inbound
        self.router = router
        self.metrics = metrics
        self.tap = tap
        self.discovery_s = discovery_s
        # The default timeout of a request whose route sets none (0: none).
        self.response_s = response_s
        self.max_replay_bytes = max_replay_bytes
        # Inbound authorization policy; None: every caller is allowed.
        self.authz: InboundAuthz | None = None
        # The access log (tulle.proxy.accesslog); None: off, one test per request.
        self.access_log: AccessLog | None = None
        self.timeout_labels = (("direction", side.direction),)
        self.retry_labels: dict[str, tuple[tuple[str, str], ...]] = {}


class RequestPlan(ABC):
    """One request's way through the proxy, across its attempts."""

    # Whether access-log lines carry `grpc_status` (HTTP/2 and gRPC do).
    logs_grpc_status = False

    __slots__ = (
        "admitted",
        "attempt_start",
        "attempts",
        "authority",
        "backend",
        "claim_headers",
        "endpoint_label",
        "failed_state",
        "pc",
        "peer_id",
        "route",
        "start",
        "state",
        "target",
    )

    def __init__(self, pc: PlanContext, start: float) -> None:
        self.pc = pc
        self.start = self.attempt_start = start
        self.target: ServiceTarget | None = None
        self.backend: ServiceTarget | None = None
        self.route: RoutePolicy | None = None
        self.state: EndpointState | None = None
        # The endpoint of the last failed attempt: a retry tries to avoid it.
        self.failed_state: EndpointState | None = None
        self.attempts = 0
        # Whether the request holds a slot of its target's pending limit.
        self.admitted = False
        self.authority = ""
        self.endpoint_label = ""
        # Inbound: the client's verified identity; outbound: the server's.
        self.peer_id = ""
        # Inbound JWT: (headers dropped, headers added) on the way to the app;
        # None when the port's policy forwards no claims.
        self.claim_headers: tuple[tuple[bytes, ...], tuple[tuple[bytes, bytes], ...]] | None = None

    # -- 1. authorization (inbound) -------------------------------------------------
    def authorize(
        self,
        client_id: str,
        client_ip: str,
        method: bytes,
        path: bytes,
        header: Callable[[bytes], bytes | None],
        app_dst: tuple[str, int] | None = None,
    ) -> Refused | None:
        """The inbound policy's decision for this request, counted. `app_dst`:
        the app a captured connection goes to (its port's policy Server)."""
        authz = self.pc.authz
        if authz is None:
            return None
        policy = authz.policy_at(app_dst)
        if policy.jwt_checks:
            return self._authorize_jwt(authz, policy, client_id, client_ip, method, path, header)
        decision = policy.authorize_http(client_id or None, client_ip, method, path, header)
        authz.record("http", decision, client_id)
        return self._decided(authz, policy, decision, client_id, client_ip)

    def _authorize_jwt(
        self,
        authz: InboundAuthz,
        policy: InboundPolicy,
        client_id: str,
        client_ip: str,
        method: bytes,
        path: bytes,
        header: Callable[[bytes], bytes | None],
    ) -> Refused | None:
        """`authorize` on a port whose policy reads end-user tokens (docs/policy.md)."""
        jwt = authz.jwt.check(policy, header)
        if jwt.error is not None:
            # A token that is there but not valid is refused even where the
            # policy would allow the call without one (as Envoy's jwt_authn).
            return Refused(
                ProxyError.UNAUTHENTICATED,
                jwt.error,
                headers=((b"www-authenticate", www_authenticate(jwt.error)),),
            )
        decision = policy.authorize_http(
            client_id or None, client_ip, method, path, header, jwt.mask
        )
        authz.record("http", decision, client_id)
        if not decision.allowed and jwt.missing:
            return Refused(
                ProxyError.UNAUTHENTICATED,
                "a bearer token is required",
                headers=((b"www-authenticate", b'Bearer realm="tulle"'),),
            )
        if jwt.strip or jwt.add:
            self.claim_headers = (jwt.strip, jwt.add)
        return self._decided(authz, policy, decision, client_id, client_ip)

    def _decided(
        self,
        authz: InboundAuthz,
        policy: InboundPolicy,
        decision: Decision,
        client_id: str,
        client_ip: str,
    ) -> Refused | None:
        if not decision.allowed:
            who = client_id or "an unauthenticated client"
            return Refused(ProxyError.FORBIDDEN, f"{who} may not call this ({decision.policy})")
        if policy.rate_limited:
            # After authorization: a denied request takes no token.
            limited = authz.limits.check(policy, decision.route, client_id, client_ip)
            if limited is not None:
                return Refused(
                    ProxyError.RATE_LIMITED,
                    f"rate limit {limited.limit!r} reached",
                    headers=((b"retry-after", b"%d" % limited.retry_after_s),),
                )
        return None

    # -- 2. route: the logical service ---------------------------------------------
    def resolve(self, authority: bytes) -> Refused | None:
        """The service `authority` names (outbound), unless this proxy refuses
        that destination (itself, a denied or a raw address)."""
        target = self.pc.router.for_authority(authority)
        self.target = target
        self.authority = target.authority_label
        refusal = target.refusal
        if refusal is not None:
            return Refused(ProxyError.of(refusal.reason), refusal.detail)
        return None

    # -- 3. admission: discovery, pending limit, split, route match ----------------
    def admit(
        self,
        method: bytes,
        path: bytes,
        header: Callable[[bytes], bytes | None],
        orig_dst: tuple[str, int] | None = None,
    ) -> Refused | _Wait | None:
        """Admit the request to its target (`resolve`, or the inbound's app).

        WAIT: the first request for a name waits (bounded) until discovery has
        answered for its endpoints and its profile (routes, split); call again
        once `self.target.view.wait_known` returns (`discovery_timeout` if it
        timed out). A name discovery does not know goes to `orig_dst`, the
        original destination of a captured connection, when there is one (a
        site outside the mesh: it goes where the app was connecting, its raw
        IP:PORT)."""
        target = self.target
        assert target is not None
        view = target.view
        if not view.ready:
            return WAIT
        if view.exists is False:
            if orig_dst is not None:
                refused = self.resolve(original_authority(orig_dst))
                if refused is not None:
                    return refused
                return self.admit(method, path, header)
            return Refused(ProxyError.UNKNOWN_SERVICE, f"no service named {target.name!r}")
        if target.passthrough:
            self.pc.metrics.inc("outbound_passthrough_total", _PASSTHROUGH_HTTP)
        if not target.pending.try_acquire():
            return Refused(ProxyError.OVERLOADED, f"too many pending requests for {target.name!r}")
        self.admitted = True
        backend = target.backend()
        if target.override is not None:
            # A per-request override (`tulle-backend`) of the split's choice.
            backend = target.overridden(header, backend)
        self.backend = backend
        route = self.route = target.route(method, path, header)
        target.budget.deposit(self.start)
        limit = route.rate_limit
        if limit is not None:
            # The route's outbound rate limit (tulle.proxy.ratelimit), once
            # per request, before any attempt: a refusal is never retried.
            limited = limit.check()
            if limited is not None:
                return Refused(
                    ProxyError.RATE_LIMITED,
                    f"outbound rate limit of route {limited.limit!r} reached",
                    headers=((b"retry-after", b"%d" % limited.retry_after_s),),
                )
        return None

    def backend_ready(self) -> bool:
        """Whether the split's backend is known; if not, wait for its view
        (a backend resolved when the split first arrived), then pick."""
        backend = self.backend
        return backend is None or backend.view.ready

    def discovery_timeout(self, target: ServiceTarget) -> Refused:
        return Refused(
            ProxyError.DISCOVERY_TIMEOUT, f"no answer from discovery for {target.name!r}"
        )

    # -- 4. pick: one attempt ----------------------------------------------------------
    def pick(
        self, now: float, header: Callable[[bytes], bytes | None] | None = None
    ) -> EndpointState | Refused:
        """An endpoint for the next attempt, started (`EndpointState.on_start`).

        With session affinity (`tulle.proxy.affinity`) a first attempt goes to
        the key's endpoint (from `header`), else to the balancer's pick."""
        backend = self.backend
        assert backend is not None
        balancer = backend.balancer
        failed = self.failed_state
        affinity = backend.affinity
        if affinity is not None and failed is None and header is not None:
            state = affinity.pick(header, now) or balancer.pick(now)
        else:
            # A retry goes to another endpoint than the one that failed, if any.
            state = balancer.pick(now) if failed is None else balancer.pick_avoiding(now, failed)
        if state is None:
            return self.nothing_to_pick(backend)
        self.state = state
        state.on_start()
        self.attempt_start = now
        self.attempts += 1
        return state

    @staticmethod
    def nothing_to_pick(backend: ServiceTarget) -> Refused:
        refusal = backend.refusal
        if refusal is not None:
            # Every endpoint is a destination this proxy refuses (itself, a denied one).
            return Refused(ProxyError.of(refusal.reason), refusal.detail)
        count = len(backend.balancer)
        if count:
            return Refused(ProxyError.ENDPOINTS_EJECTED, ejected_detail(backend.name, count))
        return Refused(ProxyError.NO_ENDPOINTS, f"service {backend.name!r} has no endpoints")

    def end_attempt(self, outcome: Outcome) -> None:
        """The attempt in flight (if any) ended: tell the balancer once."""
        state = self.state
        if state is not None:
            self.state = None
            now = _monotonic()
            state.on_end(now, now - self.attempt_start, outcome)
            if outcome is FAILURE:
                self.failed_state = state

    def unpick(self) -> None:
        """Forget the attempt in flight as if it never started (a pooled
        connection found dead before the request was written)."""
        state = self.state
        if state is not None:
            state.pending -= 1
            self.state = None
        self.attempts -= 1

    def judge(self, status: int, grpc_status: int) -> Outcome:
        """What a response says about the endpoint: a 5xx (or a gRPC status
        the route retries) counts against it only on a route marked
        retryable; elsewhere it is the application's answer."""
        route = self.route
        if route is None or route.retryable is not True:
            return SUCCESS
        if status >= 500:
            return FAILURE
        if grpc_status > 0 and grpc_status in route.retry_grpc_statuses:
            return FAILURE
        return SUCCESS

    # -- 5. retry ------------------------------------------------------------------------
    def may_retry(
        self,
        failure: int,
        method: bytes,
        replayable: bool,
        request_complete: bool,
        status: int = 0,
        grpc_status: int = -1,
    ) -> bool:
        """Whether this failed attempt may be tried again (`tulle.core.retry`).

        A request that never reached the upstream is always resent, whatever
        its method and route (bounded by the attempt cap, not by the budget:
        it cost the upstream nothing); `replayable` says its bytes so far are
        kept. One that may have reached it is resent as the route's rule says,
        only once its whole body was read and kept (`request_complete`), and
        each such retry draws on the service's retry budget so that retries
        cannot multiply an outage."""
        route = self.route
        if route is None or not replayable or self.attempts >= 1 + MAX_RETRIES:
            return False
        if failure == NOT_SENT:
            return True
        if not request_complete or not retry_allowed(
            route.retryable,
            method,
            failure,
            status,
            route.retry_statuses,
            grpc_status,
            route.retry_grpc_statuses,
        ):
            return False
        target = self.target
        return target is not None and target.budget.try_withdraw(_monotonic())

    def count_retry(self) -> None:
        pc = self.pc
        target = self.target
        name = target.name if target is not None else ""
        labels = pc.retry_labels.get(name)
        if labels is None:
            labels = pc.retry_labels[name] = (("direction", pc.direction), ("dst_service", name))
        pc.metrics.inc("retry_total", labels)

    # -- 6. record ---------------------------------------------------------------------------
    def stats(self) -> HttpStats:
        pc = self.pc
        backend = self.backend
        route = self.route
        return pc.metrics.http(
            pc.direction,
            self.authority,
            self.endpoint_label,
            backend.metrics_labels if backend is not None else "",
            route.name if route is not None else "",
            self.peer_id,
        )

    def release(self) -> None:
        """Give back the pending-limit slot (once)."""
        if self.admitted:
            self.admitted = False
            target = self.target
            if target is not None:
                target.pending.release()

    def finish(self, status: int, success: bool, error: str = "", grpc_status: int = -1) -> None:
        """The request is over as the client saw it: metrics, tap, access log.

        `release` and `stats` inline: every request runs this, and a call
        costs more than these lines (bench/instructions.py)."""
        pc = self.pc
        target = self.target
        if self.admitted:
            self.admitted = False
            if target is not None:
                target.pending.release()
        backend = self.backend
        route = self.route
        stats = pc.metrics.http(
            pc.direction,
            self.authority,
            self.endpoint_label,
            backend.metrics_labels if backend is not None else "",
            route.name if route is not None else "",
            self.peer_id,
        )
        stats.requests += 1
        latency = _monotonic() - self.start
        stats.record_response(status, success, latency, error, grpc_status)
        if error == "response-timeout":
            pc.metrics.inc("timeout_total", pc.timeout_labels)
        if pc.tap.active:
            pc.tap.emit(self.tap_event(status, grpc_status, latency, error))
        access = pc.access_log
        if access is not None and access.wants(route is not None and route.access_log):
            self.log_access(access, status, grpc_status, latency, error)

    def log_access(
        self, access: AccessLog, status: int, grpc_status: int, latency_s: float, error: str
    ) -> None:
        """One access-log line: the tap record's fields, and the attempts."""
        event = self.tap_event(status, grpc_status, latency_s, error)
        values: dict[str, object] = {
            "ts": timestamp(),
            "direction": event.direction,
            "method": event.method,
            "authority": event.authority,
            "path": event.path,
            "status": status,
        }
        if self.logs_grpc_status:
            values["grpc_status"] = event.grpc_status
        values.update(
            latency_ms=event.latency_ms,
            route=event.route,
            dst_service=event.dst_service,
            dst=event.dst,
            src=event.src,
            client_id=event.client_id,
            server_id=event.server_id,
            error=error,
            attempts=self.attempts,
        )
        access.write(values)

    def cancelled(self, status: int, grpc_status: int = -1) -> None:
        """The client went away first: says nothing about the endpoint; recorded
        as the client saw it (499 after nginx, gRPC CANCELLED)."""
        self.end_attempt(CANCELLED)
        self.finish(status, False, "client-gone", grpc_status)

    def proxy_error(self, error: ProxyError | str) -> None:
        """Count one proxy-made answer in `proxy_error_total{reason}`."""
        pc = self.pc
        pc.metrics.proxy_error(pc.direction, error if isinstance(error, str) else error.reason)

    @abstractmethod
    def tap_event(self, status: int, grpc_status: int, latency_s: float, error: str) -> TapEvent:
        """The tap record of this request: each protocol builds it from what it knows."""

    def route_name(self) -> str:
        route = self.route
        return route.name if route is not None else ""

    def dst_service(self) -> str:
        backend = self.backend
        return backend.metrics_labels if backend is not None else ""


def www_authenticate(error: str) -> bytes:
    """RFC 6750's challenge for a refused token (`error` is ours: no quotes, ASCII)."""
    return b'Bearer realm="tulle", error="invalid_token", error_description="%s"' % (
        error.encode("ascii", "replace").replace(b'"', b"'")
    )


def original_authority(orig: tuple[str, int]) -> bytes:
    """A captured connection's original destination as an authority."""
    host = orig[0]
    if ":" in host:
        return b"[%s]:%d" % (host.encode(), orig[1])
    return b"%s:%d" % (host.encode(), orig[1])
