"""The idle timer of an HTTP/2 connection (client-facing and upstream alike).

Lazy: armed once when the connection runs out of streams, it is not moved
per stream. When it fires it closes the connection only if the connection
has been without streams since the last `arm` for the whole timeout; busy,
it does nothing (the last stream's end arms it again); idle for less, it
re-arms for the rest. A stream costs one `arm` at its end, not a timer
cancelled and made again on each side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class IdleTimer:
    __slots__ = ("_busy", "_close", "_handle", "_loop", "_since", "_timeout")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float | None,
        busy: Callable[[], bool],
        close: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._timeout = timeout_s  # None: never idle-closed
        self._busy = busy
        self._close = close
        self._handle: asyncio.TimerHandle | None = None
        self._since = 0.0

    def arm(self) -> None:
        """The connection has no stream from now on."""
        timeout = self._timeout
        if timeout is None:
            return
        self._since = now = self._loop.time()
        if self._handle is None:
            self._handle = self._loop.call_at(now + timeout, self._fired)

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fired(self) -> None:
        self._handle = None
        timeout = self._timeout
        if timeout is None or self._busy():
            return  # busy: armed again when its last stream ends
        until = self._since + timeout
        if until > self._loop.time():
            # A stream came and went since the timer was set: idle for less.
            self._handle = self._loop.call_at(until, self._fired)
            return
        self._close()
