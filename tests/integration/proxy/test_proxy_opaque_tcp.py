"""Opaque TCP: protocol detection sends bytes that are not HTTP (a TLS
ClientHello, anything unknown) through as a byte stream, with half-close both ways and
backpressure; server-speaks-first protocols get their banner promptly."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import time

import pytest
from support.mesh import Backend, Proxy, start_proxy
from support.process import ProcessGroup, tree_rss_kib
from support.tcpservers import ServerHalfCloseFirst

pytestmark = pytest.mark.integration

IO_TIMEOUT_S = 10.0
BANNER_DEADLINE_S = 1.0
RSS_LIMIT_KIB = 100 * 1024


@pytest.fixture(scope="module")
def echo_proxy(module_processes: ProcessGroup, tcp_echo_backend: Backend) -> Proxy:
    return start_proxy(module_processes, app_addr=tcp_echo_backend.addr, name="proxy-echo")


@pytest.fixture(scope="module")
def banner_proxy(module_processes: ProcessGroup, banner_backend: Backend) -> Proxy:
    return start_proxy(module_processes, app_addr=banner_backend.addr, name="proxy-banner")


def _connect(addr: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(addr, timeout=IO_TIMEOUT_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _read_until_eof(sock: socket.socket, limit: int = 1 << 30) -> bytes:
    received = bytearray()
    while len(received) < limit:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(min(1 << 16, size - len(received)))
        if not chunk:
            raise AssertionError(f"EOF after {len(received)} of {size} bytes")
        received += chunk
    return bytes(received)


def _read_until(sock: socket.socket, size: int) -> bytes:
    """Up to `size` bytes, fewer if the peer closes first."""
    received = bytearray()
    while len(received) < size:
        chunk = sock.recv(size - len(received))
        if not chunk:
            break
        received += chunk
    return bytes(received)


def _tls_client_hello(server_name: str) -> bytes:
    """A real TLS ClientHello, produced by the ssl module without a socket."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def test_unknown_bytes_are_echoed_and_client_half_close_propagates(echo_proxy: Proxy) -> None:
    payload = b"\x00\x01 not http at all\n" + os.urandom(1024 * 1024)
    with _connect(echo_proxy.inbound) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        # The echo server answers our FIN with its own once all is echoed:
        # we must get every byte and then EOF.
        assert _read_until_eof(sock) == payload


def test_tls_client_hello_is_forwarded_opaquely(echo_proxy: Proxy) -> None:
    hello = _tls_client_hello("books.example")
    assert hello[0] == 0x16
    with _connect(echo_proxy.inbound) as sock:
        sock.sendall(hello)
        assert _read_exactly(sock, len(hello)) == hello


def test_server_half_close_propagates(processes: ProcessGroup) -> None:
    server = ServerHalfCloseFirst(b"server done talking\n")
    try:
        proxy = start_proxy(processes, app_addr=server.addr, name="proxy-halfclose")
        with _connect(proxy.inbound) as sock:
            # The client sends nothing first: detection must fall back to
            # opaque and connect, so the greeting and the FIN come through.
            greeting = _read_until_eof(sock)
            assert greeting == b"server done talking\n", (
                f"got {greeting!r}\n{proxy.process.describe()}"
            )
            # Our write side is still open: the server keeps reading.
            sock.sendall(b"client still talking")
            sock.shutdown(socket.SHUT_WR)
            assert server.done.wait(IO_TIMEOUT_S)
        assert server.error is None, server.error
        assert bytes(server.received) == b"client still talking"
    finally:
        server.close()


