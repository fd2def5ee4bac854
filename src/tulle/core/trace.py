"""Trace context for distributed tracing: W3C `traceparent` (and B3 in), the
sampling decision, and the `traceparent` a proxy hop forwards. No I/O.

Theory of operation. Each proxy hop that traces a request is one span. The
hop reads the caller's context from the request headers, in this order:

1. a valid W3C `traceparent` (https://www.w3.org/TR/trace-context/ 3.2):
   its trace id and parent span id, and its `sampled` flag decides;
2. else B3 (https://github.com/openzipkin/b3-propagation): the single `b3`
   header, else `X-B3-TraceId`/`X-B3-SpanId`/`X-B3-Sampled`/`X-B3-Flags`;
   a 64-bit trace id is left-padded to 128 bits; `1` or `d` (debug) means
   sampled, `0` not, no decision means the configured rate decides;
3. else (or when what was sent is malformed: the spec says restart the trace)
   a new trace whose sampling the configured rate decides.

The caller's decision is always followed: a rate of 0 never drops a trace a
caller sampled, a rate of 1 never records one it did not. A new trace is
sampled when the low 64 bits of its (random) trace id fall under
`rate * 2**64`, so every hop that starts from the same id agrees.

What is forwarded: a sampled hop sends `traceparent` with its own span id as
the parent (the next hop's span is its child); an unsampled hop with a valid
caller `traceparent` forwards it untouched (it records nothing, so the
caller's span stays the parent); an unsampled new trace is forwarded with the
flag clear, so the hops after this one follow the decision. `tracestate` is
forwarded untouched (we add no entry), and B3 headers are left as they are.
"""

from __future__ import annotations

import random
from collections.abc import Callable

_HEX = frozenset(b"0123456789abcdef")
_HEX_ANY_CASE = frozenset(b"0123456789abcdefABCDEF")
_ZERO_TRACE = b"\0" * 16
_ZERO_SPAN = b"\0" * 8

TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
FLAG_SAMPLED = 0x01

HeaderLookup = Callable[[bytes], "bytes | None"]


class TraceContext:
    """The caller's trace context: trace id (16 bytes), its span id (8 bytes,
    or None for a trace this hop starts) and the sampling decision (None: the
    caller made none)."""

    __slots__ = ("parent_id", "sampled", "trace_id")

    def __init__(self, trace_id: bytes, parent_id: bytes | None, sampled: bool | None) -> None:
        self.trace_id = trace_id
        self.parent_id = parent_id
        self.sampled = sampled

    def __repr__(self) -> str:
        parent = self.parent_id.hex() if self.parent_id else None
        return f"TraceContext({self.trace_id.hex()}, {parent}, sampled={self.sampled})"


def _hex_field(value: bytes, size: int, any_case: bool = False) -> bytes | None:
    """`value` as `size` bytes if it is exactly `2 * size` hex digits, else None."""
    if len(value) != 2 * size:
        return None
    allowed = _HEX_ANY_CASE if any_case else _HEX
    for ch in value:
        if ch not in allowed:
            return None
    return bytes.fromhex(value.decode("ascii"))


def parse_traceparent(value: bytes) -> TraceContext | None:
    """A `traceparent` header's context, or None when it is not valid.

    Version 00 is exactly 55 characters; a later version may be longer, its
    extra fields after a `-` (ignored, per 3.2.4). Version ff, upper-case hex,
    an all-zero trace or parent id are invalid."""
    value = value.strip(b" \t")
    if len(value) < 55 or value[2:3] != b"-" or value[35:36] != b"-" or value[52:53] != b"-":
        return None
    version = _hex_field(value[0:2], 1)
    if version is None or version == b"\xff":
        return None
    if version == b"\x00" and len(value) != 55:
        return None
    if len(value) > 55 and value[55:56] != b"-":
        return None
    trace_id = _hex_field(value[3:35], 16)
    parent_id = _hex_field(value[36:52], 8)
    flags = _hex_field(value[53:55], 1)
    if trace_id is None or parent_id is None or flags is None:
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, parent_id, bool(flags[0] & FLAG_SAMPLED))


def _b3_trace_id(value: bytes) -> bytes | None:
    if len(value) == 16:
        value = b"0" * 16 + value
    trace_id = _hex_field(value, 16, any_case=True)
    return None if trace_id is None or trace_id == _ZERO_TRACE else trace_id


def _b3_sampled(value: bytes | None) -> bool | None:
    if value is None:
        return None
    if value in (b"1", b"d", b"true"):
        return True
    if value in (b"0", b"false"):
        return False
    return None


