"""Retry budget: how many retries a service may send, so that retries never amplify an outage.

Finagle's and Linkerd's rule: within a sliding window of ``ttl_s`` seconds,
retries may be at most ``ratio`` times the original requests, plus a floor of
``min_retries_per_second * ttl_s`` so that a service with little traffic can
still retry. Written as an inequality that every granted retry satisfies:

    retries in window (this one included) <= ratio * deposits in window + min * ttl

The window is a ring of ``buckets + 1`` counters, each ``ttl_s / buckets`` wide.
One spare bucket makes the counted span at least ``ttl_s`` long (and at most
``ttl_s`` plus one bucket), so an event is never forgotten before ``ttl_s`` has
passed: the bound holds for every interval of ``ttl_s``, erring towards fewer
retries. Counts are integers and totals are kept beside the ring, so a call is
O(1), and rotating past stale buckets is O(buckets) at most, amortised O(1).
"""

from __future__ import annotations

from tulle.core.discovery import RetryBudgetSpec


class RetryBudget:
    """A sliding-window budget; ``now`` is the caller's ``time.monotonic()``."""

    __slots__ = (
        "_bucket",
        "_bucket_end",
        "_bucket_width",
        "_deposit_total",
        "_deposits",
        "_reserve",
        "_withdrawal_total",
        "_withdrawals",
        "ratio",
        "ttl_s",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_retries_per_second: float = 10.0,
        ttl_s: float = 10.0,
        *,
        buckets: int = 10,
    ) -> None:
        if not ratio >= 0:
            raise ValueError("retry budget ratio must be >= 0")
        if not min_retries_per_second >= 0:
            raise ValueError("retry budget min_retries_per_second must be >= 0")
        if not ttl_s > 0:
            raise ValueError("retry budget ttl_s must be > 0")
        if buckets < 1:
            raise ValueError("retry budget needs at least one bucket")
        self.ratio = ratio
        self.ttl_s = ttl_s
        self._reserve = min_retries_per_second * ttl_s
        self._bucket_width = ttl_s / buckets
        slots = buckets + 1
        self._deposits = [0] * slots
        self._withdrawals = [0] * slots
        self._deposit_total = 0
        self._withdrawal_total = 0
        # Absolute bucket number (now // width); its ring slot is bucket % slots.
        self._bucket = 0
        self._bucket_end = self._bucket_width

    @classmethod
    def from_spec(cls, spec: RetryBudgetSpec) -> RetryBudget:
        return cls(spec.ratio, spec.min_retries_per_second, spec.ttl_s)

    def deposit(self, now: float) -> None:
        """Count one original request."""
        if now >= self._bucket_end:
            self._rotate(now)
        self._deposits[self._bucket % len(self._deposits)] += 1
        self._deposit_total += 1

    def try_withdraw(self, now: float) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        if now >= self._bucket_end:
            self._rotate(now)
        if self._withdrawal_total + 1 > self.ratio * self._deposit_total + self._reserve:
            return False
        self._withdrawals[self._bucket % len(self._withdrawals)] += 1
        self._withdrawal_total += 1
        return True

    def balance(self, now: float) -> float:
        """Retries still allowed at ``now`` (for metrics; may be fractional)."""
        if now >= self._bucket_end:
            self._rotate(now)
        return max(0.0, self.ratio * self._deposit_total + self._reserve - self._withdrawal_total)

    def _rotate(self, now: float) -> None:
        target = int(now // self._bucket_width)
        deposits = self._deposits
        withdrawals = self._withdrawals
        slots = len(deposits)
        if target - self._bucket >= slots:
            for i in range(slots):
                deposits[i] = 0
                withdrawals[i] = 0
            self._deposit_total = 0
            self._withdrawal_total = 0
        else:
            bucket = self._bucket
            while bucket < target:
                bucket += 1
                slot = bucket % slots
                self._deposit_total -= deposits[slot]
                self._withdrawal_total -= withdrawals[slot]
                deposits[slot] = 0
                withdrawals[slot] = 0
        self._bucket = target
        self._bucket_end = (target + 1) * self._bucket_width
