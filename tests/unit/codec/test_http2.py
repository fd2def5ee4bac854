"""Unit and property tests for tulle.codec.http2 (preface, request heads, gRPC, floods)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.codec.http2 import (
    PREFACE,
    FloodGuard,
    FloodKind,
    FloodLimit,
    GrpcStatus,
    MalformedRequest,
    PrefaceMatch,
    encode_grpc_timeout,
    forward_headers,
    grpc_status_of,
    is_grpc_content_type,
    is_success,
    match_preface,
    parse_grpc_timeout,
    parse_request_head,
    without_client_id,
    without_hop_by_hop,
)

GET = [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"Books:80"), (b":path", b"/")]


# -- preface ---------------------------------------------------------------------


def test_preface_whole_and_more() -> None:
    assert match_preface(PREFACE) is PrefaceMatch.YES
    assert match_preface(PREFACE + b"\x00\x00\x00\x04") is PrefaceMatch.YES


@given(st.integers(min_value=0, max_value=len(PREFACE) - 1))
def test_every_strict_prefix_is_partial(n: int) -> None:
    assert match_preface(PREFACE[:n]) is PrefaceMatch.PARTIAL


@given(st.binary(min_size=1, max_size=40))
def test_other_bytes_are_not_the_preface(data: bytes) -> None:
    expected = PREFACE.startswith(data[: len(PREFACE)]) or data.startswith(PREFACE)
    assert (match_preface(data) is not PrefaceMatch.NO) == expected


# -- request heads -----------------------------------------------------------------


def test_request_head_extracts_routing_fields() -> None:
    head = parse_request_head(
        [*GET, (b"content-type", b"application/grpc+proto"), (b"grpc-timeout", b"250m")]
    )
    assert (head.method, head.scheme, head.path) == ("GET", "http", "/")
    assert head.authority == "books:80"
    assert head.is_grpc
    assert head.grpc_timeout_s == pytest.approx(0.25)


def test_host_header_stands_in_for_missing_authority() -> None:
    head = parse_request_head([(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"),
                               (b"host", b"web")])  # fmt: skip
    assert head.authority == "web"


def test_connect_needs_authority_only() -> None:
    head = parse_request_head([(b":method", b"CONNECT"), (b":authority", b"db:5432")])
    assert head.method == "CONNECT"
    with pytest.raises(MalformedRequest):
        parse_request_head([(b":method", b"CONNECT"), (b":authority", b"a"), (b":path", b"/")])


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([(b":scheme", b"http"), (b":path", b"/")], "missing :method"),
        ([(b":method", b"GET"), (b":path", b"/")], "missing :scheme"),
        ([*GET, (b":method", b"GET")], "repeated"),
        ([(b"x", b"1"), *GET], "after a regular header"),
        ([*GET, (b":status", b"200")], "unknown request pseudo-header"),
        ([*GET, (b"connection", b"close")], "connection-specific"),
        ([*GET, (b"transfer-encoding", b"chunked")], "connection-specific"),
        ([*GET, (b"te", b"gzip")], "te header"),
    ],
)
def test_malformed_request_heads(headers: list[tuple[bytes, bytes]], reason: str) -> None:
    with pytest.raises(MalformedRequest, match=reason):
        parse_request_head(headers)


def test_te_trailers_is_allowed() -> None:
    assert not parse_request_head([*GET, (b"te", b"trailers")]).is_grpc


_token = st.binary(min_size=1, max_size=12).filter(lambda b: not b.startswith(b":"))


@given(st.lists(st.tuples(_token, st.binary(max_size=20)), max_size=8))
def test_parse_request_head_never_fails_unexpectedly(extra: list[tuple[bytes, bytes]]) -> None:
    try:
        head = parse_request_head([*GET, *extra])
    except MalformedRequest:
        return
    assert head.method == "GET"


def test_without_hop_by_hop_keeps_the_same_list_when_clean() -> None:
    assert without_hop_by_hop(GET) is GET
    dirty = [*GET, (b"connection", b"x"), (b"keep-alive", b"5"), (b"x-a", b"1")]
    assert list(without_hop_by_hop(dirty)) == [*GET, (b"x-a", b"1")]


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [(b"application/grpc", True), (b"application/grpc+proto", True),
     (b"application/grpc;charset=x", True), (b"application/grpc-web", False),
     (b"application/json", False), (b"", False)],
)  # fmt: skip
def test_grpc_content_types(content_type: bytes, expected: bool) -> None:
    assert is_grpc_content_type(content_type) is expected


# -- gRPC timeouts and statuses ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(b"1H", 3600.0), (b"2M", 120.0), (b"3S", 3.0), (b"250m", 0.25), (b"5u", 5e-6),
     (b"7n", 7e-9), (b"99999999S", 99999999.0)],
)  # fmt: skip
def test_grpc_timeout_units(value: bytes, seconds: float) -> None:
    assert parse_grpc_timeout(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [b"", b"S", b"10", b"10x", b"-1S", b"123456789S", b"1.5S"])
def test_bad_grpc_timeouts_are_ignored(value: bytes) -> None:
    assert parse_grpc_timeout(value) is None


@given(st.binary(max_size=12))
def test_grpc_timeout_parser_never_raises(value: bytes) -> None:
    result = parse_grpc_timeout(value)
    assert result is None or result >= 0


@given(st.floats(min_value=0, max_value=3600 * 99_999_999, allow_nan=False))
def test_grpc_timeout_round_trip(seconds: float) -> None:
    encoded = encode_grpc_timeout(seconds)
    assert len(encoded) <= 9
    parsed = parse_grpc_timeout(encoded)
    assert parsed is not None
    # Within one unit of the chosen precision, and never more than 1 % off beyond 1 us.
    assert abs(parsed - seconds) <= max(1e-6, seconds * 0.01)


def test_grpc_status_of() -> None:
    assert grpc_status_of([(b"grpc-status", b"0")]) == 0
    assert grpc_status_of([(b"x", b"1"), (b"grpc-status", b"14")]) == 14
    assert grpc_status_of([(b"grpc-status", b"oops")]) is None
    assert grpc_status_of([]) is None


def test_classification() -> None:
    assert is_success(200, GrpcStatus.OK)
    assert not is_success(200, GrpcStatus.UNAVAILABLE)
    assert not is_success(200, GrpcStatus.NOT_FOUND)
    assert is_success(404, None)
    assert not is_success(503, None)
    assert not is_success(0, None)


# -- floods ----------------------------------------------------------------------------


def test_flood_guard_allows_a_burst_then_trips() -> None:
    guard = FloodGuard({FloodKind.PING: FloodLimit(burst=10, rate_per_s=1)})
    assert not any(guard.record(FloodKind.PING, 100.0) for _ in range(10))
    assert guard.record(FloodKind.PING, 100.0)


def test_flood_guard_drains_over_time_and_kinds_are_separate() -> None:
    guard = FloodGuard({FloodKind.RESET: FloodLimit(burst=5, rate_per_s=10)})
    for _ in range(5):
        guard.record(FloodKind.RESET, 1.0)
    assert not guard.record(FloodKind.RESET, 2.0)  # 1 s later the bucket has drained
    assert not guard.record(FloodKind.SETTINGS, 2.0)


@given(st.lists(st.floats(min_value=0.02, max_value=1.0), min_size=1, max_size=300))
def test_steady_traffic_below_the_rate_never_trips(gaps: list[float]) -> None:
    guard = FloodGuard({FloodKind.PING: FloodLimit(burst=3, rate_per_s=50)})
    now = 0.0
    for gap in gaps:
        now += gap
        assert not guard.record(FloodKind.PING, now)


@given(st.integers(min_value=1, max_value=1000))
def test_a_burst_over_the_limit_always_trips(extra: int) -> None:
    guard = FloodGuard({FloodKind.EMPTY_DATA: FloodLimit(burst=100, rate_per_s=20)})
    tripped = [guard.record(FloodKind.EMPTY_DATA, 5.0) for _ in range(100 + extra)]
    assert tripped[-1] and not any(tripped[:100])


# -- the path and the identity the upstream sees ----------------------------------


def test_request_head_path_is_normalised() -> None:
    head = parse_request_head([*GET[:3], (b":path", b"/public/%2e%2E/admin?q=/../x")])
    assert head.path == "/admin?q=/../x" and head.path_rewritten and not head.path_problem
    same = parse_request_head(GET)
    assert same.path == "/" and not same.path_rewritten


@pytest.mark.parametrize("path", [b"/a/%2f../b", b"/a\\b", b"/%c0%ae%c0%ae/admin", b"/x#y"])
def test_request_head_names_a_refused_path(path: bytes) -> None:
    head = parse_request_head([*GET[:3], (b":path", path)])
    assert head.path_problem


def test_forward_headers_outbound_untouched_is_not_copied() -> None:
    headers = [*GET, (b"tulle-client-id", b"spiffe://x")]
    assert forward_headers(headers, None, None) is headers


def test_forward_headers_replaces_path_only() -> None:
    headers = [*GET, (b"x-a", b"1")]
    out = forward_headers(headers, b"/admin", None)
    assert list(out) == [*GET[:3], (b":path", b"/admin"), (b"x-a", b"1")]


@pytest.mark.parametrize("identity", [b"", b"spiffe://tulle.local/ns/default/sa/web"])
def test_forward_headers_inbound_keeps_only_the_verified_identity(identity: bytes) -> None:
    forged = b"spiffe://tulle.local/ns/default/sa/admin"
    headers = [*GET, (b"tulle-client-id", forged), (b"x-a", b"1"), (b"tulle-client-id", forged)]
    out = list(forward_headers(headers, None, identity))
    ids = [v for n, v in out if n == b"tulle-client-id"]
    assert ids == ([identity] if identity else [])
    assert (b"x-a", b"1") in out and out[:4] == GET


def test_trailers_lose_the_callers_identity() -> None:
    clean = [(b"grpc-status", b"0")]
    assert without_client_id(clean) is clean
    assert without_client_id([*clean, (b"tulle-client-id", b"x")]) == clean
