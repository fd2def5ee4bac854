"""Message bodies: Content-Length and chunked both ways, trailers, HEAD, 204,
304, and `Expect: 100-continue`."""

from __future__ import annotations

import asyncio
import json
import os
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.mesh import Proxy
from support.rawhttp import RawHttpConnection, request_bytes
from support.tools import curl

pytestmark = pytest.mark.integration


def test_content_length_upload_with_curl(one_hop: Proxy, tmp_path: Path) -> None:
    payload = os.urandom(3 * 1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    result = curl(
        "--proxy", one_hop.outbound_url, "--data-binary", f"@{upload}", "http://books/sink"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bytes": len(payload), "crc32": zlib.crc32(payload)}


def test_chunked_upload_with_curl(one_hop: Proxy, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024 + 17)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    result = curl(
        "--proxy",
        one_hop.outbound_url,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{upload}",
        "http://books/sink",
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"bytes": len(payload), "crc32": zlib.crc32(payload)}


def test_chunked_upload_echoed_chunked_through_two_hops(
    two_hops: tuple[Proxy, Proxy], tmp_path: Path
) -> None:
    client_side, _ = two_hops
    payload = os.urandom(1024 * 1024 + 3)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    downloaded = tmp_path / "download.bin"
    result = curl(
        "--proxy",
        client_side.outbound_url,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        f"@{upload}",
        "--output",
        str(downloaded),
        "http://books/echo",
    )
    assert result.returncode == 0, result.stderr
    assert downloaded.read_bytes() == payload


def test_content_length_download(one_hop: Proxy) -> None:
    size = 5 * 1024 * 1024 + 1
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", f"/bytes/{size}", "books"))
        response = connection.read_response()
    assert response.status == 200
    assert response.header("content-length") == str(size)
    assert len(response.body) == size
    assert response.body[:512] == bytes(range(256)) * 2


def test_chunked_response_with_trailer_keeps_pieces_and_trailer(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/chunked", "books", headers=[("TE", "trailers")]))
        response = connection.read_response()
    expected = b"first piece\nsecond piece\nthird piece\n"
    assert response.status == 200
    assert response.body == expected
    trailers = {name.lower(): value for name, value in response.trailers}
    if trailers:
        assert trailers["x-checksum"] == str(zlib.crc32(expected))


def test_streaming_both_ways_with_async_httpx(one_hop: Proxy) -> None:
    pieces = [os.urandom(32 * 1024) for _ in range(32)]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece
            await asyncio.sleep(0)

    async def run() -> bytes:
        received = bytearray()
        async with (
            httpx.AsyncClient(proxy=one_hop.outbound_url, timeout=20) as client,
            client.stream("POST", "http://books/echo", content=body()) as response,
        ):
            assert response.status_code == 200
            async for chunk in response.aiter_bytes():
                received += chunk
        return bytes(received)

    assert asyncio.run(run()) == b"".join(pieces)


@pytest.mark.parametrize("path", ["/", "/bytes/1000", "/chunked", "/echo"])
def test_head_has_no_body_and_connection_stays_usable(one_hop: Proxy, path: str) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("HEAD", path, "books"))
        response = connection.read_response(head_request=True)
        assert response.status == 200
        if path == "/bytes/1000":
            assert response.header("content-length") == "1000"
        connection.send(request_bytes("GET", "/", "books"))
        follow_up = connection.read_response()
        assert follow_up.body == b"Hello, Tulle\n"


@pytest.mark.parametrize("path", ["/status/204", "/status/304"])
def test_no_body_statuses_keep_connection_usable(one_hop: Proxy, path: str) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", path, "books"))
        response = connection.read_response()
        assert response.status == int(path.rsplit("/", 1)[1])
        assert "chunked" not in (response.header("transfer-encoding") or "").lower()
        connection.send(request_bytes("GET", "/", "books"))
        assert connection.read_response().body == b"Hello, Tulle\n"


def test_conditional_request_gets_304_with_etag(one_hop: Proxy) -> None:
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(request_bytes("GET", "/cached", "books"))
        first = connection.read_response()
        etag = first.header("etag")
        assert first.status == 200 and etag
        connection.send(request_bytes("GET", "/cached", "books", headers=[("If-None-Match", etag)]))
        second = connection.read_response()
        assert second.status == 304
        assert second.header("etag") == etag
        connection.send(request_bytes("GET", "/", "books"))
        assert connection.read_response().status == 200


def test_expect_100_continue(one_hop: Proxy) -> None:
    body = b"sent after 100 Continue"
    with RawHttpConnection(*one_hop.outbound) as connection:
        connection.send(
            b"POST /sink HTTP/1.1\r\nHost: books\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        interim = connection.read_head()
        assert interim.status == 100, interim.raw_head
        connection.send(body)
        response = connection.read_response()
    assert response.status == 200
    assert json.loads(response.body) == {"bytes": len(body), "crc32": zlib.crc32(body)}


def test_expect_100_continue_with_curl_large_upload(one_hop: Proxy, tmp_path: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    result = curl(
        "--proxy",
        one_hop.outbound_url,
        "-H",
        "Expect: 100-continue",
        "--expect100-timeout",
        "5",
        "--data-binary",
        f"@{upload}",
        "--write-out",
        "\n%{time_total}",
        "http://books/sink",
    )
    assert result.returncode == 0, result.stderr
    document, elapsed = result.stdout.rsplit("\n", 1)
    assert json.loads(document)["bytes"] == len(payload)
    # Had the 100 not come through, curl would have waited out the 5 s timeout.
    assert float(elapsed) < 4.0
