"""The proxy's Policy client: follows `WatchInbound` for one workload port.

`PolicyWatcher.current` is what the inbound proxy enforces, read on the request
path without awaiting. Failure handling, as the Policy contract asks:

- Fail closed: until the first answer `current` is `fail_closed(...)` (deny
  everything, policy label `default:deny-no-policy`, `known` False), and the
  watcher logs a warning once if the control plane has not answered within
  `warn_after_s`.
- Fail static: once a policy has arrived, a broken stream keeps it; the proxy
  goes on enforcing the last policy it was told.
- Reconnects with exponential backoff and jitter (0.1 s to 10 s by default),
  moving to the next control-plane replica after every failure.
- Every message is a complete policy that replaces `current`; it is compiled
  here, off the request path, once per change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from collections.abc import Callable, Sequence

import grpc

from tulle.api.control_tls import ControlTls, open_channel
from tulle.api.destination_client import CHANNEL_OPTIONS, DEFAULT_BACKOFF, _match_from_message
from tulle.api.failover import Replicas, StreamCounters, WatchStats, follow
from tulle.api.proto import policy_pb2 as pb
from tulle.api.proto import policy_pb2_grpc as pb_grpc
from tulle.core.backoff import Backoff, BackoffSpec
from tulle.core.discovery import Address, format_address
from tulle.core.policy import (
    ALL_AUTHENTICATED,
    ALL_UNAUTHENTICATED,
    AUDIT,
    DENY,
    Authentication,
    Authorization,
    InboundPolicy,
    JwtSpec,
    NetworkRule,
    PolicyRoute,
    fail_closed,
)
from tulle.core.ratelimit import LimitOverride, LimitSpec, RateLimitSpec

log = logging.getLogger("tulle.api.policy")

DEFAULT_WARN_AFTER_S = 5.0

_MODES: dict[int, str] = {
    pb.DEFAULT_POLICY_ALL_UNAUTHENTICATED: ALL_UNAUTHENTICATED,
    pb.DEFAULT_POLICY_ALL_AUTHENTICATED: ALL_AUTHENTICATED,
    pb.DEFAULT_POLICY_DENY: DENY,
    pb.DEFAULT_POLICY_AUDIT: AUDIT,
}

PolicyListener = Callable[[InboundPolicy], None]


class PolicyDecodeError(ValueError):
    """A message the client cannot enforce as written (for example a bad CIDR)."""


# -- protobuf to the model --------------------------------------------------------


def _authentication(message: pb.Authentication) -> Authentication:
    kind = message.WhichOneof("kind")
    if kind == "mesh_tls":
        return Authentication(message.name, identities=tuple(message.mesh_tls.identities))
    if kind == "networks":
        rules = tuple(
            NetworkRule(rule.cidr, tuple(getattr(rule, "except")))
            for rule in message.networks.rules
        )
        return Authentication(message.name, networks=rules)
    if kind == "unauthenticated":
        return Authentication(message.name, unauthenticated=True)
    if kind == "jwt":
        jwt = message.jwt
        spec = JwtSpec(
            issuer=jwt.issuer,
            audiences=tuple(jwt.audiences),
            jwks_file=jwt.jwks_file,
            jwks_url=jwt.jwks_url,
            clock_skew_s=max(0.0, jwt.clock_skew_s),
            claims=tuple((c.claim, tuple(c.values)) for c in jwt.claims),
            forward_claims=tuple((f.claim, f.header) for f in jwt.forward_claims),
        )
        return Authentication(message.name, jwt=spec)
    # A kind from a newer server: satisfied by nobody, so it never widens access.
    return Authentication(message.name, identities=("spiffe://unknown.invalid/unsupported",))


def _authorization(message: pb.Authorization) -> Authorization:
    return Authorization(message.name, tuple(_authentication(a) for a in message.required))


def _limit(message: pb.Limit) -> LimitSpec:
    rate = message.requests_per_second
    # A rate that is not a positive number cannot be enforced as written.
    if not rate > 0.0 or rate == float("inf"):
        raise ValueError(f"a rate limit needs a positive rate, got {rate}")
    return LimitSpec(rate, message.burst)


def _rate_limit(message: pb.RateLimit) -> RateLimitSpec:
    return RateLimitSpec(
        name=message.name,
        total=_limit(message.total) if message.HasField("total") else None,
        identity=_limit(message.identity) if message.HasField("identity") else None,
        overrides=tuple(
            LimitOverride(_limit(o.limit), tuple(o.identities))
            for o in message.overrides
            if o.HasField("limit")
        ),
        ipv4_prefix=message.ipv4_prefix or 32,
        ipv6_prefix=message.ipv6_prefix or 128,
    )


def policy_from_message(message: pb.InboundPolicy) -> InboundPolicy:
    """Compile a policy message; raises PolicyDecodeError when it cannot be enforced."""
    try:
        return InboundPolicy(
            workload=message.workload,
            port=message.port,
            server=message.server,
            protocol=message.protocol,
            # Unspecified (or unknown) defaults are deny, as the contract says.
            default_mode=_MODES.get(message.default_policy, DENY),
            authorizations=tuple(_authorization(a) for a in message.authorizations),
            routes=tuple(
                PolicyRoute(
                    name=route.name,
                    matches=tuple(_match_from_message(m) for m in route.matches),
                    authorizations=tuple(_authorization(a) for a in route.authorizations),
                    rate_limit=_rate_limit(route.rate_limit)
                    if route.HasField("rate_limit")
                    else None,
                )
                for route in message.routes
            ),
            probe_paths=tuple(message.probe_paths),
            rate_limit=_rate_limit(message.rate_limit) if message.HasField("rate_limit") else None,
        )
    except (ValueError, re.error) as exc:  # bad CIDRs, bad regular expressions
        raise PolicyDecodeError(f"cannot enforce the policy: {exc}") from None


# -- the watcher ------------------------------------------------------------------


class PolicyWatcher(StreamCounters):
    """Keeps `current` equal to the control plane's policy for one workload port."""

    def __init__(
        self,
        control_addrs: Sequence[Address],
        workload: str,
        port: int,
        proxy_id: str = "",
        *,
        backoff: BackoffSpec = DEFAULT_BACKOFF,
        warn_after_s: float = DEFAULT_WARN_AFTER_S,
        rng: random.Random | None = None,
        tls: ControlTls | None = None,
    ) -> None:
        if not control_addrs:
            raise ValueError("PolicyWatcher needs at least one control-plane address")
        # None: plaintext (loopback meshes without mTLS); see tulle.api.control_tls.
        self.tls = tls
        self.addresses: list[Address] = list(control_addrs)
        self.workload = workload
        self.port = port
        self.proxy_id = proxy_id
        self.current: InboundPolicy = fail_closed(workload, port)
        self._backoff_spec = backoff
        self._warn_after_s = warn_after_s
        self._rng = rng or random.Random()
        self._listeners: list[PolicyListener] = []
        self._task: asyncio.Task[None] | None = None
        self._warn_task: asyncio.Task[None] | None = None
        self._channels: dict[int, grpc.aio.Channel] = {}
        self._known = asyncio.Event()
        self._closed = False
        self._replicas = Replicas(
            [format_address(a) for a in self.addresses], self._rng.randrange(len(self.addresses))
        )
        # Counters for the proxy's metrics: the stream's, and what became of its messages.
        self.stats = WatchStats()
        self.updates_received = 0
        self.updates_rejected = 0

    @property
    def known(self) -> bool:
        return self.current.known

    @property
    def connected(self) -> bool:
        return self.stats.connected > 0

    def add_listener(self, listener: PolicyListener) -> None:
        """Called with every new policy (on the event loop's thread), after `current` changed."""
        self._listeners.append(listener)

    def remove_listener(self, listener: PolicyListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def start(self) -> None:
        """Start following; needs a running event loop. Idempotent."""
        if self._task is not None or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._follow(), name=f"policy-{self.workload}:{self.port}")
        self._warn_task = loop.create_task(self._warn_if_unknown())

    async def wait_known(self, timeout_s: float) -> bool:
        """Wait for the first policy; False on timeout (the port stays fail-closed)."""
        if self.known:
            return True
        try:
            await asyncio.wait_for(self._known.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._closed = True
        for task in (self._task, self._warn_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    # -- internals --------------------------------------------------------------

    def _channel(self, index: int) -> grpc.aio.Channel:
        channel = self._channels.get(index)
        if channel is None:
            channel = open_channel(format_address(self.addresses[index]), CHANNEL_OPTIONS, self.tls)
            self._channels[index] = channel
        return channel

    def _apply(self, message: pb.InboundPolicy) -> None:
        self.updates_received += 1
        try:
            policy = policy_from_message(message)
        except PolicyDecodeError as exc:
            # Keep enforcing the last good policy (or keep failing closed).
            self.updates_rejected += 1
            log.error("policy for %s:%d refused: %s", self.workload, self.port, exc)
            return
        if policy == self.current:
            return
        self.current = policy
        self._known.set()
        for listener in tuple(self._listeners):
            try:
                listener(policy)
            except Exception:
                # A broken listener must not stop the stream: the policy is in force anyway.
                log.exception("policy listener failed for %s:%d", self.workload, self.port)

    async def _warn_if_unknown(self) -> None:
        await asyncio.sleep(self._warn_after_s)
        if not self.known:
            log.warning(
                "no policy for %s:%d from the control plane after %.0f s: denying every call "
                "to this port (fail closed) until it answers",
                self.workload,
                self.port,
                self._warn_after_s,
            )

    async def _follow(self) -> None:
        request = pb.InboundRequest(workload=self.workload, port=self.port, proxy_id=self.proxy_id)
        await follow(
            f"policy stream for {self.workload}:{self.port}",
            lambda index: pb_grpc.PolicyStub(self._channel(index)).WatchInbound(request),
            self._apply,
            backoff=Backoff(self._backoff_spec, self._rng),
            replicas=self._replicas,
            stats=self.stats,
            closed=lambda: self._closed,
            logger=log,
        )
