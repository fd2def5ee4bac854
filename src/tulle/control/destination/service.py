"""The Destination gRPC servicer: one translator and one bounded queue per stream.

A stream subscribes its translator to the watcher (which immediately queues the
snapshot), then drains the queue into the call. When the queue overflows the
stream ends with RESOURCE_EXHAUSTED and the client resubscribes; the watcher
never waits for a slow reader.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc

from tulle.api.proto import destination_pb2 as pb
from tulle.api.proto import destination_pb2_grpc as pb_grpc
from tulle.control.destination.translator import (
    DEFAULT_QUEUE_CAPACITY,
    EndpointTranslator,
    ProfileTranslator,
    UpdateQueue,
)
from tulle.control.destination.watcher import DestinationWatcher, StateListener
from tulle.control.metrics import ControlMetrics

log = logging.getLogger("tulle.control.destination")

M = TypeVar("M")

OVERFLOW_MESSAGE = "update queue overflowed: the client reads too slowly; resubscribe"


class DestinationService(pb_grpc.DestinationServicer):
    def __init__(
        self,
        watcher: DestinationWatcher,
        metrics: ControlMetrics,
        *,
        queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
        canonical: Callable[[str, str], str] | None = None,
    ) -> None:
        # The source's naming rule, (path, context token) -> the authority to
        # look up: Kubernetes expands short names in the caller's namespace.
        self._canonical = canonical
        self._watcher = watcher
        self._metrics = metrics
        self._queue_capacity = queue_capacity

    async def Get(
        self,
        request: pb.GetDestination,
        context: grpc.aio.ServicerContext[pb.GetDestination, pb.Update],
    ) -> AsyncIterator[pb.Update]:
        queue: UpdateQueue[pb.Update] = UpdateQueue(self._queue_capacity)
        async for message in self._stream(
            "get", request, context, queue, EndpointTranslator(queue)
        ):
            yield message

    async def GetProfile(
        self,
        request: pb.GetDestination,
        context: grpc.aio.ServicerContext[pb.GetDestination, pb.DestinationProfile],
    ) -> AsyncIterator[pb.DestinationProfile]:
        queue: UpdateQueue[pb.DestinationProfile] = UpdateQueue(self._queue_capacity)
        async for message in self._stream(
            "profile", request, context, queue, ProfileTranslator(queue)
        ):
            yield message

    async def _stream(
        self,
        rpc: str,
        request: pb.GetDestination,
        context: grpc.aio.ServicerContext[pb.GetDestination, M],
        queue: UpdateQueue[M],
        translator: StateListener,
    ) -> AsyncIterator[M]:
        metrics = self._metrics
        metrics.streams_opened[rpc] += 1
        metrics.streams_active[rpc] += 1
        path = request.path
        if self._canonical is not None:
            path = self._canonical(path, request.context_token)
        publisher = self._watcher.subscribe(path, translator)
        log.debug("%s stream for %r from %r", rpc, request.path, request.context_token)
        try:
            while True:
                message = await queue.get()
                if message is None:
                    metrics.stream_overflows[rpc] += 1
                    log.warning(
                        "ending %s stream for %r from %r: %s",
                        rpc,
                        request.path,
                        request.context_token,
                        OVERFLOW_MESSAGE,
                    )
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVERFLOW_MESSAGE)
                    return
                metrics.updates_sent[rpc] += 1
                yield message
        finally:
            self._watcher.unsubscribe(publisher, translator)
            metrics.streams_active[rpc] -= 1
