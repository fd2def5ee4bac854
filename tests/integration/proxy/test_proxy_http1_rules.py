"""HTTP/1 rules a hostile client probes (docs/architecture.md, "HTTP/1 semantics"):

* bytes after a request that ends the connection (`Connection: close`, or
  HTTP/1.0 without keep-alive) are ignored: the request is answered, then the
  connection closes, as nginx does;
* pipelined good, bad, good: the first is forwarded and answered, then the bad
  one gets its 400, then the connection closes;
* Connection tokens naming Host, the framing headers or identity headers are
  ignored (Host is never dropped: RFC 9110 7.6.1 / 7.2), others still honoured;
* absolute-form targets: `http://echo?x=1` is service `echo`, path `/?x=1`;
  `https://` is refused with 400 (the proxy does not originate TLS for it).
"""

from __future__ import annotations

import json

import pytest
from support.mesh import Proxy
from support.rawhttp import RawHttpConnection, exchange, request_bytes

pytestmark = pytest.mark.integration


def _headers(response_body: bytes) -> dict[str, str]:
    document = json.loads(response_body)
    return {str(name).lower(): str(value) for name, value in document["headers"]}


@pytest.mark.parametrize(
    "first",
    [
        b"GET /status/201 HTTP/1.1\r\nHost: books\r\nConnection: close\r\n\r\n",
        b"GET /status/201 HTTP/1.0\r\nHost: books\r\n\r\n",
    ],
    ids=["connection-close", "http-1.0"],
)
@pytest.mark.parametrize(
    "after",
    [b"GET /status/202 HTTP/1.1\r\nHost: books\r\n\r\n", b"\x00\x01 not http at all\r\n\r\n"],
    ids=["another-request", "garbage"],
)
def test_bytes_after_a_closing_request_are_ignored(
    one_hop: Proxy, first: bytes, after: bytes
) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(first + after)
        response = connection.read_response()
        assert response.status == 201, response.raw_head
        assert response.proxy_error is None
        assert connection.read_until_close() == b""


def test_pipelined_good_bad_good_answers_the_first_then_400_then_closes(
    one_hop: Proxy,
) -> None:
    good_1 = request_bytes("GET", "/status/201", "books")
    bad = b"GET /x HTTP/1.1\r\nHost: books\r\nBad Header\r\n\r\n"
    good_2 = request_bytes("GET", "/status/202", "books")
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(good_1 + bad + good_2)
        first = connection.read_response()
        assert first.status == 201, first.raw_head
        assert first.proxy_error is None
        second = connection.read_response()
        assert second.status == 400, second.raw_head
        assert second.proxy_error == "bad-request"
        assert connection.read_until_close() == b""


def test_pipelined_good_then_bad_in_separate_writes(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/status/201", "books"))
        connection.send(b"\x00garbage\r\n\r\n")
        first = connection.read_response()
        assert first.status == 201, first.raw_head
        second = connection.read_response()
        assert second.status == 400, second.raw_head
        assert connection.read_until_close() == b""


@pytest.mark.parametrize("direction", ["outbound", "inbound"])
def test_connection_tokens_never_drop_host_framing_or_identity(
    one_hop: Proxy, direction: str
) -> None:
    proxy_addr = one_hop.outbound if direction == "outbound" else one_hop.inbound
    body = b"0123456789"
    data = request_bytes(
        "POST",
        "/headers",
        "books",
        headers=[
            ("Connection", "host, content-length, x-forwarded-for, forwarded, x-hop"),
            ("Connection", "x-real-ip, keep-alive"),
            ("X-Forwarded-For", "192.0.2.7"),
            ("Forwarded", "for=192.0.2.7"),
            ("X-Real-IP", "192.0.2.7"),
            ("X-Hop", "must not pass"),
        ],
        body=body,
    )
    with RawHttpConnection(*proxy_addr) as connection:
        connection.send(data)
        response = connection.read_response()
        assert response.status == 200, response.raw_head
        seen = _headers(response.body)
        assert seen.get("host") == "books"
        assert seen.get("content-length") == str(len(body))
        assert seen.get("x-forwarded-for") == "192.0.2.7"
        assert seen.get("forwarded") == "for=192.0.2.7"
        assert seen.get("x-real-ip") == "192.0.2.7"
        assert "x-hop" not in seen
        # The connection is still usable: framing was kept.
        connection.send(request_bytes("GET", "/status/204", "books"))
        assert connection.read_response().status == 204


def test_connection_transfer_encoding_keeps_chunked_framing(one_hop: Proxy) -> None:
    data = (
        b"POST /echo HTTP/1.1\r\nHost: books\r\nConnection: transfer-encoding\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    )
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(data)
        response = connection.read_response()
        assert response.status == 200, response.raw_head
        assert response.body == b"hello"


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("http://books/headers?y=2", "/headers?y=2"),
        ("http://BOOKS/headers", "/headers"),
        ("http://books:80/headers?z", "/headers?z"),
    ],
)
def test_absolute_form_reaches_the_app_in_origin_form(
    one_hop: Proxy, target: str, path: str
) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", target, "elsewhere"))
    assert response.status == 200, response.raw_head
    assert json.loads(response.body)["target"] == path
    assert _headers(response.body)["host"].lower() in ("books", "books:80")


@pytest.mark.parametrize("target", ["http://books?x=1", "http://books", "http://books:80?x=1"])
def test_absolute_form_authority_ends_at_the_query(one_hop: Proxy, target: str) -> None:
    # Service `books`, path `/` (with the query): the backend's hello.
    response = exchange(*one_hop.outbound, request_bytes("GET", target, "elsewhere"))
    assert response.status == 200, response.raw_head
    assert response.body == b"Hello, Tulle\n"


@pytest.mark.parametrize("target", ["https://books/", "HTTPS://books/headers", "ftp://books/"])
def test_other_schemes_in_absolute_form_are_refused(one_hop: Proxy, target: str) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", target, "books"))
    assert response.status == 400, response.raw_head
    assert response.proxy_error == "unsupported-scheme"
    assert b"CONNECT" in response.body


@pytest.mark.parametrize("target", ["http:///x", "http://user@books/", "http://books#frag"])
def test_bad_absolute_form_authority_is_refused(one_hop: Proxy, target: str) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", target, "books"))
    assert response.status == 400, response.raw_head
    assert response.proxy_error is not None
