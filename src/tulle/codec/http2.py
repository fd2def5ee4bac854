"""Sans-IO helpers for proxying HTTP/2 and gRPC: what `h2` does not decide for a proxy.

`h2` parses frames and keeps stream state; this module owns the proxy's own
decisions about the bytes and headers it sees, so they can be unit- and
property-tested without sockets:

* the prior-knowledge connection preface (is this HTTP/2?);
* the request head: pseudo-headers checked and extracted in one pass, and
  connection-specific (hop-by-hop) headers refused, as RFC 9113 section 8.2.2
  requires of an intermediary;
* gRPC: `grpc-timeout` parsing and encoding, `grpc-status` extraction and the
  success/failure classification the metrics use;
* flood accounting: a leaky bucket per frame kind, so that rapid reset
  (CVE-2023-44487) and SETTINGS, PING and empty-DATA floods can be told from
  ordinary traffic and the connection ended with ENHANCE_YOUR_CALM.

Headers are `(name, value)` pairs of `bytes`, as `h2` yields them with
`header_encoding=None`: decoding every header to `str` would cost more than
the proxy's own work on a small request.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tulle.codec.path import normalize_target, refusal_reason
from tulle.core.policy import CLIENT_ID_HEADER

Header = tuple[bytes, bytes]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class PrefaceMatch(enum.Enum):
    YES = "yes"  # the whole preface is there
    PARTIAL = "partial"  # what is there matches, more bytes are needed
    NO = "no"


def match_preface(data: bytes) -> PrefaceMatch:
    """Whether `data` starts with the HTTP/2 prior-knowledge client preface."""
    n = min(len(data), len(PREFACE))
    if data[:n] != PREFACE[:n]:
        return PrefaceMatch.NO
    return PrefaceMatch.YES if n == len(PREFACE) else PrefaceMatch.PARTIAL


# Connection-specific header fields (RFC 9113 8.2.2); `te` is allowed only as
# "trailers", which gRPC sends on every call.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# The hop count (see `tulle.codec.http1.HOPS_HEADER`) and its values, built once.
HOPS_HEADER = b"tulle-hops"
HOPS_VALUES = tuple(str(n).encode() for n in range(256))
_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})


class MalformedRequest(ValueError):
    """The request head breaks an HTTP/2 rule; the stream is reset with PROTOCOL_ERROR."""


@dataclass(frozen=True, slots=True)
class RequestHead:
    """What the proxy reads from a request's header block to route and time it."""

    method: str
    scheme: str
    authority: str
    path: str
    is_grpc: bool
    # Seconds from `grpc-timeout`; None when absent or unparseable (gRPC
    # servers ignore a bad value rather than fail the call, and so do we).
    grpc_timeout_s: float | None
    # `path` is normalised (`tulle.codec.path`); this says whether that changed
    # it, so that the forwarded `:path` must be replaced.
    path_rewritten: bool = False
    # Why the path is refused (400 `bad-path`); "" when it is not. `path` is
    # then the client's, for logs only.
    path_problem: str = ""
    # `tulle-hops`: proxies the request crossed before this one (0 if absent).
    hops: int = 0


