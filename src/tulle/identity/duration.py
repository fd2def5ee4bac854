"""Certificate and token lifetimes (`30s`, `24h`, `90d`, `10y`): reading and showing them.

The grammar is the one of every duration (tulle.core.duration), with the
units of a lifetime.
"""

from __future__ import annotations

from tulle.core.duration import LIFETIME, parse_duration


def parse_lifetime(text: str, field: str = "lifetime") -> float:
    """Seconds in `text`, e.g. `1h30m` -> 5400.0; raises DurationError naming `field`."""
    return parse_duration(text, field=field, rule=LIFETIME)


def format_duration(seconds: float) -> str:
    """The largest whole units, at most two: 90061 -> '1d 1h'."""
    remaining = round(abs(seconds))
    parts: list[str] = []
    for unit, size in (("y", 365 * 86_400), ("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if remaining >= size and len(parts) < 2:
            parts.append(f"{remaining // size}{unit}")
            remaining %= size
    text = " ".join(parts) or "0s"
    return f"-{text}" if seconds < 0 else text
