"""The policy index: one publisher per watched (workload, port), fed whole manifests.

Like the Destination watcher, the index recompiles only what somebody
watches, and a publisher tells its streams only when the compiled policy
really changed (policies compare by their specification, not by their caches).
Listeners are bounded per-stream queues: `put` never blocks, and a queue that
overflows ends its stream so that the client resubscribes and starts over from
a fresh snapshot.
"""

from __future__ import annotations

from tulle.api.proto import policy_pb2 as pb
from tulle.control.destination.translator import UpdateQueue
from tulle.control.manifest import Manifest
from tulle.control.policy.translate import policy_message
from tulle.core.policy import InboundPolicy

Key = tuple[str, int]


class PolicyPublisher:
    """The current policy of one workload port and the stream queues that follow it."""

    __slots__ = ("key", "message", "policy", "queues")

    def __init__(self, key: Key, policy: InboundPolicy) -> None:
        self.key = key
        self.policy = policy
        self.message = policy_message(policy)
        self.queues: list[UpdateQueue[pb.InboundPolicy]] = []

    def publish(self, policy: InboundPolicy) -> bool:
        if policy == self.policy:
            return False
        self.policy = policy
        self.message = policy_message(policy)
        for queue in tuple(self.queues):
            queue.put(self.message)
        return True


class PolicyIndex:
    """The manifest in use, and a publisher per (workload, port) somebody watches."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self._publishers: dict[Key, PolicyPublisher] = {}
        # Counters for /metrics.
        self.streams_opened = 0
        self.streams_active = 0
        self.updates_sent = 0
        self.stream_overflows = 0

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def publisher_count(self) -> int:
        return len(self._publishers)

    def compile(self, workload: str, port: int) -> InboundPolicy:
        return self._manifest.authorization.compile(workload, port)

    def subscribe(self, workload: str, port: int, queue: UpdateQueue[pb.InboundPolicy]) -> Key:
        """Follow one port; the current policy is queued at once (the snapshot)."""
        key = (workload, port)
        publisher = self._publishers.get(key)
        if publisher is None:
            publisher = PolicyPublisher(key, self.compile(workload, port))
            self._publishers[key] = publisher
        publisher.queues.append(queue)
        queue.put(publisher.message)
        return key

    def unsubscribe(self, key: Key, queue: UpdateQueue[pb.InboundPolicy]) -> None:
        publisher = self._publishers.get(key)
        if publisher is None:
            return
        if queue in publisher.queues:
            publisher.queues.remove(queue)
        if not publisher.queues:
            del self._publishers[key]

    def update_manifest(self, manifest: Manifest) -> int:
        """Apply a new manifest; returns how many watched ports got a new policy."""
        self._manifest = manifest
        changed = 0
        for (workload, port), publisher in tuple(self._publishers.items()):
            if publisher.publish(manifest.authorization.compile(workload, port)):
                changed += 1
        return changed

    def render_prometheus(self) -> str:
        lines = [
            "# HELP control_policy_streams Open WatchInbound streams.",
            "# TYPE control_policy_streams gauge",
            f"control_policy_streams {self.streams_active}",
            "# HELP control_policy_streams_opened_total WatchInbound streams opened.",
            "# TYPE control_policy_streams_opened_total counter",
            f"control_policy_streams_opened_total {self.streams_opened}",
            "# HELP control_policy_updates_total Policies sent on streams.",
            "# TYPE control_policy_updates_total counter",
            f"control_policy_updates_total {self.updates_sent}",
            "# HELP control_policy_stream_overflows_total Streams ended because the client "
            "read too slowly.",
            "# TYPE control_policy_stream_overflows_total counter",
            f"control_policy_stream_overflows_total {self.stream_overflows}",
            "# HELP control_policy_publishers Workload ports currently watched.",
            "# TYPE control_policy_publishers gauge",
            f"control_policy_publishers {self.publisher_count}",
        ]
        return "\n".join(lines) + "\n"
