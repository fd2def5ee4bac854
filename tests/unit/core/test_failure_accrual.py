"""FailureAccrual: closed -> open after N failures, half-open single probe, backoff growth."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.core.backoff import BackoffSpec
from tulle.core.failure_accrual import FailureAccrual

NO_JITTER = BackoffSpec(min_s=1.0, max_s=60.0, jitter=0.0)


def fail(accrual: FailureAccrual, times: int, now: float) -> None:
    for _ in range(times):
        accrual.record(False, now)


def test_opens_after_seven_consecutive_failures() -> None:
    accrual = FailureAccrual()
    fail(accrual, 6, 0.0)
    assert accrual.state == "closed"
    assert accrual.available(0.0)
    accrual.record(False, 0.0)
    assert accrual.state == "open"
    assert not accrual.available(0.0)


def test_a_success_ends_the_run_of_failures() -> None:
    accrual = FailureAccrual(max_failures=3)
    fail(accrual, 2, 0.0)
    accrual.record(True, 0.0)
    fail(accrual, 2, 0.0)
    assert accrual.state == "closed"
    accrual.record(False, 0.0)
    assert accrual.state == "open"


def test_probe_after_backoff_then_close_on_success() -> None:
    accrual = FailureAccrual(max_failures=7, backoff=NO_JITTER)
    fail(accrual, 7, 10.0)
    assert not accrual.available(10.99)
    assert accrual.state == "open"
    assert accrual.available(11.0)
    assert accrual.state == "half-open"
    accrual.on_dispatch()
    # One probe at a time.
    assert not accrual.available(11.0)
    assert not accrual.available(30.0)
    accrual.record(True, 11.2)
    assert accrual.state == "closed"
    assert accrual.available(11.2)
    # Closing reset the backoff: the next ejection waits the minimum again.
    fail(accrual, 7, 20.0)
    assert accrual.retry_at == 21.0


def test_probe_failure_reopens_with_a_longer_backoff_up_to_the_cap() -> None:
    accrual = FailureAccrual(max_failures=2, backoff=BackoffSpec(1.0, 5.0, jitter=0.0))
    now = 0.0
    fail(accrual, 2, now)
    delays = []
    for _ in range(6):
        delays.append(accrual.retry_at - now)
        now = accrual.retry_at
        assert accrual.available(now)
        accrual.on_dispatch()
        accrual.record(False, now)
        assert accrual.state == "open"
    assert delays == [1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_jittered_backoff_stays_within_its_range() -> None:
    accrual = FailureAccrual(max_failures=1, rng=random.Random(7))
    accrual.record(False, 0.0)
    first = accrual.retry_at
    assert 0.5 <= first <= 1.0
    accrual.available(first)
    accrual.on_dispatch()
    accrual.record(False, first)
    assert 1.0 <= accrual.retry_at - first <= 2.0


def test_failures_while_open_do_not_push_the_probe_back() -> None:
    accrual = FailureAccrual(max_failures=1, backoff=NO_JITTER)
    accrual.record(False, 0.0)
    fail(accrual, 20, 0.5)
    assert accrual.retry_at == 1.0


def test_a_late_success_while_open_closes_the_breaker() -> None:
    accrual = FailureAccrual(max_failures=1, backoff=NO_JITTER)
    accrual.record(False, 0.0)
    accrual.record(True, 0.2)
    assert accrual.state == "closed"
    assert accrual.available(0.2)


def test_dispatch_while_closed_claims_nothing() -> None:
    accrual = FailureAccrual()
    accrual.on_dispatch()
    accrual.on_dispatch()
    assert accrual.available(0.0)


def test_rejects_zero_max_failures() -> None:
    with pytest.raises(ValueError):
        FailureAccrual(max_failures=0)


operations = st.lists(
    st.tuples(
        st.sampled_from(["success", "failure", "dispatch", "check"]),
        st.floats(min_value=0.0, max_value=3.0),
    ),
    max_size=200,
)


@given(operations)
def test_state_machine_invariants(ops: list[tuple[str, float]]) -> None:
    accrual = FailureAccrual(max_failures=3, backoff=BackoffSpec(0.5, 4.0))
    now = 0.0
    probes_in_flight = 0
    for op, step in ops:
        now += step
        if op == "check":
            available = accrual.available(now)
            if accrual.state == "closed":
                assert available
            elif accrual.state == "open":
                assert not available
                assert now < accrual.retry_at
            else:
                assert available == (probes_in_flight == 0)
        elif op == "dispatch":
            if accrual.available(now):
                if accrual.state == "half-open":
                    probes_in_flight += 1
                accrual.on_dispatch()
                assert probes_in_flight <= 1
        else:
            accrual.record(op == "success", now)
            probes_in_flight = 0
        assert accrual.state in ("closed", "open", "half-open")
        if accrual.state == "closed":
            assert accrual.consecutive_failures < accrual.max_failures
