"""Routing: absolute-form (http_proxy), origin-form by Host, IP:port authorities,
CONNECT tunnels, unknown names, inbound to the app, and the two-hop mesh."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from support.mesh import Backend, Proxy
from support.rawhttp import exchange, request_bytes
from support.tools import curl

pytestmark = pytest.mark.integration


def test_absolute_form_to_known_name_with_curl_proxy(one_hop: Proxy) -> None:
    result = curl("--proxy", one_hop.outbound_url, "http://books/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, Tulle\n"


def test_http_proxy_environment_variable_is_honoured(one_hop: Proxy) -> None:
    result = curl("http://books/headers", env={"http_proxy": one_hop.outbound_url})
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["method"] == "GET"
    assert dict((name.lower(), value) for name, value in document["headers"])["host"] == "books"


def test_origin_form_routed_by_host(one_hop: Proxy) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", "/headers", "books"))
    assert response.status == 200
    document = json.loads(response.body)
    assert document["target"] == "/headers"


def test_absolute_form_target_reaches_backend_in_origin_form(one_hop: Proxy) -> None:
    response = exchange(
        *one_hop.outbound, request_bytes("GET", "http://books/headers?x=1", "books")
    )
    assert response.status == 200
    assert json.loads(response.body)["target"] == "/headers?x=1"


def test_ip_port_authority_is_forwarded_as_is(one_hop: Proxy, http_backend: Backend) -> None:
    result = curl("--proxy", one_hop.outbound_url, f"http://{http_backend.addr}/status/202")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status 202\n"


def test_unknown_name_gets_503_with_reason(one_hop: Proxy) -> None:
    response = exchange(*one_hop.outbound, request_bytes("GET", "http://nowhere/", "nowhere"))
    assert response.status == 503
    assert response.proxy_error, response.raw_head


def test_connect_tunnel_with_curl_proxytunnel(one_hop: Proxy, http_backend: Backend) -> None:
    result = curl(
        "--proxy", one_hop.outbound_url, "--proxytunnel", f"http://{http_backend.addr}/status/201"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status 201\n"


def test_connect_tunnel_to_known_name(one_hop: Proxy) -> None:
    result = curl("--proxy", one_hop.outbound_url, "--proxytunnel", "http://books:80/")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Hello, Tulle\n"


def test_inbound_forwards_to_app(one_hop: Proxy) -> None:
    result = curl(f"{one_hop.inbound_url}/status/200")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "status 200\n"


def test_two_hop_mesh_with_curl(two_hops: tuple[Proxy, Proxy]) -> None:
    client_side, _ = two_hops
    result = curl("--proxy", client_side.outbound_url, "--include", "http://books/headers")
    assert result.returncode == 0, result.stderr
    # curl -i output in text mode: CRLFs arrive as plain newlines.
    head, _, body = result.stdout.partition("\n\n")
    assert head.startswith("HTTP/1.1 200"), head
    document = json.loads(body)
    headers = {name.lower(): value for name, value in document["headers"]}
    assert headers["host"] == "books"


def test_two_hops_with_async_httpx_client(two_hops: tuple[Proxy, Proxy]) -> None:
    client_side, server_side = two_hops

    async def fetch_many() -> list[httpx.Response]:
        async with httpx.AsyncClient(proxy=client_side.outbound_url, timeout=10) as client:
            return await asyncio.gather(
                *(client.get(f"http://books/status/{200 + index % 3}") for index in range(30))
            )

    responses = asyncio.run(fetch_many())
    failed = [(r.status_code, r.headers.get("tulle-proxy-error")) for r in responses if r.is_error]
    assert not failed, failed[:3]
    assert [response.status_code for response in responses] == [
        200 + index % 3 for index in range(30)
    ]
    assert server_side.metrics().total("request_total", direction="inbound") >= 30
