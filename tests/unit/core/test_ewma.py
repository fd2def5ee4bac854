"""PeakEwma: peak on slow samples, time-weighted decay, decay towards zero while idle."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.core.ewma import PeakEwma


def test_default_holds_until_the_first_observation() -> None:
    ewma = PeakEwma(default_rtt_s=0.05)
    assert ewma.estimate(0.0) == 0.05
    assert ewma.estimate(1_000.0) == 0.05


def test_first_observation_replaces_the_default() -> None:
    ewma = PeakEwma(default_rtt_s=0.05)
    ewma.observe(0.001, 10.0)
    assert ewma.estimate(10.0) == 0.001


def test_a_slower_sample_is_taken_at_once() -> None:
    ewma = PeakEwma()
    ewma.observe(0.01, 0.0)
    ewma.observe(0.5, 0.001)
    assert ewma.estimate(0.001) == 0.5


def test_a_faster_sample_is_blended_by_elapsed_time() -> None:
    ewma = PeakEwma(decay_s=10.0)
    ewma.observe(1.0, 0.0)
    ewma.observe(0.0, 10.0)  # one time constant later
    assert ewma.estimate(10.0) == pytest.approx(math.exp(-1.0))
    ewma.observe(0.1, 10.0)  # no time elapsed: a smaller sample gets no weight
    assert ewma.estimate(10.0) == pytest.approx(math.exp(-1.0))


def test_a_faster_sample_soon_after_a_peak_barely_moves_it() -> None:
    ewma = PeakEwma(decay_s=10.0)
    ewma.observe(1.0, 0.0)
    ewma.observe(0.01, 0.01)
    assert 0.99 < ewma.estimate(0.01) < 1.0


def test_estimate_decays_towards_zero_while_idle_without_writing() -> None:
    ewma = PeakEwma(decay_s=10.0)
    ewma.observe(0.2, 0.0)
    assert ewma.estimate(20.0) == pytest.approx(0.2 * math.exp(-2.0))
    # Reading is pure: a read in between does not change a later read.
    assert ewma.estimate(5.0) == pytest.approx(0.2 * math.exp(-0.5))
    assert ewma.estimate(20.0) == pytest.approx(0.2 * math.exp(-2.0))
    # A clock read before the last observation does not inflate the estimate.
    assert ewma.estimate(-1.0) == 0.2


def test_an_idle_endpoint_is_taken_back_at_its_next_sample() -> None:
    ewma = PeakEwma(decay_s=10.0)
    ewma.observe(1.0, 0.0)
    ewma.observe(0.03, 100.0)  # decayed to ~4.5e-5, so 0.03 is a peak
    assert ewma.estimate(100.0) == 0.03


@pytest.mark.parametrize(("default", "decay"), [(0.0, 10.0), (0.03, 0.0), (-1.0, 1.0)])
def test_rejects_non_positive_settings(default: float, decay: float) -> None:
    with pytest.raises(ValueError):
        PeakEwma(default, decay)


samples = st.lists(
    st.tuples(
        st.floats(min_value=0.0, max_value=5.0),  # time since the previous sample
        st.floats(min_value=0.0, max_value=10.0),  # rtt
    ),
    min_size=1,
    max_size=50,
)


@given(samples)
def test_estimate_stays_between_the_last_sample_and_the_largest(
    history: list[tuple[float, float]],
) -> None:
    ewma = PeakEwma(default_rtt_s=0.03, decay_s=2.0)
    now = 0.0
    largest = 0.0
    for step, rtt in history:
        now += step
        ewma.observe(rtt, now)
        largest = max(largest, rtt)
        estimate = ewma.estimate(now)
        assert rtt <= estimate <= largest
        assert 0.0 <= ewma.estimate(now + 3.0) <= estimate
