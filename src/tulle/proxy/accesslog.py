"""The access-log sink of one proxy process: sampled JSON lines, written in batches.

Off by default (`--access-log` unset: the contexts hold None, and the
request path pays one attribute test). On, every finished request of the
scope (`--access-log-scope all`, or `routes`: only routes whose manifest
says `accessLog: true`) that the sampler keeps becomes one line
(`tulle.core.accesslog`). Lines are buffered and written at most every
`FLUSH_S` seconds or `FLUSH_BYTES` bytes, in one `write` of whole lines
(with `--workers N` the workers share the file with O_APPEND, so their
lines never interleave mid-line); `-` means standard output.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Callable, Mapping

from tulle.core.accesslog import Sampler, format_line

FLUSH_S = 0.5
FLUSH_BYTES = 64 * 1024
SCOPES = ("all", "routes")


class AccessLog:
    __slots__ = (
        "_buffer",
        "_buffered",
        "_fd",
        "_loop",
        "_timer",
        "fields",
        "routes_only",
        "sampler",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        destination: str,
        fields: tuple[str, ...],
        sample: float,
        scope: str = "all",
        rand: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self.fields = fields
        self.sampler = Sampler(sample) if rand is None else Sampler(sample, rand)
        self.routes_only = scope == "routes"
        if destination == "-":
            self._fd = sys.stdout.fileno()
        else:
            self._fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._buffer: list[str] = []
        self._buffered = 0
        self._timer: asyncio.TimerHandle | None = None

    def wants(self, route_logged: bool) -> bool:
        """Whether this request gets a line (scope, then sampling)."""
        if self.routes_only and not route_logged:
            return False
        return self.sampler.keep()

    def write(self, values: Mapping[str, object]) -> None:
        line = format_line(self.fields, values)
        self._buffer.append(line)
        self._buffered += len(line)
        if self._buffered >= FLUSH_BYTES:
            self.flush()
        elif self._timer is None:
            self._timer = self._loop.call_later(FLUSH_S, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        data = "".join(self._buffer).encode("utf-8", "replace")
        self._buffer = []
        self._buffered = 0
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError:
            # A full disk or a closed pipe must not take the proxy down: the
            # lines are dropped (the request was served).
            pass

    def close(self) -> None:
        self.flush()
        if self._fd != sys.stdout.fileno():
            os.close(self._fd)


def timestamp(now: float | None = None) -> str:
    """RFC 3339 UTC with milliseconds."""
    t = time.time() if now is None else now
    whole = int(t)
    millis = int((t - whole) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"
