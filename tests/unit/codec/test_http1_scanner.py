"""The native HTTP/1 head scanner (`tulle.codec._h1native`) against llhttp.

The scanner may only take heads llhttp accepts and must give the same fields;
everything else it leaves to llhttp. Differential tests: random heads, most of
them near the common shape, fed to a decoder with the scanner and to one with
llhttp only, in one piece and split; both must accept or refuse alike and
hand the proxy the same heads, bodies and ends. Under CI (`CI` set) the
scanner must be built: a build that silently fell back would test llhttp
against itself.
"""

from __future__ import annotations

import os

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.codec import http1
from tulle.codec.http1 import Http1Error, RequestDecoder, RequestHead, ResponseDecoder, ResponseHead

SCAN_REQUEST = http1.SCAN_REQUEST
SCAN_RESPONSE = http1.SCAN_RESPONSE


def test_ci_builds_the_native_scanner() -> None:
    if os.environ.get("CI") and SCAN_REQUEST is None:
        pytest.fail("native HTTP/1 scanner (tulle.codec._h1native) missing under CI")
    if SCAN_REQUEST is None:
        pytest.skip("native HTTP/1 scanner not built")


def native() -> None:
    if SCAN_REQUEST is None:
        pytest.skip("native HTTP/1 scanner not built")


class Events:
    """Every event a decoder gives, as comparable tuples."""

    def __init__(self) -> None:
        self.events: list[tuple[object, ...]] = []

    def on_request_head(self, head: RequestHead) -> None:
        self.events.append(("head", *request_fields(head)))

    def on_request_body(self, data: bytes) -> None:
        self.body(data)

    def on_request_end(self, head: RequestHead) -> None:
        self.events.append(("end", tuple(head.trailers or ())))

    def on_response_head(self, head: ResponseHead) -> None:
        self.events.append(("head", *response_fields(head)))

    def on_response_body(self, data: bytes) -> None:
        self.body(data)

    def on_response_end(self, head: ResponseHead) -> None:
        self.events.append(("end", tuple(head.trailers or ())))

    def body(self, data: bytes) -> None:
        # Pieces may be cut anywhere: compare the bytes, not the cuts.
        if self.events and self.events[-1][0] == "body":
            self.events[-1] = ("body", self.events[-1][1] + data)  # type: ignore[operator]
        else:
            self.events.append(("body", data))


def common_fields(head: http1.MessageHead) -> tuple[object, ...]:
    return (
        head.version,
        head.keep_alive,
        tuple(head.headers),
        head.content_length,
        head.chunked,
        head.transfer_encoding,
        head.connection_tokens,
        head.upgrade,
        head.end_to_end_block(),
        b"".join(head.encoded_end_to_end()),
        tuple(head.end_to_end()),
    )


def request_fields(head: RequestHead) -> tuple[object, ...]:
    return (
        head.method,
        head.target,
        head.host,
        head.hops,
        head.expect_continue,
        head.has_client_id,
        *common_fields(head),
    )


def response_fields(head: ResponseHead) -> tuple[object, ...]:
    return (head.status, head.reason, *common_fields(head))


def run(
    make: type[RequestDecoder] | type[ResponseDecoder],
    scanner: bool,
    pieces: list[bytes],
    max_head: int = 1024,
) -> tuple[list[tuple[object, ...]], object]:
    events = Events()
    decoder = make(events, max_head_bytes=max_head)  # type: ignore[arg-type]
    if not scanner:
        decoder._scan = None
    outcome: object = None
    for piece in pieces:
        try:
            offset = decoder.feed(piece)
        except Http1Error as err:
            outcome = ("error", err.status, err.reason, err.detail)
            break
        if offset is not None:
            outcome = ("offset", offset)
            break
    return events.events, outcome


def agree(make: type[RequestDecoder] | type[ResponseDecoder], raw: bytes, step: int) -> None:
    pieces = [raw[i : i + step] for i in range(0, len(raw), step)] or [b""]
    for max_head in (1024, 96):
        fast = run(make, True, [raw], max_head)
        slow = run(make, False, [raw], max_head)
        assert fast == slow
        assert run(make, True, pieces, max_head) == run(make, False, pieces, max_head)


METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT"]
NAMES = [
    b"Host",
    b"host",
    b"HOST",
    b"X-A",
    b"Accept",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Proxy-Connection",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"Upgrade",
    b"Expect",
    b"tulle-hops",
    b"Tulle-Client-Id",
    b"Cookie",
]
VALUES = [
    b"1",
    b"h",
    b"x y",
    b"keep-alive",
    b"close",
    b"Keep-Alive",
    b"chunked",
    b"gzip, chunked",
    b"0",
    b"5",
    b"13",
    b"100-continue",
    b"websocket",
    b"trailers",
    b"x-a",
    b"12345678901234567890",
    b"-1",
    b"a\tb",
    b'"q"',
]
ODD = st.sampled_from(
    [b"", b" ", b"\t", b"\x00", b"\r", b"\n", b"\x7f", b"\x80", b"\xff", b":", b" :", b"@", b"{"]
)
NAME = st.one_of(st.sampled_from(NAMES), st.from_regex(rb"\A[!-~]{1,12}\Z"), ODD)
VALUE = st.one_of(st.sampled_from(VALUES), st.from_regex(rb"\A[ -~]{0,12}\Z"), ODD)
SEP = st.sampled_from([b": ", b": ", b": ", b":", b":  ", b" : ", b":\t", b": \t"])
EOL = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"\r\n "])
HOSTILE_FIELD = st.tuples(NAME, SEP, VALUE, st.sampled_from([b"", b"", b"", b" ", b"\t"]), EOL).map(
    b"".join
)
CLEAN_FIELD = st.tuples(
    st.one_of(st.sampled_from(NAMES), st.from_regex(rb"\A[A-Za-z0-9-]{1,12}\Z")),
    st.just(b": "),
    st.one_of(st.sampled_from(VALUES), st.from_regex(rb"\A[!-~]([ -~]{0,10}[!-~])?\Z")),
    st.just(b"\r\n"),
).map(b"".join)
# Mostly well-formed lines, so that the scanner's side is exercised too.
FIELD = st.one_of(CLEAN_FIELD, CLEAN_FIELD, CLEAN_FIELD, CLEAN_FIELD, HOSTILE_FIELD)
LENGTH = st.sampled_from(
    [b"Content-Length: 13\r\n", b"Content-Length: 5\r\n", b"Content-Length: 0\r\n", b""]
)
TARGET = st.one_of(
    st.sampled_from([b"/", b"/a?b=1", b"/a/../b", b"*", b"http://x/y", b"/%41", b"/a#f"]),
    st.from_regex(rb"\A/[!-~]{0,16}\Z"),
    st.binary(max_size=8),
)
HOSTILE_REQUEST_LINE = st.tuples(
    st.one_of(st.sampled_from(METHODS), st.sampled_from([b"get", b"FOO", b"", b"GET "])),
    st.sampled_from([b" ", b" ", b"  "]),
    TARGET,
    st.sampled_from([b" HTTP/1.1", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b" http/1.1", b""]),
    EOL,
).map(b"".join)
HOSTILE_STATUS_LINE = st.tuples(
    st.sampled_from([b"HTTP/1.1 ", b"HTTP/1.1 ", b"HTTP/1.0 ", b"HTTP/1.1  "]),
    st.sampled_from(
        [b"200", b"200", b"404", b"500", b"503", b"204", b"304", b"101", b"100", b"199", b"600"]
    ),
    st.sampled_from([b" OK", b" OK", b" Not Found", b"", b" ", b" OK ", b" \x80", b" a\tb"]),
    EOL,
).map(b"".join)
REQUEST_LINE = st.one_of(
    st.tuples(st.sampled_from(METHODS[:7]), st.just(b" "), TARGET, st.just(b" HTTP/1.1\r\n")).map(
        b"".join
    ),
    HOSTILE_REQUEST_LINE,
)
STATUS_LINE = st.one_of(
    st.sampled_from([b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 404 Not Found\r\n", b"HTTP/1.1 503 x\r\n"]),
    HOSTILE_STATUS_LINE,
)
TAIL = st.one_of(
    st.just(b""),
    st.sampled_from([b"hello", b"hello, world!", b"GET /2 HTTP/1.1\r\nHost: h\r\n\r\n"]),
    st.binary(max_size=40),
)


def head(line: bytes, fields: list[bytes], end: bytes, tail: bytes) -> bytes:
    return line + b"".join(fields) + end + tail


@settings(max_examples=1500, deadline=None)
@given(
    REQUEST_LINE,
    st.lists(FIELD, max_size=8),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
    TAIL,
    st.integers(min_value=1, max_value=64),
)
def test_requests_agree_with_llhttp(
    line: bytes, fields: list[bytes], end: bytes, tail: bytes, step: int
) -> None:
    native()
    agree(RequestDecoder, head(line, fields, end, tail), step)


def with_length(fields: list[bytes], length: bytes, at: int) -> list[bytes]:
    at = min(at, len(fields))
    return [*fields[:at], length, *fields[at:]]


@settings(max_examples=1500, deadline=None)
@given(
    STATUS_LINE,
    st.builds(with_length, st.lists(FIELD, max_size=8), LENGTH, st.integers(0, 8)),
    st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
    TAIL,
    st.integers(min_value=1, max_value=64),
)
def test_responses_agree_with_llhttp(
    line: bytes, fields: list[bytes], end: bytes, tail: bytes, step: int
) -> None:
    native()
    agree(ResponseDecoder, head(line, fields, end, tail), step)


def pairs(fields: bytes) -> list[tuple[bytes, bytes]]:
    """The scanner's field lines as httptools' (name, value) pairs."""
    return [(n, v) for n, _, v in (line.partition(b": ") for line in fields.split(b"\r\n")[:-1])]


class RawHead:
    """httptools' own view of one head: what the scanner must reproduce."""

    def __init__(self) -> None:
        self.url = b""
        self.status = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.complete = False
        self.parser: httptools.HttpRequestParser | httptools.HttpResponseParser | None = None
        self.version = ""
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # Read here, as the decoders do: after the message they are reset.
        assert self.parser is not None
        self.complete = True
        self.version = self.parser.get_http_version()
        self.keep_alive = self.parser.should_keep_alive()


@settings(max_examples=1500, deadline=None)
@given(REQUEST_LINE, st.lists(FIELD, max_size=8), st.sampled_from([b"\r\n", b"\n", b""]))
def test_a_request_head_the_scanner_takes_is_one_llhttp_takes(
    line: bytes, fields: list[bytes], end: bytes
) -> None:
    native()
    assert SCAN_REQUEST is not None
    raw = head(line, fields, end, b"")
    got = SCAN_REQUEST(raw, 0, 65536)
    if got is None:
        return
    seen = RawHead()
    parser = seen.parser = httptools.HttpRequestParser(seen)
    parser.feed_data(raw)  # raises if llhttp refuses: the test fails
    assert seen.complete and got[0] == len(raw)
    assert (got[1], got[2], pairs(got[3])) == (parser.get_method(), seen.url, seen.headers)
    assert seen.version == "1.1" and seen.keep_alive


@settings(max_examples=1500, deadline=None)
@given(
    STATUS_LINE,
    st.builds(with_length, st.lists(FIELD, max_size=8), LENGTH, st.integers(0, 8)),
    st.sampled_from([b"\r\n", b"\n", b""]),
)
def test_a_response_head_the_scanner_takes_is_one_llhttp_takes(
    line: bytes, fields: list[bytes], end: bytes
) -> None:
    native()
    assert SCAN_RESPONSE is not None
    raw = head(line, fields, end, b"")
    got = SCAN_RESPONSE(raw, 0, 65536)
    if got is None:
        return
    seen = RawHead()
    parser = seen.parser = httptools.HttpResponseParser(seen)
    parser.feed_data(raw)
    assert seen.complete and got[0] == len(raw)
    assert (got[1], got[2], pairs(got[3])) == (parser.get_status_code(), seen.status, seen.headers)
    assert seen.version == "1.1" and seen.keep_alive


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=0, max_value=600))
def test_the_scanner_survives_any_bytes_at_any_offset(data: bytes, pos: int) -> None:
    native()
    assert SCAN_REQUEST is not None and SCAN_RESPONSE is not None
    pos = min(pos, len(data))
    for scan in (SCAN_REQUEST, SCAN_RESPONSE):
        got = scan(data, pos, 1024)
        assert got is None or pos < got[0] <= len(data)