def parse_request_head(headers: Sequence[Header]) -> RequestHead:
    """Check the request's pseudo-headers and extract what routing needs, in one pass.

    Raises MalformedRequest naming the first broken rule.
    """
    method = scheme = authority = path = b""
    host = b""
    content_type = b""
    grpc_timeout: float | None = None
    hops = 0
    seen_regular = False
    seen_pseudo: set[bytes] = set()
    for name, value in headers:
        if name[:1] == b":":
            if seen_regular:
                raise MalformedRequest(f"pseudo-header {name!r} after a regular header")
            if name not in _REQUEST_PSEUDO:
                raise MalformedRequest(f"unknown request pseudo-header {name!r}")
            if name in seen_pseudo:
                raise MalformedRequest(f"repeated pseudo-header {name!r}")
            seen_pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":scheme":
                scheme = value
            elif name == b":authority":
                authority = value
            elif name == b":path":
                path = value
            continue
        seen_regular = True
        if name in HOP_BY_HOP:
            raise MalformedRequest(f"connection-specific header {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise MalformedRequest("te header other than 'trailers'")
        elif name == b"host":
            host = value
        elif name == b"content-type":
            content_type = value
        elif name == b"grpc-timeout":
            grpc_timeout = parse_grpc_timeout(value)
        elif name == HOPS_HEADER:
            text = value.strip()
            if not text.isdigit() or len(text) > 4:
                raise MalformedRequest("tulle-hops must be a number of hops")
            hops = max(hops, int(text))
    if not method:
        raise MalformedRequest("missing :method")
    if method == b"CONNECT" and b":protocol" not in seen_pseudo:
        if not authority or scheme or path:
            raise MalformedRequest("CONNECT needs :authority and no :scheme or :path")
    else:
        if not scheme or not path:
            raise MalformedRequest("missing :scheme or :path")
    if not authority:
        authority = host
    problem = ""
    normal = path
    if path:  # CONNECT has none
        checked = normalize_target(path)
        if checked is None:
            problem = refusal_reason(path)
        else:
            normal = checked
    return RequestHead(
        method=method.decode("latin-1"),
        scheme=scheme.decode("latin-1"),
        authority=authority.decode("latin-1").lower(),
        path=normal.decode("latin-1"),
        is_grpc=is_grpc_content_type(content_type),
        grpc_timeout_s=grpc_timeout,
        path_rewritten=normal is not path,
        path_problem=problem,
        hops=hops,
    )


def without_hop_by_hop(headers: Sequence[Header]) -> Sequence[Header]:
    """The headers an intermediary may forward; the same object when nothing is dropped.

    Returning the input untouched in the common case saves a list copy per
    stream: `h2` already refuses these headers on input, so only headers the
    proxy built itself can carry them.
    """
    for name, _ in headers:
        if name in HOP_BY_HOP:
            return [(n, v) for n, v in headers if n not in HOP_BY_HOP]
    return headers


def forward_headers(
    headers: Sequence[Header], path: bytes | None, client_id: bytes | None
) -> Sequence[Header]:
    """The request headers to send upstream, in one pass.

    Hop-by-hop headers are dropped (`without_hop_by_hop`); `path`, when not
    None, replaces `:path` (the normalised one); `client_id`, when not None
    (the inbound), means every `tulle-client-id` the caller sent is dropped
    and, if it is not empty, the verified identity is added in their place.
    With neither (the outbound's common case) the input comes back uncopied.
    """
    if path is None and client_id is None:
        return without_hop_by_hop(headers)
    out: list[Header] = []
    for name, value in headers:
        # h2 refuses upper-case names on input, so one spelling is enough.
        if name in HOP_BY_HOP or (name == CLIENT_ID_HEADER and client_id is not None):
            continue
        if path is not None and name == b":path":
            value = path
        out.append((name, value))
    if client_id:
        out.append((CLIENT_ID_HEADER, client_id))
    return out


def without_client_id(trailers: list[Header]) -> list[Header]:
    """Request trailers minus any `tulle-client-id` (the inbound's rule for trailers)."""
    for name, _ in trailers:
        if name == CLIENT_ID_HEADER:
            return [(n, v) for n, v in trailers if n != CLIENT_ID_HEADER]
    return trailers


def with_hop(headers: Sequence[Header], hops: int) -> list[Header]:
    """The headers to forward from a hop: any `tulle-hops` replaced by `hops + 1`.

    One list per stream; the count comes from `parse_request_head`."""
    out = [h for h in headers if h[0] != HOPS_HEADER]
    out.append((HOPS_HEADER, HOPS_VALUES[hops + 1]))
    return out


def with_traceparent(headers: Sequence[Header], traceparent: bytes) -> list[Header]:
    """The headers with any `traceparent` replaced by this hop's (tulle.core.trace)."""
    out = [h for h in headers if h[0] != b"traceparent"]
    out.append((b"traceparent", traceparent))
    return out


def is_grpc_content_type(content_type: bytes) -> bool:
    """`application/grpc`, alone or with a `+codec` or `;params` suffix."""
    if not content_type.startswith(b"application/grpc"):
        return False
    rest = content_type[16:17]
    return rest in (b"", b"+", b";")


# -- gRPC deadlines -----------------------------------------------------------

_TIMEOUT_UNITS = {
    ord("H"): 3600.0,
    ord("M"): 60.0,
    ord("S"): 1.0,
    ord("m"): 1e-3,
    ord("u"): 1e-6,
    ord("n"): 1e-9,
}
# The gRPC wire spec: TimeoutValue is at most 8 ASCII digits.
_MAX_TIMEOUT_DIGITS = 8


def parse_grpc_timeout(value: bytes) -> float | None:
    """`grpc-timeout` (e.g. b"250m") in seconds, or None when it is not valid."""
    if not 2 <= len(value) <= _MAX_TIMEOUT_DIGITS + 1:
        return None
    digits = value[:-1]
    if not digits.isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1])
    if unit is None:
        return None
    return int(digits) * unit


