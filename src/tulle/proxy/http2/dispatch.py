"""The seam between the HTTP/2 stream proxy and the rest of the proxy: routing and counters.

The HTTP/2 proxy asks a `Dispatcher` where each stream goes, once per stream,
synchronously (it is on the hot path and must not await): the answer is a
`Routed` (an upstream address, how to secure the connection, a deadline, and
either the stream's `Call` -- its request plan, which judges retries and
records the request -- or a plain completion callback), a `Refused` (a
`ProxyError`: the proxy answers with a proper HTTP or gRPC error), or
`Pending` (discovery has not answered yet).

`H2Counters` holds plain numbers the proxy bumps and the admin server renders
only when scraped. `StaticDispatcher` is a fixed `{authority: [addresses]}`
table with round-robin, for tests and the harness.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from tulle.codec.http2 import Header, with_traceparent
from tulle.core.discovery import Address
from tulle.core.outcome import Outcome
from tulle.proxy.errors import ProxyError, Refused

# done(http_status, grpc_status or None, latency_s, outcome): called exactly once
# per `Routed` answer when that attempt has ended, failed or been reset. The
# outcome is CANCELLED when the client reset the stream (or went away) first:
# that says nothing about the endpoint. A stream whose endpoint refused the
# connection is routed once more (nothing was sent), so the balancer hears of
# the refused endpoint before the next pick.
CompletionCallback = Callable[[int, int | None, float, Outcome], None]


class Call(Protocol):
    """The request plan of one stream (`tulle.proxy.h2_mesh.H2Call`), as the
    stream asks it across its attempts. One per stream, not per attempt."""

    # The most request bytes kept to replay the request on another attempt.
    replay_limit: int
    # Whether the request is copied to a mirror once the stream is over (`copy`).
    mirrored: bool
    # What traffic features change on the way upstream for the current
    # attempt; None (nearly every stream): nothing, for one test.
    edits: StreamEdits | None

    def hold_headers(self) -> bool:
        """Whether a gRPC response's headers wait for its first message or its
        trailers (the route retries some gRPC statuses)."""
        ...

    def next_attempt(
        self, failure: int, status: int, grpc_status: int, replayable: bool, complete: bool
    ) -> Routed | Refused | None:
        """The attempt in flight failed (`tulle.core.retry` kind, the response's
        status, -1 for no grpc-status): where the next attempt goes, a refusal
        (a retry was granted but nothing can be picked), or None: no retry."""
        ...

    def proxy_error(self, error: ProxyError | str) -> None:
        """Count one proxy-made answer."""
        ...

    def copy(
        self,
        headers: Sequence[Header] | None,
        body: list[bytes] | None,
        trailers: list[Header] | None,
    ) -> None:
        """The stream is over and `mirrored`: copy its request (`body` None:
        not kept whole) to the route's mirror (`tulle.proxy.mirror`)."""
        ...

    def ended(self, status: int, grpc_status: int | None, outcome: Outcome, error: str) -> None:
        """The stream is over (once): `outcome` CANCELLED when the client gave
        up, FAILURE when the proxy ended it with `error`, SUCCESS when the
        endpoint's response was passed on in full (judged by the call)."""
        ...


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
    # The stream's request plan (None: `done` alone is told how it ended).
    # Traffic features' changes to the stream are its `edits`, not fields
    # here: a field of this frozen class costs every stream a keyword
    # argument and a store, used or not (docs/benchmarks.md, issue 16).
    call: Call | None = None


@dataclass(frozen=True, slots=True)
class StreamEdits:
    """A routed stream's changes made by traffic features (`Call.edits`),
    built only for a stream that one of them touches."""

    # An injected delay: the stream waits this long before it goes upstream.
    delay_s: float = 0.0
    # Distributed tracing: the `traceparent` sent upstream in place of the
    # caller's (this hop's span is the next one's parent). None: unchanged.
    traceparent: bytes | None = None
    # A request header not forwarded (a per-request override's, once read).
    drop_header: bytes | None = None
    # Inbound JWT: request headers (and trailers) dropped, then headers added
    # (verified claims). None: unchanged.
    claim_headers: tuple[tuple[bytes, ...], tuple[tuple[bytes, bytes], ...]] | None = None

    def request_headers(self, headers: Sequence[Header]) -> Sequence[Header]:
        """The headers sent upstream."""
        if self.drop_header is not None:
            headers = [h for h in headers if h[0] != self.drop_header]
        if self.traceparent is not None:
            headers = with_traceparent(headers, self.traceparent)
        claims = self.claim_headers
        if claims is not None:
            strip = claims[0]
            kept = [h for h in headers if h[0] not in strip]
            kept.extend(claims[1])
            headers = kept
        return headers


@dataclass(frozen=True, slots=True)
class Pending:
    """Not known yet (discovery has not answered for this authority): the
    stream waits for `ready()` (True once known, False on timeout), then is
    routed again. Its request body is held meanwhile, within flow control."""

    ready: Callable[[], Awaitable[bool]]
    detail: str = ""
    # The answer when `ready()` says discovery never answered.
    timed_out: Refused | None = None


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
                return Refused(ProxyError.NO_ENDPOINTS, f"{name} has no endpoints")
            return Refused(ProxyError.UNKNOWN_SERVICE, f"no route for {authority!r}")
        return Routed(next(cycle), done=self._done, timeout_s=self._timeout_s)
