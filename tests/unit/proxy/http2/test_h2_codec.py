"""Both HTTP/2 codecs (native nghttp2 and pure-Python h2) against h2 as the peer, and fuzzing.

Every behaviour test runs on both codecs. Under CI (`CI` set) the native
codec must be there: a build that silently fell back would test only h2.
Hostile bytes fuzzed into both ends of the native codec must give events or
a ProtocolError with a GOAWAY queued, never a crash.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tulle.proxy.http2 import codec as codec_module
from tulle.proxy.http2.codec import (
    DATA,
    DATA_END,
    EMPTY_DATA,
    END,
    REQUEST,
    RESET,
    RESPONSE,
    TRAILERS,
    H2Codec,
    H2Limits,
)
from tulle.proxy.http2.h2py import PyH2Codec

NATIVE = codec_module.NATIVE
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST_HEADERS = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"web"),
    (b":path", b"/"),
]
LIMITS = H2Limits()


def test_ci_builds_the_native_codec() -> None:
    if os.environ.get("CI") and NATIVE is None:
        pytest.fail(f"native HTTP/2 codec missing under CI: {codec_module.CODEC_DETAIL}")
    if NATIVE is None:
        pytest.skip(f"native codec not built: {codec_module.CODEC_DETAIL}")
    assert codec_module.CODEC in ("nghttp2", "python")


def make(kind: str, client_side: bool) -> H2Codec:
    if kind == "python":
        return PyH2Codec(client_side=client_side, limits=LIMITS)
    if NATIVE is None:
        pytest.skip("native codec not built")
    session: H2Codec = NATIVE.Session(
        client_side,
        LIMITS.max_concurrent_streams,
        LIMITS.stream_window,
        LIMITS.connection_window,
        LIMITS.max_frame_size,
        LIMITS.max_header_list_size,
    )
    return session


@pytest.fixture(params=["native", "python"])
def kind(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param


def h2_peer(client_side: bool) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


def kinds(events: list[tuple[int, int, object, object]]) -> list[int]:
    return [e[0] for e in events]


def test_request_in_response_out_in_order(kind: str) -> None:
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    peer.send_headers(1, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    peer.send_data(1, b"body", end_stream=True)
    events = server.receive_data(peer.data_to_send())
    request = [e for e in events if e[0] == REQUEST]
    assert request and request[0][1] == 1 and request[0][3] is False
    # DATA with END_STREAM is one event, DATA_END: no END of its own follows.
    assert (DATA_END, 1, b"body", 4) in events
    assert [e for e in events if e[0] in (DATA, END)] == []
    server.acknowledge_received_data(4, 1)
    server.send_headers(1, [(b":status", b"200")])
    server.send_data(1, b"hello")
    server.send_headers(1, [(b"grpc-status", b"0")], end_stream=True)
    got = peer.receive_data(server.data_to_send())
    names = [type(e).__name__ for e in got if not isinstance(e, h2.events.RemoteSettingsChanged)]
    assert names[-4:] == ["ResponseReceived", "DataReceived", "TrailersReceived", "StreamEnded"]


def test_data_then_an_empty_end_stays_data_and_end(kind: str) -> None:
    """Only DATA whose bytes end the stream fold: an empty DATA frame ending it,
    after DATA in the same read, is DATA then END (for the same stream only)."""
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    peer.send_headers(1, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    peer.send_headers(3, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    peer.send_data(1, b"one")
    peer.send_data(3, b"three", end_stream=True)
    peer.send_data(1, b"", end_stream=True)
    events = server.receive_data(peer.data_to_send())
    # (h2 also reports the empty frame as DATA of b"", which the proxy ignores.)
    body = [e for e in events if e[0] in (DATA, DATA_END, END) and e[2] != b""]
    assert body == [
        (DATA, 1, b"one", 3),
        (DATA_END, 3, b"three", 5),
        (END, 1, None, None),
    ]


def test_a_reset_leaves_after_the_answer_asked_for_before_it(kind: str) -> None:
    """A refusal answered while the client still sends: answer, then RST (h2's order)."""
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    peer.send_headers(1, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    server.receive_data(peer.data_to_send())
    server.send_headers(1, [(b":status", b"503")], end_stream=False)
    server.send_data(1, b"no endpoints", end_stream=True)
    server.reset_stream(1, 0)


def test_client_request_with_a_body_before_the_peer_settings(kind: str) -> None:
    client = make(kind, client_side=True)
    peer = h2_peer(client_side=False)
    stream_id = client.send_request([(b":method", b"POST"), *REQUEST_HEADERS[1:]], False)
    assert client.local_flow_control_window(stream_id) == 65_535
    client.send_data(stream_id, b"abc")
    client.end_stream(stream_id)
    got = peer.receive_data(client.data_to_send())
    assert any(isinstance(e, h2.events.RequestReceived) for e in got)
    assert b"".join(e.data for e in got if isinstance(e, h2.events.DataReceived)) == b"abc"
    peer.send_headers(stream_id, [(b":status", b"200")], end_stream=True)
    events = client.receive_data(peer.data_to_send())
    assert (RESPONSE, stream_id) in [(e[0], e[1]) for e in events]
    assert (END, stream_id, None, None) in events


def test_peer_reset_and_trailers_and_empty_data(kind: str) -> None:
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    peer.send_headers(1, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    peer.send_data(1, b"")
    peer.send_headers(3, [(b":method", b"POST"), *REQUEST_HEADERS[1:]])
    peer.send_headers(3, [(b"x-trailer", b"1")], end_stream=True)
    peer.reset_stream(1, 8)
    events = server.receive_data(peer.data_to_send())
    assert (EMPTY_DATA, 1, None, None) in events
    assert (TRAILERS, 3, [(b"x-trailer", b"1")], None) in events
    assert (RESET, 1, 8, None) in events


def test_close_connection_sends_what_was_asked_before(kind: str) -> None:
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    peer.send_headers(1, REQUEST_HEADERS, end_stream=True)
    server.receive_data(peer.data_to_send())
    server.send_headers(1, [(b":status", b"204")], end_stream=True)
    server.close_connection(0)
    got = peer.receive_data(server.data_to_send())
    names = [type(e).__name__ for e in got]
    assert names.index("ResponseReceived") < names.index("ConnectionTerminated")


def test_sending_on_a_closed_stream_is_an_h2_error(kind: str) -> None:
    server = make(kind, client_side=False)
    with pytest.raises(h2.exceptions.H2Error):
        server.send_headers(7, [(b":status", b"200")])
    with pytest.raises(h2.exceptions.H2Error):
        server.reset_stream(7, 0)


def goaway_code_in(data: bytes) -> int | None:
    """The error code of the last GOAWAY frame in `data`, None without one."""
    code = None
    offset = 0
    while offset + 9 <= len(data):
        length = int.from_bytes(data[offset : offset + 3], "big")
        frame_type = data[offset + 3]
        if frame_type == 0x7 and offset + 9 + 8 <= len(data):
            code = struct.unpack("!I", data[offset + 13 : offset + 17])[0]
        offset += 9 + length
    return code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x", 0x1),  # DATA on stream 0
        (b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + (2**31 - 1).to_bytes(4, "big") * 1, None),
    ],
)
def test_connection_errors_end_with_goaway(kind: str, frame: bytes, code: int | None) -> None:
    server = make(kind, client_side=False)
    peer = h2_peer(client_side=True)
    server.receive_data(peer.data_to_send())
    server.data_to_send()
    if code is None:
        # Two window increments past 2^31-1: FLOW_CONTROL_ERROR.
        frame = frame + frame
        code = 0x3
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(frame)
    assert goaway_code_in(server.data_to_send()) == code


def test_malformed_request_is_a_connection_error(kind: str) -> None:
    """h2 made a bad pseudo-header a connection error; the native codec keeps that."""
    server = make(kind, client_side=False)
    peer = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False
        )
    )
    peer.initiate_connection()
    peer.send_headers(
        1, [(b":method", b"GET"), (b":bogus", b"x"), (b":path", b"/")], end_stream=True
    )
    with pytest.raises(h2.exceptions.ProtocolError):
        server.receive_data(peer.data_to_send())
    assert goaway_code_in(server.data_to_send()) == 0x1


