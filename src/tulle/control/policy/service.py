"""The Policy gRPC servicer (`WatchInbound`) and its registration on the control plane."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import grpc

from tulle.api.proto import policy_pb2 as pb
from tulle.api.proto import policy_pb2_grpc as pb_grpc
from tulle.control.destination.translator import DEFAULT_QUEUE_CAPACITY, UpdateQueue
from tulle.control.manifest import Manifest
from tulle.control.metrics import ControlMetrics
from tulle.control.policy.index import PolicyIndex

log = logging.getLogger("tulle.control.policy")

OVERFLOW_MESSAGE = "policy queue overflowed: the client reads too slowly; resubscribe"


class PolicyService(pb_grpc.PolicyServicer):
    def __init__(self, index: PolicyIndex, *, queue_capacity: int = DEFAULT_QUEUE_CAPACITY) -> None:
        self._index = index
        self._queue_capacity = queue_capacity

    async def WatchInbound(
        self,
        request: pb.InboundRequest,
        context: grpc.aio.ServicerContext[pb.InboundRequest, pb.InboundPolicy],
    ) -> AsyncIterator[pb.InboundPolicy]:
        index = self._index
        if not request.workload or not 0 < request.port <= 65535:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "WatchInbound needs a workload name and a port between 1 and 65535",
            )
            return
        queue: UpdateQueue[pb.InboundPolicy] = UpdateQueue(self._queue_capacity)
        index.streams_opened += 1
        index.streams_active += 1
        key = index.subscribe(request.workload, request.port, queue)
        log.debug("policy stream for %s:%d from %r", *key, request.proxy_id)
        try:
            while True:
                message = await queue.get()
                if message is None:
                    index.stream_overflows += 1
                    log.warning("ending policy stream for %s:%d: %s", *key, OVERFLOW_MESSAGE)
                    await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, OVERFLOW_MESSAGE)
                    return
                index.updates_sent += 1
                yield message
        finally:
            index.unsubscribe(key, queue)
            index.streams_active -= 1


def add_policy_servicer(
    server: grpc.aio.Server,
    manifest: Manifest,
    metrics: ControlMetrics,
    *,
    queue_capacity: int = DEFAULT_QUEUE_CAPACITY,
) -> PolicyIndex:
    """Serve WatchInbound on `server`; feed the returned index every new manifest."""
    index = PolicyIndex(manifest)
    pb_grpc.add_PolicyServicer_to_server(
        PolicyService(index, queue_capacity=queue_capacity), server
    )
    # Chained after whatever else already adds exposition text (the Identity service).
    previous = metrics.extra
    metrics.extra = lambda: (previous() if previous is not None else "") + index.render_prometheus()
    return index
