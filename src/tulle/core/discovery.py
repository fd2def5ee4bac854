"""The discovery model the proxy consumes: endpoints, profiles, and a live view per service.

Sources (static flags, the control plane's Destination API) write into a
`ServiceView`; the proxy reads it on the request path without awaiting. Views
are plain objects with listeners so that a balancer can follow endpoint changes
without polling. Nothing here touches a socket.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from tulle.core.ratelimit import LimitSpec

Address = tuple[str, int]
# What a service (and a policy server) speaks: the values of a manifest's `protocol:`.
PROTOCOLS: Final = ("http/1.1", "h2", "grpc", "opaque")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service, as discovery names it."""

    address: Address
    weight: int = 10_000
    # The SPIFFE ID the endpoint's proxy must present; None when it is not meshed.
    identity: str | None = None
    # "http/1.1", "h2" or "opaque": what the endpoint's proxy expects, when known.
    protocol_hint: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeaderMatch:
    name: str  # lower-case
    value: str
    regex: bool = False


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Gateway API HTTPRoute-style match; every set field must match."""

    path_exact: str | None = None
    path_prefix: str | None = None
    path_regex: str | None = None
    method: str | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """Faults the calling proxy injects into a route's requests (chaos testing).

    A request is delayed by `delay_s` with probability `delay_percent` / 100
    and, independently, aborted with probability `abort_percent` / 100 (after
    its delay, if both hit). An abort answers `abort_status` to HTTP callers
    and, when `abort_grpc_status` is set, that gRPC status to gRPC callers
    (otherwise gRPC callers get `abort_status` too). With `headers`, only
    requests carrying every one of them are eligible (a test caller's marker).
    """

    delay_s: float = 0.0
    delay_percent: float = 0.0
    abort_status: int = 0  # 0: no HTTP abort status (gRPC-only abort)
    abort_grpc_status: int | None = None
    abort_percent: float = 0.0
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class MirrorSpec:
    """Copies of a share of a route's requests sent to another service; the
    copies' answers are discarded and never delay or fail the request."""

    service: str
    percent: float = 100.0


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    matches: tuple[RouteMatch, ...] = ()  # empty: matches every request
    timeout_s: float | None = None
    # None: the default rule (idempotent methods on 5xx or connection failure).
    retryable: bool | None = None
    retry_statuses: tuple[int, ...] = ()  # empty: 5xx
    fault: FaultSpec | None = None
    # Logged by proxies whose access log is scoped to routes (--access-log-scope routes).
    access_log: bool = False
    mirror: MirrorSpec | None = None
    # gRPC statuses (numbers) retried on a retryable route; empty: none.
    retry_grpc_statuses: tuple[int, ...] = ()
    # Outbound rate limit of the route (the calling proxy's token bucket).
    rate_limit: LimitSpec | None = None


@dataclass(frozen=True, slots=True)
class RetryBudgetSpec:
    ratio: float = 0.2
    min_retries_per_second: float = 10.0
    ttl_s: float = 10.0


@dataclass(frozen=True, slots=True)
class Backend:
    """A weighted traffic-split target: another service's name."""

    service: str
    weight: int


@dataclass(frozen=True, slots=True)
class AffinitySpec:
    """Session affinity: requests with the same key go to the same endpoint
    (consistent hashing with bounded loads, `tulle.core.affinity`). Exactly
    one of `header` (lower-case name) and `cookie` is set."""

    header: str = ""
    cookie: str = ""
    # An endpoint takes at most this times the mean in-flight load before a
    # key moves on to the next endpoint of the ring.
    load_factor: float = 1.25

    @property
    def header_bytes(self) -> bytes:
        return self.header.encode("latin-1")

    @property
    def cookie_bytes(self) -> bytes:
        return self.cookie.encode("latin-1")


@dataclass(frozen=True, slots=True)
class Profile:
    routes: tuple[Route, ...] = ()
    retry_budget: RetryBudgetSpec = RetryBudgetSpec()
    backends: tuple[Backend, ...] = ()  # empty: the service itself
    timeout_s: float | None = None  # default for routes without their own
    affinity: AffinitySpec | None = None  # None: balanced per request (P2C)
    # Callers (SPIFFE ID patterns) whose `tulle-backend` header picks the split
    # backend of a request; empty: the header is ignored.
    override_identities: tuple[str, ...] = ()


EMPTY_PROFILE = Profile()


class ServiceView:
    """What the proxy currently knows of one logical service.

    `exists` is None until the first answer about endpoints, then True or
    False. A source that also serves profiles (the control plane: routes and
    the traffic split come on a stream of their own) creates the view with
    `profile_expected=True`; the view is then `ready` only once both first
    answers are in, whichever comes first. The request path routes a name only
    when its view is ready: a split's apex usually has no endpoints of its own,
    so routing on the endpoints answer alone would send the first requests to
    an empty set (`503 no-endpoints`) while the split is still on its way.

    Sources call the `apply_*` methods; they are idempotent so that repeated or
    reordered updates converge (a Remove of an unknown address is ignored; an
    Add of a known address replaces it).
    """

    __slots__ = (
        "_listeners",
        "_ready_event",
        "endpoints",
        "exists",
        "name",
        "profile",
        "profile_known",
        "ready",
    )

    def __init__(self, name: str, *, profile_expected: bool = False) -> None:
        self.name = name
        self.endpoints: dict[Address, Endpoint] = {}
        self.exists: bool | None = None
        self.profile: Profile = EMPTY_PROFILE
        self.profile_known = not profile_expected
        # Discovery has answered: endpoints (or their absence) and, when
        # expected, the profile. A plain attribute: the request path reads it.
        self.ready = False
        self._listeners: list[Callable[[ServiceView], None]] = []
        self._ready_event: asyncio.Event | None = None

    # -- written by sources ------------------------------------------------
    def apply_add(self, endpoints: Iterable[Endpoint]) -> None:
        for ep in endpoints:
            self.endpoints[ep.address] = ep
        self.exists = True
        self._changed()

    def apply_remove(self, addresses: Iterable[Address]) -> None:
        for addr in addresses:
            self.endpoints.pop(addr, None)
        self._changed()

    def apply_reset(self, endpoints: Iterable[Endpoint]) -> None:
        self.endpoints = {ep.address: ep for ep in endpoints}
        self.exists = True
        self._changed()

    def apply_no_endpoints(self, exists: bool) -> None:
        self.endpoints = {}
        self.exists = exists
        self._changed()

    def apply_profile(self, profile: Profile) -> None:
        self.profile = profile
        self.profile_known = True
        self._changed()

    # -- read by the proxy -------------------------------------------------
    @property
    def known(self) -> bool:
        return self.ready

    def subscribe(self, listener: Callable[[ServiceView], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[ServiceView], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    async def wait_known(self, timeout_s: float) -> bool:
        """Wait until the view is `ready`; False when endpoints never came.

        When the endpoints answered but the profile did not within the
        timeout, the view stops waiting for it and serves without one (as it
        would with an empty profile): availability over a missing split, and
        later requests do not wait again. A profile that arrives later still
        applies.
        """
        if self.ready:
            return True
        event = self._ready_event
        if event is None:
            event = self._ready_event = asyncio.Event()
        try:
            await asyncio.wait_for(event.wait(), timeout_s)
        except TimeoutError:
            if self.exists is None:
                return False
            self.profile_known = True
            self.ready = True
            event.set()
        return True

    def _changed(self) -> None:
        if not self.ready and self.exists is not None and self.profile_known:
            self.ready = True
            if self._ready_event is not None:
                self._ready_event.set()
        for listener in tuple(self._listeners):
            listener(self)


class Resolver(Protocol):
    """Gives the live view of a logical service. Cheap, synchronous, never fails:
    an unknown name returns a view whose `exists` becomes False."""

    def resolve(self, name: str) -> ServiceView: ...

    async def close(self) -> None: ...


class StaticResolver:
    """Endpoints given on the command line (`--static-dst NAME=HOST:PORT,...`)."""

    def __init__(self, services: Mapping[str, Sequence[Endpoint]]) -> None:
        self._views: dict[str, ServiceView] = {}
        for name, eps in services.items():
            view = ServiceView(name)
            view.apply_reset(eps)
            self._views[name] = view

    def resolve(self, name: str) -> ServiceView:
        view = self._views.get(name)
        if view is None:
            view = ServiceView(name)
            view.apply_no_endpoints(exists=False)
            self._views[name] = view
        return view

    def names(self) -> list[str]:
        return sorted(n for n, v in self._views.items() if v.exists)

    async def close(self) -> None:
        return None


_HOST_LABEL = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


def host_problem(host: str, *, bracketed: bool = False) -> str | None:
    """Why `host` is neither an IP address nor a DNS name (None when it is one).

    Numbers-and-dots must be a real IPv4 address (`999.1.1.1` is not, and
    resolvers would take it for a name); a name is RFC 1123 labels (letters,
    digits, `-`, and `_` as service records use it) of at most 63 characters,
    253 in all, whose last label is not all digits.
    """
    if bracketed or ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return None
    if all(part.isascii() and part.isdigit() for part in host.split(".")):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"{host!r} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if (
        len(name) > 253
        or not all(_HOST_LABEL.match(label) for label in labels)
        or labels[-1].isdigit()
    ):
        return f"{host!r} is not a host name (letters, digits, '-' and '.') or an IP address"
    return None


def parse_address(text: str, *, default_host: str | None = None) -> Address:
    """Parse HOST:PORT ([v6]:PORT too); raises ValueError naming what is wrong."""
    text = text.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ValueError(f"bad address {text!r}: expected [IPv6]:PORT")
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"bad address {text!r}: expected HOST:PORT")
    if not host:
        if default_host is None:
            raise ValueError(f"bad address {text!r}: missing host")
        host = default_host
    elif (why := host_problem(host, bracketed=text.startswith("["))) is not None:
        raise ValueError(f"bad address {text!r}: {why}")
    if not port.isascii() or not port.isdigit() or len(port) > 5:
        raise ValueError(f"bad address {text!r}: port {port!r} is not a number")
    port_num = int(port)
    if not 0 <= port_num <= 65535:
        raise ValueError(f"bad address {text!r}: port {port_num} out of range")
    return host, port_num


def format_address(address: Address) -> str:
    """HOST:PORT, with an IPv6 host in brackets: what `parse_address` reads back."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_static_dst(spec: str) -> tuple[str, list[Endpoint]]:
    """Parse NAME=HOST:PORT[@IDENTITY][,HOST:PORT[@IDENTITY]...].

    An endpoint with `@spiffe://...` is meshed: the proxy calls it over mTLS
    and checks that it presents that identity."""
    name, sep, addrs = spec.partition("=")
    name = name.strip().lower()
    if not sep or not name:
        raise ValueError(f"bad --static-dst {spec!r}: expected NAME=HOST:PORT[,HOST:PORT...]")
    endpoints = []
    for one in addrs.split(","):
        if not one.strip():
            continue
        addr, _, identity = one.partition("@")
        endpoints.append(Endpoint(parse_address(addr), identity=identity.strip() or None))
    if not endpoints:
        raise ValueError(f"bad --static-dst {spec!r}: no endpoints after '='")
    return name, endpoints
