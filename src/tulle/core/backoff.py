"""Exponential backoff with full jitter, for reconnects and circuit-breaker probes.

Jitter spreads retries out so that many proxies that lost the same peer at the
same moment do not all come back at the same moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffSpec:
    min_s: float = 1.0
    max_s: float = 60.0
    # Fraction of each delay that is randomised: 0 is none, 1 is "full jitter".
    jitter: float = 0.5
    factor: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError("backoff needs 0 < min_s <= max_s")
        if not 0 <= self.jitter <= 1:
            raise ValueError("backoff jitter must be within [0, 1]")
        if self.factor < 1:
            raise ValueError("backoff factor must be >= 1")


class Backoff:
    """Successive delays: min, min*factor, ... capped at max, each jittered down."""

    __slots__ = ("_attempt", "_rng", "spec")

    def __init__(self, spec: BackoffSpec | None = None, rng: random.Random | None = None) -> None:
        self.spec = spec or BackoffSpec()
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        spec = self.spec
        base = min(spec.max_s, spec.min_s * spec.factor**self._attempt)
        if base < spec.max_s:
            self._attempt += 1
        return base * (1.0 - spec.jitter * self._rng.random())

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
