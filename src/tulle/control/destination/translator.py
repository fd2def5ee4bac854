"""Translators: per-stream diffs of service states into protobuf messages.

Each stream owns one translator and one bounded `UpdateQueue`. The watcher
calls `update` synchronously; the translator compares the new state with what
this stream has already been sent, queues the smallest set of messages that
carries the change, and returns. When a client reads too slowly the queue
overflows: rather than block the watcher or grow without bound, the queue is
dropped and the stream ends; the client resubscribes and the new stream opens
with a full snapshot, which is cheaper and simpler than replaying a backlog.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from functools import lru_cache
from typing import Generic, TypeVar

from google.protobuf.duration_pb2 import Duration

from tulle.api.proto import destination_pb2 as pb
from tulle.control.destination.watcher import ServiceState
from tulle.core.discovery import Address, Endpoint, FaultSpec, Profile, Route, RouteMatch

T = TypeVar("T")

DEFAULT_QUEUE_CAPACITY = 256


class UpdateQueue(Generic[T]):
    """A bounded, single-consumer queue that overflows instead of blocking."""

    __slots__ = ("_capacity", "_items", "_wakeup", "overflowed")

    def __init__(self, capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("queue capacity must be at least 1")
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._wakeup = asyncio.Event()
        self.overflowed = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue an item; False when the queue is (or just became) overflowed."""
        if self.overflowed:
            return False
        if len(self._items) >= self._capacity:
            self.overflowed = True
            self._items.clear()
            self._wakeup.set()
            return False
        self._items.append(item)
        self._wakeup.set()
        return True

    def get_nowait(self) -> T | None:
        return self._items.popleft() if self._items and not self.overflowed else None

    async def get(self) -> T | None:
        """The next item, or None once the queue has overflowed."""
        while not self._items and not self.overflowed:
            self._wakeup.clear()
            await self._wakeup.wait()
        if self.overflowed:
            return None
        return self._items.popleft()


# -- conversion to protobuf -------------------------------------------------


def _duration(seconds: float) -> Duration:
    message = Duration()
    message.FromNanoseconds(round(seconds * 1e9))
    return message


def address_message(address: Address) -> pb.TcpAddress:
    return pb.TcpAddress(host=address[0], port=address[1])


def endpoint_message(endpoint: Endpoint) -> pb.WeightedAddr:
    return pb.WeightedAddr(
        addr=address_message(endpoint.address),
        weight=endpoint.weight,
        identity=endpoint.identity or "",
        protocol_hint=endpoint.protocol_hint or "",
        labels=dict(endpoint.labels),
    )


def add_update(endpoints: Iterable[Endpoint], *, snapshot: bool) -> pb.Update:
    addrs = [endpoint_message(ep) for ep in endpoints]
    return pb.Update(add=pb.WeightedAddrSet(addrs=addrs), snapshot=snapshot)


def remove_update(addresses: Iterable[Address]) -> pb.Update:
    return pb.Update(remove=pb.AddrSet(addrs=[address_message(a) for a in addresses]))


def no_endpoints_update(exists: bool, *, snapshot: bool) -> pb.Update:
    return pb.Update(no_endpoints=pb.NoEndpoints(exists=exists), snapshot=snapshot)


def _match_message(match: RouteMatch) -> pb.RouteMatch:
    message = pb.RouteMatch(
        method=match.method or "",
        headers=[pb.HeaderMatch(name=h.name, value=h.value, regex=h.regex) for h in match.headers],
    )
    if match.path_exact is not None:
        message.path_exact = match.path_exact
    elif match.path_prefix is not None:
        message.path_prefix = match.path_prefix
    elif match.path_regex is not None:
        message.path_regex = match.path_regex
    return message


