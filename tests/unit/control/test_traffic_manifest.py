"""Traffic-control fields of the manifest (faults, rate limits), and their trip through the APIs."""

from __future__ import annotations

from textwrap import dedent

import pytest

from tulle.api.destination_client import profile_from_message
from tulle.api.policy_client import PolicyDecodeError, policy_from_message
from tulle.api.proto import policy_pb2 as pb_policy
from tulle.control.destination.translator import profile_message
from tulle.control.manifest import ManifestError, parse_manifest
from tulle.control.policy.translate import policy_message
from tulle.core.discovery import AffinitySpec, FaultSpec, HeaderMatch, MirrorSpec
from tulle.core.ratelimit import LimitOverride, LimitSpec, RateLimitSpec

FAULTS = dedent(
    """\
    services:
      - name: books
        endpoints: [127.0.0.1:9001]
        routes:
          - name: chaos
            matches: [{path: {value: /chaos}}]
            fault:
              delay: {duration: 250ms, percent: 10}
              abort: {status: 503, grpcStatus: 14, percent: 5.5}
              headers: [{name: X-Chaos, value: "1"}]
          - name: grpc-only
            fault:
              abort: {grpcStatus: 8, percent: 100}
    """
)


def test_faults_parse_to_the_discovery_model() -> None:
    routes = {r.name: r for r in parse_manifest(FAULTS).services["books"].profile.routes}
    assert routes["chaos"].fault == FaultSpec(
        delay_s=0.25,
        delay_percent=10,
        abort_status=503,
        abort_grpc_status=14,
        abort_percent=5.5,
        headers=(HeaderMatch("x-chaos", "1"),),
    )
    assert routes["grpc-only"].fault == FaultSpec(abort_grpc_status=8, abort_percent=100)


def test_faults_survive_the_destination_api_unchanged() -> None:
    profile = parse_manifest(FAULTS).services["books"].profile
    assert profile_from_message(profile_message("books", profile)) == profile


def test_a_route_without_a_fault_carries_none() -> None:
    text = "services:\n  - name: a\n    routes: [{name: r}]\n"
    (route,) = parse_manifest(text).services["a"].profile.routes
    assert route.fault is None
    message = profile_message("a", parse_manifest(text).services["a"].profile)
    assert not message.routes[0].HasField("fault")


BAD = [
    ("fault: {}", "routes[0].fault: give delay, abort or both"),
    ("fault: {abort: {percent: 5}}", "routes[0].fault.abort: give status, grpcStatus or both"),
    ("fault: {abort: {status: 700, percent: 5}}", "status: must be between 200 and 599"),
    ("fault: {abort: {grpcStatus: 0, percent: 5}}", "grpcStatus: must be between 1 and 16"),
    ("fault: {abort: {status: 503, percent: 101}}", "percent: must be between 0 and 100"),
    ("fault: {delay: {duration: 1s}}", 'delay: missing required field "percent"'),
    ("fault: {delay: {duration: soon, percent: 1}}", "delay.duration: "),
    ("fault: {abort: {status: 503, percent: 1}, bogus: 1}", "fault.bogus: unknown field"),
]


@pytest.mark.parametrize(("fault", "message"), BAD)
def test_bad_faults_name_the_field(fault: str, message: str) -> None:
    text = f"services:\n  - name: a\n    routes:\n      - name: r\n        {fault}\n"
    with pytest.raises(ManifestError) as caught:
        parse_manifest(text)
    assert message in str(caught.value)


LIMITS = dedent(
    """\
    services:
      - name: books
    policy:
      servers:
        - {name: books-http, workload: books, port: 8080}
      httpRoutes:
        - {name: writes, server: books-http, matches: [{method: POST}]}
      rateLimits:
        - name: books-total
          target: {server: books-http}
          total: {requestsPerSecond: 100, burst: 200}
          identity: {requestsPerSecond: 10}
          overrides:
            - requestsPerSecond: 50
              burst: 60
              identities: ["spiffe://tulle.local/ns/default/sa/web"]
          unauthenticatedPrefix: {ipv4: 24, ipv6: 64}
        - name: writes
          target: {httpRoute: writes}
          total: {requestsPerSecond: 5}
    """
)


def test_rate_limits_compile_into_the_policy_and_survive_the_policy_api() -> None:
    policy_spec = parse_manifest(LIMITS).authorization
    compiled = policy_spec.compile("books", 8080)
    assert compiled.rate_limit == RateLimitSpec(
        "books-total",
        total=LimitSpec(100, 200),
        identity=LimitSpec(10),
        overrides=(LimitOverride(LimitSpec(50, 60), ("spiffe://tulle.local/ns/default/sa/web",)),),
        ipv4_prefix=24,
        ipv6_prefix=64,
    )
    (route,) = compiled.routes
    assert route.rate_limit == RateLimitSpec("writes", total=LimitSpec(5))
    assert compiled.rate_limited
    wire = pb_policy.InboundPolicy.FromString(policy_message(compiled).SerializeToString())
    assert policy_from_message(wire) == compiled
    # Another port of the workload is selected by no server: no limit.
    assert not policy_spec.compile("books", 9090).rate_limited


