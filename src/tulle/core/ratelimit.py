"""Rate limits: token buckets, total and per client, after Linkerd's HTTPLocalRateLimitPolicy.

Pure (no sockets, the clock is passed in): `RateLimitSpec` is what the
manifest and the Policy API carry; `RateLimiter` holds the live buckets of
one spec and answers, per request, whether it may go on or how long until
it could (the `Retry-After`). The proxy keeps one limiter per spec across
policy updates, so an unchanged limit keeps its buckets.

A request takes a token from its client's bucket and from the total bucket,
or from neither: both are checked before either is drawn, so a client refused
by its own limit does not use up everyone else's. A client is its verified
mesh identity; a client without one is its source network (the address cut
to `ipv4_prefix` / `ipv6_prefix` bits), so a single unauthenticated host
cannot take the whole total. Per-client buckets are bounded (`max_clients`,
least recently used dropped first): a dropped client starts again with a
full bucket, which the total bucket still bounds.
"""

from __future__ import annotations

import ipaddress
import re
from collections import OrderedDict
from dataclasses import dataclass

# Per-client buckets kept per limit, at most.
MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """A bucket: `requests_per_second` tokens a second, holding at most `burst`."""

    requests_per_second: float
    burst: int = 0  # 0: one second's worth, at least 1

    @property
    def size(self) -> float:
        return float(self.burst) if self.burst > 0 else max(1.0, self.requests_per_second)


@dataclass(frozen=True, slots=True)
class LimitOverride:
    """A per-client limit for chosen identities (`*` globs, as in MeshTLS identities)."""

    limit: LimitSpec
    identities: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RateLimitSpec:
    name: str
    total: LimitSpec | None = None
    identity: LimitSpec | None = None  # per client
    overrides: tuple[LimitOverride, ...] = ()
    ipv4_prefix: int = 32
    ipv6_prefix: int = 128

    def scaled(self, share: int) -> RateLimitSpec:
        """This limit as one of `share` processes sharing the load enforces it."""
        if share <= 1:
            return self

        def part(limit: LimitSpec) -> LimitSpec:
            return LimitSpec(limit.requests_per_second / share, max(1, round(limit.size / share)))

        return RateLimitSpec(
            self.name,
            part(self.total) if self.total is not None else None,
            part(self.identity) if self.identity is not None else None,
            tuple(LimitOverride(part(o.limit), o.identities) for o in self.overrides),
            self.ipv4_prefix,
            self.ipv6_prefix,
        )


class TokenBucket:
    """Tokens refill continuously at `rate` a second up to `size`; a request takes one."""

    __slots__ = ("rate", "size", "stamp", "tokens")

    def __init__(self, limit: LimitSpec, now: float) -> None:
        self.rate = limit.requests_per_second
        self.size = limit.size
        self.tokens = self.size
        self.stamp = now

    def refill(self, now: float) -> float:
        """The tokens available now (at least 1 means a request may take one)."""
        elapsed = now - self.stamp
        if elapsed > 0.0:
            tokens = self.tokens + elapsed * self.rate
            self.tokens = tokens if tokens < self.size else self.size
            self.stamp = now
        return self.tokens

    def wait_s(self) -> float:
        """Seconds until one token is back, after `refill`."""
        return (1.0 - self.tokens) / self.rate if self.rate > 0.0 else float("inf")


def _identity_regex(pattern: str) -> re.Pattern[str]:
    if pattern == "*":
        return re.compile(r".+", re.DOTALL)
    return re.compile("[^/]*".join(re.escape(part) for part in pattern.split("*")))


class RateLimiter:
    """The live buckets of one `RateLimitSpec`."""

    __slots__ = (
        "_clients",
        "_max_clients",
        "_network_of",
        "_overrides",
        "_per_client",
        "_total",
        "_v4",
        "_v6",
        "spec",
    )

    def __init__(self, spec: RateLimitSpec, now: float, max_clients: int = MAX_CLIENTS) -> None:
        self.spec = spec
        self._total = TokenBucket(spec.total, now) if spec.total is not None else None
        self._per_client = spec.identity is not None or bool(spec.overrides)
        self._overrides = tuple(
            (tuple(_identity_regex(p) for p in o.identities), o.limit) for o in spec.overrides
        )
        self._clients: OrderedDict[str, TokenBucket] = OrderedDict()
        self._max_clients = max_clients
        self._network_of: dict[str, str] = {}
        self._v4 = min(max(spec.ipv4_prefix, 0), 32) or 32
        self._v6 = min(max(spec.ipv6_prefix, 0), 128) or 128

    def check(self, now: float, client_id: str | None, client_ip: str) -> float:
        """0.0 when the request may go on (its tokens are taken); otherwise the
        seconds until it could, and nothing is taken."""
        total = self._total
        if total is not None and total.refill(now) < 1.0:
            return total.wait_s()
        bucket = self._client_bucket(now, client_id, client_ip) if self._per_client else None
        if bucket is not None:
            if bucket.refill(now) < 1.0:
                return bucket.wait_s()
            bucket.tokens -= 1.0
        if total is not None:
            total.tokens -= 1.0
        return 0.0

    def _client_bucket(
        self, now: float, client_id: str | None, client_ip: str
    ) -> TokenBucket | None:
        key = client_id or self._network(client_ip)
        clients = self._clients
        bucket = clients.get(key)
        if bucket is not None:
            clients.move_to_end(key)
            return bucket
        limit = self._limit_for(client_id)
        if limit is None:
            return None
        bucket = clients[key] = TokenBucket(limit, now)
        if len(clients) > self._max_clients:
            clients.popitem(last=False)
        return bucket

    def _limit_for(self, client_id: str | None) -> LimitSpec | None:
        if client_id:
            for patterns, limit in self._overrides:
                if any(p.fullmatch(client_id) for p in patterns):
                    return limit
        return self.spec.identity

    def _network(self, client_ip: str) -> str:
        key = self._network_of.get(client_ip)
        if key is None:
            try:
                address = ipaddress.ip_address(client_ip)
            except ValueError:
                key = client_ip
            else:
                mapped = getattr(address, "ipv4_mapped", None)
                if mapped is not None:
                    address = mapped
                bits = self._v4 if address.version == 4 else self._v6
                key = str(ipaddress.ip_network(f"{address}/{bits}", strict=False))
            if len(self._network_of) >= self._max_clients:
                self._network_of.clear()
            self._network_of[client_ip] = key
        return key

    def clients(self) -> int:
        return len(self._clients)


def retry_after(wait_s: float) -> int:
    """Whole seconds for `Retry-After`: rounded up, at least 1."""
    whole = int(wait_s)
    if whole < wait_s:
        whole += 1
    return max(1, min(whole, 86_400))
