"""The HTTP/1 codec: parsing, limits, smuggling defences, re-encoding (no sockets).

Every test runs twice: with the native head scanner (`tulle.codec._h1native`)
in front of llhttp when it is built, and with llhttp alone, as on a machine
without a compiler (tests/unit/codec/test_http1_scanner.py compares the two).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.codec import http1
from tulle.codec.http1 import (
    Http1Error,
    RequestDecoder,
    RequestHead,
    ResponseDecoder,
    ResponseHead,
    encode_chunk,
    encode_last_chunk,
    error_response,
)


@pytest.fixture(autouse=True, scope="module", params=["scanner", "llhttp"])
def head_parser(request: pytest.FixtureRequest) -> Iterator[str]:
    """Module-scoped (hypothesis runs many examples per test): set and restore by hand."""
    saved = http1.SCAN_REQUEST, http1.SCAN_RESPONSE
    if request.param == "llhttp":
        http1.SCAN_REQUEST = http1.SCAN_RESPONSE = None
    elif saved[0] is None:
        pytest.skip("native HTTP/1 scanner not built")
    try:
        yield request.param
    finally:
        http1.SCAN_REQUEST, http1.SCAN_RESPONSE = saved


class Requests:
    def __init__(self) -> None:
        self.heads: list[RequestHead] = []
        self.bodies: list[bytes] = []
        self.ended = 0

    def on_request_head(self, head: RequestHead) -> None:
        self.heads.append(head)
        self.bodies.append(b"")

    def on_request_body(self, data: bytes) -> None:
        self.bodies[-1] += data

    def on_request_end(self, head: RequestHead) -> None:
        self.ended += 1


class Responses:
    def __init__(self) -> None:
        self.heads: list[ResponseHead] = []
        self.body = b""
        self.ended = 0

    def on_response_head(self, head: ResponseHead) -> None:
        self.heads.append(head)

    def on_response_body(self, data: bytes) -> None:
        self.body += data

    def on_response_end(self, head: ResponseHead) -> None:
        self.ended += 1


def parse(data: bytes, **kw: int) -> Requests:
    h = Requests()
    RequestDecoder(h, **kw).feed(data)
    return h


def test_simple_request_and_end_to_end_headers() -> None:
    h = parse(
        b"GET /a?b=1 HTTP/1.1\r\nHost: books\r\nConnection: keep-alive, X-Hop\r\n"
        b"X-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-End: 2\r\nTE: trailers\r\n\r\n"
    )
    (head,) = h.heads
    assert head.method == b"GET" and head.target == b"/a?b=1" and head.host == b"books"
    assert head.keep_alive and head.version == b"1.1"
    assert head.end_to_end() == [(b"Host", b"books"), (b"X-End", b"2")]
    assert head.encoded_end_to_end() == [b"Host: books\r\n", b"X-End: 2\r\n"]
    assert h.ended == 1


def test_pipelined_requests_are_parsed_in_order() -> None:
    h = parse(b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [x.target for x in h.heads] == [b"/1", b"/2"]
    assert h.ended == 2


def test_request_split_at_every_byte_parses_the_same() -> None:
    raw = b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
    for cut in range(1, len(raw)):
        h = Requests()
        d = RequestDecoder(h)
        d.feed(raw[:cut])
        d.feed(raw[cut:])
        assert h.heads[0].content_length == 5 and h.bodies[0] == b"hello" and h.ended == 1


def test_chunked_body_and_trailers() -> None:
    h = parse(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 5\r\n\r\n"
    )
    assert h.heads[0].chunked and h.bodies[0] == b"abcde"
    assert h.heads[0].trailers == [(b"X-Sum", b"5")]


def test_http10_without_keepalive_closes() -> None:
    h = parse(b"GET / HTTP/1.0\r\n\r\n")
    assert h.heads[0].version == b"1.0" and not h.heads[0].keep_alive


def test_expect_continue_is_noted() -> None:
    h = parse(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert h.heads[0].expect_continue


@pytest.mark.parametrize(
    "raw",
    [
        # CL + TE: request smuggling
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        # two different lengths
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        # TE that does not end in chunked on a request
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    ],
)
def test_bad_requests_are_400_and_close(raw: bytes) -> None:
    with pytest.raises(Http1Error) as info:
        parse(raw)
    assert info.value.status == 400 and info.value.close


def test_oversized_head_is_431() -> None:
    raw = b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X-Big: " + b"a" * 5000 + b"\r\n\r\n"
    with pytest.raises(Http1Error) as info:
        parse(raw, max_head_bytes=4096)
    assert info.value.status == 431


def test_oversized_head_is_431_even_when_unfinished() -> None:
    d = RequestDecoder(Requests(), max_head_bytes=4096)
    d.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(Http1Error) as info:
        for _ in range(100):
            d.feed(b"X-A: " + b"b" * 100 + b"\r\n")
    assert info.value.status == 431


def test_upgrade_and_connect_return_the_tunnel_offset() -> None:
    raw = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nRAW"
    h = Requests()
    off = RequestDecoder(h).feed(raw)
    assert off is not None and raw[off:] == b"RAW"
    assert h.heads[0].upgrade == b"websocket"
    raw = b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n\x00\x01"
    off = RequestDecoder(Requests()).feed(raw)
    assert off is not None and raw[off:] == b"\x00\x01"


def test_response_to_head_has_no_body_and_parser_continues() -> None:
    r = Responses()
    d = ResponseDecoder(r)
    d.expect(r, head_request=True)
    d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert r.ended == 1 and r.heads[0].content_length == 1000 and r.body == b""
    d.expect(r, head_request=False)
    d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert r.ended == 2 and r.body == b"ok"


def test_interim_100_then_final_response() -> None:
    r = Responses()
    d = ResponseDecoder(r)
    d.feed(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert [h.status for h in r.heads] == [100, 201]


def test_close_delimited_response_ends_at_eof() -> None:
    r = Responses()
    d = ResponseDecoder(r)
    d.feed(b"HTTP/1.1 200 OK\r\n\r\npart1")
    d.feed(b"part2")
    assert r.ended == 0 and d.in_close_delimited_body
    assert d.connection_closed(clean=True)
    assert r.ended == 1 and r.body == b"part1part2"


@pytest.mark.parametrize(
    ("response", "clean"),
    [
        # A close-delimited body ended by a reset: the upstream died partway.
        (b"HTTP/1.1 200 OK\r\n\r\npart", False),
        # A Content-Length body that ended early, by a clean close or a reset.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\npart", False),
        # A chunked body without its last chunk.
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n", True),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\npart\r\n", False),
        # A head cut short.
        (b"HTTP/1.1 200 OK\r\nContent-Le", True),
    ],
)
def test_a_response_cut_short_is_not_completed_by_the_close(response: bytes, clean: bool) -> None:
    r = Responses()
    d = ResponseDecoder(r)
    d.feed(response)
    assert not d.connection_closed(clean=clean)
    assert r.ended == 0


def test_a_close_between_responses_completes_nothing() -> None:
    r = Responses()
    d = ResponseDecoder(r)
    d.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert r.ended == 1
    assert not d.connection_closed(clean=True) and not d.connection_closed(clean=False)
    assert r.ended == 1


def test_response_keeps_reason_and_drops_hop_headers() -> None:
    r = Responses()
    ResponseDecoder(r).feed(
        b"HTTP/1.1 404 Nope Nope\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
        b"Content-Length: 0\r\nX-A: 1\r\n\r\n"
    )
    assert r.heads[0].reason == b"Nope Nope" and r.heads[0].encoded == [b"X-A: 1\r\n"]


def test_bad_upstream_response_is_502() -> None:
    with pytest.raises(Http1Error) as info:
        ResponseDecoder(Responses()).feed(b"NOT HTTP AT ALL\r\n\r\n")
    assert info.value.status == 502


def test_chunk_encoding_round_trips_through_the_decoder() -> None:
    out: list[bytes] = [b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"]
    for piece in (b"a" * 17, b"", b"xyz"):
        encode_chunk(out, piece)
    encode_last_chunk(out, [(b"X-T", b"1")])
    h = parse(b"".join(out))
    assert h.bodies[0] == b"a" * 17 + b"xyz" and h.heads[0].trailers == [(b"X-T", b"1")]


def test_error_response_names_the_cause() -> None:
    raw = error_response(503, "no-endpoints", "service 'x' has no endpoints", close=True)
    r = Responses()
    ResponseDecoder(r).feed(raw)
    head = r.heads[0]
    assert head.status == 503 and (b"tulle-proxy-error", b"no-endpoints") in head.headers
    assert not head.keep_alive and r.body == b"service 'x' has no endpoints\n"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_escape_as_anything_but_http1error(data: bytes) -> None:
    # Fuzz: whatever arrives, the decoder either parses it or raises Http1Error
    # (which the proxy turns into a 4xx); never another exception.
    try:
        RequestDecoder(Requests(), max_head_bytes=256).feed(data)
    except Http1Error as err:
        assert err.status in (400, 431)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(st.from_regex(rb"\AX-[A-Za-z0-9]{1,10}\Z"), st.from_regex(rb"\A[!-~]{0,20}\Z")),
        max_size=10,
    ),
    st.binary(max_size=200),
    st.integers(min_value=1, max_value=50),
)
def test_valid_requests_survive_any_split(
    headers: list[tuple[bytes, bytes]], body: bytes, step: int
) -> None:
    raw = b"PUT /p HTTP/1.1\r\nHost: h\r\n"
    raw += b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    raw += b"Content-Length: %d\r\n\r\n" % len(body) + body
    h = Requests()
    d = RequestDecoder(h)
    for i in range(0, len(raw), step):
        d.feed(raw[i : i + step])
    assert h.ended == 1 and h.bodies[0] == body
    assert [n for n, _ in h.heads[0].headers[1:-1]] == [n for n, _ in headers]


@pytest.mark.parametrize(
    "first",
    [
        b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET /a HTTP/1.0\r\nHost: a\r\n\r\n",
    ],
)
@pytest.mark.parametrize(
    "after",
    [b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n", b"\x00\x01garbage\r\n\r\n", b"GET /ws HTTP/1.1\r\n"],
)
def test_bytes_after_a_request_that_ends_the_connection_are_ignored(
    first: bytes, after: bytes
) -> None:
    handler = Requests()
    decoder = RequestDecoder(handler)
    assert decoder.feed(first + after) is None
    assert decoder.feed(after) is None
    assert [h.target for h in handler.heads] == [b"/a"]
    assert handler.ended == 1
    assert decoder.finished


def test_a_keep_alive_request_does_not_finish_the_decoder() -> None:
    handler = Requests()
    decoder = RequestDecoder(handler)
    decoder.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert [h.target for h in handler.heads] == [b"/a", b"/b"]
    assert not decoder.finished
    with pytest.raises(Http1Error):
        decoder.feed(b"\x00garbage\r\n\r\n")


def test_stop_ignores_everything_after_it_upgrades_included() -> None:
    handler = Requests()
    decoder = RequestDecoder(handler)
    decoder.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    decoder.stop()
    upgrade = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert decoder.feed(upgrade + b"RAW") is None
    assert decoder.feed(b"\x00garbage\r\n\r\n") is None
    decoder.reset()
    assert decoder.feed(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n") is None
    assert [h.target for h in handler.heads] == [b"/a"]


def test_connection_cannot_nominate_host_framing_or_identity_headers() -> None:
    (head,) = parse(
        b"POST /a HTTP/1.1\r\nHost: books\r\n"
        b"Connection: host, content-length, transfer-encoding, x-forwarded-for\r\n"
        b"Connection: forwarded, x-real-ip, tulle-client-id, tulle-hops, X-Hop\r\n"
        b"X-Forwarded-For: 192.0.2.1\r\nForwarded: for=192.0.2.1\r\nX-Real-IP: 192.0.2.1\r\n"
        b"X-Hop: gone\r\nContent-Length: 2\r\n\r\nhi"
    ).heads
    assert head.connection_tokens == (b"x-hop",)
    kept = b"".join(head.encoded_end_to_end())
    assert b"Host: books\r\n" in kept
    assert b"X-Forwarded-For: 192.0.2.1\r\n" in kept
    assert b"Forwarded: for=192.0.2.1\r\n" in kept
    assert b"X-Real-IP: 192.0.2.1\r\n" in kept
    assert b"X-Hop" not in kept
