"""W3C traceparent and B3 parsing, the sampling decision and what a hop forwards."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.core.trace import (
    Sampler,
    decide,
    format_traceparent,
    parse_b3_single,
    parse_traceparent,
)

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{SPAN}-01".encode()


def lookup(headers: dict[bytes, bytes]):  # type: ignore[no-untyped-def]
    return headers.get


def counter_bits():  # type: ignore[no-untyped-def]
    """Deterministic, never-zero ids: 1, 2, 3, ..."""
    seq = itertools.count(1)
    return lambda n: next(seq)


def test_valid_traceparent() -> None:
    ctx = parse_traceparent(VALID)
    assert ctx is not None
    assert ctx.trace_id.hex() == TRACE
    assert ctx.parent_id is not None and ctx.parent_id.hex() == SPAN
    assert ctx.sampled is True
    unsampled = parse_traceparent(VALID[:-2] + b"00")
    assert unsampled is not None and unsampled.sampled is False


@pytest.mark.parametrize(
    "value",
    [
        b"",
        VALID[:-1],
        VALID + b"x",  # version 00 is exactly 55 characters
        b"ff" + VALID[2:],  # version ff is invalid
        VALID.upper(),  # lower-case hex only
        f"00-{'0' * 32}-{SPAN}-01".encode(),  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01".encode(),  # all-zero parent id
        f"00_{TRACE}-{SPAN}-01".encode(),
        f"00-{TRACE[:-1]}g-{SPAN}-01".encode(),
        b"01" + VALID[2:] + b"x",  # a later version's extra part must follow a dash
    ],
)
def test_invalid_traceparent(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_future_version_with_extra_fields() -> None:
    ctx = parse_traceparent(b"01" + VALID[2:] + b"-what-comes-next")
    assert ctx is not None and ctx.trace_id.hex() == TRACE


@given(st.binary(max_size=80))
def test_traceparent_never_raises(value: bytes) -> None:
    parse_traceparent(value)
    parse_b3_single(value)


def test_b3_single() -> None:
    ctx = parse_b3_single(f"{TRACE}-{SPAN}-1".encode())
    assert ctx is not None and ctx.trace_id.hex() == TRACE and ctx.sampled is True
    short = parse_b3_single(f"{TRACE[16:]}-{SPAN}".encode())
    assert short is not None and short.trace_id.hex() == "0" * 16 + TRACE[16:]
    assert short.sampled is None
    deny = parse_b3_single(b"0")
    assert deny is not None and deny.sampled is False and deny.trace_id == b""
    assert parse_b3_single(f"{TRACE}-{SPAN}-x".encode()) is None
    assert parse_b3_single(b"nonsense") is None


def test_sampler_rate_bounds() -> None:
    never, always = Sampler(0.0), Sampler(1.0)
    for i in range(1, 200):
        tid = i.to_bytes(16, "big")
        assert not never.samples(tid)
        assert always.samples(tid)
    assert always.samples(b"\xff" * 16)
    with pytest.raises(ValueError):
        Sampler(1.5)


def test_sampler_share() -> None:
    import random

    rng = random.Random(7)
    sampler = Sampler(0.25)
    hits = sum(sampler.samples(rng.getrandbits(128).to_bytes(16, "big")) for _ in range(20_000))
    assert 0.23 < hits / 20_000 < 0.27


def test_caller_sampled_is_followed_and_child_forwarded() -> None:
    hop = decide(lookup({b"traceparent": VALID}), Sampler(0.0), counter_bits())
    assert hop.sampled
    assert hop.trace_id.hex() == TRACE
    assert hop.parent_id is not None and hop.parent_id.hex() == SPAN
    assert hop.forward == format_traceparent(hop.trace_id, hop.span_id, True)
    assert hop.span_id.hex() != SPAN


def test_caller_unsampled_is_forwarded_untouched() -> None:
    hop = decide(lookup({b"traceparent": VALID[:-2] + b"00"}), Sampler(1.0), counter_bits())
    assert not hop.sampled
    assert hop.forward is None


def test_new_trace_sampled_by_rate_and_decision_forwarded() -> None:
    on = decide(lookup({}), Sampler(1.0), counter_bits())
    assert on.sampled and on.parent_id is None
    assert on.forward is not None and on.forward.endswith(b"-01")
    off = decide(lookup({}), Sampler(0.0), counter_bits())
    assert not off.sampled
    # An unsampled new trace still tells the next hops not to sample.
    assert off.forward is not None and off.forward.endswith(b"-00")
    parsed = parse_traceparent(off.forward)
    assert parsed is not None and parsed.sampled is False


def test_malformed_traceparent_restarts_the_trace() -> None:
    hop = decide(lookup({b"traceparent": b"garbage"}), Sampler(1.0), counter_bits())
    assert hop.parent_id is None and hop.forward is not None


def test_b3_in() -> None:
    single = decide(lookup({b"b3": f"{TRACE}-{SPAN}-1".encode()}), Sampler(0.0), counter_bits())
    assert single.sampled and single.trace_id.hex() == TRACE
    assert single.parent_id is not None and single.parent_id.hex() == SPAN
    assert single.forward is not None and single.forward.startswith(f"00-{TRACE}-".encode())
    multi = decide(
        lookup(
            {
                b"x-b3-traceid": TRACE.encode(),
                b"x-b3-spanid": SPAN.encode(),
                b"x-b3-sampled": b"0",
            }
        ),
        Sampler(1.0),
        counter_bits(),
    )
    assert not multi.sampled and multi.trace_id.hex() == TRACE
    # B3 in, W3C out: the decision goes on in a traceparent.
    assert multi.forward is not None and multi.forward.endswith(b"-00")
    deny = decide(lookup({b"b3": b"0"}), Sampler(1.0), counter_bits())
    assert not deny.sampled and deny.parent_id is None


def test_traceparent_wins_over_b3() -> None:
    hop = decide(
        lookup({b"traceparent": VALID, b"b3": f"{'1' * 32}-{SPAN}-0".encode()}),
        Sampler(0.0),
        counter_bits(),
    )
    assert hop.trace_id.hex() == TRACE and hop.sampled
