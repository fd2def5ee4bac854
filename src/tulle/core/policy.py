"""Inbound authorization policy: the model, and the decision the proxy asks for on every call.

The model follows Linkerd's policy resources so that the same documents can
later come from Kubernetes CRDs:

- a **server** is one port of a workload, with its protocol;
- an **authentication** names who a client is: mesh identities (SPIFFE IDs, with
  `*` wildcards), networks (CIDRs with exceptions), or anyone at all;
- an **authorization** (an AuthorizationPolicy) grants access to a server or to
  one of its HTTP routes when *every* authentication it requires is satisfied;
- a **default mode** decides what nothing grants: `all-unauthenticated` (allow),
  `all-authenticated` (allow verified mesh identities), `deny`, or `audit`
  (allow, but flag the decision as one that would have been denied).

`InboundPolicy` is what one workload port enforces, compiled once when it
arrives and then asked on the request path: `authorize_http` per request and
`authorize_tcp` per connection. Both are synchronous, never raise, and return
one of a few `Decision` objects built at compile time, so a decision allocates
nothing. Which authentications a client satisfies depends only on its identity
and address, so that bitmask is cached per (identity, address): a request then
costs a route match and a few integer tests.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

from tulle.core.discovery import RouteMatch
from tulle.core.ratelimit import RateLimitSpec

ALL_UNAUTHENTICATED: Final = "all-unauthenticated"
ALL_AUTHENTICATED: Final = "all-authenticated"
DENY: Final = "deny"
AUDIT: Final = "audit"
MODES: Final = (ALL_UNAUTHENTICATED, ALL_AUTHENTICATED, DENY, AUDIT)
# What applies when neither the workload nor the mesh names a default (as Linkerd).
MESH_DEFAULT_MODE: Final = ALL_UNAUTHENTICATED
# A server that names no default denies what its authorizations do not grant
# (Linkerd's Server `accessPolicy`): declaring a server means locking it down.
SERVER_DEFAULT_MODE: Final = DENY

PROBE_POLICY: Final = "probe"
NO_POLICY_NAME: Final = "default:deny-no-policy"

# The app's own health checks come from its host (kubelet-style probes in a
# local mesh): only these sources may use the probe paths.
LOOPBACK_NETWORKS: Final = ("127.0.0.0/8", "::1/128")
_CACHE_LIMIT = 4096
# The request header in which the inbound proxy tells the app who called: the
# verified mTLS identity, set by the proxy alone. Every caller's copy is dropped,
# from headers and trailers, on every protocol; without an identity there is none.
CLIENT_ID_HEADER: Final = b"tulle-client-id"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
HeaderLookup = Callable[[bytes], bytes | None]


# -- the model -----------------------------------------------------------------


# Allowed clock difference for a JWT's `exp` and `nbf` when the policy names none.
DEFAULT_CLOCK_SKEW_S: Final = 60.0


@dataclass(frozen=True, slots=True)
class JwtSpec:
    """What a `jwt` authentication requires of an end-user token (checked by
    `tulle.core.jwt`, which alone imports the JOSE library)."""

    issuer: str
    audiences: tuple[str, ...] = ()  # empty: any audience (or none)
    jwks_file: str = ""
    jwks_url: str = ""
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    # (claim, accepted values): the claim equals one of them, or is a list
    # (or a space-separated `scope`) holding one of them.
    claims: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # (claim, header): claims forwarded to the app as request headers.
    forward_claims: tuple[tuple[str, str], ...] = ()

    @property
    def jwks_source(self) -> str:
        return self.jwks_url or self.jwks_file


@dataclass(frozen=True, slots=True)
class NetworkRule:
    """A CIDR the client address must be in, minus the `except_` CIDRs."""

    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Authentication:
    """One way a client proves who it is. Exactly one kind is set:
    `identities` (mesh TLS), `networks`, `unauthenticated` (anyone), or `jwt`
    (an end-user bearer token, checked per request: `tulle.core.jwt`)."""

    name: str
    identities: tuple[str, ...] = ()
    networks: tuple[NetworkRule, ...] = ()
    unauthenticated: bool = False
    jwt: JwtSpec | None = None

    @property
    def kind(self) -> str:
        if self.jwt is not None:
            return "jwt"
        if self.identities:
            return "meshTLS"
        if self.networks:
            return "network"
        return "unauthenticated"


@dataclass(frozen=True, slots=True)
class Authorization:
    """An AuthorizationPolicy: grants access when every required authentication holds."""

    name: str
    required: tuple[Authentication, ...]


@dataclass(frozen=True, slots=True)
class PolicyRoute:
    """An HTTP route of a server and the authorizations that target it."""

    name: str
    matches: tuple[RouteMatch, ...] = ()  # empty: every request
    authorizations: tuple[Authorization, ...] = ()
    rate_limit: RateLimitSpec | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # True when audit mode allowed a call that would otherwise have been denied.
    audit_denied: bool
    # The authorization policy that decided, or `default:<mode>`, or `probe`.
    policy: str
    server: str
    route: str


def identity_pattern(pattern: str) -> re.Pattern[str]:
    """`*` matches any run of characters within one path segment; a lone `*` matches any ID."""
    if pattern == "*":
        return re.compile(r".+", re.DOTALL)
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


def parse_client_ip(text: str) -> IpAddress | None:
    """The client address as the proxy saw it; IPv4-mapped IPv6 becomes IPv4."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class _AuthenticationCheck:
    """One authentication, precompiled: exact IDs in a set, wildcards as regexes."""

    __slots__ = ("_any", "_exact", "_networks", "_patterns")

    def __init__(self, authentication: Authentication) -> None:
        self._any = authentication.unauthenticated
        self._exact = frozenset(i for i in authentication.identities if "*" not in i)
        self._patterns = tuple(identity_pattern(i) for i in authentication.identities if "*" in i)
        self._networks = tuple(
            (
                ipaddress.ip_network(rule.cidr, strict=False),
                tuple(ipaddress.ip_network(e, strict=False) for e in rule.except_),
            )
            for rule in authentication.networks
        )

    def satisfied(self, client_id: str | None, address: IpAddress | None) -> bool:
        # A `jwt` authentication has no identities or networks: never satisfied
        # here, only by the request's token (`jwt_mask`), never cached.
        if self._any:
            return True
        if client_id is not None and (
            client_id in self._exact or any(p.fullmatch(client_id) for p in self._patterns)
        ):
            return True
        if address is not None:
            for network, exceptions in self._networks:
                # `in` is False across IP versions, which is what a rule means.
                if address in network and not any(address in e for e in exceptions):
                    return True
        return False