BROWSER = (
    b"GET / HTTP/1.1\r\nHost: bench\r\n"
    b"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n"
    b"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
    b"Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\r\n"
)
NGINX = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Fri, 27 Nov 2026 18:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n"
    b'ETag: "6927d9e0-d"\r\nAccept-Ranges: bytes\r\n\r\nhello, world!'
)


def test_the_common_heads_are_the_scanners() -> None:
    native()
    assert SCAN_REQUEST is not None and SCAN_RESPONSE is not None
    got = SCAN_REQUEST(BROWSER, 0, 65536)
    assert got is not None and got[4] == BROWSER[len(b"GET / HTTP/1.1\r\n") : -2]
    assert got[5] == [(b"host", b"bench")]
    got = SCAN_RESPONSE(NGINX, 0, 65536)
    assert got is not None and got[5] == 13
    assert b"Content-Length" not in got[4] and b"Connection" not in got[4]
    assert b"Server: nginx/1.22.1\r\n" in got[4] and b"Accept-Ranges: bytes\r\n" in got[4]


@pytest.mark.parametrize("step", [1, 7, 100, 1000])
def test_pipelined_common_heads_agree_whatever_the_cuts(step: int) -> None:
    native()
    agree(RequestDecoder, BROWSER * 3 + b"POST /p HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", step)
    agree(
        ResponseDecoder,
        NGINX * 3 + b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        step,
    )


def test_a_second_host_is_refused_alike() -> None:
    native()
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    fast, slow = run(RequestDecoder, True, [raw]), run(RequestDecoder, False, [raw])
    assert fast == slow and fast[1] == ("error", 400, "bad-request", "more than one Host header")


def test_an_oversized_head_is_left_to_llhttp_for_its_431() -> None:
    native()
    raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 200 + b"\r\n\r\n"
    assert SCAN_REQUEST is not None and SCAN_REQUEST(raw, 0, 100) is None
    fast = run(RequestDecoder, True, [raw], max_head=100)
    assert fast == run(RequestDecoder, False, [raw], max_head=100)
    assert fast[1] == ("error", 431, "header-too-large", "request header section too large")