def parse_b3_single(value: bytes) -> TraceContext | None:
    """The single `b3` header: `{trace}-{span}[-{sampled}[-{parent}]]`.

    A bare sampling state (`0`, `1`, `d`) carries no ids: it is returned
    with an empty trace id, for the caller to start a trace with it."""
    value = value.strip(b" \t")
    parts = value.split(b"-")
    if len(parts) == 1:
        sampled = _b3_sampled(parts[0])
        return None if sampled is None else TraceContext(b"", None, sampled)
    if len(parts) > 4:
        return None
    trace_id = _b3_trace_id(parts[0])
    span_id = _hex_field(parts[1], 8, any_case=True)
    if trace_id is None or span_id is None or span_id == _ZERO_SPAN:
        return None
    sampled = _b3_sampled(parts[2]) if len(parts) > 2 else None
    if len(parts) > 2 and sampled is None:
        return None
    return TraceContext(trace_id, span_id, sampled)


def parse_b3_multi(header: HeaderLookup) -> TraceContext | None:
    """The `X-B3-*` headers, or None when absent or malformed."""
    flags = header(b"x-b3-flags")
    sampled = True if flags == b"1" else _b3_sampled(header(b"x-b3-sampled"))
    raw_trace = header(b"x-b3-traceid")
    raw_span = header(b"x-b3-spanid")
    if raw_trace is None or raw_span is None:
        return None if sampled is None else TraceContext(b"", None, sampled)
    trace_id = _b3_trace_id(raw_trace.strip())
    span_id = _hex_field(raw_span.strip(), 8, any_case=True)
    if trace_id is None or span_id is None or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, sampled)


def incoming_context(header: HeaderLookup) -> tuple[TraceContext | None, bool]:
    """The caller's context (None: none usable) and whether it came from a
    valid `traceparent` (which an unsampled hop then forwards untouched)."""
    raw = header(TRACEPARENT)
    if raw is not None:
        parsed = parse_traceparent(raw)
        if parsed is not None:
            return parsed, True
    single = header(b"b3")
    if single is not None:
        return parse_b3_single(single), False
    return parse_b3_multi(header), False


def format_traceparent(trace_id: bytes, span_id: bytes, sampled: bool) -> bytes:
    """The version-00 `traceparent` value."""
    return b"00-%s-%s-%s" % (
        trace_id.hex().encode(),
        span_id.hex().encode(),
        b"01" if sampled else b"00",
    )


class Sampler:
    """The decision for traces this hop starts: a share `rate` in [0, 1]."""

    __slots__ = ("_threshold", "rate")

    def __init__(self, rate: float) -> None:
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"sampling rate must be within 0 and 1, not {rate}")
        self.rate = rate
        # The low 64 bits of a trace id under this threshold: sampled.
        self._threshold = min(int(rate * 2**64), 2**64)

    def samples(self, trace_id: bytes) -> bool:
        return int.from_bytes(trace_id[8:], "big") < self._threshold


class HopDecision:
    """What one hop does: its span (ids and parent) when it records one, and
    the `traceparent` to forward (None: forward the caller's untouched)."""

    __slots__ = ("forward", "parent_id", "sampled", "span_id", "trace_id")

    def __init__(
        self,
        trace_id: bytes,
        span_id: bytes,
        parent_id: bytes | None,
        sampled: bool,
        forward: bytes | None,
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.sampled = sampled
        self.forward = forward


def decide(
    header: HeaderLookup, sampler: Sampler, bits: Callable[[int], int] = random.getrandbits
) -> HopDecision:
    """This hop's span and the `traceparent` it forwards (see the module's
    theory of operation). `bits(n)` gives n random bits (injectable for tests)."""
    context, from_traceparent = incoming_context(header)
    span_id = bits(64).to_bytes(8, "big")
    while span_id == _ZERO_SPAN:
        span_id = bits(64).to_bytes(8, "big")
    if context is not None and context.trace_id:
        trace_id = context.trace_id
        parent_id = context.parent_id
        sampled = sampler.samples(trace_id) if context.sampled is None else context.sampled
    else:
        trace_id = bits(128).to_bytes(16, "big")
        while trace_id == _ZERO_TRACE:
            trace_id = bits(128).to_bytes(16, "big")
        parent_id = None
        sampled = (
            sampler.samples(trace_id)
            if context is None or context.sampled is None
            else context.sampled
        )
    if not sampled and from_traceparent:
        forward = None
    else:
        forward = format_traceparent(trace_id, span_id, sampled)
    return HopDecision(trace_id, span_id, parent_id, sampled, forward)
