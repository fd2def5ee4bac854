"""TLS ClientHello parsing (sans-IO): the SNI and ALPN a client offers.

The inbound proxy peeks at a TLS connection's first record to decide whether
it is the mesh's own mTLS (the client offers one of Tulle's ALPN protocols) to
terminate, or somebody else's TLS to pass through untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

_HANDSHAKE = 0x16
_CLIENT_HELLO = 0x01
_EXT_SNI = 0x0000
_EXT_ALPN = 0x0010


@dataclass(frozen=True, slots=True)
class ClientHello:
    sni: str | None
    alpn: tuple[str, ...]


class Incomplete(Exception):
    """More bytes are needed to read the whole ClientHello."""


def parse_client_hello(data: bytes) -> ClientHello | None:
    """The ClientHello in `data`, or None when it is not one (malformed or
    another record). Raises `Incomplete` when it is cut short."""
    if len(data) < 5:
        raise Incomplete
    if data[0] != _HANDSHAKE or data[1] != 0x03:
        return None
    record_len = int.from_bytes(data[3:5], "big")
    body = data[5 : 5 + record_len]
    if len(body) < 4:
        raise Incomplete
    if body[0] != _CLIENT_HELLO:
        return None
    hello_len = int.from_bytes(body[1:4], "big")
    hello = body[4 : 4 + hello_len]
    if len(hello) < hello_len:
        raise Incomplete  # a ClientHello spread over several records is rare; ask for more
    try:
        return _parse_hello(hello)
    except (IndexError, ValueError):
        return None


def _parse_hello(h: bytes) -> ClientHello:
    pos = 2 + 32  # legacy_version, random
    sid_len = h[pos]
    pos += 1 + sid_len
    suites_len = int.from_bytes(h[pos : pos + 2], "big")
    pos += 2 + suites_len
    comp_len = h[pos]
    pos += 1 + comp_len
    if pos + 2 > len(h):
        return ClientHello(None, ())
    ext_total = int.from_bytes(h[pos : pos + 2], "big")
    pos += 2
    end = min(len(h), pos + ext_total)
    sni: str | None = None
    alpn: list[str] = []
    while pos + 4 <= end:
        ext_type = int.from_bytes(h[pos : pos + 2], "big")
        ext_len = int.from_bytes(h[pos + 2 : pos + 4], "big")
        ext = h[pos + 4 : pos + 4 + ext_len]
        pos += 4 + ext_len
        if ext_type == _EXT_SNI and len(ext) >= 5:
            name_len = int.from_bytes(ext[3:5], "big")
            if ext[2] == 0:
                sni = ext[5 : 5 + name_len].decode("ascii", "replace")
        elif ext_type == _EXT_ALPN and len(ext) >= 2:
            i = 2
            while i < len(ext):
                n = ext[i]
                alpn.append(ext[i + 1 : i + 1 + n].decode("ascii", "replace"))
                i += 1 + n
    return ClientHello(sni, tuple(alpn))
