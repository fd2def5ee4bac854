"""Fault decisions: shares follow the percentages, headers scope them, answers per caller."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

from tulle.core.discovery import FaultSpec, HeaderMatch
from tulle.core.fault import FaultDecision, FaultInjector


def no_headers(name: bytes) -> bytes | None:
    return None


def headers(**values: str) -> Callable[[bytes], bytes | None]:
    table = {k.replace("_", "-").encode(): v.encode() for k, v in values.items()}
    return table.get


def fixed(*draws: float) -> Callable[[], float]:
    source: Iterator[float] = iter(draws)
    return lambda: next(source)


def test_draws_below_the_percentage_hit_and_others_do_not() -> None:
    spec = FaultSpec(delay_s=0.5, delay_percent=20, abort_status=503, abort_percent=10)
    # Delay is drawn first, then abort: 0.19 < 0.20 delays, 0.09 < 0.10 aborts.
    assert FaultInjector(spec, fixed(0.19, 0.09)).decide(no_headers) == FaultDecision(0.5, True)
    assert FaultInjector(spec, fixed(0.19, 0.10)).decide(no_headers) == FaultDecision(0.5, False)
    assert FaultInjector(spec, fixed(0.20, 0.09)).decide(no_headers) == FaultDecision(0.0, True)
    assert FaultInjector(spec, fixed(0.20, 0.10)).decide(no_headers) is None


def test_zero_percent_never_draws_and_never_hits() -> None:
    spec = FaultSpec(abort_status=500, abort_percent=0, delay_s=1.0, delay_percent=0)
    assert FaultInjector(spec, fixed()).decide(no_headers) is None


def test_hundred_percent_always_hits() -> None:
    injector = FaultInjector(
        FaultSpec(abort_status=418, abort_percent=100), random.Random(1).random
    )
    assert all(injector.decide(no_headers) == FaultDecision(0.0, True) for _ in range(1000))


def test_shares_over_many_requests_are_within_a_statistical_bound() -> None:
    # 10,000 draws at p=0.25: sd ~= 43; +-250 is ~5.8 sd.
    spec = FaultSpec(abort_status=503, abort_percent=25, delay_s=0.1, delay_percent=50)
    injector = FaultInjector(spec, random.Random(2026).random)
    decisions = [injector.decide(no_headers) for _ in range(10_000)]
    aborts = sum(1 for d in decisions if d is not None and d.abort)
    delays = sum(1 for d in decisions if d is not None and d.delay_s > 0)
    assert 2250 <= aborts <= 2750, aborts
    assert 4750 <= delays <= 5250, delays


def test_headers_scope_the_fault_to_a_caller() -> None:
    spec = FaultSpec(
        abort_status=503,
        abort_percent=100,
        headers=(HeaderMatch("x-chaos", "1"), HeaderMatch("x-user", "test-.*", regex=True)),
    )
    injector = FaultInjector(spec, random.random)
    assert injector.decide(no_headers) is None
    assert injector.decide(headers(x_chaos="1")) is None
    assert injector.decide(headers(x_chaos="1", x_user="prod-1")) is None
    assert injector.decide(headers(x_chaos="2", x_user="test-1")) is None
    assert injector.decide(headers(x_chaos="1", x_user="test-1")) == FaultDecision(0.0, True)


def test_abort_answer_per_caller() -> None:
    both = FaultInjector(FaultSpec(abort_status=503, abort_grpc_status=14, abort_percent=1))
    assert both.abort_status(False) == (503, None)
    assert both.abort_status(True) == (200, 14)
    http_only = FaultInjector(FaultSpec(abort_status=418, abort_percent=1))
    assert http_only.abort_status(True) == (418, None)
    grpc_only = FaultInjector(FaultSpec(abort_grpc_status=8, abort_percent=1))
    # An HTTP caller of a gRPC-only abort gets the documented 503.
    assert grpc_only.abort_status(False) == (503, None)