def test_backpressure_bounds_buffering(echo_proxy: Proxy) -> None:
    # Write without reading: the echo server stops reading when its writes
    # back up, so the proxy must stop reading from us too, and our sends stall
    # long before 512 MiB, with the proxy's memory flat.
    cap = 512 * 1024 * 1024
    block = os.urandom(1 << 16)
    view = memoryview(block)
    sent = 0
    peak_kib = 0
    with _connect(echo_proxy.inbound) as sock:
        sock.settimeout(1.0)
        deadline = time.monotonic() + 30
        while sent < cap and time.monotonic() < deadline:
            try:
                # Resume mid-block after a partial send: the stream is `block` repeated.
                sent += sock.send(view[sent % len(block) :])
            except TimeoutError:
                break
            if sent % (8 << 20) < len(block):
                peak_kib = max(peak_kib, tree_rss_kib(echo_proxy.pid))
        peak_kib = max(peak_kib, tree_rss_kib(echo_proxy.pid))
        assert sent < cap, "no backpressure: the proxy accepted everything"
        assert peak_kib < RSS_LIMIT_KIB, f"proxy RSS reached {peak_kib} KiB"
        # Now drain: everything accepted comes back, in order, then EOF.
        sock.settimeout(IO_TIMEOUT_S)
        sock.shutdown(socket.SHUT_WR)
        echoed = _read_until_eof(sock)
    assert len(echoed) == sent
    assert echoed == (block * (sent // len(block) + 1))[:sent]


def test_server_speaks_first_banner_arrives_promptly(banner_proxy: Proxy) -> None:
    with _connect(banner_proxy.inbound) as sock:
        started = time.monotonic()
        banner = _read_exactly(sock, len(b"220 ready\r\n"))
        elapsed = time.monotonic() - started
        assert banner == b"220 ready\r\n"
        assert elapsed < BANNER_DEADLINE_S, f"banner after {elapsed:.2f} s"
        sock.sendall(b"HELO tulle\r\n")
        assert _read_exactly(sock, 12) == b"HELO tulle\r\n"


def test_many_opaque_connections_in_a_row(echo_proxy: Proxy) -> None:
    for index in range(50):
        with _connect(echo_proxy.inbound) as sock:
            message = f"connection {index}\n".encode()
            sock.sendall(message)
            received = _read_until(sock, len(message))
            assert received == message, (
                f"connection {index}: got {received!r}\n{echo_proxy.process.describe()}"
            )


def test_first_bytes_after_the_detect_timeout_still_go_through(echo_proxy: Proxy) -> None:
    """A client slower than the detect timeout (a loaded machine, a slow peer) is
    handed over as opaque with nothing peeked; its bytes, when they come, are
    forwarded like any others. Delays straddle the 300 ms detect timeout."""
    for index, delay_s in enumerate((0.0, 0.2, 0.29, 0.3, 0.31, 0.4, 0.8)):
        with _connect(echo_proxy.inbound) as sock:
            time.sleep(delay_s)  # the condition under test: nothing sent for this long
            message = f"late connection {index}\n".encode()
            sock.sendall(message)
            received = _read_until(sock, len(message))
            assert received == message, (
                f"first bytes after {delay_s} s: got {received!r}\n{echo_proxy.process.describe()}"
            )


def test_outbound_client_slower_than_the_detect_timeout_is_still_served(
    processes: ProcessGroup, http_backend: Backend
) -> None:
    """An outbound connection that was not captured has no original
    destination, so "opaque after the detect timeout" would have nowhere to
    go: the proxy waits longer for its first bytes. A client slowed by a busy
    machine (here: on purpose, 10x the detect timeout) still gets its answer,
    where it used to get a closed connection."""
    proxy = start_proxy(
        processes,
        static_dst={"books": [http_backend.addr]},
        extra=["--detect-timeout", "0.05"],
        name="proxy-slow-client",
    )
    with _connect(proxy.outbound) as sock:
        time.sleep(0.5)  # the slow client itself: silent past the detect timeout
        sock.sendall(b"GE")
        time.sleep(0.2)  # ... and a prefix that cannot be told apart yet
        sock.sendall(b"T / HTTP/1.1\r\nHost: books\r\nConnection: close\r\n\r\n")
        answer = _read_until_eof(sock, 1 << 20)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert proxy.metrics().total("proxy_error_total", reason="opaque-no-destination") == 0
