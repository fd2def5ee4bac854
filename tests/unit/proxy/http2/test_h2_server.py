"""H2ServerProtocol over a fake transport: refusals, floods and malformed input, no sockets."""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.errors
import h2.events
from hyperframe.frame import PingFrame

from tulle.codec.http2 import PREFACE
from tulle.proxy.http2 import H2ClientPool, H2ServerProtocol, StaticDispatcher


class FakeTransport:
    def __init__(self) -> None:
        self.written = bytearray()
        self.closed = False
        self.protocol: object = None

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

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


async def start(initial: bytes) -> tuple[H2ServerProtocol, FakeTransport]:
    protocol = H2ServerProtocol(
        StaticDispatcher({"empty": []}), H2ClientPool(), initial_data=initial
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
