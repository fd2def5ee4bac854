"""The texts `tulle routes` shows for a route's fault, mirror and rate limit."""

from __future__ import annotations

from tulle.core.discovery import FaultSpec, HeaderMatch, MirrorSpec, Route
from tulle.core.ratelimit import LimitSpec
from tulle.viz.route_config import describe


def test_a_plain_route_has_nothing_injected() -> None:
    assert describe(Route("plain")) == {"fault": "", "mirror": "", "rate_limit": ""}
    assert describe(None) == {"fault": "", "mirror": "", "rate_limit": ""}


def test_fault_mirror_and_limit_texts() -> None:
    route = Route(
        "r",
        fault=FaultSpec(
            delay_s=0.4,
            delay_percent=50,
            abort_status=503,
            abort_grpc_status=14,
            abort_percent=30,
            headers=(HeaderMatch("x-chaos", "on"),),
        ),
        mirror=MirrorSpec("shadow", 12.5),
        rate_limit=LimitSpec(50, 20),
    )
    assert describe(route) == {
        "fault": "abort 30% 503 grpc 14; delay 50% 400ms; only with x-chaos",
        "mirror": "shadow 12.5%",
        "rate_limit": "50/s burst 20",
    }


def test_default_burst_is_one_seconds_worth() -> None:
    assert describe(Route("r", rate_limit=LimitSpec(0.5)))["rate_limit"] == "0.5/s burst 1"
    assert describe(Route("r", rate_limit=LimitSpec(30)))["rate_limit"] == "30/s burst 30"


def test_inbound_limits_of_a_service_from_its_policy() -> None:
    from tulle.core.policy import HttpRouteSpec, PolicySpec, RateLimitPolicySpec, ServerSpec
    from tulle.core.ratelimit import LimitOverride, RateLimitSpec
    from tulle.viz.route_config import inbound_limits

    policy = PolicySpec(
        servers=(ServerSpec("books-http", "books", 8080), ServerSpec("web-http", "web", 80)),
        http_routes=(HttpRouteSpec("writes", "books-http"), HttpRouteSpec("home", "web-http")),
        rate_limits=(
            RateLimitPolicySpec(
                RateLimitSpec(
                    "books-total",
                    total=LimitSpec(100, 200),
                    identity=LimitSpec(10),
                    overrides=(LimitOverride(LimitSpec(50), ("spiffe://t/sa/web",)),),
                ),
                "books-http",
                None,
            ),
            RateLimitPolicySpec(RateLimitSpec("writes", total=LimitSpec(5)), None, "writes"),
            RateLimitPolicySpec(RateLimitSpec("home", total=LimitSpec(1)), None, "home"),
        ),
    )
    assert inbound_limits(policy, "books") == [
        {
            "name": "books-total",
            "target": "server books-http",
            "server": "books-http",
            "route": "",
            "total": "100/s burst 200",
            "per_caller": "10/s burst 10; 50/s burst 50 for spiffe://t/sa/web",
        },
        {
            "name": "writes",
            "target": "httpRoute writes",
            "server": "books-http",
            "route": "writes",
            "total": "5/s burst 5",
            "per_caller": "",
        },
    ]
    assert inbound_limits(policy, "shelf") == []
