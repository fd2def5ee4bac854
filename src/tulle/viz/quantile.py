"""Quantiles from histogram buckets, computed the way Prometheus' `histogram_quantile` does.

Buckets are cumulative counts keyed by their upper bound (`le`). The rank
`q * total` is found in the first bucket whose cumulative count reaches it and
the value is interpolated linearly inside that bucket (the lowest bucket
starts at 0). A rank that falls in the `+Inf` bucket answers the highest finite
bound, as Prometheus does, because nothing better is known.
"""

from __future__ import annotations

import math
from collections.abc import Mapping


def histogram_quantile(q: float, cumulative: Mapping[float, float]) -> float | None:
    """The q-quantile (0..1) of a histogram given as {le: cumulative count}; None if empty."""
    if not cumulative or math.isnan(q):
        return None
    bounds = sorted(cumulative)
    if not math.isinf(bounds[-1]):
        # Without a +Inf bucket the total is unknown: Prometheus answers NaN.
        return None
    total = cumulative[bounds[-1]]
    if total <= 0:
        return None
    if q <= 0:
        return 0.0 if bounds[0] > 0 else bounds[0]
    if q >= 1:
        finite = [b for b in bounds if not math.isinf(b)]
        return finite[-1] if finite else None
    rank = q * total
    previous_bound = 0.0
    previous_count = 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            in_bucket = count - previous_count
            if in_bucket <= 0:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / in_bucket
        previous_bound = bound
        previous_count = count
    return previous_bound
