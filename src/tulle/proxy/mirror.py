"""Traffic mirroring: copies of requests sent to another service, their answers discarded.

A route's `mirror` (docs/manifest.md) picks a share of its requests; once
the original has been answered (so the copy can never delay it), HTTP/1
hands the request's kept bytes (`Exchange.replay`: the head and a body of
at most 64 KiB, whole) to `Mirrors.send`, which opens a connection to an
endpoint of the mirror service (mesh TLS when it has an identity), writes
the copy with `connection: close`, reads and drops the answer (parsed only to
find its end), and closes the connection then, or after `MIRROR_TIMEOUT_S`. At most
`MAX_IN_FLIGHT` copies are out per process: past that, and when the body was
too large to keep or the mirror has no endpoint, the copy is dropped; the
first copies to a mirror not yet resolved wait (bounded) for discovery.
Everything is counted in `mirror_requests_total{direction, dst_service,
result}` (`sent`, `failed`, `timeout`, `dropped`).

The copy's endpoint is picked by the mirror's balancer but the copy does
not feed its latency or failure accrual: the mirror's health must not
depend on how the proxy treats copies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from tulle.net.mtls import ALPN_HTTP1
from tulle.proxy.metrics import Labels, Metrics

if TYPE_CHECKING:
    from tulle.proxy.router import ServiceTarget


class Connectable(Protocol):
    """What a copy needs of an endpoint pool (`tulle.proxy.http1.EndpointPool`)."""

    async def connect(
        self, factory: Callable[[], Any], alpn: str
    ) -> tuple[asyncio.BaseTransport, Any, str]: ...


MAX_IN_FLIGHT = 64
MIRROR_TIMEOUT_S = 5.0


class _Discard(asyncio.Protocol):
    """Reads the mirror's answer into nothing; done at its end (or the connection's)."""

    def __init__(self, done: asyncio.Future[None], head_only: bool) -> None:
        self.done = done
        self._head_only = head_only
        self._parser = httptools.HttpResponseParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish()

    def on_headers_complete(self) -> None:
        # An answer to HEAD has no body, whatever its headers say.
        if self._head_only or self._parser.get_status_code() < 200:
            self._finish()

    def on_message_complete(self) -> None:
        self._finish()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)


class Mirrors:
    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: Metrics, direction: str) -> None:
        self._loop = loop
        self._metrics = metrics
        self._direction = direction
        self.in_flight = 0
        self._labels: dict[tuple[str, str], Labels] = {}

    def _count(self, service: str, result: str) -> None:
        labels = self._labels.get((service, result))
        if labels is None:
            labels = self._labels[(service, result)] = (
                ("direction", self._direction),
                ("dst_service", service),
                ("result", result),
            )
        self._metrics.inc("mirror_requests_total", labels)

    def send(self, target: ServiceTarget, request: list[bytes] | None) -> None:
        """Send a copy of `request` (head first; None: not kept) to `target`."""
        if request is None or self.in_flight >= MAX_IN_FLIGHT:
            self._count(target.name, "dropped")
            return
        head = request[0]
        # The copy asks the mirror to close after answering: no pooled
        # connection is kept for copies, and its end marks the answer's.
        copy = [head[:-2] + b"connection: close\r\n\r\n", *request[1:]]
        self.in_flight += 1
        self._loop.create_task(self._run(target, copy))

    async def _run(self, target: ServiceTarget, copy: list[bytes]) -> None:
        if not target.view.ready:
            # The first copies to a mirror the proxy has never resolved wait
            # (bounded) for discovery, like a request would: dropping them
            # would lose exactly the copies of a route's first requests.
            await target.view.wait_known(MIRROR_TIMEOUT_S)
        state = target.balancer.pick(time.monotonic())
        if state is None:
            self.in_flight -= 1
            self._count(target.name, "dropped")
            return
        pool: Connectable = target.pool_for(state)  # type: ignore[assignment]
        await self._copy(target, pool, copy)

    async def _copy(self, target: ServiceTarget, pool: Connectable, copy: list[bytes]) -> None:
        transport: asyncio.BaseTransport | None = None
        result = "sent"
        head_only = copy[0][:5] == b"HEAD "
        try:
            done: asyncio.Future[None] = self._loop.create_future()
            opened, _, _ = await asyncio.wait_for(
                pool.connect(lambda: _Discard(done, head_only), ALPN_HTTP1), MIRROR_TIMEOUT_S
            )
            transport = opened
            cast(asyncio.WriteTransport, opened).writelines(copy)
            await asyncio.wait_for(done, MIRROR_TIMEOUT_S)
        except TimeoutError:
            result = "timeout"
        except Exception:  # a copy's failure is only counted: the original was served
            result = "failed"
        finally:
            if transport is not None:
                transport.close()
            self.in_flight -= 1
            self._count(target.name, result)
