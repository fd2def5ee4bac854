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
from pathlib import Path

import atheris

with atheris.instrument_imports():
    import httptools

    from tulle.codec.http1 import RequestDecoder, ResponseDecoder

# The differential oracle is the unit test's (one copy): its event log of a
# decoder, llhttp's own view of a head, and the field-line splitter.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "codec"))
from test_http1_scanner import SCAN_REQUEST, SCAN_RESPONSE, RawHead, pairs, run

MAX_HEAD = 512


def check_head(data: bytes, request: bool) -> None:
    scan = SCAN_REQUEST if request else SCAN_RESPONSE
    assert scan is not None
    for pos in range(min(len(data), 4) + 1):
        got = scan(data, pos, MAX_HEAD)
        if got is None:
            continue
        end = got[0]
        assert pos < end <= len(data)
        seen = RawHead()
        parser = seen.parser = (
            httptools.HttpRequestParser(seen) if request else httptools.HttpResponseParser(seen)
        )
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
    pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
    assert run(kind, True, [data], MAX_HEAD) == run(kind, False, [data], MAX_HEAD)
    assert run(kind, True, pieces, MAX_HEAD) == run(kind, False, pieces, MAX_HEAD)


def main() -> None:
    if SCAN_REQUEST is None:
        sys.exit("the native scanner (tulle.codec._h1native) is not built")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