# -- fuzzing the native entry points -------------------------------------------------

_FRAME = st.tuples(
    st.integers(0, 0xD),  # type, including unknown ones
    st.integers(0, 255),  # flags
    st.sampled_from([0, 1, 2, 3, 5, 2**31 - 1]),  # stream id
    st.binary(max_size=64),  # payload
)


def _encode(frames: list[tuple[int, int, int, bytes]]) -> bytes:
    return b"".join(
        len(p).to_bytes(3, "big") + bytes([t, f]) + s.to_bytes(4, "big") + p
        for t, f, s, p in frames
    )


def _feed(session: H2Codec, data: bytes) -> None:
    for start in range(0, len(data), 97):
        try:
            events = session.receive_data(data[start : start + 97])
        except h2.exceptions.ProtocolError:
            out = session.data_to_send()
            assert goaway_code_in(out) not in (None, 0)
            return
        for event in events:
            assert isinstance(event, tuple) and len(event) == 4
        session.data_to_send()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_FRAME, max_size=12), raw=st.binary(max_size=64))
def test_fuzz_native_server(frames: list[tuple[int, int, int, bytes]], raw: bytes) -> None:
    if NATIVE is None:
        pytest.skip("native codec not built")
    server = make("native", client_side=False)
    _feed(server, PREFACE + _encode(frames) + raw)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=st.lists(_FRAME, max_size=12), raw=st.binary(max_size=64))
