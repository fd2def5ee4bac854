"""The seam between the HTTP/2 stream proxy and the rest of the proxy: routing and counters.

The HTTP/2 proxy asks a `Dispatcher` where each stream goes, once per stream,
synchronously (it is on the hot path and must not await): the answer is a
`Routed` (an upstream address, how to secure the connection, a deadline and a
completion callback for the balancer and metrics) or a `Refused` (why there is
nowhere to go; the proxy answers with a proper HTTP or gRPC error).

`H2Counters` holds plain numbers the proxy bumps and the admin server renders
only when scraped. `StaticDispatcher` is a fixed `{authority: [addresses]}`
table with round-robin, for tests and the harness.
"""

from __future__ import annotations

import enum
import itertools
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tulle.codec.http2 import Header
from tulle.core.discovery import Address
from tulle.core.outcome import Outcome

# done(http_status, grpc_status or None, latency_s, outcome): called exactly once
# per `Routed` answer when that attempt has ended, failed or been reset. The
# outcome is CANCELLED when the client reset the stream (or went away) first:
# that says nothing about the endpoint. A stream whose endpoint refused the
# connection is routed once more (nothing was sent), so the balancer hears of
# the refused endpoint before the next pick.
CompletionCallback = Callable[[int, int | None, float, Outcome], None]


class RefusalKind(enum.Enum):
    NO_ENDPOINTS = "no-endpoints"  # the service exists but has no endpoints now
    ENDPOINTS_EJECTED = "endpoints-ejected"  # every endpoint is ejected by failure accrual
    OVERLOADED = "overloaded"  # the service's pending-request limit is reached
    UNKNOWN_SERVICE = "unknown-service"  # discovery does not know the authority
    FORBIDDEN = "forbidden"  # policy does not allow the call
    BAD_REQUEST = "bad-request"  # the request cannot be routed (e.g. no authority)
    BAD_PATH = "bad-path"  # the path is refused by the normalisation rule (codec/path)
    LOOP_DETECTED = "loop-detected"  # the destination is the proxy itself, or too many hops
    DESTINATION_FORBIDDEN = "destination-forbidden"  # a destination the proxy never calls
    FAULT_INJECTED = "fault-injected"  # a route's injected abort (chaos testing)
    RATE_LIMITED = "rate-limited"  # a rate limit's bucket is empty


@dataclass(frozen=True, slots=True)
class Routed:
    """Send the stream to `address`."""

    address: Address
    done: CompletionCallback | None = None
    # TLS towards the endpoint (mTLS to a peer proxy); the context must offer
    # ALPN "h2" or "tulle.h2". None: plaintext prior-knowledge HTTP/2.
    ssl_context: ssl.SSLContext | None = None
    server_hostname: str | None = None
    # With TLS: the SPIFFE ID the peer proxy must present (checked after the
    # handshake; a mismatch fails the connection).
    expected_identity: str | None = None
    # The route's timeout; the proxy applies the smaller of this and grpc-timeout.
    timeout_s: float | None = None
    # An injected delay: the stream waits this long before it goes upstream.
    delay_s: float = 0.0
    # Distributed tracing: the `traceparent` sent upstream in place of the
    # caller's (this hop's span is the next one's parent). None: unchanged.
    traceparent: bytes | None = None
    # A request header not forwarded (a per-request override's, once read).
    drop_header: bytes | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    kind: RefusalKind
    detail: str = ""
    # Set by an injected fault: the HTTP / gRPC status of the answer in place
    # of the kind's (0 / -1: the kind's), and a delay before it is sent.
    status: int = 0
    grpc_status: int = -1
    delay_s: float = 0.0
    # Headers added to the answer (`retry-after` of a rate limit).
    headers: tuple[Header, ...] = ()


@dataclass(frozen=True, slots=True)
class Pending:
    """Not known yet (discovery has not answered for this authority): the
    stream waits for `ready()` (True once known, False on timeout), then is
    routed again. Its request body is held meanwhile, within flow control."""

    ready: Callable[[], Awaitable[bool]]
    detail: str = ""


class Dispatcher(Protocol):
    def route(
        self, authority: str, method: str, path: str, headers: Sequence[Header]
    ) -> Routed | Refused | Pending:
        """Where one stream goes. Synchronous and cheap; must not raise."""
        ...


class H2Counters:
    """Plain counters shared by every HTTP/2 connection of a listener; read when scraped."""

    __slots__ = (
        "connections_open",
        "connections_total",
        "flood_goaways",
        "protocol_errors",
        "proxy_errors",
        "streams_open",
        "streams_reset_by_client",
        "streams_reset_by_upstream",
        "streams_total",
        "upstream_connections_open",
    )

    def __init__(self) -> None:
        self.connections_open = 0
        self.connections_total = 0
        self.streams_open = 0
        self.streams_total = 0
        self.streams_reset_by_client = 0
        self.streams_reset_by_upstream = 0
        self.proxy_errors = 0
        self.flood_goaways = 0
        self.protocol_errors = 0
        self.upstream_connections_open = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class StaticDispatcher:
    """A fixed table `{authority: [addresses]}`, round-robin per authority.

    The authority is looked up as given, then without its port, so a client
    dialing `books:8080` and one dialing `books` reach the same service.
    """

    def __init__(
        self,
        table: Mapping[str, Sequence[Address]],
        *,
        done: CompletionCallback | None = None,
        timeout_s: float | None = None,
    ) -> None:
        self._cycles: dict[str, Iterator[Address]] = {}
        self._empty: set[str] = set()
        for authority, addresses in table.items():
            if addresses:
                self._cycles[authority.lower()] = itertools.cycle(list(addresses))
            else:
                self._empty.add(authority.lower())
        self._done = done
        self._timeout_s = timeout_s

    def route(
        self, authority: str, method: str, path: str, headers: Sequence[Header]
    ) -> Routed | Refused:
        cycle = self._cycles.get(authority)
        name = authority
        if cycle is None:
            name = authority.rsplit(":", 1)[0] if ":" in authority else authority
            cycle = self._cycles.get(name)
        if cycle is None:
            if name in self._empty or authority in self._empty:
                return Refused(RefusalKind.NO_ENDPOINTS, f"{name} has no endpoints")
            return Refused(RefusalKind.UNKNOWN_SERVICE, f"no route for {authority!r}")
        return Routed(next(cycle), done=self._done, timeout_s=self._timeout_s)