LIMIT_HEAD = (
    "services:\n  - name: books\npolicy:\n  servers:\n"
    "    - {name: s, workload: books, port: 80}\n  rateLimits:\n"
)
BAD_LIMITS = [
    ("    - {name: l, target: {server: s}}\n", "give total, identity, overrides or several"),
    (
        "    - {name: l, target: {server: t}, total: {requestsPerSecond: 1}}\n",
        'no server named "t"',
    ),
    ("    - {name: l, target: {server: s}, total: {requestsPerSecond: 0}}\n", "must be between"),
    ("    - {name: l, target: {server: s}, total: {requestsPerSecond: 1, burst: 0}}\n", "burst"),
    (
        "    - {name: l, target: {server: s}, total: {requestsPerSecond: 1}}\n"
        "    - {name: m, target: {server: s}, total: {requestsPerSecond: 1}}\n",
        'rate limits "l" and "m" both target "s"',
    ),
    (
        "    - {name: l, target: {server: s},\n"
        "       overrides: [{requestsPerSecond: 1, identities: [x]}]}\n",
        "expected a SPIFFE ID",
    ),
]


@pytest.mark.parametrize(("limit", "message"), BAD_LIMITS)
def test_bad_rate_limits_name_the_field(limit: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(LIMIT_HEAD + limit)
    assert message in str(caught.value)


def test_policy_api_refuses_a_limit_without_a_positive_rate() -> None:
    message = pb_policy.InboundPolicy(workload="w", port=1, default_policy=1)
    message.rate_limit.total.requests_per_second = 0
    with pytest.raises(PolicyDecodeError):
        policy_from_message(message)


def test_affinity_parses_and_survives_the_destination_api() -> None:
    text = (
        "services:\n  - name: a\n    affinity: {header: X-User, loadFactor: 1.5}\n"
        "  - name: b\n    affinity: {cookie: session}\n"
    )
    services = parse_manifest(text).services
    assert services["a"].profile.affinity == AffinitySpec(header="x-user", load_factor=1.5)
    assert services["b"].profile.affinity == AffinitySpec(cookie="session")
    for name in ("a", "b"):
        profile = services[name].profile
        assert profile_from_message(profile_message(name, profile)) == profile


@pytest.mark.parametrize(
    ("affinity", "message"),
    [
        ("{}", "give exactly one of header or cookie"),
        ("{header: a, cookie: b}", "give exactly one of header or cookie"),
        ("{header: 'a b'}", "is not a valid header name"),
        ("{cookie: s, loadFactor: 0.5}", "must be between 1 and 100"),
    ],
)
def test_bad_affinity_names_the_field(affinity: str, message: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(f"services:\n  - name: a\n    affinity: {affinity}\n")
    assert message in str(caught.value)


def test_request_override_parses_and_survives_the_destination_api() -> None:
    text = (
        "services:\n  - name: a\n    backends: [{name: a, weight: 1}, {name: b, weight: 0}]\n"
        "    requestOverride: {identities: ['spiffe://t.test/ns/qa/sa/*']}\n  - name: b\n"
    )
    profile = parse_manifest(text).services["a"].profile
    assert profile.override_identities == ("spiffe://t.test/ns/qa/sa/*",)
    assert profile_from_message(profile_message("a", profile)) == profile
    with pytest.raises(ManifestError, match="expected a SPIFFE ID"):
        parse_manifest(text.replace("spiffe://t.test/ns/qa/sa/*", "tester"))


def test_mirror_parses_and_survives_the_destination_api() -> None:
    text = (
        "services:\n  - name: a\n    routes:\n"
        "      - {name: r, mirror: {service: shadow, percent: 12.5}}\n"
        "      - {name: s, mirror: {service: shadow}}\n"
    )
    profile = parse_manifest(text).services["a"].profile
    assert [r.mirror for r in profile.routes] == [
        MirrorSpec("shadow", 12.5),
        MirrorSpec("shadow", 100.0),
    ]
    assert profile_from_message(profile_message("a", profile)) == profile
    with pytest.raises(ManifestError, match='missing required field "service"'):
        parse_manifest(text.replace("service: shadow, ", ""))


def test_outbound_rate_limits_parse_and_survive_the_destination_api() -> None:
    text = (
        "services:\n  - name: a\n    routes:\n"
        "      - {name: r, rateLimit: {requestsPerSecond: 2.5, burst: 7}}\n"
        "      - {name: s, rateLimit: {requestsPerSecond: 10}}\n"
        "      - {name: t}\n"
    )
    profile = parse_manifest(text).services["a"].profile
    assert [r.rate_limit for r in profile.routes] == [LimitSpec(2.5, 7), LimitSpec(10.0), None]
    assert profile_from_message(profile_message("a", profile)) == profile
    with pytest.raises(ManifestError, match="requestsPerSecond"):
        parse_manifest(text.replace("requestsPerSecond: 10", "requestsPerSecond: 0"))


def test_the_destination_api_ignores_an_outbound_limit_without_a_positive_rate() -> None:
    profile = (
        parse_manifest(
            "services:\n  - name: a\n    routes:\n"
            "      - {name: r, rateLimit: {requestsPerSecond: 1}}\n"
        )
        .services["a"]
        .profile
    )
    message = profile_message("a", profile)
    message.routes[0].rate_limit.requests_per_second = -1.0
    assert profile_from_message(message).routes[0].rate_limit is None
