"""ClientHello parsing against hellos made by Python's own TLS client (no sockets)."""

from __future__ import annotations

import ssl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.codec.tls_hello import ClientHello, Incomplete, parse_client_hello


def client_hello(alpn: list[str] | None, sni: str | None) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_reads_alpn_and_sni() -> None:
    hello = parse_client_hello(client_hello(["tulle.http1", "h2"], "books.example"))
    assert hello is not None
    assert hello.alpn == ("tulle.http1", "h2") and hello.sni == "books.example"


def test_hello_without_extensions_of_interest() -> None:
    hello = parse_client_hello(client_hello(None, None))
    assert hello is not None and hello.alpn == () and hello.sni is None


def test_cut_short_asks_for_more() -> None:
    raw = client_hello(["tulle.opaque"], None)
    for cut in (1, 4, 10, len(raw) - 1):
        with pytest.raises(Incomplete):
            parse_client_hello(raw[:cut])


def test_not_a_hello() -> None:
    assert parse_client_hello(b"GET / HTTP/1.1\r\n") is None


@given(st.binary(min_size=5, max_size=300))
def test_arbitrary_bytes_do_not_crash(data: bytes) -> None:
    try:
        hello = parse_client_hello(b"\x16\x03\x01" + data)
    except Incomplete:
        return
    assert hello is None or isinstance(hello, ClientHello)
