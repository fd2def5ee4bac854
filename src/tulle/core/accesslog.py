"""Access-log lines: which fields, which requests (sampling), and the JSON of one line.

Pure: the proxy's sink (`tulle.proxy.accesslog`) decides when to write; this
module decides what a line says. One JSON object per line, keys in the
order the operator chose (`--access-log-fields`), values as plain JSON
(numbers are numbers, absent values are omitted rather than null).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping

# Every field a line can carry, in the default order.
FIELDS: tuple[str, ...] = (
    "ts",  # wall-clock time the response ended (RFC 3339, UTC, milliseconds)
    "direction",  # inbound or outbound
    "method",
    "authority",
    "path",
    "status",  # the HTTP status the client got (499: it left first)
    "grpc_status",  # gRPC calls only
    "latency_ms",
    "route",
    "dst_service",
    "dst",  # the endpoint's address
    "src",  # the client's address
    "client_id",  # inbound: the caller's verified identity
    "server_id",  # outbound: the endpoint's verified identity
    "error",  # the proxy's reason (tulle-proxy-error), if it made the answer
    "attempts",  # how many times the request was sent (retries + 1)
)

_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"))


def parse_fields(text: str) -> tuple[str, ...]:
    """`ts,status,...` (empty: every field); ValueError names an unknown one."""
    if not text.strip():
        return FIELDS
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in chosen if name not in FIELDS]
    if unknown:
        raise ValueError(f"unknown access-log field {unknown[0]!r} (known: {', '.join(FIELDS)})")
    return chosen


class Sampler:
    """Keeps a share `rate` (0..1) of requests, drawn independently per request."""

    __slots__ = ("_random", "rate")

    def __init__(self, rate: float, rand: Callable[[], float] = random.random) -> None:
        self.rate = min(max(rate, 0.0), 1.0)
        self._random = rand

    def keep(self) -> bool:
        rate = self.rate
        return rate >= 1.0 or (rate > 0.0 and self._random() < rate)


def format_line(fields: tuple[str, ...], values: Mapping[str, object]) -> str:
    """One line (with its newline): the chosen fields that have a value."""
    out: dict[str, object] = {}
    for name in fields:
        value = values.get(name)
        if value is not None and value != "":
            out[name] = value
    return _ENCODER.encode(out) + "\n"
