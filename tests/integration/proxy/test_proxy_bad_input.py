"""Bad input and failing upstreams get a clear answer, never a hang: each error
response carries `tulle-proxy-error` and is counted in /metrics."""

from __future__ import annotations

import time

import pytest
from support.mesh import (
    HEADER_READ_TIMEOUT_FLAG,
    UPSTREAM_TIMEOUT_FLAG,
    Backend,
    Proxy,
    start_proxy,
)
from support.ports import free_port
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection, RawResponse, request_bytes

pytestmark = pytest.mark.integration

HEADER_READ_TIMEOUT_S = 0.5
UPSTREAM_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def strict_proxy(module_processes: ProcessGroup, http_backend: Backend) -> Proxy:
    return start_proxy(
        module_processes,
        app_addr=http_backend.addr,
        static_dst={
            "books": [http_backend.addr],
            "refused": [f"127.0.0.1:{free_port()}"],
        },
        extra=[
            HEADER_READ_TIMEOUT_FLAG,
            str(HEADER_READ_TIMEOUT_S),
            UPSTREAM_TIMEOUT_FLAG,
            str(UPSTREAM_TIMEOUT_S),
        ],
    )


def _send(proxy: Proxy, data: bytes) -> tuple[RawResponse, bool]:
    """Send raw bytes; the response and whether the proxy then closed."""
    with RawHttpConnection(*proxy.outbound) as connection:
        connection.send(data)
        response = connection.read_response()
        return response, connection.closed_by_peer(within=2.0)


def _assert_counted(proxy: Proxy, status: int, before: float) -> None:
    after = proxy.metrics().total("response_total", status_code=str(status))
    assert after >= before + 1, f"{status} not counted in response_total (before {before})"


def _count(proxy: Proxy, status: int) -> float:
    return proxy.metrics().total("response_total", status_code=str(status))


@pytest.mark.parametrize(
    "request_data",
    [
        b"GET / HTTP/1.1\r\nHost: books\r\nThis is not a header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: books\r\nX-Bad\x00Name: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: books\r\nContent-Length: abc\r\n\r\n",
        b"POST /sink HTTP/1.1\r\nHost: books\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ],
    ids=["no-colon", "nul-in-name", "bad-length", "bad-chunk-size"],
)
def test_malformed_request_gets_400(strict_proxy: Proxy, request_data: bytes) -> None:
    before = _count(strict_proxy, 400)
    response, closed = _send(strict_proxy, request_data)
    assert response.status == 400, response.raw_head
    assert response.proxy_error
    assert closed, "a connection with unparseable input must be closed"
    _assert_counted(strict_proxy, 400, before)


def test_oversized_header_section_gets_431(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 431)
    big = request_bytes("GET", "/", "books", headers=[("X-Big", "a" * 80_000)])
    response, _ = _send(strict_proxy, big)
    assert response.status == 431, response.raw_head
    assert response.proxy_error
    _assert_counted(strict_proxy, 431, before)


def test_many_headers_over_limit_get_431(strict_proxy: Proxy) -> None:
    headers = [(f"X-Field-{index}", "v" * 100) for index in range(1000)]
    response, _ = _send(strict_proxy, request_bytes("GET", "/", "books", headers=headers))
    assert response.status == 431, response.raw_head
    assert response.proxy_error


@pytest.mark.parametrize(
    "request_data",
    [
        b"POST /sink HTTP/1.1\r\nHost: books\r\nContent-Length: 5\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: books\r\n\r\n",
        b"POST /sink HTTP/1.1\r\nHost: books\r\nContent-Length: 5\r\n"
        b"Content-Length: 6\r\n\r\nabcdef",
    ],
    ids=["cl-and-te", "two-lengths"],
)
def test_conflicting_framing_gets_400_and_close(strict_proxy: Proxy, request_data: bytes) -> None:
    before = _count(strict_proxy, 400)
    response, closed = _send(strict_proxy, request_data)
    assert response.status == 400, response.raw_head
    assert response.proxy_error
    assert closed, "after a smuggling attempt the connection must be closed"
    _assert_counted(strict_proxy, 400, before)


def test_slow_headers_get_408(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 408)
    with RawHttpConnection(*strict_proxy.outbound) as connection:
        started = time.monotonic()
        connection.send(b"GET / HTTP/1.1\r\nHost: books\r\n")
        response = connection.read_response()
        elapsed = time.monotonic() - started
        assert response.status == 408, response.raw_head
        assert response.proxy_error
        assert connection.closed_by_peer(within=2.0)
    assert HEADER_READ_TIMEOUT_S * 0.8 <= elapsed < HEADER_READ_TIMEOUT_S + 3.0
    _assert_counted(strict_proxy, 408, before)


def test_upstream_refused_gets_502(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 502)
    response, _ = _send(strict_proxy, request_bytes("GET", "http://refused/", "refused"))
    assert response.status == 502, response.raw_head
    assert response.proxy_error
    _assert_counted(strict_proxy, 502, before)


def test_upstream_refused_ip_port_gets_502(strict_proxy: Proxy) -> None:
    authority = f"127.0.0.1:{free_port()}"
    response, _ = _send(strict_proxy, request_bytes("GET", f"http://{authority}/", authority))
    assert response.status == 502, response.raw_head
    assert response.proxy_error


def test_upstream_reset_gets_502(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 502)
    response, _ = _send(strict_proxy, request_bytes("GET", "/reset", "books"))
    assert response.status == 502, response.raw_head
    assert response.proxy_error
    _assert_counted(strict_proxy, 502, before)


def test_upstream_timeout_gets_504(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 504)
    started = time.monotonic()
    response, _ = _send(strict_proxy, request_bytes("GET", "/delay/4000", "books"))
    elapsed = time.monotonic() - started
    assert response.status == 504, response.raw_head
    assert response.proxy_error
    assert elapsed < 3.5, f"504 after {elapsed:.1f} s with a {UPSTREAM_TIMEOUT_S} s timeout"
    _assert_counted(strict_proxy, 504, before)


def test_unknown_name_gets_503(strict_proxy: Proxy) -> None:
    before = _count(strict_proxy, 503)
    response, _ = _send(strict_proxy, request_bytes("GET", "http://unknown-svc/", "unknown-svc"))
    assert response.status == 503, response.raw_head
    assert response.proxy_error
    _assert_counted(strict_proxy, 503, before)


def test_garbage_is_answered_or_closed_never_hangs(strict_proxy: Proxy) -> None:
    with RawHttpConnection(*strict_proxy.outbound, timeout=5.0) as connection:
        connection.send(b"\r\n\r\nGARBAGE / HTTP/1.1\r\n\r\n\x00\xff")
        # Either an error response then close, or a close: a timeout fails.
        answer = connection.read_until_close()
    assert answer == b"" or answer.startswith(b"HTTP/1.1 4"), answer[:200]
    response, _ = _send(strict_proxy, request_bytes("GET", "/", "books"))
    assert response.status == 200
    assert response.body == b"Hello, Tulle\n"
