"""histogram_quantile: known histograms give the values Prometheus would give."""

from __future__ import annotations

import math

import pytest

from tulle.viz.quantile import histogram_quantile

INF = math.inf


def test_interpolates_inside_the_bucket() -> None:
    # 100 observations: 50 in (0,10], 40 in (10,20], 10 in (20,50].
    buckets = {10.0: 50, 20.0: 90, 50.0: 100, INF: 100}
    assert histogram_quantile(0.5, buckets) == pytest.approx(10.0)
    assert histogram_quantile(0.25, buckets) == pytest.approx(5.0)
    assert histogram_quantile(0.7, buckets) == pytest.approx(15.0)
    assert histogram_quantile(0.95, buckets) == pytest.approx(35.0)
    assert histogram_quantile(0.99, buckets) == pytest.approx(47.0)


def test_rank_in_the_inf_bucket_answers_the_highest_finite_bound() -> None:
    assert histogram_quantile(0.99, {1.0: 10, 5.0: 10, INF: 20}) == 5.0


def test_empty_or_incomplete_histograms_have_no_quantile() -> None:
    assert histogram_quantile(0.5, {}) is None
    assert histogram_quantile(0.5, {1.0: 0, INF: 0}) is None
    assert histogram_quantile(0.5, {1.0: 3, 2.0: 5}) is None  # no +Inf bucket


def test_extremes() -> None:
    buckets = {1.0: 1, 2.0: 2, INF: 2}
    assert histogram_quantile(0.0, buckets) == 0.0
    assert histogram_quantile(1.0, buckets) == 2.0


def test_matches_prometheus_on_linkerd_buckets() -> None:
    # Everything in the 30..40 ms bucket: the median is its middle.
    buckets = {20.0: 0, 30.0: 0, 40.0: 10, 50.0: 10, INF: 10}
    assert histogram_quantile(0.5, buckets) == pytest.approx(35.0)
