"""The request plan (tulle.proxy.plan), step by step, without sockets: a router
over a static resolver, stub policy, and a plan driven as a protocol would."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from tulle.codec.http2 import GrpcStatus
from tulle.core.discovery import (
    Endpoint,
    Profile,
    RetryBudgetSpec,
    Route,
    RouteMatch,
    ServiceView,
    StaticResolver,
)
from tulle.core.outcome import FAILURE, SUCCESS
from tulle.core.ratelimit import LimitSpec
from tulle.core.retry import NOT_SENT, RESET, STATUS
from tulle.proxy.errors import ProxyError, Refused
from tulle.proxy.metrics import Metrics
from tulle.proxy.outbound import OUTBOUND
from tulle.proxy.plan import MAX_RETRIES, WAIT, PlanContext, RequestPlan
from tulle.proxy.router import PoolHandle, Router
from tulle.proxy.tap import TapEvent, TapHub

A = ("10.0.0.1", 80)
B = ("10.0.0.2", 80)
UNAVAILABLE = int(GrpcStatus.UNAVAILABLE)


def _no_header(name: bytes) -> bytes | None:
    return None


class Plan(RequestPlan):
    """A plan as a protocol drives it; its tap record names the method."""

    __slots__ = ()

    def tap_event(self, status: int, grpc_status: int, latency_s: float, error: str) -> TapEvent:
        return TapEvent(
            ts=0.0,
            direction=self.pc.direction,
            method="GET",
            authority=self.authority,
            path="/",
            status=status,
            latency_ms=latency_s * 1000.0,
            error=error,
            route=self.route_name(),
            dst_service=self.dst_service(),
            grpc_status=None if grpc_status < 0 else grpc_status,
        )


class Views(StaticResolver):
    """A resolver whose views the test changes (or leaves unanswered)."""

    def __init__(self, services: dict[str, list[tuple[str, int]]]) -> None:
        super().__init__({n: [Endpoint(a) for a in eps] for n, eps in services.items()})
        self.pending: dict[str, ServiceView] = {}

    def resolve(self, name: str) -> ServiceView:
        if name.startswith("slow"):
            return self.pending.setdefault(name, ServiceView(name))
        return super().resolve(name)


def context(
    services: dict[str, list[tuple[str, int]]] | None = None, *, max_pending: int = 100
) -> PlanContext:
    resolver = Views(services if services is not None else {"web": [A, B]})
    metrics = Metrics()
    router = Router(resolver, lambda ep: PoolHandle(), metrics, max_pending=max_pending)
    return PlanContext(OUTBOUND, router, metrics, TapHub(), discovery_s=1.0)


def admitted(pc: PlanContext, authority: bytes = b"web") -> Plan:
    plan = Plan(pc, time.monotonic())
    assert plan.resolve(authority) is None
    assert plan.admit(b"GET", b"/", _no_header) is None
    return plan


def set_profile(pc: PlanContext, name: str, *routes: Route, budget: RetryBudgetSpec) -> None:
    pc.router.service(name).view.apply_profile(Profile(routes=routes, retry_budget=budget))


def responses(pc: PlanContext) -> dict[tuple[int, str, str, int], int]:
    out: dict[tuple[int, str, str, int], int] = {}
    for stats in pc.metrics._http.values():
        for key, count in stats.responses.items():
            out[key] = out.get(key, 0) + count
    return out


# -- 1. authorization ----------------------------------------------------------------


@dataclass
class _Decision:
    allowed: bool
    policy: str = "p"


class _Policy:
    rate_limited = False
    jwt_checks = ()

    def __init__(self, allowed: bool) -> None:
        self.allowed = allowed

    def authorize_http(
        self,
        client_id: str | None,
        client_ip: str,
        method: bytes,
        path: bytes,
        header: Callable[[bytes], bytes | None],
    ) -> _Decision:
        return _Decision(self.allowed)


class _Authz:
    def __init__(self, allowed: bool) -> None:
        self.policy = _Policy(allowed)
        self.recorded: list[tuple[str, bool, str]] = []

    def policy_at(self, app_dst: tuple[str, int] | None) -> _Policy:
        return self.policy

    def record(self, kind: str, decision: _Decision, client_id: str) -> None:
        self.recorded.append((kind, decision.allowed, client_id))


def test_authorization_refuses_with_one_error_and_counts_the_decision() -> None:
    pc = context()
    authz = _Authz(allowed=False)
    pc.authz = authz  # type: ignore[assignment]
    plan = Plan(pc, time.monotonic())
    refused = plan.authorize("spiffe://x", "10.0.0.9", b"GET", b"/", _no_header)
    assert refused is not None and refused.error is ProxyError.FORBIDDEN
    assert "spiffe://x may not call this" in refused.detail
    assert authz.recorded == [("http", False, "spiffe://x")]
    authz.policy.allowed = True
    assert plan.authorize("", "10.0.0.9", b"GET", b"/", _no_header) is None


def test_no_policy_allows_everything() -> None:
    plan = Plan(context(), time.monotonic())
    assert plan.authorize("", "", b"GET", b"/", _no_header) is None


# -- 2./3. route and admission --------------------------------------------------------------


def test_unknown_service_is_refused_and_a_captured_one_goes_to_its_original_destination() -> None:
    pc = context()
    plan = Plan(pc, time.monotonic())
    assert plan.resolve(b"nope") is None
    refused = plan.admit(b"GET", b"/", _no_header)
    assert isinstance(refused, Refused) and refused.error is ProxyError.UNKNOWN_SERVICE

    captured = Plan(pc, time.monotonic())
    assert captured.resolve(b"nope") is None
    assert captured.admit(b"GET", b"/", _no_header, ("192.0.2.7", 8443)) is None
    assert captured.target is not None and captured.target.passthrough
    state = captured.pick(time.monotonic())
    assert not isinstance(state, Refused)
    assert state.address == ("192.0.2.7", 8443)


def test_a_name_discovery_has_not_answered_waits_then_times_out() -> None:
    pc = context()
    plan = Plan(pc, time.monotonic())
    assert plan.resolve(b"slow") is None
    assert plan.admit(b"GET", b"/", _no_header) is WAIT
    assert plan.target is not None
    refused = plan.discovery_timeout(plan.target)
    assert refused.error is ProxyError.DISCOVERY_TIMEOUT
    assert refused.error.grpc_status == UNAVAILABLE
    # Once discovery answers, the same step goes on.
    plan.target.view.apply_reset([Endpoint(A)])
    assert plan.admit(b"GET", b"/", _no_header) is None


def test_the_pending_limit_is_checked_before_any_pick() -> None:
    pc = context(max_pending=1)
    first = admitted(pc)
    second = Plan(pc, time.monotonic())
    assert second.resolve(b"web") is None
    refused = second.admit(b"GET", b"/", _no_header)
    assert isinstance(refused, Refused) and refused.error is ProxyError.OVERLOADED
    # Nothing was picked for the refused request.
    backend = pc.router.service("web").balancer
    assert all(state.pending == 0 for state in backend.states())
    first.finish(200, True)
    third = Plan(pc, time.monotonic())
    assert third.resolve(b"web") is None
    assert third.admit(b"GET", b"/", _no_header) is None


def test_route_match_picks_the_routes_policy() -> None:
    pc = context()
    route = Route("slow-things", (RouteMatch(path_prefix="/slow"),), timeout_s=2.0)
    set_profile(pc, "web", route, budget=RetryBudgetSpec())
    plan = Plan(pc, time.monotonic())
    assert plan.resolve(b"web") is None
    assert plan.admit(b"GET", b"/slow/x", _no_header) is None
    assert plan.route is not None and plan.route.name == "slow-things"
    assert plan.route.timeout_s == 2.0


# -- 4. pick and attempts ------------------------------------------------------------


def test_nothing_to_pick_says_why() -> None:
    pc = context({"empty": [], "web": [A]})
    plan = admitted(pc, b"empty")
    refused = plan.pick(time.monotonic())
    assert isinstance(refused, Refused) and refused.error is ProxyError.NO_ENDPOINTS

    plan = admitted(pc)
    for _ in range(7):
        state = plan.pick(time.monotonic())
        assert not isinstance(state, Refused)
        plan.end_attempt(FAILURE)
    refused = plan.pick(time.monotonic())
    assert isinstance(refused, Refused) and refused.error is ProxyError.ENDPOINTS_EJECTED
    assert "ejected by failure accrual" in refused.detail


def test_a_retry_avoids_the_endpoint_that_failed() -> None:
    pc = context()
    plan = admitted(pc)
    # Fewer failures than it takes to eject an endpoint (7).
    for _ in range(6):
        first = plan.pick(time.monotonic())
        assert not isinstance(first, Refused)
        plan.end_attempt(FAILURE)
        second = plan.pick(time.monotonic())
        assert not isinstance(second, Refused)
        assert second is not first
        plan.end_attempt(SUCCESS)
        plan.failed_state = None


def test_cancellation_feeds_neither_failure_accrual_nor_the_ewma() -> None:
    pc = context({"web": [A]})
    for _ in range(20):
        plan = admitted(pc)
        state = plan.pick(time.monotonic())
        assert not isinstance(state, Refused)
        plan.cancelled(499)
    (state,) = pc.router.service("web").balancer.states()
    assert state.accrual.consecutive_failures == 0
    assert state.pending == 0
    assert state.available(time.monotonic())
    # Recorded as the client saw it.
    assert responses(pc) == {(499, "failure", "client-gone", -1): 20}


def test_unpick_forgets_an_attempt_that_never_went_out() -> None:
    pc = context({"web": [A]})
    plan = admitted(pc)
    state = plan.pick(time.monotonic())
    assert not isinstance(state, Refused)
    plan.unpick()
    assert plan.attempts == 0 and state.pending == 0 and plan.state is None


# -- judging responses ------------------------------------------------------------------


def test_a_5xx_or_a_named_grpc_status_counts_against_the_endpoint_only_on_retryable_routes() -> (
    None
):
    pc = context()
    plan = admitted(pc)
    assert plan.judge(503, -1) is SUCCESS  # the application's answer
    set_profile(
        pc,
        "web",
        Route("r", retryable=True, retry_grpc_statuses=(UNAVAILABLE,)),
        budget=RetryBudgetSpec(),
    )
    plan = admitted(pc)
    assert plan.judge(503, -1) is FAILURE
    assert plan.judge(200, UNAVAILABLE) is FAILURE
    assert plan.judge(200, int(GrpcStatus.NOT_FOUND)) is SUCCESS
    assert plan.judge(404, -1) is SUCCESS


# -- 5. retries -------------------------------------------------------------------------------


def test_unsent_requests_are_always_retried_up_to_the_cap() -> None:
    pc = context()
    plan = admitted(pc)
    tries = 0
    while True:
        state = plan.pick(time.monotonic())
        assert not isinstance(state, Refused)
        plan.end_attempt(FAILURE)
        if not plan.may_retry(NOT_SENT, b"POST", replayable=True, request_complete=False):
            break
        tries += 1
        plan.count_retry()
    assert tries == MAX_RETRIES
    assert plan.attempts == 1 + MAX_RETRIES
    assert (
        pc.metrics.counters[("retry_total", (("direction", "outbound"), ("dst_service", "web")))]
        == MAX_RETRIES
    )


def test_retries_need_the_bytes_and_a_whole_request() -> None:
    pc = context()
    set_profile(pc, "web", Route("r", retryable=True), budget=RetryBudgetSpec())
    plan = admitted(pc)
    plan.pick(time.monotonic())
    plan.end_attempt(FAILURE)
    assert not plan.may_retry(NOT_SENT, b"GET", replayable=False, request_complete=True)
    assert not plan.may_retry(STATUS, b"GET", False, True, 503)
    assert not plan.may_retry(STATUS, b"GET", True, False, 503)
    assert plan.may_retry(STATUS, b"GET", True, True, 503)


def test_grpc_statuses_are_retried_only_when_the_route_names_them() -> None:
    pc = context()
    set_profile(
        pc,
        "web",
        Route("r", retryable=True, retry_grpc_statuses=(UNAVAILABLE,)),
        budget=RetryBudgetSpec(),
    )
    plan = admitted(pc)
    plan.pick(time.monotonic())
    assert plan.may_retry(STATUS, b"POST", True, True, 200, UNAVAILABLE)
    assert not plan.may_retry(STATUS, b"POST", True, True, 200, int(GrpcStatus.NOT_FOUND))
    # A POST reset after it was sent is retried on a retryable route only.
    assert plan.may_retry(RESET, b"POST", True, True)
    set_profile(pc, "web", Route("r"), budget=RetryBudgetSpec())
    plain = admitted(pc)
    plain.pick(time.monotonic())
    assert not plain.may_retry(STATUS, b"POST", True, True, 200, UNAVAILABLE)
    assert not plain.may_retry(RESET, b"POST", True, True)


def test_retries_that_may_reach_the_upstream_draw_on_the_budget_until_it_is_exhausted() -> None:
    pc = context()
    # No floor and a tiny ratio: one request's deposit buys no retry.
    budget = RetryBudgetSpec(ratio=0.0, min_retries_per_second=0.0, ttl_s=10.0)
    set_profile(pc, "web", Route("r", retryable=True), budget=budget)
    plan = admitted(pc)
    plan.pick(time.monotonic())
    plan.end_attempt(FAILURE)
    assert not plan.may_retry(STATUS, b"GET", True, True, 503)
    # ...but a request that never went out costs the upstream nothing.
    assert plan.may_retry(NOT_SENT, b"GET", True, True)


# -- 6. record ---------------------------------------------------------------------------------


def test_finish_records_metrics_timeouts_and_tap_once_and_releases_the_slot() -> None:
    pc = context(max_pending=1)
    subscriber = pc.tap.subscribe()
    plan = admitted(pc)
    plan.pick(time.monotonic())
    plan.endpoint_label = "10.0.0.1:80"
    plan.end_attempt(FAILURE)
    plan.proxy_error(ProxyError.RESPONSE_TIMEOUT)
    plan.finish(504, False, "response-timeout")
    assert responses(pc) == {(504, "failure", "response-timeout", -1): 1}
    assert pc.metrics.counters[("timeout_total", (("direction", "outbound"),))] == 1
    assert pc.metrics.proxy_errors == {("outbound", "response-timeout"): 1}
    event = subscriber.queue.get_nowait()
    assert (event.status, event.error, event.dst_service) == (504, "response-timeout", "web")
    # The pending slot is free again, and a second release does nothing.
    plan.release()
    assert admitted(pc).admitted


def test_a_grpc_call_is_recorded_with_its_status() -> None:
    pc = context()
    subscriber = pc.tap.subscribe()
    plan = admitted(pc)
    plan.finish(200, False, "", UNAVAILABLE)
    assert responses(pc) == {(200, "failure", "", UNAVAILABLE): 1}
    assert subscriber.queue.get_nowait().grpc_status == UNAVAILABLE


@pytest.mark.parametrize(
    ("reason", "error"),
    [
        ("loop-detected", ProxyError.LOOP_DETECTED),
        ("destination-forbidden", ProxyError.DESTINATION_FORBIDDEN),
        ("no-such-reason", ProxyError.INTERNAL),
    ],
)
def test_reasons_map_to_one_error_table(reason: str, error: ProxyError) -> None:
    assert ProxyError.of(reason) is error


def test_a_routes_outbound_rate_limit_refuses_past_its_burst_and_keeps_its_bucket() -> None:
    pc = context()
    limited = Route("limited", (RouteMatch(path_prefix="/"),), rate_limit=LimitSpec(0.001, 3))
    set_profile(pc, "web", limited, budget=RetryBudgetSpec())

    def ask() -> Refused | None:
        plan = Plan(pc, time.monotonic())
        assert plan.resolve(b"web") is None
        step = plan.admit(b"GET", b"/x", _no_header)
        plan.finish(429 if step is not None else 200, step is None)
        return step  # type: ignore[return-value]

    assert [ask() for _ in range(3)] == [None, None, None]
    refused = ask()
    assert isinstance(refused, Refused) and refused.error is ProxyError.RATE_LIMITED
    assert refused.headers[0][0] == b"retry-after" and int(refused.headers[0][1]) >= 1
    # A profile update that leaves the limit unchanged keeps the (empty) bucket.
    set_profile(pc, "web", limited, budget=RetryBudgetSpec())
    assert isinstance(ask(), Refused)
    # The pending slots of refused requests were given back.
    assert pc.router.service("web").pending.try_acquire()
    counted = pc.metrics.counters
    limit = {
        dict(labels)["decision"]: value
        for (name, labels), value in counted.items()
        if name == "outbound_http_ratelimit_total"
    }
    assert limit == {"allow": 3, "limit": 2}
