"""Live tap: the proxy side. `TapHub` fans finished exchanges out to listeners.

The request path pays one attribute read when nobody listens: callers check
`hub.active` and only then build a `TapEvent` and call `emit`. Each subscriber
has a filter and a bounded queue; a subscriber that falls behind loses events
(counted in `dropped`, reported to it at the end) and never slows the proxy.

`serve_tap` is the `GET /tap` handler of the admin listener. It writes a whole
HTTP/1.1 response: a head, then one JSON object per line until the client goes
away or `limit` / `duration` is reached; the body ends when the connection
closes, so the caller closes the transport after `serve_tap` returns. Query
parameters (all optional): `path` (prefix), `method`, `status` (exact code, or
`5xx`-style class), `authority`, `direction`, `dst_service`, `limit` (events,
default 1000), `duration` (seconds, default 60, at most 3600). Tap shows
request metadata of live traffic, so the admin listener MUST only serve it to
loopback clients until tap is authorized with identities.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

DEFAULT_QUEUE_SIZE = 1000
DEFAULT_LIMIT = 1000
DEFAULT_DURATION_S = 60.0
MAX_DURATION_S = 3600.0
# How often a quiet stream looks whether its client went away.
_CLOSED_POLL_S = 0.25
_FILTER_KEYS = ("path", "method", "status", "authority", "direction", "dst_service")


@dataclass(frozen=True, slots=True)
class TapEvent:
    """One finished exchange, as seen by one side of one proxy."""

    ts: float
    direction: str
    method: str
    authority: str
    path: str
    status: int
    latency_ms: float
    dst: str = ""  # target_addr
    src: str = ""  # the peer's address
    tls: bool = False
    client_id: str = ""
    server_id: str = ""
    error: str = ""
    route: str = ""
    dst_service: str = ""
    # A gRPC call's grpc-status (None: not gRPC, or the call ended without one).
    grpc_status: int | None = None

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TapFilter:
    """Which events a subscriber wants; empty fields match everything."""

    path: str = ""
    method: str = ""
    status: str = ""
    authority: str = ""
    direction: str = ""
    dst_service: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str]) -> TapFilter:
        values = {key: query.get(key, "").strip() for key in _FILTER_KEYS}
        values["method"] = values["method"].upper()
        status = values["status"].lower()
        if status and not (
            (status.isdigit() and len(status) == 3)
            or (len(status) == 3 and status[0].isdigit() and status[1:] == "xx")
        ):
            raise ValueError(f"status must be a code like 503 or a class like 5xx, got {status!r}")
        values["status"] = status
        return cls(**values)

    def matches(self, event: TapEvent) -> bool:
        if self.path and not event.path.startswith(self.path):
            return False
        if self.method and event.method != self.method:
            return False
        if self.status:
            code = str(event.status)
            if self.status.endswith("xx"):
                if code[:1] != self.status[0]:
                    return False
            elif code != self.status:
                return False
        if self.authority and event.authority != self.authority:
            return False
        if self.direction and event.direction != self.direction:
            return False
        return not (self.dst_service and event.dst_service != self.dst_service)


class TapSubscriber:
    """One listener: its filter, its bounded queue and how many events it lost."""

    __slots__ = ("dropped", "filter", "queue")

    def __init__(self, tap_filter: TapFilter, queue_size: int) -> None:
        self.filter = tap_filter
        self.queue: asyncio.Queue[TapEvent] = asyncio.Queue(queue_size)
        self.dropped = 0


class TapHub:
    """The proxy's tap point. `active` is True only while someone listens."""

    __slots__ = ("_subscribers", "active", "emitted")

    def __init__(self) -> None:
        self.active = False
        self.emitted = 0
        self._subscribers: list[TapSubscriber] = []

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(
        self, tap_filter: TapFilter | None = None, queue_size: int = DEFAULT_QUEUE_SIZE
    ) -> TapSubscriber:
        subscriber = TapSubscriber(tap_filter or TapFilter(), queue_size)
        self._subscribers.append(subscriber)
        self.active = True
        return subscriber

    def unsubscribe(self, subscriber: TapSubscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.remove(subscriber)
        self.active = bool(self._subscribers)

    def emit(self, event: TapEvent) -> None:
        """Offer an event to every matching subscriber; never blocks, never raises."""
        self.emitted += 1
        for subscriber in self._subscribers:
            if not subscriber.filter.matches(event):
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                subscriber.dropped += 1


def _number(query: dict[str, str], key: str, default: float, high: float) -> float:
    text = query.get(key, "").strip().rstrip("s")
    if not text:
        return default
    value = float(text)
    if value <= 0 or value > high:
        raise ValueError(f"{key} must be between 0 and {high:g}, got {text!r}")
    return value


def _response_head(status: str, content_type: str) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n"
        "cache-control: no-store\r\nconnection: close\r\n\r\n"
    ).encode()


async def serve_tap(
    hub: TapHub,
    query: dict[str, str],
    write: Callable[[bytes], None],
    is_closing: Callable[[], bool],
) -> None:
    """Answer `GET /tap?...`: stream matching events as JSON lines (see the module doc)."""
    try:
        tap_filter = TapFilter.from_query(query)
        limit = int(_number(query, "limit", DEFAULT_LIMIT, 1_000_000))
        duration = _number(query, "duration", DEFAULT_DURATION_S, MAX_DURATION_S)
    except ValueError as exc:
        write(_response_head("400 Bad Request", "text/plain") + f"bad tap query: {exc}\n".encode())
        return
    write(_response_head("200 OK", "application/x-ndjson"))
    subscriber = hub.subscribe(tap_filter)
    deadline = time.monotonic() + duration
    sent = 0
    try:
        while sent < limit and not is_closing():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(
                    subscriber.queue.get(), min(remaining, _CLOSED_POLL_S)
                )
            except TimeoutError:
                continue
            batch = [event]
            # Drain what is already queued into one write: fewer syscalls under load.
            while len(batch) + sent < limit and not subscriber.queue.empty():
                batch.append(subscriber.queue.get_nowait())
            write(b"".join(json.dumps(e.to_json()).encode() + b"\n" for e in batch))
            sent += len(batch)
        if not is_closing():
            end = {"end": True, "sent": sent, "dropped": subscriber.dropped}
            write(json.dumps(end).encode() + b"\n")
    finally:
        hub.unsubscribe(subscriber)
