"""The small listeners' request reading: request line and headers, hostile bytes included."""

from __future__ import annotations

import asyncio

import pytest

from tulle.net.small_http import SimpleRequest, parse_head, read_head


def test_request_line_and_headers() -> None:
    raw = b"GET /api/stat?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Thing:  a: b \r\n\r\n"
    assert parse_head(raw) == SimpleRequest(
        "GET", "/api/stat?x=1", {"host": "127.0.0.1", "x-thing": "a: b"}
    )


def test_a_repeated_header_keeps_its_last_value_and_lines_without_colon_are_skipped() -> None:
    request = parse_head(b"GET / HTTP/1.1\r\nA: 1\r\nnonsense\r\na: 2\r\n\r\n")
    assert request is not None and dict(request.headers) == {"a": "2"}


@pytest.mark.parametrize(
    "raw", [b"\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1 extra\r\n\r\n", b"\xff\x00\r\n\r\n"]
)
def test_a_request_line_that_is_not_three_words_is_none(raw: bytes) -> None:
    assert parse_head(raw) is None


def test_any_byte_decodes() -> None:
    request = parse_head(b"G\xe9T /\xff HTTP/1.1\r\n\xfe: \x80\r\n\r\n")
    assert request is not None
    assert request.method == "G\xe9T" and request.headers == {"\xfe": "\x80"}


def test_read_head_stops_at_the_blank_line_and_gives_up_in_time() -> None:
    async def scenario() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(b"GET / HTTP/1.1\r\n\r\nbody")
        assert await read_head(reader) == b"GET / HTTP/1.1\r\n\r\n"
        assert await reader.read(4) == b"body"
        with pytest.raises(TimeoutError):
            await read_head(asyncio.StreamReader(), timeout_s=0.01)

    asyncio.run(scenario())
