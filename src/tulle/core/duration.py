"""Durations written by people: one grammar for every duration Tulle reads.

The manifest's fields, the Kubernetes resources the control plane translates,
the HTTP API's query parameters and the identity CLI's lifetimes all go
through `duration_ms`. The grammar (docs/manifest.md, "Durations"): one or
more `NUMBER UNIT` with nothing between them, NUMBER ASCII digits with an
optional decimal fraction, UNIT one of `ms s m h d w y`. A bare number, a space, a
sign or an upper-case unit is refused. Each use allows a set of units and a
maximum (`DurationRule`): mesh settings take Gateway API's units (GEP-2257:
`h m s ms`) up to a day, certificate lifetimes `s m h d w y` up to a century.

Values are computed exactly in integer milliseconds, so "99999999999999999999h"
is refused as too long and "0.0000001ms" as finer than a millisecond instead
of turning into a float that overflows or rounds to zero.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction

_UNIT_MS = {
    "ms": 1,
    "s": 1000,
    "m": 60_000,
    "h": 3_600_000,
    "d": 86_400_000,
    "w": 7 * 86_400_000,
    "y": 365 * 86_400_000,
}
# Longer than any duration anyone writes; keeps the exact arithmetic cheap.
_MAX_DURATION_TEXT = 64


@dataclass(frozen=True, slots=True)
class DurationRule:
    """What one use of the grammar accepts: its units, its maximum, and how to show both."""

    units: tuple[str, ...]
    maximum_ms: int
    maximum_text: str  # the maximum as written in messages ("24h")
    examples: str  # for "expected a duration like ..."
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    part: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # "ms" before "m": the alternation takes the first unit that matches.
        units = "|".join(sorted(self.units, key=len, reverse=True))
        object.__setattr__(self, "pattern", re.compile(rf"^(?:[0-9]+(?:\.[0-9]+)?(?:{units}))+$"))
        object.__setattr__(self, "part", re.compile(rf"([0-9]+)(?:\.([0-9]+))?({units})"))


# Route timeouts, retry windows, API windows: whole milliseconds up to a day.
# Beyond that a value is a typo (or an attack on the conversion), not a setting.
MAX_DURATION_MS = 24 * 3_600_000
MESH_DURATION = DurationRule(("h", "m", "s", "ms"), MAX_DURATION_MS, "24h", '"500ms" or "2s"')
# Certificate and token lifetimes: from seconds to the ten years of a trust anchor.
LIFETIME = DurationRule(
    ("y", "w", "d", "h", "m", "s"), 100 * _UNIT_MS["y"], "100y", '"30s", "24h", "90d" or "1y"'
)


class DurationError(ValueError):
    """A duration that cannot be used; `str()` names the field: "FIELD: REASON"."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def duration_ms(text: str, rule: DurationRule = MESH_DURATION) -> int | str:
    """`text` in whole milliseconds (zero included), or why it is not a duration.

    The reason is a sentence for a message that names the field, e.g.
    `expected a duration like "500ms" or "2s", got "fast"`.
    """
    if len(text) > _MAX_DURATION_TEXT or not rule.pattern.match(text):
        return f'expected a duration like {rule.examples}, got "{text[:_MAX_DURATION_TEXT]}"'
    total = Fraction(0)
    for whole, fraction, unit in rule.part.findall(text):
        value = Fraction(int(whole)) + (
            Fraction(int(fraction), 10 ** len(fraction)) if fraction else 0
        )
        total += value * _UNIT_MS[unit]
        if total > rule.maximum_ms:
            return f'must be at most {rule.maximum_text}, got "{text}"'
    if total.denominator != 1:
        return f'must be a whole number of milliseconds, got "{text}"'
    return int(total)


def parse_duration(text: str, *, field: str, rule: DurationRule = MESH_DURATION) -> float:
    """`text` in seconds, longer than zero; raises DurationError naming `field`."""
    milliseconds = duration_ms(text, rule)
    if isinstance(milliseconds, str):
        raise DurationError(field, milliseconds)
    if milliseconds <= 0:
        raise DurationError(field, "must be longer than zero")
    return milliseconds / 1000
