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
route_service, route, result}` (`sent`, `failed`, `timeout`, `dropped`):
`dst_service` is the mirror, `route_service` and `route` the route whose
requests are copied (names from the manifest, so the label sets are
bounded; `tulle routes` counts a route's copies by them).

HTTP/2 and gRPC (`send_h2`, from `tulle.proxy.h2_mesh.H2Call` when its
stream is over): the stream's kept request -- the client's headers, its DATA
within the same replay limit (64 KiB by default), and its trailers -- goes
on a new HTTP/2 connection per copy (`tulle.proxy.mirror_h2`: prior
knowledge, or mesh TLS with ALPN `tulle.h2`), under the same in-flight cap,
timeout and counters. A stream whose request was not whole when it ended
(its body over the limit, or the response came first) is not copied:
`dropped`.

The copy's endpoint is picked by the mirror's balancer but the copy does
not feed its latency or failure accrual: the mirror's health must not
depend on how the proxy treats copies.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import httptools

from tulle.net.mtls import ALPN_H2, ALPN_HTTP1
from tulle.proxy.metrics import Labels, Metrics

if TYPE_CHECKING:
    from tulle.codec.http2 import Header
    from tulle.proxy.router import MirrorPolicy


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
        self._labels: dict[tuple[str, str, str, str], Labels] = {}

    def _count(self, mirror: MirrorPolicy, result: str) -> None:
        key = (mirror.target.name, mirror.route_service, mirror.route, result)
        labels = self._labels.get(key)
        if labels is None:
            labels = (
                ("direction", self._direction),
                ("dst_service", key[0]),
                ("route_service", key[1]),
                ("route", key[2]),
                ("result", result),
            )
            # Names come from the manifest; the bound is for a mesh that renames forever.
            if len(self._labels) < 10_000:
                self._labels[key] = labels
        self._metrics.inc("mirror_requests_total", labels)

    def send_h2(
        self,
        mirror: MirrorPolicy,
        headers: Sequence[Header] | None,
        body: list[bytes] | None,
        trailers: list[Header] | None,
        drop_header: bytes | None,
    ) -> None:
        """Send a copy of an HTTP/2 request (`body` None: not kept whole) to the mirror."""
        if headers is None or body is None or self.in_flight >= MAX_IN_FLIGHT:
            self._count(mirror, "dropped")
            return
        from tulle.proxy import mirror_h2  # only once something is mirrored over HTTP/2

        copied = mirror_h2.copy_headers(headers, drop_header)
        data = b"".join(body)
        self.in_flight += 1

        def protocol(done: asyncio.Future[None]) -> asyncio.Protocol:
            return mirror_h2.H2Copy(done, copied, data, trailers)

        self._loop.create_task(self._run(mirror, protocol, ALPN_H2, ()))

    def send(self, mirror: MirrorPolicy, request: list[bytes] | None) -> None:
        """Send a copy of `request` (head first; None: not kept) to the mirror."""
        if request is None or self.in_flight >= MAX_IN_FLIGHT:
            self._count(mirror, "dropped")
            return
        head = request[0]
        # The copy asks the mirror to close after answering: no pooled
        # connection is kept for copies, and its end marks the answer's.
        copy = [head[:-2] + b"connection: close\r\n\r\n", *request[1:]]
        self.in_flight += 1
        head_only = head[:5] == b"HEAD "
        self._loop.create_task(
            self._run(mirror, lambda done: _Discard(done, head_only), ALPN_HTTP1, copy)
        )

    async def _run(
        self,
        mirror: MirrorPolicy,
        protocol: Callable[[asyncio.Future[None]], asyncio.Protocol],
        alpn: str,
        copy: Sequence[bytes],
    ) -> None:
        target = mirror.target
        if not target.view.ready:
            # The first copies to a mirror the proxy has never resolved wait
            # (bounded) for discovery, like a request would: dropping them
            # would lose exactly the copies of a route's first requests.
            await target.view.wait_known(MIRROR_TIMEOUT_S)
        state = target.balancer.pick(time.monotonic())
        if state is None:
            self.in_flight -= 1
            self._count(mirror, "dropped")
            return
        pool: Connectable = target.pool_for(state)  # type: ignore[assignment]
        await self._copy(mirror, pool, protocol, alpn, copy)

    async def _copy(
        self,
        mirror: MirrorPolicy,
        pool: Connectable,
        protocol: Callable[[asyncio.Future[None]], asyncio.Protocol],
        alpn: str,
        copy: Sequence[bytes],
    ) -> None:
        """Connect, write `copy` (HTTP/2: the protocol writes its own), wait for the end."""
        transport: asyncio.BaseTransport | None = None
        result = "sent"
        try:
            done: asyncio.Future[None] = self._loop.create_future()
            opened, _, _ = await asyncio.wait_for(
                pool.connect(lambda: protocol(done), alpn), MIRROR_TIMEOUT_S
            )
            transport = opened
            if copy:
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
            self._count(mirror, result)
