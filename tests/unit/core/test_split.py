"""WeightedPicker: shares follow integer weights; zero weights take no traffic."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.core.split import WeightedPicker


def test_ninety_ten_within_three_percent_over_2000_seeded() -> None:
    picker = WeightedPicker([("stable", 90), ("canary", 10)], random.Random(2026))
    counts = Counter(picker.pick() for _ in range(2000))
    assert abs(counts["canary"] / 2000 - 0.10) <= 0.03
    assert counts["stable"] + counts["canary"] == 2000


def test_ninety_ten_unseeded_within_a_statistical_bound() -> None:
    # 2000 picks at p=0.1: sd = sqrt(2000*0.1*0.9) ~= 13.4 picks; +-3 % is 60
    # picks, about 4.5 sd, so a false failure is rarer than one run in 100,000.
    picker: WeightedPicker[str] = WeightedPicker([("stable", 90), ("canary", 10)])
    canary = sum(picker.pick() == "canary" for _ in range(2000))
    assert 140 <= canary <= 260


def test_zero_weight_items_are_never_picked() -> None:
    picker = WeightedPicker([("a", 0), ("b", 5), ("c", 0)], random.Random(1))
    assert {picker.pick() for _ in range(200)} == {"b"}
    assert len(picker) == 1
    assert picker.weights == (("b", 5),)


@pytest.mark.parametrize("items", [[], [("a", 0)], [("a", 3), ("b", -1)]])
def test_rejects_splits_that_cannot_pick(items: list[tuple[str, int]]) -> None:
    with pytest.raises(ValueError):
        WeightedPicker(items)


def test_a_huge_total_stays_in_range() -> None:
    picker = WeightedPicker([("a", 2**52), ("b", 2**52 - 1)], random.Random(3))
    assert {picker.pick() for _ in range(200)} <= {"a", "b"}


@given(
    st.lists(st.integers(min_value=0, max_value=1_000), min_size=1, max_size=20).filter(
        lambda ws: sum(ws) > 0
    ),
    st.integers(min_value=0, max_value=2**32),
)
def test_picks_only_positive_weights_and_a_dominant_item_dominates(
    weights: list[int], seed: int
) -> None:
    picker = WeightedPicker(list(enumerate(weights)), random.Random(seed))
    picks = Counter(picker.pick() for _ in range(300))
    assert all(weights[i] > 0 for i in picks)
    total = sum(weights)
    for index, count in picks.items():
        # Far outside any plausible deviation only if the mapping is wrong.
        assert count <= 300 * weights[index] / total + 60
