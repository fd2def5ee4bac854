"""Header handling (RFC 9110 7.6.1): hop-by-hop fields are removed, including the
ones `Connection` names; `Host` and end-to-end fields pass untouched, in order."""

from __future__ import annotations

import json

import pytest
from support.mesh import Proxy
from support.rawhttp import RawHttpConnection, request_bytes

pytestmark = pytest.mark.integration

END_TO_END = [
    ("X-Request-Id", "abc-123"),
    ("Accept", "text/plain, */*;q=0.1"),
    ("X-Repeated", "one"),
    ("X-Repeated", "two"),
    ("Cookie", "a=1; b=2"),
    ("X-Spaces", "kept  inside"),
]
HOP_BY_HOP = [
    ("Connection", "keep-alive, X-Hop-Secret, x-other-hop"),
    ("Keep-Alive", "timeout=5"),
    ("Proxy-Connection", "keep-alive"),
    ("TE", "trailers"),
    ("X-Hop-Secret", "must not pass"),
    ("X-Other-Hop", "must not pass either"),
]


def _seen_by_backend(proxy_addr: tuple[str, int], host: str, target: str) -> dict[str, object]:
    with RawHttpConnection(*proxy_addr) as connection:
        connection.send(request_bytes("GET", target, host, headers=END_TO_END + HOP_BY_HOP))
        response = connection.read_response()
    assert response.status == 200, response.raw_head
    document: dict[str, object] = json.loads(response.body)
    return document


def _check(document: dict[str, object], host: str) -> None:
    headers = [(str(name), str(value)) for name, value in document["headers"]]  # type: ignore[attr-defined]
    lowered = [(name.lower(), value) for name, value in headers]
    names = {name for name, _ in lowered}
    for removed in ("keep-alive", "proxy-connection", "te", "x-hop-secret", "x-other-hop"):
        assert removed not in names, f"{removed} was forwarded: {headers}"
    assert ("host", host) in lowered
    end_to_end = [
        (name, value)
        for name, value in headers
        if name.lower() in {n.lower() for n, _ in END_TO_END}
    ]
    # Same names (case may be normalised), same values, same order.
    assert [(name.lower(), value) for name, value in end_to_end] == [
        (name.lower(), value) for name, value in END_TO_END
    ]


def test_outbound_removes_hop_by_hop_and_keeps_end_to_end(one_hop: Proxy) -> None:
    _check(_seen_by_backend(one_hop.outbound, "books", "/headers"), "books")


def test_inbound_removes_hop_by_hop_and_keeps_end_to_end(one_hop: Proxy) -> None:
    _check(_seen_by_backend(one_hop.inbound, "app.example:8080", "/headers"), "app.example:8080")


def test_two_hops_keep_host_and_end_to_end_headers(two_hops: tuple[Proxy, Proxy]) -> None:
    client_side, _ = two_hops
    _check(_seen_by_backend(client_side.outbound, "books", "/headers"), "books")


def test_absolute_form_keeps_host_header(one_hop: Proxy) -> None:
    document = _seen_by_backend(one_hop.outbound, "books", "http://books/headers")
    assert document["target"] == "/headers"
    _check(document, "books")


def test_response_hop_by_hop_headers_removed(one_hop: Proxy) -> None:
    # The backend's /chunked response carries Transfer-Encoding and Trailer;
    # the proxy re-frames it, so the client sees one coherent framing.
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/chunked", "books"))
        response = connection.read_response()
    framings = response.header_values("transfer-encoding") + response.header_values(
        "content-length"
    )
    assert len(framings) == 1, response.raw_head
    assert not response.header_values("keep-alive")
