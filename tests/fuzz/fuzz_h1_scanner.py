"""Coverage-guided fuzzing of the native HTTP/1 head scanner (atheris), differential against llhttp.

Not part of the pytest suite (it runs until stopped). For every input: each
offset's scan must not crash, and a head the scanner takes must be one
httptools accepts with the same method/target or status/reason, the same
header pairs, HTTP/1.1 and keep-alive; then the whole input goes through a
decoder with the scanner and one without, which must agree event for event
(tests/unit/codec/test_http1_scanner.py does the same with hypothesis).

    pip install atheris
    PYTHONPATH=src python tests/fuzz/fuzz_h1_scanner.py -max_total_time=300

With gcc's AddressSanitizer (no clang here, so coverage is of the Python
side; ASan catches any out-of-bounds read in the C):

    gcc -shared -fPIC -O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \\
        $(python3-config --includes) src/tulle/codec/_h1native.c \\
        -o /tmp/asan/tulle/codec/_h1native$(python3-config --extension-suffix)
    (and copy the rest of src/tulle there), then
    LD_PRELOAD=$(gcc -print-file-name=libasan.so) ASAN_OPTIONS=detect_leaks=0 \\
        PYTHONPATH=/tmp/asan python tests/fuzz/fuzz_h1_scanner.py -max_total_time=300
"""

from __future__ import annotations

import sys
from typing import Any

import atheris

with atheris.instrument_imports():
    import httptools

    from tulle.codec import http1
    from tulle.codec.http1 import Http1Error, RequestDecoder, ResponseDecoder

SCAN_REQUEST = http1.SCAN_REQUEST
SCAN_RESPONSE = http1.SCAN_RESPONSE


def pairs(fields: bytes) -> list[tuple[bytes, bytes]]:
    """The scanner's field lines as httptools' (name, value) pairs."""
    return [(n, v) for n, _, v in (line.partition(b": ") for line in fields.split(b"\r\n")[:-1])]


class Seen:
    def __init__(self) -> None:
        self.url = b""
        self.status = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.parser: Any = None
        self.version = ""
        self.keep_alive = False

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_status(self, status: bytes) -> None:
        self.status += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.version = self.parser.get_http_version()
        self.keep_alive = self.parser.should_keep_alive()


class Events:
    def __init__(self) -> None:
        self.log: list[object] = []

    def _head(self, head: Any) -> None:
        self.log.append(
            (
                getattr(head, "method", None),
                getattr(head, "target", None),
                getattr(head, "status", None),
                getattr(head, "reason", None),
                tuple(head.headers),
                head.end_to_end_block(),
                head.content_length,
                head.keep_alive,
                head.version,
            )
        )

    def _body(self, data: bytes) -> None:
        if self.log and isinstance(self.log[-1], bytes):
            self.log[-1] = self.log[-1] + data
        else:
            self.log.append(data)

    def _end(self, head: Any) -> None:
        self.log.append(("end", tuple(head.trailers or ())))

    on_request_head = on_response_head = _head
    on_request_body = on_response_body = _body
    on_request_end = on_response_end = _end


def run(
    kind: type[RequestDecoder] | type[ResponseDecoder], scan: bool, data: bytes, step: int
) -> object:
    events = Events()
    decoder = kind(events, max_head_bytes=512)  # type: ignore[arg-type]
    if not scan:
        decoder._scan = None
    try:
        for i in range(0, len(data), step):
            if decoder.feed(data[i : i + step]) is not None:
                return events.log, "offset"
    except Http1Error as err:
        return events.log, (err.status, err.reason, err.detail)
    return events.log, None


def check_head(data: bytes, request: bool) -> None:
    scan = SCAN_REQUEST if request else SCAN_RESPONSE
    assert scan is not None
    for pos in range(min(len(data), 4) + 1):
        got = scan(data, pos, 512)
        if got is None:
            continue
        end = got[0]
        assert pos < end <= len(data)
        seen = Seen()
        parser = (
            httptools.HttpRequestParser(seen) if request else httptools.HttpResponseParser(seen)
        )
        seen.parser = parser
        parser.feed_data(data[pos:end])  # llhttp must accept what the scanner took
        assert seen.version == "1.1" and seen.keep_alive
        if request:
            assert (got[1], got[2], pairs(got[3])) == (parser.get_method(), seen.url, seen.headers)
        else:
            assert (got[1], got[2], pairs(got[3])) == (
                parser.get_status_code(),
                seen.status,
                seen.headers,
            )


def one_input(raw: bytes) -> None:
    if len(raw) < 2:
        return
    step = raw[0] % 64 + 1
    request = raw[1] & 1 == 0
    data = raw[2:]
    check_head(data, request)
    kind = RequestDecoder if request else ResponseDecoder
    assert run(kind, True, data, len(data) or 1) == run(kind, False, data, len(data) or 1)
    assert run(kind, True, data, step) == run(kind, False, data, step)


def main() -> None:
    if SCAN_REQUEST is None:
        sys.exit("the native scanner (tulle.codec._h1native) is not built")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