class _Match:
    """A RouteMatch over raw bytes, as the proxy's parsers hand them over."""

    __slots__ = ("_exact", "_headers", "_method", "_prefix", "_prefix_dir", "_regex")

    def __init__(self, match: RouteMatch) -> None:
        self._method = match.method.encode() if match.method else None
        self._exact = match.path_exact.encode() if match.path_exact is not None else None
        prefix = match.path_prefix.encode() if match.path_prefix is not None else None
        # Prefixes match whole segments: "/api" matches "/api" and "/api/x", not "/apix".
        if prefix is not None:
            prefix = prefix.rstrip(b"/")
        self._prefix = prefix
        self._prefix_dir = prefix + b"/" if prefix is not None else b""
        self._regex = re.compile(match.path_regex.encode()) if match.path_regex else None
        self._headers = tuple(
            (
                h.name.lower().encode(),
                re.compile(h.value.encode()) if h.regex else None,
                h.value.encode(),
            )
            for h in match.headers
        )

    def matches(self, method: bytes, path: bytes, header: HeaderLookup) -> bool:
        if self._method is not None and method != self._method:
            return False
        if self._exact is not None and path != self._exact:
            return False
        prefix = self._prefix
        if prefix and path != prefix and not path.startswith(self._prefix_dir):
            return False
        if self._regex is not None and self._regex.fullmatch(path) is None:
            return False
        for name, regex, value in self._headers:
            got = header(name)
            if got is None:
                return False
            if regex is None:
                if got != value:
                    return False
            elif regex.fullmatch(got) is None:
                return False
        return True


