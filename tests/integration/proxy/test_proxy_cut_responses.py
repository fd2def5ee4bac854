"""An upstream that dies partway through a response: the client must see it cut short.

The rule (RFC 9112 section 6.3, and what nginx and Envoy do): a response body
that ends before its framing says it is complete reaches the client cut
short -- no last chunk, the connection closed (reset when the client's own
framing could not tell, as with a close-delimited HTTP/1.0 response) -- and
counts as a failure in metrics and failure accrual. That covers a
Content-Length body or a chunked body ended early, and a close-delimited body
ended by a reset (RST). A close-delimited body ended by a plain FIN is
complete by definition and is passed on as such.

The upstreams here are raw sockets (`CutShortHttpServer`): part of a body,
then SO_LINGER 0 (RST) or a plain close (FIN).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.mesh import Proxy, start_proxy
from support.process import ProcessGroup
from support.rawhttp import RawHttpConnection, RawResponse, exchange, request_bytes
from support.tcpservers import CutShortHttpServer

pytestmark = pytest.mark.integration

PART = b"0123456789" * 100  # 1,000 bytes of body before the upstream dies

CLOSE_DELIMITED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n" + PART
CONTENT_LENGTH_SHORT = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + PART
CHUNKED_UNFINISHED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n" % (
    len(PART),
    PART,
)

# service name -> (response, end with RST?)
UPSTREAMS = {
    "close-rst": (CLOSE_DELIMITED, True),
    "close-fin": (CLOSE_DELIMITED, False),
    "length-fin": (CONTENT_LENGTH_SHORT, False),
    "length-rst": (CONTENT_LENGTH_SHORT, True),
    "chunked-fin": (CHUNKED_UNFINISHED, False),
    "chunked-rst": (CHUNKED_UNFINISHED, True),
    "eject-rst": (CLOSE_DELIMITED, True),
}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, CutShortHttpServer]]:
    servers = {
        name: CutShortHttpServer(response, reset=reset)
        for name, (response, reset) in UPSTREAMS.items()
    }
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()


@pytest.fixture(scope="module")
def proxy(module_processes: ProcessGroup, upstreams: dict[str, CutShortHttpServer]) -> Proxy:
    return start_proxy(
        module_processes,
        static_dst={name: [server.addr] for name, server in upstreams.items()},
        name="cut-proxy",
    )


def read_all(connection: RawHttpConnection) -> tuple[bytes, bool]:
    """Every byte until the proxy closes; and whether it ended with a reset."""
    data = bytearray()
    for _ in range(10_000):  # bounded; ends at EOF or reset
        try:
            chunk = connection.sock.recv(65536)
        except ConnectionResetError:
            return bytes(data), True
        if not chunk:
            return bytes(data), False
        data += chunk
    raise AssertionError("the proxy never closed the connection")


def cut_exchange(proxy: Proxy, service: str, version: str = "HTTP/1.1") -> tuple[bytes, bool]:
    """One GET to `service`; the raw bytes the client got, and whether it was reset.

    `Connection: close`, so that the proxy closes after a complete response too
    and reading to the end of the connection always ends."""
    with RawHttpConnection(*proxy.outbound) as connection:
        request = request_bytes("GET", "/", service, [("Connection", "close")], version=version)
        connection.send(request)
        return read_all(connection)


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """The data of a chunked body, and whether its last chunk arrived."""
    data = bytearray()
    rest = body
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            return bytes(data), False
        size = int(line.split(b";")[0], 16)
        if size == 0:
            return bytes(data), rest.startswith(b"\r\n")
        data += rest[:size]
        rest = rest[size + 2 :]
    return bytes(data), False


def split_response(raw: bytes) -> tuple[RawResponse, bytes]:
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = [*lines[0].split(" ", 2), ""][:3]
    headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return RawResponse(version, int(status), reason, headers, raw_head=head), body


def failures(proxy: Proxy, service: str) -> float:
    return proxy.metrics().total(
        "response_total",
        direction="outbound",
        dst_service=service,
        classification="failure",
        error="upstream-reset-mid-response",
    )


@pytest.mark.parametrize("service", ["close-rst", "chunked-fin", "chunked-rst"])
def test_cut_body_reaches_an_http11_client_without_its_last_chunk(
    proxy: Proxy, service: str
) -> None:
    before = failures(proxy, service)
    raw, _ = cut_exchange(proxy, service)
    response, body = split_response(raw)
    assert response.status == 200
    assert (response.header("transfer-encoding") or "").lower() == "chunked"
    data, complete = dechunk(body)
    assert not complete, "a cut-short body was passed on as complete"
    assert PART.startswith(data)
    # Counted as a failure (metrics; failure accrual in the test below).
    assert failures(proxy, service) == before + 1


@pytest.mark.parametrize("service", ["length-fin", "length-rst"])
def test_short_content_length_body_is_cut_short(proxy: Proxy, service: str) -> None:
    before = failures(proxy, service)
    raw, _ = cut_exchange(proxy, service)
    response, body = split_response(raw)
    assert response.header("content-length") == "5000"
    assert len(body) < 5000 and PART.startswith(body)
    assert failures(proxy, service) == before + 1


def test_close_delimited_body_cut_by_a_reset_resets_an_http10_client(proxy: Proxy) -> None:
    """An HTTP/1.0 client reads the body to the end of the connection: only a
    reset, not a clean close, can tell it the body was cut."""
    raw, reset = cut_exchange(proxy, "close-rst", version="HTTP/1.0")
    response, body = split_response(raw)
    assert response.status == 200 and response.header("content-length") is None
    assert PART.startswith(body)
    assert reset, "a cut-short close-delimited body ended with a clean close"


def test_close_delimited_body_ended_by_fin_is_complete(proxy: Proxy) -> None:
    before = failures(proxy, "close-fin")
    raw, reset = cut_exchange(proxy, "close-fin")
    response, body = split_response(raw)
    data, complete = dechunk(body)
    assert response.status == 200 and complete and data == PART and not reset
    assert failures(proxy, "close-fin") == before


def test_cut_responses_count_towards_failure_accrual(
    proxy: Proxy, upstreams: dict[str, CutShortHttpServer]
) -> None:
    errors = []
    for _ in range(20):
        raw, _ = cut_exchange(proxy, "eject-rst")
        response, _ = split_response(raw)
        errors.append(response.header("tulle-proxy-error"))
        if response.header("tulle-proxy-error") == "endpoints-ejected":
            break
    else:
        pytest.fail(f"never ejected: {errors}")
    # Seven cut responses in a row, then the endpoint is out.
    assert upstreams["eject-rst"].answered == 7, errors
    # Other services are unaffected.
    ok = exchange(*proxy.outbound, request_bytes("GET", "/", "close-fin"))
    assert ok.status == 200