def encode_grpc_timeout(seconds: float) -> bytes:
    """The most precise `grpc-timeout` value of at most 8 digits for `seconds` (>= 0)."""
    if seconds < 0:
        raise ValueError("a timeout cannot be negative")
    limit = 10**_MAX_TIMEOUT_DIGITS
    for unit, scale in ((b"n", 1e9), (b"u", 1e6), (b"m", 1e3), (b"S", 1.0), (b"M", 1 / 60)):
        amount = round(seconds * scale)
        if amount < limit:
            return str(amount).encode() + unit
    return str(min(limit - 1, round(seconds / 3600))).encode() + b"H"


# -- gRPC status --------------------------------------------------------------


class GrpcStatus(enum.IntEnum):
    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


def grpc_status_of(headers: Iterable[Header]) -> int | None:
    """The `grpc-status` in a trailer block (or trailers-only response); None if absent or bad."""
    for name, value in headers:
        if name == b"grpc-status":
            return int(value) if value.isdigit() and len(value) <= 3 else None
    return None


def is_success(status: int, grpc_status: int | None) -> bool:
    """The classification metrics and the balancer use.

    A gRPC response is judged by `grpc-status` alone (gRPC errors travel in a
    200 response); anything else by its HTTP status: 5xx is a failure, the
    client's own mistakes (4xx) are not the server's failure.
    """
    if grpc_status is not None:
        return grpc_status == GrpcStatus.OK
    return 0 < status < 500


# -- flood accounting ---------------------------------------------------------


class FloodKind(enum.IntEnum):
    # Streams that ended without proxied work: reset by the client before
    # their response ended, or refused by the proxy (unknown authority, no or
    # ejected endpoints, forbidden, malformed): each costs a parse and an
    # answer, and a client can open them as fast as it can write.
    RESET = 0
    SETTINGS = 1
    PING = 2
    EMPTY_DATA = 3  # DATA frames with no payload that do not end the stream


@dataclass(frozen=True, slots=True)
class FloodLimit:
    """A leaky bucket: `burst` events at once, then `rate_per_s` sustained."""

    burst: float
    rate_per_s: float


# Ordinary clients stay far below these; attackers send thousands per second.
# gRPC's BDP probes send a PING per burst of DATA, hence the generous PING rate.
DEFAULT_FLOOD_LIMITS: dict[FloodKind, FloodLimit] = {
    FloodKind.RESET: FloodLimit(burst=500, rate_per_s=100),
    FloodKind.SETTINGS: FloodLimit(burst=50, rate_per_s=5),
    FloodKind.PING: FloodLimit(burst=500, rate_per_s=100),
    FloodKind.EMPTY_DATA: FloodLimit(burst=100, rate_per_s=20),
}


class FloodGuard:
    """Per-connection leaky buckets, one per `FloodKind`; time is passed in (sans-IO)."""

    __slots__ = ("_bursts", "_levels", "_rates", "_stamps")

    def __init__(self, limits: dict[FloodKind, FloodLimit] | None = None) -> None:
        chosen = {**DEFAULT_FLOOD_LIMITS, **(limits or {})}
        kinds = list(FloodKind)
        self._bursts = [float(chosen[k].burst) for k in kinds]
        self._rates = [float(chosen[k].rate_per_s) for k in kinds]
        self._levels = [0.0] * len(kinds)
        self._stamps = [0.0] * len(kinds)

    def record(self, kind: FloodKind, now: float, count: int = 1) -> bool:
        """Count `count` events at time `now`; True when the bucket overflows (a flood)."""
        drained = (now - self._stamps[kind]) * self._rates[kind]
        level = max(0.0, self._levels[kind] - drained) + count
        self._levels[kind] = level
        self._stamps[kind] = now
        return level > self._bursts[kind]

    def level(self, kind: FloodKind) -> float:
        return self._levels[kind]