class _Defaults:
    """The decisions of a default mode at one route: for callers with and without an ID."""

    __slots__ = ("authenticated", "unauthenticated")

    def __init__(self, mode: str, name: str, server: str, route: str) -> None:
        allowed = Decision(True, False, name, server, route)
        denied = Decision(False, False, name, server, route)
        if mode == ALL_UNAUTHENTICATED:
            self.authenticated = self.unauthenticated = allowed
        elif mode == ALL_AUTHENTICATED:
            self.authenticated, self.unauthenticated = allowed, denied
        elif mode == AUDIT:
            self.authenticated = self.unauthenticated = Decision(True, True, name, server, route)
        else:
            self.authenticated = self.unauthenticated = denied

    def pick(self, client_id: str | None) -> Decision:
        return self.unauthenticated if client_id is None else self.authenticated


class _CompiledRoute:
    __slots__ = ("defaults", "grants", "matches")

    def __init__(
        self,
        matches: tuple[_Match, ...],
        grants: tuple[tuple[int, Decision], ...],
        defaults: _Defaults,
    ) -> None:
        self.matches = matches
        self.grants = grants
        self.defaults = defaults

    def matches_request(self, method: bytes, path: bytes, header: HeaderLookup) -> bool:
        if not self.matches:
            return True
        # A plain loop: `any(generator)` costs a generator per route per request.
        for match in self.matches:  # noqa: SIM110
            if match.matches(method, path, header):
                return True
        return False


