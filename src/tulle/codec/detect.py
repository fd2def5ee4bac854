"""Protocol detection on the first bytes of a connection (sans-IO).

The rule (documented in docs/architecture.md):

* The proxy reads once. If the bytes start with the HTTP/2 prior-knowledge
  preface it is HTTP/2; if they start with a TLS handshake record it is TLS;
  if they start with an HTTP/1 request line prefix (a method token and a space)
  it is HTTP/1; anything else is opaque TCP.
* Bytes that are a strict prefix of the above (e.g. ``GE`` or ``PRI * HT``)
  ask for one more read, bounded by the detect timeout.
* A client that sends nothing within the detect timeout (a few hundred ms) is
  treated as opaque: server-speaks-first protocols (SMTP, MySQL) then receive
  their banner after at most that delay instead of stalling.

Detection biases towards availability: when unsure, the bytes are forwarded
opaquely, which always works, rather than refused.
"""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    HTTP1 = "http1"
    HTTP2 = "h2"
    TLS = "tls"
    OPAQUE = "opaque"
    NEED_MORE = "need-more"


H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The longest HTTP method a real client sends; anything longer is not HTTP/1.
MAX_METHOD_LEN = 20
_TOKEN_CHARS = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ-_")


def detect(data: bytes) -> Kind:
    """Classify the first bytes of a connection."""
    if not data:
        return Kind.NEED_MORE
    first = data[0]
    if first == 0x16:  # TLS handshake record
        if len(data) < 3:
            return Kind.NEED_MORE
        return Kind.TLS if data[1] == 0x03 else Kind.OPAQUE
    if first == 0x50:  # "P": PRI (h2 preface), or POST/PUT/PATCH
        n = min(len(data), len(H2_PREFACE))
        if data[:n] == H2_PREFACE[:n]:
            return Kind.HTTP2 if n == len(H2_PREFACE) else Kind.NEED_MORE
    # HTTP/1 request line: METHOD SP ...
    limit = min(len(data), MAX_METHOD_LEN + 1)
    for i in range(limit):
        c = data[i]
        if c == 0x20:
            return Kind.HTTP1 if i > 0 else Kind.OPAQUE
        if c not in _TOKEN_CHARS:
            return Kind.OPAQUE
    return Kind.NEED_MORE if len(data) <= MAX_METHOD_LEN else Kind.OPAQUE
