"""Human-written lifetimes (`30s`, `24h`, `90d`, `10y`) for certificates and tokens."""

from __future__ import annotations

import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 365 * 86_400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")


def parse_duration(text: str) -> float:
    """Seconds in `text`, e.g. `1h30m` -> 5400.0; raises ValueError with a hint."""
    cleaned = text.strip().lower()
    position = 0
    total = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != position:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not cleaned or position != len(cleaned):
        raise ValueError(f"{text!r} is not a duration; write e.g. 30s, 10m, 24h, 90d or 1y")
    if total <= 0:
        raise ValueError(f"duration {text!r} must be longer than zero")
    return total


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
