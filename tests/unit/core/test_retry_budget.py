"""RetryBudget: ratio of retries to requests plus a floor, over a sliding window."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.core.discovery import RetryBudgetSpec
from tulle.core.retry_budget import RetryBudget


def drain(budget: RetryBudget, now: float, limit: int = 10_000) -> int:
    granted = 0
    for _ in range(limit):
        if not budget.try_withdraw(now):
            break
        granted += 1
    return granted


def test_floor_alone_allows_min_per_second_times_ttl() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=10.0, ttl_s=10.0)
    assert drain(budget, 5.0) == 100
    assert not budget.try_withdraw(5.0)


def test_ratio_of_deposits_without_a_floor() -> None:
    budget = RetryBudget(ratio=0.2, min_retries_per_second=0.0, ttl_s=10.0)
    assert not budget.try_withdraw(0.0)
    for _ in range(100):
        budget.deposit(0.5)
    assert drain(budget, 0.5) == 20


def test_ratio_and_floor_add_up() -> None:
    budget = RetryBudget(ratio=0.25, min_retries_per_second=1.0, ttl_s=4.0)
    for _ in range(10):
        budget.deposit(1.0)
    assert drain(budget, 1.0) == 6  # floor(0.25 * 10 + 1 * 4)
    budget.deposit(1.5)
    budget.deposit(1.5)
    assert drain(budget, 1.5) == 1  # 0.25 * 12 + 4 = 7


def test_window_slides_and_old_events_expire() -> None:
    budget = RetryBudget(ratio=0.0, min_retries_per_second=1.0, ttl_s=10.0)
    assert drain(budget, 0.0) == 10
    assert not budget.try_withdraw(9.9)  # still within ttl of the retries
    assert drain(budget, 11.0) == 10  # ttl plus one bucket later: forgotten


def test_deposits_expire_too() -> None:
    budget = RetryBudget(ratio=1.0, min_retries_per_second=0.0, ttl_s=1.0)
    for _ in range(5):
        budget.deposit(0.0)
    assert budget.balance(0.5) == 5
    assert budget.balance(1.2) == 0
    assert not budget.try_withdraw(1.2)


def test_a_long_pause_resets_everything() -> None:
    budget = RetryBudget(ratio=0.5, min_retries_per_second=0.0, ttl_s=1.0)
    budget.deposit(0.0)
    budget.deposit(0.0)
    assert budget.try_withdraw(0.0)
    assert budget.balance(1_000_000.0) == 0.0
    budget.deposit(1_000_000.0)
    budget.deposit(1_000_000.0)
    assert budget.try_withdraw(1_000_000.0)


def test_from_spec() -> None:
    budget = RetryBudget.from_spec(
        RetryBudgetSpec(ratio=0.5, min_retries_per_second=2.0, ttl_s=3.0)
    )
    assert budget.ratio == 0.5
    assert budget.ttl_s == 3.0
    assert drain(budget, 0.0) == 6


@pytest.mark.parametrize(
    ("ratio", "minimum", "ttl"), [(-0.1, 10.0, 10.0), (0.2, -1.0, 10.0), (0.2, 10.0, 0.0)]
)
def test_rejects_bad_settings(ratio: float, minimum: float, ttl: float) -> None:
    with pytest.raises(ValueError):
        RetryBudget(ratio, minimum, ttl)


events = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=0.7),  # time since the previous event
        st.booleans(),  # True: deposit, False: try a retry
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(
    events,
    st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([1.0, 2.0, 10.0]),
)
def test_never_more_retries_than_ratio_times_deposits_plus_floor(
    history: list[tuple[float, bool]], ratio: float, minimum: float, ttl: float
) -> None:
    budget = RetryBudget(ratio, minimum, ttl, buckets=10)
    bucket = ttl / 10
    deposits: list[float] = []
    retries: list[float] = []
    now = 0.0
    for step, is_deposit in history:
        now += step
        if is_deposit:
            budget.deposit(now)
            deposits.append(now)
            continue
        if not budget.try_withdraw(now):
            continue
        retries.append(now)
        # Every retry in the last ttl (this one included) is covered by deposits
        # in the last ttl plus one bucket, and the floor.
        recent_retries = sum(1 for t in retries if t > now - ttl)
        counted_deposits = sum(1 for t in deposits if t > now - ttl - bucket)
        assert recent_retries <= ratio * counted_deposits + minimum * ttl + 1e-9


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=300), st.sampled_from([0.1, 0.2, 0.5]))
def test_within_one_window_the_bound_is_reached_exactly(history: list[bool], ratio: float) -> None:
    budget = RetryBudget(ratio, min_retries_per_second=1.0, ttl_s=10.0)
    deposits = retries = 0
    for is_deposit in history:
        if is_deposit:
            budget.deposit(5.0)
            deposits += 1
        else:
            allowed = retries + 1 <= ratio * deposits + 10.0
            assert budget.try_withdraw(5.0) is allowed
            retries += allowed
