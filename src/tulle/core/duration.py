"""Durations in manifests and on the command line: one grammar, exact in integers."""

from __future__ import annotations

import re
from fractions import Fraction

_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:h|ms|m|s))+$")
_DURATION_PART_RE = re.compile(r"(\d+)(?:\.(\d+))?(h|ms|m|s)")
_DURATION_UNITS_MS = {"h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}
# Durations are whole milliseconds up to a day: what a route timeout or a
# retry window can mean. Beyond that a value is a typo (or an attack on the
# float conversion), not a setting.
MAX_DURATION_MS = 24 * 3_600_000
_MAX_DURATION_TEXT = 64


def duration_ms(text: str) -> int | str:
    """A Gateway API duration ("500ms", "2s", "1m30s", "1.5s") in whole milliseconds,
    or why it is not one (a sentence for a message that names the field).

    Computed exactly in integers, so "99999999999999999999h" is refused as too
    long and "0.0000001ms" as finer than a millisecond instead of turning into
    a float the proxy would choke on.
    """
    if len(text) > _MAX_DURATION_TEXT or not _DURATION_RE.match(text):
        return f'expected a duration like "500ms" or "2s", got "{text[:_MAX_DURATION_TEXT]}"'
    total = Fraction(0)
    for whole, fraction, unit in _DURATION_PART_RE.findall(text):
        value = Fraction(int(whole)) + (
            Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
        )
        total += value * _DURATION_UNITS_MS[unit]
        if total > MAX_DURATION_MS:
            return f'must be at most 24h, got "{text}"'
    if total.denominator != 1:
        return f'must be a whole number of milliseconds, got "{text}"'
    return int(total)


def parse_duration(text: str) -> float | None:
    """Gateway API duration ("500ms", "2s", "1m30s", "1h") in seconds; None if invalid."""
    milliseconds = duration_ms(text)
    return None if isinstance(milliseconds, str) else milliseconds / 1000
