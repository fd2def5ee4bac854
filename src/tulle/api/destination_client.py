"""The proxy's Destination client: a `Resolver` fed by the control plane's streams.

`ControlResolver.resolve(name)` returns a cached `ServiceView` at once and, the
first time a name is seen, starts a `Get` and a `GetProfile` stream for it on
the running event loop. Updates are applied to the view as they arrive.

Failure handling, as the Destination contract asks:

- Fail static: when a stream breaks, the view keeps what it last knew; the
  proxy goes on serving from it.
- Each stream reconnects on its own, with exponential backoff and jitter
  (0.1 s to 10 s by default), moving on to the next control-plane replica after
  every failure, so that a dead replica is skipped and a restarted one is
  found again.
- Every stream opens with a snapshot, which *replaces* the view's endpoints, so
  whatever changed while disconnected is reconciled without a merge.
- Updates are applied idempotently (`ServiceView.apply_*`), so repeats are
  harmless.

Names are normalised before they are cached or sent (see
`normalize_service_name`): lower-case, one trailing dot dropped, and a `:80`
suffix dropped, since port 80 is the default HTTP port and `web:80` and `web`
name the same service. The control plane applies the rest of the rule (other
ports) because only it knows the ports services declare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterable, Callable, Coroutine, Sequence
from functools import partial
from typing import Any, TypeVar

import grpc
from google.protobuf.duration_pb2 import Duration

from tulle.api.control_tls import ControlTls, open_channel
from tulle.api.failover import Replicas, StreamCounters, WatchStats, follow
from tulle.api.proto import destination_pb2 as pb
from tulle.api.proto import destination_pb2_grpc as pb_grpc
from tulle.core.backoff import Backoff, BackoffSpec
from tulle.core.discovery import (
    Address,
    AffinitySpec,
    Backend,
    Endpoint,
    FaultSpec,
    HeaderMatch,
    MirrorSpec,
    Profile,
    RetryBudgetSpec,
    Route,
    RouteMatch,
    ServiceView,
    format_address,
    parse_address,
)
from tulle.core.ratelimit import LimitSpec

log = logging.getLogger("tulle.api.destination")

DEFAULT_PORT = 80
DEFAULT_ENDPOINT_WEIGHT = 10_000
DEFAULT_BACKOFF = BackoffSpec(min_s=0.1, max_s=10.0, jitter=0.5)

# Keepalives find a dead or partitioned replica within ~15 s even when no
# update flows; gRPC's own reconnect backoff is capped low so that a restarted
# replica is reachable again within a couple of seconds.
CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]

M = TypeVar("M")


def normalize_service_name(name: str) -> str:
    """Lower-case, drop one trailing dot of the host and a `:80` suffix."""
    text = name.strip().lower()
    host, sep, port = text.rpartition(":")
    if sep and host and port.isdigit():
        host = host.removesuffix(".")
        return host if int(port) == DEFAULT_PORT else f"{host}:{int(port)}"
    return text.removesuffix(".")


def parse_control_addresses(text: str) -> list[Address]:
    """Parse `--control-addr HOST:PORT[,HOST:PORT...]`; raises ValueError naming the bad part."""
    addresses = [parse_address(part) for part in text.split(",") if part.strip()]
    if not addresses:
        raise ValueError(
            f"bad control-plane address list {text!r}: expected HOST:PORT[,HOST:PORT...]"
        )
    return addresses


# -- protobuf to the discovery model --------------------------------------------


def _seconds(duration: Duration) -> float:
    return duration.ToNanoseconds() / 1e9


def endpoint_from_message(message: pb.WeightedAddr) -> Endpoint:
    return Endpoint(
        address=(message.addr.host, message.addr.port),
        weight=message.weight or DEFAULT_ENDPOINT_WEIGHT,
        identity=message.identity or None,
        protocol_hint=message.protocol_hint or None,
        labels=dict(message.labels),
    )


def _match_from_message(message: pb.RouteMatch) -> RouteMatch:
    path = message.WhichOneof("path")
    return RouteMatch(
        path_exact=message.path_exact if path == "path_exact" else None,
        path_prefix=message.path_prefix if path == "path_prefix" else None,
        path_regex=message.path_regex if path == "path_regex" else None,
        method=message.method or None,
        headers=tuple(
            HeaderMatch(name=h.name.lower(), value=h.value, regex=h.regex) for h in message.headers
        ),
    )


def _route_from_message(message: pb.Route) -> Route:
    retryable: bool | None = None
    if message.retryable == pb.RETRYABILITY_RETRYABLE:
        retryable = True
    elif message.retryable == pb.RETRYABILITY_NOT_RETRYABLE:
        retryable = False
    return Route(
        name=message.name,
        matches=tuple(_match_from_message(m) for m in message.matches),
        timeout_s=_seconds(message.timeout) if message.HasField("timeout") else None,
        retryable=retryable,
        retry_statuses=tuple(int(s) for s in message.retry_statuses),
        retry_grpc_statuses=tuple(int(s) for s in message.retry_grpc_statuses),
        fault=_fault_from_message(message.fault) if message.HasField("fault") else None,
        access_log=message.access_log,
        mirror=MirrorSpec(
            message.mirror.service,
            min(max(message.mirror.percent, 0.0), 100.0) or 100.0,
        )
        if message.HasField("mirror") and message.mirror.service
        else None,
        rate_limit=_limit_from_message(message.rate_limit)
        if message.HasField("rate_limit")
        else None,
    )


# The highest rate honoured: beyond it a limit limits nothing (as the manifest's).
_MAX_RATE = 1_000_000.0


def _limit_from_message(message: pb.OutboundRateLimit) -> LimitSpec | None:
    """None for a rate that is not a positive number (a limit that limits nothing
    is better than one that refuses everything)."""
    rate = message.requests_per_second
    if not (0.0 < rate <= _MAX_RATE):
        return None
    return LimitSpec(rate, min(int(message.burst), 10_000_000))


def _fault_from_message(message: pb.FaultInjection) -> FaultSpec | None:
    """None for a fault that injects nothing (both percentages 0)."""
    delay_s = _seconds(message.delay) if message.HasField("delay") else 0.0
    delay_percent = min(max(message.delay_percent, 0.0), 100.0) if delay_s > 0 else 0.0
    abort_percent = min(max(message.abort_percent, 0.0), 100.0)
    if delay_percent <= 0.0 and abort_percent <= 0.0:
        return None
    status = message.abort_http_status
    return FaultSpec(
        delay_s=delay_s,
        delay_percent=delay_percent,
        # A status outside 200..599 cannot be answered: the documented 503.
        abort_status=status if 200 <= status <= 599 else 0,
        abort_grpc_status=message.abort_grpc_status if message.has_abort_grpc_status else None,
        abort_percent=abort_percent,
        headers=tuple(
            HeaderMatch(name=h.name.lower(), value=h.value, regex=h.regex) for h in message.headers
        ),
    )


def profile_from_message(message: pb.DestinationProfile) -> Profile:
    budget = RetryBudgetSpec()
    if message.HasField("retry_budget"):
        spec = message.retry_budget
        budget = RetryBudgetSpec(
            # float32 on the wire: round so that 0.2 reads back as 0.2.
            ratio=round(spec.retry_ratio, 6),
            min_retries_per_second=round(spec.min_retries_per_second, 6),
            ttl_s=_seconds(spec.ttl) if spec.HasField("ttl") else budget.ttl_s,
        )
    return Profile(
        routes=tuple(_route_from_message(r) for r in message.routes),
        retry_budget=budget,
        backends=tuple(Backend(service=b.service, weight=b.weight) for b in message.backends),
        timeout_s=_seconds(message.default_timeout)
        if message.HasField("default_timeout")
        else None,
        affinity=_affinity_from_message(message.affinity) if message.HasField("affinity") else None,
        override_identities=tuple(message.override_identities),
    )


def _affinity_from_message(message: pb.SessionAffinity) -> AffinitySpec | None:
    """None for an affinity without a key (from a newer server, or empty)."""
    kind = message.WhichOneof("key")
    factor = message.load_factor
    # Below 1 no endpoint could take its share; unset or absurd: the default.
    load_factor = factor if 1.0 <= factor <= 100.0 else 1.25
    if kind == "header" and message.header:
        return AffinitySpec(header=message.header.lower(), load_factor=load_factor)
    if kind == "cookie" and message.cookie:
        return AffinitySpec(cookie=message.cookie, load_factor=load_factor)
    return None


def _apply_profile(view: ServiceView, message: pb.DestinationProfile) -> None:
    view.apply_profile(profile_from_message(message))


def apply_update(view: ServiceView, message: pb.Update) -> None:
    """Apply one Get update to a view; unknown kinds (from newer servers) are ignored."""
    kind = message.WhichOneof("update")
    if kind == "add":
        endpoints = [endpoint_from_message(a) for a in message.add.addrs]
        if message.snapshot:
            view.apply_reset(endpoints)
        else:
            view.apply_add(endpoints)
    elif kind == "remove":
        view.apply_remove([(a.host, a.port) for a in message.remove.addrs])
    elif kind == "no_endpoints":
        view.apply_no_endpoints(message.no_endpoints.exists)


# -- the resolver ---------------------------------------------------------------


def context_token(workload: str) -> str:
    """What a proxy tells the control plane about itself in each Destination request.

    A Kubernetes workload (`<namespace>/<pod>`) gives Linkerd's JSON form
    `{"ns": ...}`, with which the control plane expands short service names in
    the proxy's namespace; otherwise the workload's name, as it is.
    """
    namespace, sep, _ = workload.partition("/")
    if sep and namespace:
        return json.dumps({"ns": namespace, "workload": workload}, separators=(",", ":"))
    return workload


class ControlResolver(StreamCounters):
    """A `tulle.core.discovery.Resolver` backed by one or more control-plane replicas.

    `resolve` must be called from the event loop's thread. When no loop is
    running yet the streams of that name start on the first later `resolve`
    from inside a running loop, or on `await start()`.
    """

    def __init__(
        self,
        addresses: Sequence[Address],
        proxy_id: str = "",
        *,
        backoff: BackoffSpec = DEFAULT_BACKOFF,
        rng: random.Random | None = None,
        tls: ControlTls | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("ControlResolver needs at least one control-plane address")
        # None: plaintext (loopback meshes without mTLS); see tulle.api.control_tls.
        self.tls = tls
        self.addresses: list[Address] = list(addresses)
        self.proxy_id = proxy_id
        self._backoff_spec = backoff
        self._rng = rng or random.Random()
        self._views: dict[str, ServiceView] = {}
        self._pending: list[str] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._channels: dict[int, grpc.aio.Channel] = {}
        # Where the last stream succeeded: new streams try it first.
        self._replicas = Replicas(
            [format_address(a) for a in self.addresses], self._rng.randrange(len(self.addresses))
        )
        self._closed = False
        # Counters for the proxy's metrics, of all the streams.
        self.stats = WatchStats()

    @property
    def updates_received(self) -> int:
        return self.stats.updates

    @property
    def streams_connected(self) -> int:
        return self.stats.connected

    # -- Resolver ----------------------------------------------------------

    def resolve(self, name: str) -> ServiceView:
        # Fast path for the request path: keys are normalised, and a name equal
        # to a key is already normal (normalising is idempotent).
        view = self._views.get(name)
        if view is not None and not self._pending:
            return view
        key = normalize_service_name(name)
        view = self._views.get(key)
        if view is None:
            # Routes and the traffic split come on the profile stream: the view
            # is ready once both streams have answered.
            view = ServiceView(key, profile_expected=True)
            self._views[key] = view
            self._pending.append(key)
        if self._pending and not self._closed:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return view
            self._start_pending()
        return view

    async def start(self) -> None:
        """Start the streams of names resolved before the event loop ran."""
        self._start_pending()

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for channel in self._channels.values():
            await channel.close(None)
        self._channels.clear()

    # -- introspection -----------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._views)

    # -- streams -----------------------------------------------------------

    def _start_pending(self) -> None:
        pending, self._pending = self._pending, []
        for key in pending:
            view = self._views[key]
            self._spawn(
                self._follow(
                    f"get stream for {key!r}",
                    partial(self._open_get, key=key),
                    partial(apply_update, view),
                )
            )
            self._spawn(
                self._follow(
                    f"profile stream for {key!r}",
                    partial(self._open_profile, key=key),
                    partial(_apply_profile, view),
                )
            )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _channel(self, index: int) -> grpc.aio.Channel:
        channel = self._channels.get(index)
        if channel is None:
            channel = open_channel(format_address(self.addresses[index]), CHANNEL_OPTIONS, self.tls)
            self._channels[index] = channel
        return channel

    def _request(self, key: str) -> pb.GetDestination:
        return pb.GetDestination(path=key, context_token=self.proxy_id)

    def _open_get(self, index: int, *, key: str) -> AsyncIterable[pb.Update]:
        stub = pb_grpc.DestinationStub(self._channel(index))
        return stub.Get(self._request(key))

    def _open_profile(self, index: int, *, key: str) -> AsyncIterable[pb.DestinationProfile]:
        stub = pb_grpc.DestinationStub(self._channel(index))
        return stub.GetProfile(self._request(key))

    def _follow(
        self, what: str, open_stream: Callable[[int], AsyncIterable[M]], apply: Callable[[M], None]
    ) -> Coroutine[Any, Any, None]:
        """Keep one stream open, across failures and replicas, until closed."""
        return follow(
            what,
            open_stream,
            apply,
            backoff=Backoff(self._backoff_spec, self._rng),
            replicas=self._replicas,
            stats=self.stats,
            closed=lambda: self._closed,
            logger=log,
        )
