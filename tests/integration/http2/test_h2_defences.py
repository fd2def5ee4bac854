"""Defences of the HTTP/2 proxy against misbehaving clients, with hand-built frames.

Each attack must end with a GOAWAY carrying the right error code, quickly,
without a traceback, and leave the proxy serving other clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
from h2raw import (
    RawH2,
    continuation,
    data,
    flood_streams,
    ping,
    rst,
    settings,
    window_update,
)
from h2support import Server, start_h2_backend, start_harness
from hyperframe.frame import DataFrame, GoAwayFrame, PingFrame, SettingsFrame
from support.process import ProcessGroup, rss_kib

pytestmark = pytest.mark.integration

PROTOCOL_ERROR = 0x1
FLOW_CONTROL_ERROR = 0x3
FRAME_SIZE_ERROR = 0x6
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB


@pytest.fixture(scope="module")
def proxy(module_processes: ProcessGroup) -> Server:
    web = start_h2_backend(module_processes, "defence-backend")
    return start_harness(module_processes, {"web": [web.addr]}, "defence-hop")


@pytest.fixture
def client(proxy: Server) -> Iterator[RawH2]:
    raw = RawH2(proxy.port)
    raw.handshake()
    try:
        yield raw
    finally:
        raw.close()
    assert_healthy(proxy)


def assert_healthy(proxy: Server) -> None:
    """The proxy still serves a fresh client and has logged no traceback."""
    probe = RawH2(proxy.port)
    try:
        probe.send(probe.request(1, "web", "/"))
        probe.read_until(None, timeout=1)
        assert b"hello from" in probe.data_of(1)
    finally:
        probe.close()
    assert "Traceback" not in proxy.process.output()


def goaway_code(client: RawH2, timeout: float = 5.0) -> int:
    started = time.monotonic()
    client.read_until(GoAwayFrame, timeout=timeout)
    goaway = client.goaway()
    assert goaway is not None, "no GOAWAY"
    assert time.monotonic() - started < timeout
    client.read_until(None, timeout=1)
    assert client.closed, "the connection stayed open after GOAWAY"
    return int(goaway.error_code)


def test_advertised_limits(proxy: Server) -> None:
    raw = RawH2(proxy.port)
    try:
        server_settings = raw.handshake()
    finally:
        raw.close()
    assert server_settings.settings[SettingsFrame.MAX_CONCURRENT_STREAMS] == 250
    assert server_settings.settings[SettingsFrame.MAX_FRAME_SIZE] == 16_384
    assert server_settings.settings[SettingsFrame.MAX_HEADER_LIST_SIZE] == 65_536
    assert server_settings.settings[SettingsFrame.INITIAL_WINDOW_SIZE] == 1 << 20


def test_too_many_concurrent_streams(client: RawH2) -> None:
    frames = [client.request(2 * i + 1, "web", "/", method="POST") for i in range(251)]
    client.send(*frames)
    assert goaway_code(client) == PROTOCOL_ERROR


def test_header_list_too_large(client: RawH2) -> None:
    block = client.header_block(
        [(":method", "GET"), (":scheme", "http"), (":authority", "web"), (":path", "/"),
         ("x-big", "v" * (100 << 10))]
    )  # fmt: skip
    first = client.headers(1, [])
    first.data = block[:16_000]
    first.flags.discard("END_HEADERS")
    first.flags.add("END_STREAM")
    pieces = [block[i : i + 16_000] for i in range(16_000, len(block), 16_000)]
    frames = [continuation(1, p, i == len(pieces) - 1) for i, p in enumerate(pieces)]
    client.send(first, *frames)
    assert goaway_code(client) in (ENHANCE_YOUR_CALM, COMPRESSION_ERROR, PROTOCOL_ERROR)


def test_continuation_flood(client: RawH2) -> None:
    """CVE-2024-27316 style: a header block that never ends, in tiny CONTINUATION frames."""
    first = client.headers(1, [(":method", "GET")])
    first.flags.discard("END_HEADERS")
    client.send(first, *[continuation(1, b"\x40\x01a\x01b", False) for _ in range(2000)])
    assert goaway_code(client) in (ENHANCE_YOUR_CALM, PROTOCOL_ERROR)


def test_frame_larger_than_advertised(client: RawH2) -> None:
    client.send(client.request(1, "web", "/", method="POST"), data(1, b"x" * 20_000))
    assert goaway_code(client) == FRAME_SIZE_ERROR


def test_rapid_reset(client: RawH2, proxy: Server) -> None:
    """CVE-2023-44487: open and reset thousands of streams; ended, bounded, cheap."""
    before_kib = rss_kib(proxy.process.pid)
    started = time.monotonic()
    flood_streams(client, "web", batches=20)
    assert goaway_code(client) == ENHANCE_YOUR_CALM
    assert time.monotonic() - started < 5
    assert rss_kib(proxy.process.pid) - before_kib < 32 << 10


@pytest.mark.parametrize("authority", ["nowhere", "empty"])
def test_rapid_reset_of_refused_streams(client: RawH2, authority: str) -> None:
    """Streams the proxy refuses (unknown authority, no endpoints) and the client
    resets count as resets: the flood is cut within a bounded number of streams."""
    started = time.monotonic()
    flood_streams(client, authority)
    assert goaway_code(client) == ENHANCE_YOUR_CALM
    assert time.monotonic() - started < 5
    goaway = client.goaway()
    assert goaway is not None and goaway.last_stream_id < 2 * 2000


def test_flood_of_refused_streams_leaves_other_clients_served(proxy: Server) -> None:
    """An attacker flooding refused streams, reconnecting whenever cut, for 3 s:
    a well-behaved client of a healthy service gets every answer meanwhile."""
    stop = threading.Event()
    cut = []

    def attack() -> None:
        deadline = time.monotonic() + 3.0
        for _ in range(200):  # connections, bounded; ends by time below
            if stop.is_set() or time.monotonic() > deadline:
                return
            raw = RawH2(proxy.port)
            try:
                # One connection floods for as long as the proxy lets it.
                sent = flood_streams(raw, "nowhere", batches=100_000, until=deadline)
                out_of_time = not raw.closed and time.monotonic() > deadline
                raw.read_until(GoAwayFrame, timeout=2)
                goaway = raw.goaway()
                if goaway is None and out_of_time and sent < 2000:
                    # The attack's time ran out before this last connection had
                    # spent its reset budget: no cut was due.
                    return
                cut.append(goaway is not None and goaway.error_code == ENHANCE_YOUR_CALM)
            finally:
                raw.close()

    attacker = threading.Thread(target=attack, daemon=True)
    attacker.start()
    latencies = []
    try:
        while attacker.is_alive() and len(latencies) < 100:
            started = time.monotonic()
            probe = RawH2(proxy.port)
            try:
                probe.send(probe.request(1, "web", "/"))
                probe.read_until(DataFrame, timeout=5)
                assert b"hello from" in probe.data_of(1), "no answer within 5 s during the flood"
            finally:
                probe.close()
            latencies.append(time.monotonic() - started)
    finally:
        stop.set()
        attacker.join(10)
    assert cut and all(cut), cut
    assert latencies, "the attack ended before the first request"


def test_settings_flood(client: RawH2) -> None:
    client.send(*[settings({SettingsFrame.MAX_CONCURRENT_STREAMS: 100}) for _ in range(500)])
    assert goaway_code(client) == ENHANCE_YOUR_CALM


def test_ping_flood(client: RawH2) -> None:
    client.send(*[ping() for _ in range(5000)])
    assert goaway_code(client) == ENHANCE_YOUR_CALM
    acks = [f for f in client.frames if isinstance(f, PingFrame)]
    assert len(acks) < 1000


def test_empty_data_flood(client: RawH2) -> None:
    client.send(client.request(1, "web", "/", method="POST"))
    client.send(*[data(1, b"") for _ in range(1000)])
    assert goaway_code(client) == ENHANCE_YOUR_CALM


def test_data_on_stream_zero_is_a_protocol_error(client: RawH2) -> None:
    client.send_bytes(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
    assert goaway_code(client) == PROTOCOL_ERROR


def test_bad_pseudo_header_is_a_protocol_error(client: RawH2) -> None:
    client.send(client.headers(1, [(":method", "GET"), (":bogus", "x"), (":path", "/")], True))
    assert goaway_code(client) == PROTOCOL_ERROR


def test_window_overflow_is_a_flow_control_error(client: RawH2) -> None:
    client.send(window_update(0, 2**31 - 1), window_update(0, 2**31 - 1))
    assert goaway_code(client) == FLOW_CONTROL_ERROR


def test_ordinary_traffic_is_not_a_flood(client: RawH2) -> None:
    """Pings, settings and cancellations at a normal pace are left alone."""
    for i in range(20):
        stream_id = 2 * i + 1
        client.send(client.request(stream_id, "web", "/"), ping(), rst(stream_id))
        time.sleep(0.01)
    client.send(settings(), client.request(101, "web", "/"))
    client.read_until(None, timeout=1)
    assert client.goaway() is None
    assert any(isinstance(f, DataFrame) and f.stream_id == 101 for f in client.frames)
