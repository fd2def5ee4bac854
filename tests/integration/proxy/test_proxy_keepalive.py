"""Connection management: keep-alive on both sides, pooled upstream connections,
pipelining in order, `Connection: close`, and HTTP/1.0 clients."""

from __future__ import annotations

import pytest
from support.mesh import Backend, Proxy
from support.rawhttp import RawHttpConnection, request_bytes
from support.tools import curl

pytestmark = pytest.mark.integration


def test_client_keep_alive_many_requests_on_one_connection(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        for index in range(20):
            connection.send(request_bytes("GET", f"/status/{200 + index % 2}", "books"))
            response = connection.read_response()
            assert response.status == 200 + index % 2
            assert response.body == f"status {200 + index % 2}\n".encode()
            assert (response.header("connection") or "").lower() != "close"


def test_upstream_connections_are_pooled_and_reused(one_hop: Proxy, http_backend: Backend) -> None:
    # Warm the pool, then send sequential requests on fresh client connections:
    # the backend must see (almost) no new connections.
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/", "books"))
        assert connection.read_response().status == 200
    before = http_backend.stats()["connections_accepted"]
    requests = 30
    for _ in range(requests):
        with RawHttpConnection(*one_hop.outbound) as connection:
            connection.send(request_bytes("GET", "/", "books"))
            assert connection.read_response().body == b"Hello, Tulle\n"
    # /stats itself is asked directly, on one new connection.
    accepted = http_backend.stats()["connections_accepted"] - before - 1
    assert accepted <= 2, f"{accepted} upstream connections for {requests} sequential requests"


def test_pipelined_requests_are_answered_in_order(one_hop: Proxy) -> None:
    # The slow one first: a proxy that answers as responses arrive would
    # reorder them.
    pipeline = b"".join(
        [
            request_bytes("GET", "/delay/300", "books"),
            request_bytes("GET", "/status/201", "books"),
            request_bytes("POST", "/echo", "books", body=b"pipelined body"),
            request_bytes("GET", "/status/202", "books"),
            request_bytes("HEAD", "/", "books"),
            request_bytes("GET", "/", "books"),
        ]
    )
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(pipeline)
        statuses_bodies = []
        for head_request in (False, False, False, False, True, False):
            response = connection.read_response(head_request=head_request)
            statuses_bodies.append((response.status, response.body))
    assert statuses_bodies == [
        (200, b"delayed 300 ms\n"),
        (201, b"status 201\n"),
        (200, b"pipelined body"),
        (202, b"status 202\n"),
        (200, b""),
        (200, b"Hello, Tulle\n"),
    ]


def test_client_connection_close_is_honoured(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/", "books", headers=[("Connection", "close")]))
        response = connection.read_response()
        assert response.status == 200
        assert (response.header("connection") or "").lower() == "close"
        assert connection.closed_by_peer(within=2.0)


def test_upstream_connection_close_does_not_break_the_client(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/close", "books"))
        first = connection.read_response()
        assert first.status == 200
        assert first.body == b"closing\n"
        # The backend closed its side; the client's connection may stay open,
        # and if it does the next request must work.
        if not connection.closed_by_peer(within=0.2):
            connection.send(request_bytes("GET", "/", "books"))
            assert connection.read_response().body == b"Hello, Tulle\n"
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/", "books"))
        assert connection.read_response().status == 200


def test_http10_client_with_curl(one_hop: Proxy) -> None:
    result = curl("--http1.0", "--proxy", one_hop.outbound_url, "--include", "http://books/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith("Hello, Tulle\n")


def test_http10_client_connection_closes_after_response(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/status/200", "books", version="HTTP/1.0"))
        response = connection.read_response()
        assert response.status == 200
        assert response.body == b"status 200\n"
        assert connection.closed_by_peer(within=2.0)


def test_http10_keep_alive_client(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        for _ in range(3):
            connection.send(
                request_bytes(
                    "GET", "/", "books", headers=[("Connection", "keep-alive")], version="HTTP/1.0"
                )
            )
            response = connection.read_response()
            assert response.body == b"Hello, Tulle\n"
            assert response.header("content-length") == "13"


def test_http10_client_gets_streamed_body_without_chunking(one_hop: Proxy) -> None:
    # /echo answers chunked upstream; an HTTP/1.0 client cannot read chunked
    # framing, so the proxy must send it close-delimited (or with a length).
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(
            request_bytes("POST", "/echo", "books", body=b"x" * 5000, version="HTTP/1.0")
        )
        response = connection.read_response()
        assert response.status == 200
        assert "chunked" not in (response.header("transfer-encoding") or "").lower()
        assert response.body == b"x" * 5000