@dataclass(frozen=True, slots=True)
class InboundPolicy:
    """The compiled policy of one workload port. Build it once; ask it per call.

    `server` is "" when no server selects the port: then only the default mode
    (and the probe paths) apply. `known` is False only for the fail-closed
    placeholder a proxy uses before the control plane has answered.
    """

    workload: str
    port: int
    server: str = ""
    protocol: str = ""  # "" when no server says: the proxy detects it
    default_mode: str = MESH_DEFAULT_MODE
    authorizations: tuple[Authorization, ...] = ()  # those that target the server
    routes: tuple[PolicyRoute, ...] = ()  # in match order: the first match wins
    probe_paths: tuple[str, ...] = ()
    known: bool = True
    # Overrides `default:<mode>` as the policy label (used by FAIL_CLOSED).
    default_name: str = ""
    # On every authorized HTTP request of the server (routes' own on top).
    rate_limit: RateLimitSpec | None = None

    _checks: tuple[_AuthenticationCheck, ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _server_grants: tuple[tuple[int, Decision], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _compiled_routes: tuple[_CompiledRoute, ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    _defaults: _Defaults = field(init=False, repr=False, compare=False, hash=False)
    _probe_paths: frozenset[bytes] = field(init=False, repr=False, compare=False, hash=False)
    _probe_decision: Decision = field(init=False, repr=False, compare=False, hash=False)
    _probe_networks: tuple[Network, ...] = field(init=False, repr=False, compare=False, hash=False)
    _masks: dict[tuple[str | None, str], int] = field(
        init=False, repr=False, compare=False, hash=False
    )
    # Whether any rate limit applies here: the request path's one test.
    rate_limited: bool = field(init=False, repr=False, compare=False, hash=False)
    # The `jwt` authentications this port's authorizations require, with their
    # bit in the mask (`authorize_http`'s `jwt_mask`); empty: no token is read,
    # the request path's one test.
    jwt_checks: tuple[tuple[int, JwtSpec], ...] = field(
        init=False, repr=False, compare=False, hash=False
    )
    # Headers the jwt authentications forward (lower-case): every caller's copy
    # is dropped on this port, with a valid token or not.
    jwt_headers: tuple[bytes, ...] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.default_mode not in MODES:
            raise ValueError(f"unknown default policy {self.default_mode!r}")
        setattr_ = object.__setattr__
        setattr_(
            self,
            "rate_limited",
            self.rate_limit is not None or any(r.rate_limit is not None for r in self.routes),
        )
        bits: dict[Authentication, int] = {}
        checks: list[_AuthenticationCheck] = []

        def mask_of(authorization: Authorization) -> int:
            mask = 0
            for authentication in authorization.required:
                bit = bits.get(authentication)
                if bit is None:
                    bit = bits[authentication] = 1 << len(checks)
                    checks.append(_AuthenticationCheck(authentication))
                mask |= bit
            return mask

        def grants(
            authorizations: Iterable[Authorization], route: str
        ) -> list[tuple[int, Decision]]:
            return [
                (mask_of(a), Decision(True, False, a.name, self.server, route))
                for a in authorizations
                # A policy that requires nothing would grant everything by
                # accident of an empty list; the manifest refuses it, and so does this.
                if a.required
            ]

        default_name = self.default_name or f"default:{self.default_mode}"
        setattr_(self, "_server_grants", tuple(grants(self.authorizations, "")))
        setattr_(self, "_defaults", _Defaults(self.default_mode, default_name, self.server, ""))
        compiled: list[_CompiledRoute] = []
        for route in self.routes:
            # Server-level grants apply to every route too, after the route's own.
            route_grants = grants(route.authorizations, route.name) + grants(
                self.authorizations, route.name
            )
            compiled.append(
                _CompiledRoute(
                    tuple(_Match(m) for m in route.matches),
                    tuple(route_grants),
                    _Defaults(self.default_mode, default_name, self.server, route.name),
                )
            )
        setattr_(self, "_compiled_routes", tuple(compiled))
        setattr_(self, "_checks", tuple(checks))
        jwt_checks = tuple((bit, a.jwt) for a, bit in bits.items() if a.jwt is not None)
        setattr_(self, "jwt_checks", jwt_checks)
        setattr_(
            self,
            "jwt_headers",
            tuple(
                dict.fromkeys(
                    header.lower().encode()
                    for _, spec in jwt_checks
                    for _, header in spec.forward_claims
                )
            ),
        )
        setattr_(self, "_probe_paths", frozenset(p.encode() for p in self.probe_paths))
        setattr_(
            self, "_probe_decision", Decision(True, False, PROBE_POLICY, self.server, PROBE_POLICY)
        )
        setattr_(
            self,
            "_probe_networks",
            tuple(ipaddress.ip_network(n) for n in LOOPBACK_NETWORKS),
        )
        setattr_(self, "_masks", {})

    # -- the request path ------------------------------------------------------

    def authorize_http(
        self,
        client_id: str | None,
        client_ip: str,
        method: bytes,
        path: bytes,
        header: HeaderLookup,
        jwt_mask: int = 0,
    ) -> Decision:
        """Decide one HTTP request (gRPC included). `path` may carry a query string.
        `jwt_mask`: the bits of `jwt_checks` the request's bearer token satisfies."""
        query = path.find(b"?")
        if query >= 0:
            path = path[:query]
        if (
            self._probe_paths
            and client_id is None
            and path in self._probe_paths
            and (method == b"GET" or method == b"HEAD")
            and self._from_probe_source(client_ip)
        ):
            return self._probe_decision
        mask = self._mask(client_id, client_ip) | jwt_mask if self._checks else 0
        for route in self._compiled_routes:
            if route.matches_request(method, path, header):
                for required, decision in route.grants:
                    if mask & required == required:
                        return decision
                return route.defaults.pick(client_id)
        for required, decision in self._server_grants:
            if mask & required == required:
                return decision
        return self._defaults.pick(client_id)

    def authorize_tcp(self, client_id: str | None, client_ip: str) -> Decision:
        """Decide one connection: only authorizations that target the server apply."""
        mask = self._mask(client_id, client_ip) if self._checks else 0
        for required, decision in self._server_grants:
            if mask & required == required:
                return decision
        return self._defaults.pick(client_id)

    # -- helpers -----------------------------------------------------------------

    def _mask(self, client_id: str | None, client_ip: str) -> int:
        key = (client_id, client_ip)
        mask = self._masks.get(key)
        if mask is None:
            address = parse_client_ip(client_ip)
            mask = 0
            for index, check in enumerate(self._checks):
                if check.satisfied(client_id, address):
                    mask |= 1 << index
            if len(self._masks) >= _CACHE_LIMIT:
                # Crude but bounded: a burst of new clients costs one recompute each.
                self._masks.clear()
            self._masks[key] = mask
        return mask

    def _from_probe_source(self, client_ip: str) -> bool:
        address = parse_client_ip(client_ip)
        return address is not None and any(address in n for n in self._probe_networks)


def fail_closed(workload: str = "", port: int = 0) -> InboundPolicy:
    """What a proxy enforces on a port before the control plane has said anything: deny."""
    return InboundPolicy(
        workload=workload, port=port, default_mode=DENY, known=False, default_name=NO_POLICY_NAME
    )


FAIL_CLOSED: Final = fail_closed()


# -- the source-of-truth model (the manifest's `policy:` section) -------------------


@dataclass(frozen=True, slots=True)
class ServerSpec:
    name: str
    workload: str
    port: int | None  # None: every port of the workload
    protocol: str = "http/1.1"
    default_mode: str | None = None  # None: SERVER_DEFAULT_MODE
    probe_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpRouteSpec:
    name: str
    server: str
    matches: tuple[RouteMatch, ...] = ()


@dataclass(frozen=True, slots=True)
class AuthorizationPolicySpec:
    name: str
    # Exactly one is set: the policy targets a whole server or one of its routes.
    target_server: str | None
    target_route: str | None
    required: tuple[str, ...]  # authentication names; all must hold


@dataclass(frozen=True, slots=True)
class RateLimitPolicySpec:
    """A rate limit and what it protects: a whole server or one of its routes."""

    limit: RateLimitSpec
    target_server: str | None
    target_route: str | None

    @property
    def name(self) -> str:
        return self.limit.name


@dataclass(frozen=True, slots=True)
class WorkloadPolicySpec:
    name: str
    default_mode: str | None = None  # None: the mesh default
    probe_paths: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """The whole `policy:` section, validated (references resolve, names are unique)."""

    default_mode: str = MESH_DEFAULT_MODE
    workloads: tuple[WorkloadPolicySpec, ...] = ()
    servers: tuple[ServerSpec, ...] = ()
    authentications: tuple[Authentication, ...] = ()
    http_routes: tuple[HttpRouteSpec, ...] = ()
    authorization_policies: tuple[AuthorizationPolicySpec, ...] = ()
    rate_limits: tuple[RateLimitPolicySpec, ...] = ()

    def _limit_of(
        self, *, server: str | None = None, route: str | None = None
    ) -> RateLimitSpec | None:
        for spec in self.rate_limits:
            if (server is not None and spec.target_server == server) or (
                route is not None and spec.target_route == route
            ):
                return spec.limit
        return None

    def server_for(self, workload: str, port: int) -> ServerSpec | None:
        """The server that selects a port: one naming the port beats one naming none."""
        fallback = None
        for server in self.servers:
            if server.workload != workload:
                continue
            if server.port == port:
                return server
            if server.port is None and fallback is None:
                fallback = server
        return fallback

    def compile(self, workload: str, port: int) -> InboundPolicy:
        """The policy one workload port enforces."""
        authentications = {a.name: a for a in self.authentications}
        workload_spec = next((w for w in self.workloads if w.name == workload), None)
        workload_mode = (
            workload_spec.default_mode
            if workload_spec is not None and workload_spec.default_mode
            else self.default_mode
        )
        workload_probes = workload_spec.probe_paths if workload_spec is not None else ()
        server = self.server_for(workload, port)
        if server is None:
            return InboundPolicy(
                workload=workload,
                port=port,
                default_mode=workload_mode,
                probe_paths=workload_probes,
            )

        def authorization(spec: AuthorizationPolicySpec) -> Authorization:
            if any(n not in authentications for n in spec.required):
                # A dangling reference must not make a policy weaker: it grants nothing.
                return Authorization(spec.name, ())
            return Authorization(spec.name, tuple(authentications[n] for n in spec.required))

        routes = tuple(
            PolicyRoute(
                name=route.name,
                matches=route.matches,
                authorizations=tuple(
                    authorization(p)
                    for p in self.authorization_policies
                    if p.target_route == route.name
                ),
                rate_limit=self._limit_of(route=route.name),
            )
            for route in self.http_routes
            if route.server == server.name
        )
        probes = tuple(dict.fromkeys(server.probe_paths + workload_probes))
        return InboundPolicy(
            workload=workload,
            port=port,
            server=server.name,
            protocol=server.protocol,
            default_mode=server.default_mode or SERVER_DEFAULT_MODE,
            authorizations=tuple(
                authorization(p)
                for p in self.authorization_policies
                if p.target_server == server.name
            ),
            routes=routes,
            probe_paths=probes,
            rate_limit=self._limit_of(server=server.name),
        )


EMPTY_POLICY: Final = PolicySpec()
