"""Protocol detection on first bytes (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.codec.detect import H2_PREFACE, Kind, detect


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"GET / HTTP/1.1\r\n", Kind.HTTP1),
        (b"POST /x HTTP/1.1\r\n", Kind.HTTP1),
        (b"CONNECT a:443 HTTP/1.1\r\n", Kind.HTTP1),
        (b"M-SEARCH * HTTP/1.1\r\n", Kind.HTTP1),
        (H2_PREFACE, Kind.HTTP2),
        (H2_PREFACE + b"\x00\x00\x00\x04", Kind.HTTP2),
        (b"\x16\x03\x01\x02\x00\x01", Kind.TLS),
        (b"\x16\x01", Kind.NEED_MORE),
        (b"\x16\x02\x00", Kind.OPAQUE),
        (b"SSH-2.0-OpenSSH_9.2\r\n", Kind.OPAQUE),
        (b"\x00\x01\x02", Kind.OPAQUE),
        (b" GET", Kind.OPAQUE),
        (b"get / HTTP/1.1", Kind.OPAQUE),
        (b"GE", Kind.NEED_MORE),
        (b"PRI * HTTP/2", Kind.NEED_MORE),
        (b"", Kind.NEED_MORE),
        (b"A" * 30, Kind.OPAQUE),
    ],
)
def test_detect_classifies_first_bytes(data: bytes, kind: Kind) -> None:
    assert detect(data) is kind


def test_need_more_only_for_short_prefixes() -> None:
    # Any prefix of a real request line is either HTTP/1 or "need more", never opaque.
    line = b"DELETE /items/1 HTTP/1.1\r\n"
    for i in range(1, len(line)):
        assert detect(line[:i]) in (Kind.HTTP1, Kind.NEED_MORE)
    for i in range(1, len(H2_PREFACE)):
        assert detect(H2_PREFACE[:i]) in (Kind.NEED_MORE, Kind.HTTP1)


@given(st.binary(max_size=64))
def test_detect_never_fails_and_is_stable_under_extension(data: bytes) -> None:
    kind = detect(data)
    assert isinstance(kind, Kind)
    if kind not in (Kind.NEED_MORE,):
        # A decision made on a prefix does not change when more bytes arrive.
        assert detect(data + b"more bytes") is kind
