"""The process's file-descriptor budget: shed load before descriptors run out.

A proxy that runs out of descriptors cannot accept on any listener, admin
included, nor open the upstream connections that would let requests finish
and free descriptors. So the data plane stops short of the limit
(`RLIMIT_NOFILE`) and leaves a reserve for the admin listener (`/live`,
`/metrics`, `POST /shutdown`) and the control-plane clients:

* a new data-plane connection whose descriptor number is at or above
  `shed_at` is closed at once (accept, then close: the client learns it
  now instead of waiting in the backlog);
* a new upstream connection at or above `connect_at` is closed and the request
  answered `503 descriptors-exhausted`;
* `connect_at` sits `ADMIN_RESERVE` below the limit, `shed_at` a further
  eighth of the limit below that (at least `ACCEPT_RESERVE`), so that the
  connections already accepted can still reach their upstreams.

The check costs nothing per request: the kernel hands out the lowest free
descriptor, so a new socket's number is a lower bound on how many are open;
one comparison per new connection reads it. When even `accept()` fails
(EMFILE: descriptors were used by something else), one spare descriptor held
for the purpose is released to accept the waiting connection and close it,
then taken again (libev's and libuv's "EMFILE trick"). Every shed connection
is counted by the caller; a warning is logged at most once per
`LOG_INTERVAL_S`. Recovery needs nothing: once descriptors are closed, new
ones get low numbers again and pass.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import time

log = logging.getLogger(__name__)

# Descriptors kept for the admin listener and the control-plane clients.
ADMIN_RESERVE = 32
# The least room left between shedding accepts and refusing upstream connects.
ACCEPT_RESERVE = 32
LOG_INTERVAL_S = 10.0


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE of this process."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft <= 0:
        return 1 << 20
    return int(soft)


class DescriptorBudget:
    """The thresholds above for one process, and the spare descriptor."""

    def __init__(self, limit: int | None = None) -> None:
        self.limit = limit if limit is not None else descriptor_limit()
        self.connect_at = max(self.limit - ADMIN_RESERVE, 1)
        self.shed_at = max(self.connect_at - max(ACCEPT_RESERVE, self.limit // 8), 1)
        self._spare: int | None = None
        self._take_spare()
        self._shed_since_log = 0
        self._last_log = 0.0

    def _take_spare(self) -> None:
        if self._spare is None:
            try:
                self._spare = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                self._spare = None

    def accept_ok(self, fd: int) -> bool:
        """May a just-accepted data-plane connection with descriptor `fd` be served?"""
        return fd < self.shed_at

    def connect_ok(self, fd: int) -> bool:
        """May a just-opened upstream connection with descriptor `fd` be used?"""
        return fd < self.connect_at

    def admit_upstream(self, transport: asyncio.BaseTransport) -> bool:
        """May a just-opened upstream connection be used? When not, it is
        counted as shed (`note_shed`); the caller closes it and answers 503."""
        sock = transport.get_extra_info("socket")
        if sock is None or self.connect_ok(sock.fileno()):
            return True
        self.note_shed("upstream connections")
        return False

    def shed_waiting(self, listener: socket.socket) -> bool:
        """accept() failed with EMFILE: accept one waiting connection with the
        spare descriptor and close it. False when there was none to shed."""
        spare = self._spare
        if spare is None:
            self._take_spare()
            return False
        os.close(spare)
        self._spare = None
        try:
            conn, _ = listener.accept()
        except OSError:
            return False
        finally:
            self._take_spare()
        conn.close()
        return True

    def note_shed(self, what: str) -> None:
        """Count a shed connection for the log line (at most one per interval)."""
        now = time.monotonic()
        self._shed_since_log += 1
        if now - self._last_log >= LOG_INTERVAL_S:
            log.warning(
                "out of file descriptors (limit %d, ulimit -n): shedding new %s; "
                "%d shed since the last report",
                self.limit,
                what,
                self._shed_since_log,
            )
            self._last_log = now
            self._shed_since_log = 0

    def close(self) -> None:
        if self._spare is not None:
            os.close(self._spare)
            self._spare = None
