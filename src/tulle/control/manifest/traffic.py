"""Reading the traffic-control fields: a route's `fault`, a policy's `rateLimits`.

One module for the features of docs/manifest.md's "Fault injection" and
docs/policy.md's "Rate limits", used by the services and policy readers:
each function takes the reader (anything with its checking methods,
`ManifestChecks`) and returns the core spec, or None after reporting
problems.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from yaml.nodes import Node

from tulle.core.discovery import AffinitySpec, FaultSpec, HeaderMatch, MirrorSpec
from tulle.core.policy import RateLimitPolicySpec
from tulle.core.ratelimit import LimitOverride, LimitSpec, RateLimitSpec

T = TypeVar("T")

# gRPC status codes 1..16 (0 is OK, which is no abort).
GRPC_STATUS_MAX = 16


class ManifestChecks(Protocol):
    """The parser's checking methods these fields use."""

    @property
    def problems(self) -> Sequence[object]: ...

    def problem(self, node: Node | None, path: str, message: str) -> None: ...

    def mapping(
        self,
        node: Node,
        path: str,
        allowed: tuple[str, ...],
        required: tuple[str, ...] = (),
    ) -> dict[str, Node] | None: ...

    def integer(self, node: Node, path: str, low: int, high: int) -> int | None: ...

    def string(self, node: Node, path: str, *, what: str = "a string") -> str | None: ...

    def number(self, node: Node, path: str, low: float, high: float) -> float | None: ...

    def duration(self, node: Node, path: str) -> float | None: ...

    def items(
        self, node: Node, path: str, convert: Callable[[Node, str], T | None]
    ) -> list[T] | None: ...

    def header_match(self, node: Node, path: str) -> HeaderMatch | None: ...

    def name(self, node: Node, path: str) -> str | None: ...

    def reference(self, node: Node, path: str, kind: str, known: set[str]) -> str | None: ...


class LimitChecks(ManifestChecks, Protocol):
    """The policy reader's: rate limits name identities."""

    def identity_pattern(self, node: Node, path: str) -> str | None: ...


def fault(p: ManifestChecks, node: Node, path: str) -> FaultSpec | None:
    """`routes[].fault`: `delay: {duration, percent}`, `abort: {status, grpcStatus,
    percent}`, `headers: [header matches]`; at least one of delay and abort."""
    fields = p.mapping(node, path, ("delay", "abort", "headers"))
    if fields is None:
        return None
    before = len(p.problems)
    delay_s = delay_percent = 0.0
    if "delay" in fields:
        delay = p.mapping(
            fields["delay"], f"{path}.delay", ("duration", "percent"), ("duration", "percent")
        )
        if delay is not None:
            if "duration" in delay:
                delay_s = p.duration(delay["duration"], f"{path}.delay.duration") or 0.0
            if "percent" in delay:
                delay_percent = p.number(delay["percent"], f"{path}.delay.percent", 0, 100) or 0.0
    status = 0
    grpc_status: int | None = None
    abort_percent = 0.0
    if "abort" in fields:
        abort = p.mapping(
            fields["abort"], f"{path}.abort", ("status", "grpcStatus", "percent"), ("percent",)
        )
        if abort is not None:
            if "status" in abort:
                status = p.integer(abort["status"], f"{path}.abort.status", 200, 599) or 0
            if "grpcStatus" in abort:
                grpc_status = p.integer(
                    abort["grpcStatus"], f"{path}.abort.grpcStatus", 1, GRPC_STATUS_MAX
                )
            if "status" not in abort and "grpcStatus" not in abort:
                p.problem(fields["abort"], f"{path}.abort", "give status, grpcStatus or both")
            if "percent" in abort:
                abort_percent = p.number(abort["percent"], f"{path}.abort.percent", 0, 100) or 0.0
    if "delay" not in fields and "abort" not in fields:
        p.problem(node, path, "give delay, abort or both")
    headers: list[HeaderMatch] = []
    if "headers" in fields:
        headers = p.items(fields["headers"], f"{path}.headers", p.header_match) or []
    if len(p.problems) > before:
        return None
    return FaultSpec(
        delay_s=delay_s,
        delay_percent=delay_percent,
        abort_status=status,
        abort_grpc_status=grpc_status,
        abort_percent=abort_percent,
        headers=tuple(headers),
    )


# The highest rate a limit may name: beyond it a limit limits nothing.
MAX_RATE = 1_000_000.0


def limit(
    p: ManifestChecks, node: Node, path: str, extra: tuple[str, ...] = ()
) -> LimitSpec | None:
    """`{requestsPerSecond, burst}` (`burst` defaults to one second's worth)."""
    fields = p.mapping(node, path, ("requestsPerSecond", "burst", *extra), ("requestsPerSecond",))
    if fields is None or "requestsPerSecond" not in fields:
        return None
    rate = p.number(fields["requestsPerSecond"], f"{path}.requestsPerSecond", 0.001, MAX_RATE)
    burst = 0
    if "burst" in fields:
        burst = p.integer(fields["burst"], f"{path}.burst", 1, 10_000_000) or 0
        if not burst:
            return None
    if rate is None:
        return None
    return LimitSpec(rate, burst)


