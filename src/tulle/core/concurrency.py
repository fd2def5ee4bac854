"""Per-service cap on pending requests: over the cap the proxy answers 503 at once.

There is deliberately no queue: a request that cannot be sent now is refused
rather than parked, so overload shows up as fast failures instead of growing
latency and memory. Single-threaded (one event loop per worker), so plain ints.
"""

from __future__ import annotations


class PendingLimit:
    """``try_acquire()`` before sending, ``release()`` exactly once when it ends."""

    __slots__ = ("max_pending", "pending", "rejected")

    def __init__(self, max_pending: int) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be >= 1")
        self.max_pending = max_pending
        self.pending = 0
        # Refusals so far, for metrics.
        self.rejected = 0

    def try_acquire(self) -> bool:
        if self.pending >= self.max_pending:
            self.rejected += 1
            return False
        self.pending += 1
        return True

    def release(self) -> None:
        # An unmatched release must not open extra room under the cap.
        if self.pending > 0:
            self.pending -= 1
