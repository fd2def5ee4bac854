"""Weighted traffic split: picks one of several items in proportion to integer weights.

Used for canary splits between backends. A pick is one ``random()`` and one
C-level ``bisect`` over cumulative weights: O(log n) with a tiny constant, and
nothing allocated. Items with weight 0 are kept out (they take no traffic); a
change of weights builds a new picker, which is cheap and needs no locking.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from typing import Generic, TypeVar

T = TypeVar("T")


class WeightedPicker(Generic[T]):
    """``pick()`` returns item i with probability weight_i / total."""

    __slots__ = ("_cumulative", "_items", "_random", "_total", "weights")

    def __init__(self, items: Sequence[tuple[T, int]], rng: random.Random | None = None) -> None:
        chosen: list[T] = []
        cumulative: list[int] = []
        total = 0
        for item, weight in items:
            if weight < 0:
                raise ValueError(f"traffic split weight must be >= 0, got {weight} for {item!r}")
            if weight == 0:
                continue
            total += weight
            chosen.append(item)
            cumulative.append(total)
        if total == 0:
            raise ValueError("traffic split needs at least one item with a weight above 0")
        self._items = tuple(chosen)
        self._cumulative = tuple(cumulative)
        self._total = total
        self._random = (rng or random.Random()).random
        self.weights: tuple[tuple[T, int], ...] = tuple((i, w) for i, w in items if w > 0)

    def pick(self) -> T:
        # random() < 1, so the point is < total and bisect_right stays in range:
        # for any total below 2**53 the product rounds down, never up to total.
        return self._items[bisect_right(self._cumulative, self._random() * self._total)]

    def __len__(self) -> int:
        return len(self._items)
