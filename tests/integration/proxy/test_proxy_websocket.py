"""WebSocket through the proxy: in a CONNECT tunnel, and as a plain HTTP/1.1
`Upgrade` routed by Host (the connection becomes a byte tunnel after 101)."""

from __future__ import annotations

import asyncio
import os
import socket

import pytest
from support.mesh import Backend, Proxy
from support.rawhttp import RawHttpConnection
from websockets.asyncio.client import ClientConnection, connect

pytestmark = pytest.mark.integration

OPEN_TIMEOUT_S = 5


async def _echo_round_trips(websocket: ClientConnection) -> None:
    for index in range(5):
        await websocket.send(f"message {index}")
        assert await asyncio.wait_for(websocket.recv(), 5) == f"message {index}"
    payload = os.urandom(200_000)
    await websocket.send(payload)
    assert await asyncio.wait_for(websocket.recv(), 5) == payload
    pong = await websocket.ping(b"are you there")
    await asyncio.wait_for(pong, 5)


def test_websocket_through_connect_tunnel(one_hop: Proxy, http_backend: Backend) -> None:
    async def run() -> None:
        async with connect(
            f"ws://{http_backend.addr}/ws", proxy=one_hop.outbound_url, open_timeout=OPEN_TIMEOUT_S
        ) as websocket:
            await _echo_round_trips(websocket)

    asyncio.run(run())


def test_websocket_upgrade_routed_by_host_on_outbound(one_hop: Proxy) -> None:
    async def run() -> None:
        # The client speaks to the outbound listener directly, with Host: books.
        sock = socket.create_connection(one_hop.outbound, timeout=OPEN_TIMEOUT_S)
        sock.setblocking(False)
        async with connect(
            "ws://books/ws", sock=sock, proxy=None, open_timeout=OPEN_TIMEOUT_S
        ) as websocket:
            await _echo_round_trips(websocket)

    asyncio.run(run())


def test_websocket_upgrade_through_two_hops(two_hops: tuple[Proxy, Proxy]) -> None:
    client_side, _ = two_hops

    async def run() -> None:
        sock = socket.create_connection(client_side.outbound, timeout=OPEN_TIMEOUT_S)
        sock.setblocking(False)
        async with connect(
            "ws://books/ws", sock=sock, proxy=None, open_timeout=OPEN_TIMEOUT_S
        ) as websocket:
            await _echo_round_trips(websocket)

    asyncio.run(run())


def test_websocket_upgrade_on_inbound(one_hop: Proxy) -> None:
    async def run() -> None:
        async with connect(
            f"{one_hop.inbound_url.replace('http', 'ws')}/ws",
            proxy=None,
            open_timeout=OPEN_TIMEOUT_S,
        ) as websocket:
            await _echo_round_trips(websocket)

    asyncio.run(run())


def test_upgrade_response_keeps_upgrade_headers(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(
            b"GET /ws HTTP/1.1\r\nHost: books\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        response = connection.read_head()
        assert response.status == 101, response.raw_head
        assert (response.header("upgrade") or "").lower() == "websocket"
        assert "upgrade" in (response.header("connection") or "").lower()
        assert response.header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        # A masked text frame "hi" comes back unmasked.
        connection.send(bytes([0x81, 0x82, 1, 2, 3, 4, ord("h") ^ 1, ord("i") ^ 2]))
        assert connection.read_exactly(4) == b"\x81\x02hi"
