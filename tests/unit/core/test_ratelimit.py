"""Token buckets and rate limiters with an injected clock: exact counts, no sockets."""

from __future__ import annotations

import pytest

from tulle.core.ratelimit import (
    LimitOverride,
    LimitSpec,
    RateLimiter,
    RateLimitSpec,
    TokenBucket,
    retry_after,
)

WEB = "spiffe://tulle.test/ns/default/sa/web"
JOBS = "spiffe://tulle.test/ns/batch/sa/jobs"


def admitted(
    limiter: RateLimiter, now: float, n: int, who: str | None, ip: str = "10.0.0.1"
) -> int:
    return sum(limiter.check(now, who, ip) == 0.0 for _ in range(n))


def test_a_bucket_starts_full_and_refills_at_its_rate() -> None:
    bucket = TokenBucket(LimitSpec(10, burst=5), now=0.0)
    assert bucket.refill(0.0) == 5
    bucket.tokens = 0.0
    assert bucket.refill(0.25) == pytest.approx(2.5)
    assert bucket.refill(100.0) == 5  # never above its size
    bucket.tokens = 0.5
    assert bucket.wait_s() == pytest.approx(0.05)


def test_burst_defaults_to_one_second_and_at_least_one() -> None:
    assert LimitSpec(20).size == 20
    assert LimitSpec(0.5).size == 1
    assert LimitSpec(20, burst=3).size == 3


def test_total_limit_admits_the_burst_then_the_rate() -> None:
    limiter = RateLimiter(RateLimitSpec("l", total=LimitSpec(100, burst=10)), now=0.0)
    assert admitted(limiter, 0.0, 50, None) == 10
    # One second later: 100 more tokens, capped by the burst of 10.
    assert admitted(limiter, 1.0, 50, None) == 10
    # 50 ms: 5 tokens.
    assert admitted(limiter, 1.05, 50, None) == 5


def test_refused_requests_say_how_long_to_wait() -> None:
    limiter = RateLimiter(RateLimitSpec("l", total=LimitSpec(2, burst=1)), now=0.0)
    assert limiter.check(0.0, None, "10.0.0.1") == 0.0
    assert limiter.check(0.0, None, "10.0.0.1") == pytest.approx(0.5)
    assert retry_after(0.5) == 1
    assert retry_after(1.2) == 2
    assert retry_after(0.0) == 1


def test_per_identity_buckets_are_separate_and_overrides_win() -> None:
    spec = RateLimitSpec(
        "l",
        identity=LimitSpec(5, burst=5),
        overrides=(LimitOverride(LimitSpec(50, burst=20), ("spiffe://tulle.test/ns/batch/sa/*",)),),
    )
    limiter = RateLimiter(spec, now=0.0)
    assert admitted(limiter, 0.0, 30, WEB) == 5
    assert admitted(limiter, 0.0, 30, "spiffe://tulle.test/ns/default/sa/other") == 5
    assert admitted(limiter, 0.0, 30, JOBS) == 20


def test_a_client_over_its_own_limit_does_not_use_up_the_total() -> None:
    spec = RateLimitSpec("l", total=LimitSpec(10, burst=10), identity=LimitSpec(2, burst=2))
    limiter = RateLimiter(spec, now=0.0)
    assert admitted(limiter, 0.0, 100, WEB) == 2
    assert admitted(limiter, 0.0, 100, JOBS) == 2
    # 4 of the 10 total tokens used: the refused 196 took none.
    assert sum(admitted(limiter, 0.0, 5, f"spiffe://t/ns/n/sa/s{i}") for i in range(10)) == 6


def test_unauthenticated_clients_share_the_bucket_of_their_network() -> None:
    spec = RateLimitSpec("l", identity=LimitSpec(3, burst=3), ipv4_prefix=24, ipv6_prefix=64)
    limiter = RateLimiter(spec, now=0.0)
    assert admitted(limiter, 0.0, 2, None, "10.1.2.3") == 2
    assert admitted(limiter, 0.0, 5, None, "10.1.2.200") == 1  # same /24
    assert admitted(limiter, 0.0, 5, None, "10.1.3.1") == 3  # another /24
    assert admitted(limiter, 0.0, 5, None, "::ffff:10.1.2.9") == 0  # IPv4-mapped: same /24
    assert admitted(limiter, 0.0, 5, None, "2001:db8::1") == 3
    assert admitted(limiter, 0.0, 5, None, "2001:db8::ffff") == 0  # same /64


def test_per_client_buckets_are_bounded() -> None:
    limiter = RateLimiter(RateLimitSpec("l", identity=LimitSpec(1, burst=1)), 0.0, max_clients=100)
    for i in range(1000):
        limiter.check(0.0, f"spiffe://t/ns/n/sa/s{i}", "10.0.0.1")
    assert limiter.clients() == 100


def test_scaled_divides_rates_among_workers() -> None:
    spec = RateLimitSpec("l", total=LimitSpec(100, burst=40), identity=LimitSpec(1))
    half = spec.scaled(2)
    assert half.total == LimitSpec(50, 20)
    assert half.identity == LimitSpec(0.5, 1)
    assert spec.scaled(1) is spec
