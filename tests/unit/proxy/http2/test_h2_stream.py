"""In-memory tests of the HTTP/2 proxy's stream plumbing: h2 connections joined by byte copies.

No sockets: a real h2 client talks to the proxy's downstream connection, and
the proxy's upstream connection talks to a real h2 server, all by passing
`data_to_send()` across by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import h2.config
import h2.connection
import h2.errors
import h2.events

from tulle.codec.http2 import Header
from tulle.core.outcome import CANCELLED, FAILURE
from tulle.proxy.errors import ProxyError
from tulle.proxy.http2.connection import H2Limits, Outbox
from tulle.proxy.http2.dispatch import H2Counters, Routed
from tulle.proxy.http2.h2py import new_h2_connection
from tulle.proxy.http2.stream import HalfStream, ProxyStream, error_response, pump

REQUEST: list[Header] = [
    (b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc"), (b":path", b"/"),
]  # fmt: skip


def peer(client_side: bool) -> h2.connection.H2Connection:
    config = h2.config.H2Configuration(client_side=client_side, header_encoding=None)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    return conn


def exchange(a: h2.connection.H2Connection, b: h2.connection.H2Connection) -> list[object]:
    """Pass bytes both ways until quiet; the events `b` saw last round included."""
    events: list[object] = []
    for _ in range(10):
        out_a, out_b = a.data_to_send(), b.data_to_send()
        if not out_a and not out_b:
            break
        if out_a:
            events += b.receive_data(out_a)
        if out_b:
            events += a.receive_data(out_b)
    return events


class Side:
    """A DownSide/UpSide over a bare h2 connection."""

    def __init__(self, conn: h2.connection.H2Connection) -> None:
        self.h2 = conn
        self.dirty = False
        self.writable = True
        self.forgotten: list[int] = []

    def mark_dirty(self) -> None:
        self.dirty = True

    def forget_stream(self, stream_id: int) -> None:
        self.forgotten.append(stream_id)

    def release_stream(self, stream_id: int) -> None:
        self.forgotten.append(stream_id)

    def flush_now(self) -> None:
        return None


def test_pump_sends_no_more_than_the_window_and_resumes() -> None:
    client, server = peer(True), new_h2_connection(client_side=False, limits=H2Limits())
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, server)
    server.send_headers(1, [(b":status", b"200")])
    half = HalfStream()
    half.chunks.append((b"r" * 100_000, 100_000))
    half.buffered = 100_000
    half.end = True
    sent = pump(half, server, 1)
    assert sent == 65_535  # the client's default stream window
    assert half.buffered == 100_000 - 65_535 and not half.end_sent
    events = exchange(server, client)
    received = sum(len(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert received == 65_535
    client.acknowledge_received_data(65_535, 1)
    exchange(client, server)
    assert pump(half, server, 1) == 100_000 - 65_535
    assert half.end_sent and not half.chunks


def test_pump_splits_by_frame_size_and_ends_with_trailers() -> None:
    client, server = peer(True), new_h2_connection(client_side=False, limits=H2Limits())
    client.send_headers(1, REQUEST, end_stream=True)
    exchange(client, server)
    server.send_headers(1, [(b":status", b"200")])
    half = HalfStream()
    half.chunks.append((b"d" * 40_000, 40_000))
    half.end = True
    half.trailers = [(b"grpc-status", b"0")]
    assert pump(half, server, 1) == 40_000
    events = exchange(server, client)
    sizes = [len(e.data) for e in events if isinstance(e, h2.events.DataReceived)]
    assert sizes == [16_384, 16_384, 40_000 - 32_768]
    trailers = [e for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers and trailers[0].headers == [(b"grpc-status", b"0")]


Joined = tuple[
    ProxyStream, h2.connection.H2Connection, Side, Side, h2.connection.H2Connection,
    list[tuple[object, ...]],
]  # fmt: skip


async def _joined_stream() -> Joined:
    loop = asyncio.get_running_loop()
    client = peer(True)
    down = Side(new_h2_connection(client_side=False, limits=H2Limits()))
    exchange(client, down.h2)
    up = Side(new_h2_connection(client_side=True, limits=H2Limits()))
    upstream = peer(False)
    exchange(up.h2, upstream)
    done: list[tuple[object, ...]] = []
    client.send_headers(1, REQUEST)
    exchange(client, down.h2)
    routed = Routed(("127.0.0.1", 1), done=lambda *args: done.append(args))
    stream = ProxyStream(down, 1, routed, REQUEST, is_grpc=False, outbox=Outbox(),
                         counters=H2Counters(), loop=loop)  # fmt: skip
    up.h2.send_headers(1, REQUEST)
    stream.bind_upstream(up, 1)
    return stream, client, down, up, upstream, done


def _feed(stream: ProxyStream, side: Side, data: bytes, *, request: bool) -> None:
    """Deliver DATA events the way the protocols do."""
    events = side.h2.receive_data(data)
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            if request:
                stream.on_request_data(event.data, event.flow_controlled_length)
            else:
                stream.on_response_data(event.data, event.flow_controlled_length)
        elif isinstance(event, h2.events.StreamEnded):
            if request:
                stream.on_request_end(None)
            else:
                stream.on_response_end(None)
        elif isinstance(event, h2.events.ResponseReceived):
            stream.on_response_headers(list(event.headers), event.stream_ended is not None)
        elif isinstance(event, h2.events.WindowUpdated):
            stream.pump_request()


def test_request_body_waits_for_the_upstream_window_and_is_acknowledged_only_when_sent() -> None:
    async def scenario() -> None:
        stream, client, down, up, upstream, _ = await _joined_stream()
        body = b"q" * 200_000
        for offset in range(0, len(body), 16_384):
            client.send_data(1, body[offset : offset + 16_384])
        _feed(stream, down, client.data_to_send(), request=True)
        # Only the upstream's default 64 KiB window went out; the rest waits here.
        assert stream.request.buffered == 200_000 - 65_535
        got = upstream.receive_data(up.h2.data_to_send())
        assert sum(len(e.data) for e in got if isinstance(e, h2.events.DataReceived)) == 65_535
        # The client got window back for what was sent on, not for what waits.
        client_window_before = client.local_flow_control_window(1)
        client.receive_data(down.h2.data_to_send())
        regained = client.local_flow_control_window(1) - client_window_before
        assert regained <= 65_535
        # The upstream reads: the window opens and the next part flows.
        upstream.acknowledge_received_data(65_535, 1)
        _feed(stream, up, upstream.data_to_send(), request=False)
        assert stream.request.buffered == 200_000 - 2 * 65_535

    asyncio.run(scenario())


def test_complete_response_reports_once_and_releases_both_sides() -> None:
    async def scenario() -> None:
        stream, client, down, up, upstream, done = await _joined_stream()
        client.end_stream(1)
        _feed(stream, down, client.data_to_send(), request=True)
        upstream.receive_data(up.h2.data_to_send())
        upstream.send_headers(1, [(b":status", b"503")])
        upstream.send_data(1, b"busy", end_stream=True)
        _feed(stream, up, upstream.data_to_send(), request=False)
        assert stream.closed
        assert down.forgotten == [1] and up.forgotten == [1]
        assert len(done) == 1
        status, grpc, latency, outcome = done[0]
        assert (status, grpc, outcome) == (503, None, FAILURE)
        assert isinstance(latency, float) and latency >= 0

    asyncio.run(scenario())


def test_a_client_reset_is_a_cancellation_not_a_failure() -> None:
    """RST_STREAM from the client: the upstream is cancelled, the endpoint not blamed."""

    async def scenario() -> None:
        stream, client, down, up, upstream, done = await _joined_stream()
        client.end_stream(1)
        _feed(stream, down, client.data_to_send(), request=True)
        upstream.receive_data(up.h2.data_to_send())
        upstream.send_headers(1, [(b":status", b"200")])
        upstream.send_data(1, b"part of it")
        _feed(stream, up, upstream.data_to_send(), request=False)
        stream.on_client_reset()
        events = upstream.receive_data(up.h2.data_to_send())
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert resets and resets[0].error_code == h2.errors.ErrorCodes.CANCEL
        assert len(done) == 1 and done[0][3] is CANCELLED

    asyncio.run(scenario())


def test_failure_before_a_response_is_a_grpc_status() -> None:
    async def scenario() -> None:
        stream, client, down, _, _, done = await _joined_stream()
        stream.is_grpc = True
        stream.fail(ProxyError.RESPONSE_TIMEOUT, "deadline exceeded in proxy")
        events = client.receive_data(down.h2.data_to_send())
        response = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert response and (b"grpc-status", b"4") in response[0].headers
        assert (b"tulle-proxy-error", b"response-timeout") in response[0].headers
        assert done and done[0][1] == 4 and done[0][3] is FAILURE

    asyncio.run(scenario())


def _header_map(headers: Sequence[Header]) -> dict[bytes, bytes]:
    return dict(headers)


def test_error_responses() -> None:
    headers, body = error_response(ProxyError.NO_ENDPOINTS, True, "books has no endpoints")
    grpc = _header_map(headers)
    assert grpc[b":status"] == b"200" and grpc[b"grpc-status"] == b"14"
    assert grpc[b"tulle-proxy-error"] == b"no-endpoints" and body == b""
    headers, body = error_response(ProxyError.RESPONSE_TIMEOUT, False, "")
    plain = _header_map(headers)
    assert plain[b":status"] == b"504" and plain[b"content-length"] == str(len(body)).encode()
    headers, _ = error_response(ProxyError.CONNECT_ERROR, True, "caf\u00e9 100%")
    assert _header_map(headers)[b"grpc-message"] == b"caf? 100%25"


def test_upstream_reset_mid_response_resets_the_client_stream_with_its_code() -> None:
    async def scenario() -> None:
        stream, client, down, up, upstream, done = await _joined_stream()
        client.end_stream(1)
        _feed(stream, down, client.data_to_send(), request=True)
        upstream.receive_data(up.h2.data_to_send())
        upstream.send_headers(1, [(b":status", b"200")])
        upstream.send_data(1, b"partial")
        upstream.reset_stream(1, h2.errors.ErrorCodes.INTERNAL_ERROR)
        for event in up.h2.receive_data(upstream.data_to_send()):
            if isinstance(event, h2.events.ResponseReceived):
                stream.on_response_headers(list(event.headers), False)
            elif isinstance(event, h2.events.DataReceived):
                stream.on_response_data(event.data, event.flow_controlled_length)
            elif isinstance(event, h2.events.StreamReset):
                stream.on_upstream_reset(event.error_code)
        events = client.receive_data(down.h2.data_to_send())
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert resets and resets[0].error_code == h2.errors.ErrorCodes.INTERNAL_ERROR
        assert done and done[0][3] is FAILURE

    asyncio.run(scenario())


def test_upstream_reset_before_a_response_becomes_a_502() -> None:
    async def scenario() -> None:
        stream, client, down, up, upstream, _ = await _joined_stream()
        client.end_stream(1)
        _feed(stream, down, client.data_to_send(), request=True)
        upstream.receive_data(up.h2.data_to_send())
        upstream.reset_stream(1, h2.errors.ErrorCodes.REFUSED_STREAM)
        for event in up.h2.receive_data(upstream.data_to_send()):
            if isinstance(event, h2.events.StreamReset):
                stream.on_upstream_reset(event.error_code)
        events = client.receive_data(down.h2.data_to_send())
        response = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert response
        headers = dict(response[0].headers)
        assert headers[b":status"] == b"502"
        assert headers[b"tulle-proxy-error"] == b"upstream-reset"

    asyncio.run(scenario())
