"""Steady background traffic through the test mesh while the browser looks at it."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# Every tenth request fails on purpose, so success rates are not all 100 %.
FAILING_EVERY = 10
MAX_TRAFFIC_S = 240.0


@contextmanager
def steady_traffic(get: Callable[[str], int], rps: float = 20.0) -> Iterator[list[int]]:
    """Calls `get(path)` about `rps` times a second until the block ends (bounded in time)."""
    stop = threading.Event()
    statuses: list[int] = []

    def run() -> None:
        deadline = time.monotonic() + MAX_TRAFFIC_S
        sent = 0
        while not stop.is_set() and time.monotonic() < deadline:
            path = "/status/500" if sent % FAILING_EVERY == FAILING_EVERY - 1 else "/status/200"
            with contextlib.suppress(OSError):
                statuses.append(get(path))
            sent += 1
            stop.wait(1.0 / rps)

    thread = threading.Thread(target=run, name="dashboard-traffic", daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=15)
