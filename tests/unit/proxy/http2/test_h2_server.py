"""H2ServerProtocol over a fake transport: refusals, floods and malformed input, no sockets.

Every test runs on both codecs: the native one (when built) and h2's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from hyperframe.frame import PingFrame

from tulle.codec.http2 import PREFACE, FloodKind, FloodLimit
from tulle.proxy.http2 import H2ClientPool, H2ServerProtocol, StaticDispatcher
from tulle.proxy.http2 import connection as h2_connection


@pytest.fixture(autouse=True, params=["native", "python"])
def codec(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(h2_connection, "NATIVE", None)
    elif h2_connection.NATIVE is None:
        pytest.skip("native HTTP/2 codec not built")
    yield request.param


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: object = None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def get_extra_info(self, name: str, default: object = None) -> object:
        return default

    def take(self) -> bytes:
        data = bytes(self.written)
        self.written.clear()
        return data


def client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    return conn


async def start(
    initial: bytes, flood_limits: dict[FloodKind, FloodLimit] | None = None
) -> tuple[H2ServerProtocol, FakeTransport]:
    protocol = H2ServerProtocol(
        StaticDispatcher({"empty": []}),
        H2ClientPool(),
        initial_data=initial,
        flood_limits=flood_limits,
    )
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def test_handover_with_preface_and_first_request_in_one_read() -> None:
    async def scenario() -> None:
        peer = client()
        peer.send_headers(
            1,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"empty"),
             (b":path", b"/"), (b"content-type", b"application/grpc")],
            end_stream=True,
        )  # fmt: skip
        first = peer.data_to_send()
        assert first.startswith(PREFACE)
        protocol, transport = await start(first)
        events = peer.receive_data(transport.take())
        response = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert response, events
        headers = dict(response[0].headers)
        assert headers[b"grpc-status"] == b"14"
        assert headers[b"tulle-proxy-error"] == b"no-endpoints"
        assert protocol.counters.proxy_errors == 1
        assert not transport.closed

    asyncio.run(scenario())


def test_ping_flood_ends_with_enhance_your_calm_and_few_acks() -> None:
    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        peer.receive_data(transport.take())
        flood = PingFrame(0)
        flood.opaque_data = b"floodpin"
        protocol.data_received(flood.serialize() * 5000)
        events = peer.receive_data(transport.take())
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        assert not any(isinstance(e, h2.events.PingAckReceived) for e in events)
        assert transport.closed
        assert protocol.counters.flood_goaways == 1

    asyncio.run(scenario())


REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")]


def refused_streams(
    peer: h2.connection.H2Connection, count: int, reset: bool, first: int = 1
) -> bytes:
    """`count` requests to a service without endpoints, each reset at once if `reset`."""
    for i in range(count):
        stream_id = first + 2 * i
        headers = [*REQUEST, (b":authority", b"empty")]
        peer.send_headers(stream_id, headers, end_stream=True)
        if reset:
            peer.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
    return peer.data_to_send()


def answered_in_batches(
    protocol: H2ServerProtocol,
    transport: FakeTransport,
    peer: h2.connection.H2Connection,
    total: int,
) -> list[h2.events.Event]:
    """Refused requests without resets, 200 at a time (the client's stream limit
    is 250), until `total` or the connection ends; every event the client saw."""
    seen: list[h2.events.Event] = []
    for batch in range(total // 200):
        protocol.data_received(refused_streams(peer, 200, reset=False, first=400 * batch + 1))
        seen += peer.receive_data(transport.take())
        if transport.closed:
            break
    return seen


def test_rapid_reset_of_refused_streams_is_a_flood() -> None:
    """HEADERS + RST_STREAM to a refused authority: cut within a bounded number of
    streams, with no answer built for streams the client had already reset."""

    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        peer.receive_data(transport.take())
        protocol.data_received(refused_streams(peer, 3000, reset=True))
        events = peer.receive_data(transport.take())
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        # Fed to h2 in slices: the flood is cut within one slice past the budget
        # (500 streams), not after all 3000.
        last = terminated[0].last_stream_id
        assert last is not None and 2 * 500 < last < 2 * 1200
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
        assert transport.closed and protocol.counters.flood_goaways == 1

    asyncio.run(scenario())


def test_refused_streams_count_towards_the_reset_budget() -> None:
    """Streams refused with an answer (no client reset) are counted too."""

    async def scenario() -> None:
        peer = client()
        # A bucket that does not drain during the test: the count is exact
        # however slowly a busy machine runs it.
        limits = {FloodKind.RESET: FloodLimit(burst=300, rate_per_s=1e-6)}
        protocol, transport = await start(peer.data_to_send(), limits)
        peer.receive_data(transport.take())
        events = answered_in_batches(protocol, transport, peer, 1000)
        answered = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
        # The 301st refusal ends the connection, in the second batch of 200.
        assert terminated[0].last_stream_id == 799
        assert 200 <= len(answered) <= 300
        assert all(dict(e.headers)[b"tulle-proxy-error"] == b"no-endpoints" for e in answered)

    asyncio.run(scenario())


def test_a_few_refused_streams_are_not_a_flood() -> None:
    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        peer.receive_data(transport.take())
        events = answered_in_batches(protocol, transport, peer, 400)
        assert len([e for e in events if isinstance(e, h2.events.ResponseReceived)]) == 400
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
        assert not transport.closed

    asyncio.run(scenario())


def test_nothing_is_written_to_a_transport_already_closing() -> None:
    """Two connections lost in one loop iteration: the second is flushed before
    its connection_lost runs, and uvloop raises on a write to a closed handle."""

    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        transport.take()
        transport.close()
        protocol.h2.ping(b"12345678")
        protocol.flush_now()
        assert transport.take() == b""

    asyncio.run(scenario())


def test_garbage_after_the_preface_is_a_protocol_error_not_a_traceback() -> None:
    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        peer.receive_data(transport.take())
        # A DATA frame on stream 0 is a connection error (RFC 9113 6.1).
        protocol.data_received(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        events = peer.receive_data(transport.take())
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
        assert transport.closed and protocol.counters.protocol_errors == 1

    asyncio.run(scenario())


def test_shutdown_without_streams_sends_goaway_and_closes() -> None:
    async def scenario() -> None:
        peer = client()
        protocol, transport = await start(peer.data_to_send())
        peer.receive_data(transport.take())
        protocol.shutdown(grace_s=1.0)
        events = peer.receive_data(transport.take())
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.NO_ERROR
        assert transport.closed

    asyncio.run(scenario())


def test_idle_connection_is_closed_with_goaway() -> None:
    async def scenario() -> None:
        peer = client()
        protocol = H2ServerProtocol(
            StaticDispatcher({}), H2ClientPool(), initial_data=peer.data_to_send(),
            idle_timeout_s=0.05,
        )  # fmt: skip
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        peer.receive_data(transport.take())
        await asyncio.sleep(0.2)
        events = peer.receive_data(transport.take())
        terminated = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
        assert terminated and terminated[0].error_code == h2.errors.ErrorCodes.NO_ERROR
        assert transport.closed

    asyncio.run(scenario())


def test_idle_timeout_counts_from_the_last_stream_end() -> None:
    """The idle timer is not moved per stream: firing after a stream ended in
    the meantime, it waits out the rest of the timeout from that end."""

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        peer = client()
        protocol = H2ServerProtocol(
            StaticDispatcher({}), H2ClientPool(), initial_data=peer.data_to_send(),
            idle_timeout_s=0.3,
        )  # fmt: skip
        transport = FakeTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        await asyncio.sleep(0.15)
        assert not transport.closed
        # What `forget_stream` does when the connection's last stream ends.
        protocol._idle.arm()
        last_end = loop.time()
        deadline = last_end + 10
        while not transport.closed and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert transport.closed
        assert loop.time() - last_end >= 0.29

    asyncio.run(scenario())


def test_a_refused_path_is_answered_400_bad_path_before_routing() -> None:
    async def scenario() -> None:
        peer = h2.connection.H2Connection(
            h2.config.H2Configuration(
                client_side=True, header_encoding=None, validate_outbound_headers=False
            )
        )
        peer.initiate_connection()
        peer.send_headers(
            1,
            [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"unknown"),
             (b":path", b"/public/..%2Fadmin")],
            end_stream=True,
        )  # fmt: skip
        protocol, transport = await start(peer.data_to_send())
        events = peer.receive_data(transport.take())
        response = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
        assert response, events
        headers = dict(response[0].headers)
        # 400, not the 503 unknown-service that routing would have answered.
        assert headers[b":status"] == b"400"
        assert headers[b"tulle-proxy-error"] == b"bad-path"
        assert protocol.counters.proxy_errors == 1 and not transport.closed

    asyncio.run(scenario())