def _route_message(route: Route) -> pb.Route:
    retryable = pb.RETRYABILITY_DEFAULT
    if route.retryable is True:
        retryable = pb.RETRYABILITY_RETRYABLE
    elif route.retryable is False:
        retryable = pb.RETRYABILITY_NOT_RETRYABLE
    message = pb.Route(
        name=route.name,
        matches=[_match_message(m) for m in route.matches],
        retryable=retryable,
        retry_statuses=list(route.retry_statuses),
        access_log=route.access_log,
        retry_grpc_statuses=list(route.retry_grpc_statuses),
    )
    if route.timeout_s is not None:
        message.timeout.CopyFrom(_duration(route.timeout_s))
    if route.fault is not None:
        message.fault.CopyFrom(_fault_message(route.fault))
    if route.mirror is not None:
        message.mirror.service = route.mirror.service
        message.mirror.percent = route.mirror.percent
    if route.rate_limit is not None:
        message.rate_limit.requests_per_second = route.rate_limit.requests_per_second
        message.rate_limit.burst = route.rate_limit.burst
    return message


def _fault_message(fault: FaultSpec) -> pb.FaultInjection:
    return pb.FaultInjection(
        delay=_duration(fault.delay_s),
        delay_percent=fault.delay_percent,
        abort_http_status=fault.abort_status,
        has_abort_grpc_status=fault.abort_grpc_status is not None,
        abort_grpc_status=fault.abort_grpc_status or 0,
        abort_percent=fault.abort_percent,
        headers=[pb.HeaderMatch(name=h.name, value=h.value, regex=h.regex) for h in fault.headers],
    )


# Streams of the same service send the same profile: build each message once.
# Profiles are frozen and hashable; the cache holds the few hundred in use.
@lru_cache(maxsize=4096)
def profile_message(name: str, profile: Profile) -> pb.DestinationProfile:
    budget = profile.retry_budget
    message = pb.DestinationProfile(
        fully_qualified_name=name,
        routes=[_route_message(r) for r in profile.routes],
        retry_budget=pb.RetryBudget(
            retry_ratio=budget.ratio,
            min_retries_per_second=budget.min_retries_per_second,
            ttl=_duration(budget.ttl_s),
        ),
        backends=[pb.WeightedBackend(service=b.service, weight=b.weight) for b in profile.backends],
    )
    if profile.timeout_s is not None:
        message.default_timeout.CopyFrom(_duration(profile.timeout_s))
    message.override_identities.extend(profile.override_identities)
    affinity = profile.affinity
    if affinity is not None:
        message.affinity.load_factor = affinity.load_factor
        if affinity.header:
            message.affinity.header = affinity.header
        else:
            message.affinity.cookie = affinity.cookie
    return message


# -- translators --------------------------------------------------------------


class EndpointTranslator:
    """Turns successive states into Get updates: a snapshot, then diffs."""

    __slots__ = ("_exists", "_sent", "queue")

    def __init__(self, queue: UpdateQueue[pb.Update]) -> None:
        self.queue = queue
        self._sent: dict[Address, Endpoint] | None = None
        self._exists = False

    def update(self, state: ServiceState) -> None:
        current = {ep.address: ep for ep in state.endpoints}
        sent = self._sent
        if sent is None:
            if current:
                self.queue.put(add_update(state.endpoints, snapshot=True))
            else:
                self.queue.put(no_endpoints_update(state.exists, snapshot=True))
        elif not current:
            if sent or self._exists != state.exists:
                self.queue.put(no_endpoints_update(state.exists, snapshot=False))
        else:
            added = [ep for addr, ep in current.items() if sent.get(addr) != ep]
            removed = sorted(addr for addr in sent if addr not in current)
            # Add before Remove, so that the client never holds an empty set
            # in between when a service's endpoints are replaced.
            if added:
                self.queue.put(add_update(added, snapshot=False))
            if removed:
                self.queue.put(remove_update(removed))
        self._sent = current
        self._exists = state.exists


class ProfileTranslator:
    """Turns successive states into GetProfile messages, skipping repeats."""

    __slots__ = ("_sent", "queue")

    def __init__(self, queue: UpdateQueue[pb.DestinationProfile]) -> None:
        self.queue = queue
        self._sent: tuple[str, Profile] | None = None

    def update(self, state: ServiceState) -> None:
        current = (state.name, state.profile)
        if current == self._sent:
            return
        self._sent = current
        self.queue.put(profile_message(state.name, state.profile))