def rate_limit(
    p: LimitChecks, node: Node, path: str, servers: set[str], routes: set[str]
) -> RateLimitPolicySpec | None:
    """`policy.rateLimits[]`: a name, a target (server or httpRoute), and at
    least one of `total`, `identity`, `overrides`."""
    fields = p.mapping(
        node,
        path,
        ("name", "target", "total", "identity", "overrides", "unauthenticatedPrefix"),
        ("name", "target"),
    )
    if fields is None or "name" not in fields or "target" not in fields:
        return None
    before = len(p.problems)
    name = p.name(fields["name"], f"{path}.name")
    target_server = target_route = None
    target = p.mapping(fields["target"], f"{path}.target", ("server", "httpRoute"))
    if target is not None:
        if len(target) != 1:
            p.problem(fields["target"], f"{path}.target", "give exactly one of server or httpRoute")
        elif "server" in target:
            target_server = p.reference(
                target["server"], f"{path}.target.server", "server", servers
            )
        else:
            target_route = p.reference(
                target["httpRoute"], f"{path}.target.httpRoute", "httpRoute", routes
            )
    total = limit(p, fields["total"], f"{path}.total") if "total" in fields else None
    identity = limit(p, fields["identity"], f"{path}.identity") if "identity" in fields else None
    overrides: list[LimitOverride] = []
    if "overrides" in fields:
        overrides = (
            p.items(fields["overrides"], f"{path}.overrides", lambda n, q: _override(p, n, q)) or []
        )
    if not ({"total", "identity", "overrides"} & set(fields)):
        p.problem(node, path, "give total, identity, overrides or several")
    v4, v6 = 32, 128
    if "unauthenticatedPrefix" in fields:
        prefix = p.mapping(
            fields["unauthenticatedPrefix"], f"{path}.unauthenticatedPrefix", ("ipv4", "ipv6")
        )
        if prefix is not None:
            if "ipv4" in prefix:
                v4 = p.integer(prefix["ipv4"], f"{path}.unauthenticatedPrefix.ipv4", 1, 32) or 32
            if "ipv6" in prefix:
                v6 = p.integer(prefix["ipv6"], f"{path}.unauthenticatedPrefix.ipv6", 1, 128) or 128
    if name is None or len(p.problems) > before:
        return None
    spec = RateLimitSpec(name, total, identity, tuple(overrides), v4, v6)
    return RateLimitPolicySpec(spec, target_server, target_route)


def _override(p: LimitChecks, node: Node, path: str) -> LimitOverride | None:
    fields = p.mapping(node, path, ("requestsPerSecond", "burst", "identities"), ("identities",))
    if fields is None or "identities" not in fields:
        return None
    before = len(p.problems)
    spec = limit(p, node, path, extra=("identities",))
    identities = p.items(fields["identities"], f"{path}.identities", p.identity_pattern) or []
    if not identities and len(p.problems) == before:
        p.problem(fields["identities"], f"{path}.identities", "name at least one identity")
    if spec is None or len(p.problems) > before:
        return None
    return LimitOverride(spec, tuple(identities))


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def affinity(p: ManifestChecks, node: Node, path: str) -> AffinitySpec | None:
    """`services[].affinity`: `header` or `cookie` (one of them), and `loadFactor`."""
    fields = p.mapping(node, path, ("header", "cookie", "loadFactor"))
    if fields is None:
        return None
    before = len(p.problems)
    if ("header" in fields) == ("cookie" in fields):
        p.problem(node, path, "give exactly one of header or cookie")
    header = cookie = ""
    for key in ("header", "cookie"):
        if key in fields:
            text = p.string(fields[key], f"{path}.{key}", what=f"a {key} name") or ""
            if text and not _TOKEN.match(text):
                p.problem(fields[key], f"{path}.{key}", f'"{text}" is not a valid {key} name')
            if key == "header":
                header = text.lower()
            else:
                cookie = text
    load_factor = 1.25
    if "loadFactor" in fields:
        load_factor = p.number(fields["loadFactor"], f"{path}.loadFactor", 1.0, 100.0) or 1.25
    if len(p.problems) > before:
        return None
    return AffinitySpec(header=header, cookie=cookie, load_factor=load_factor)


_SPIFFE = re.compile(r"^spiffe://[a-z0-9.-]+(/[A-Za-z0-9._~*-]+)+$")


def request_override(p: ManifestChecks, node: Node, path: str) -> tuple[str, ...]:
    """`services[].requestOverride: {identities: [SPIFFE IDs with *]}`."""
    fields = p.mapping(node, path, ("identities",), ("identities",))
    if fields is None or "identities" not in fields:
        return ()
    found: list[str] = []
    items = p.items(fields["identities"], f"{path}.identities", p.string) or []
    for index, item in enumerate(items):
        if item != "*" and not _SPIFFE.match(item):
            p.problem(
                fields["identities"],
                f"{path}.identities[{index}]",
                f'expected a SPIFFE ID like "spiffe://tulle.local/ns/default/sa/web", got "{item}"',
            )
        else:
            found.append(item)
    if not items:
        p.problem(fields["identities"], f"{path}.identities", "name at least one identity")
    return tuple(found)


def mirror(p: ManifestChecks, node: Node, path: str) -> MirrorSpec | None:
    """`routes[].mirror: {service, percent}` (percent defaults to 100)."""
    fields = p.mapping(node, path, ("service", "percent"), ("service",))
    if fields is None or "service" not in fields:
        return None
    before = len(p.problems)
    service = p.name(fields["service"], f"{path}.service")
    percent = 100.0
    if "percent" in fields:
        percent = p.number(fields["percent"], f"{path}.percent", 0.001, 100) or 100.0
    if service is None or len(p.problems) > before:
        return None
    return MirrorSpec(service, percent)