def test_fuzz_native_client(frames: list[tuple[int, int, int, bytes]], raw: bytes) -> None:
    if NATIVE is None:
        pytest.skip("native codec not built")
    client = make("native", client_side=True)
    client.send_request(REQUEST_HEADERS, True)
    client.data_to_send()
    _feed(client, _encode(frames) + raw)


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=256))
def test_fuzz_native_server_raw_bytes(raw: bytes) -> None:
    if NATIVE is None:
        pytest.skip("native codec not built")
    _feed(make("native", client_side=False), raw)


def test_rapid_reset_is_judged_by_the_proxy_not_the_library() -> None:
    """nghttp2's own limiter (1000 resets, then GOAWAY INTERNAL_ERROR) would cut a
    flood before the proxy's FloodGuard answers with ENHANCE_YOUR_CALM; it is
    set well above the guard, so 3,000 resets reach the proxy as events."""
    if NATIVE is None:
        pytest.skip("native codec not built")
    server = make("native", client_side=False)
    peer = h2_peer(client_side=True)
    server.receive_data(peer.data_to_send())
    resets = 0
    for i in range(3000):
        stream_id = 2 * i + 1
        peer.send_headers(stream_id, REQUEST_HEADERS, end_stream=True)
        peer.reset_stream(stream_id, 8)
        resets += sum(1 for e in server.receive_data(peer.data_to_send()) if e[0] == RESET)
        server.data_to_send()
    assert resets == 3000


def test_admin_metrics_say_which_codec_runs() -> None:
    from tulle.proxy.admin import _codec_metric

    expected = "nghttp2" if NATIVE is not None and codec_module.CODEC == "nghttp2" else "python"
    assert f'tulle_http2_codec_info{{codec="{expected}"}} 1' in _codec_metric()


def test_fallback_is_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tulle.proxy.http2 import connection

    monkeypatch.setattr(connection, "NATIVE", None)
    monkeypatch.setattr(connection, "_fallback_logged", False)
    with caplog.at_level("WARNING", logger="tulle.proxy.http2.connection"):
        first = connection.new_codec(client_side=False, limits=LIMITS)
        connection.new_codec(client_side=True, limits=LIMITS)
    assert isinstance(first, PyH2Codec)
    assert len([r for r in caplog.records if "pure-Python codec" in r.getMessage()]) == 1
