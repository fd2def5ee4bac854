"""Following a control-plane stream across failures and replicas: the one loop that
the proxy's control-plane clients share.

The Destination client (`Get`, `GetProfile`), the Policy client
(`WatchInbound`) and the identity client's trust-bundle watch each hand
`follow` how to open their stream on replica `i` and what to do with each
message. `follow` keeps the stream open until it is cancelled or `closed()`
says so:

- Fail static: a broken stream changes nothing the client holds; the client
  goes on serving from what it last applied, and the stream is reopened.
- After every failure, the next replica (a dead one is skipped at once, and
  the rotation comes back to a restarted one), after a jittered exponential
  backoff (`tulle.core.backoff`) that starts again from its minimum once a
  stream delivers.
- A stream counts as connected at its first message, not when it is opened:
  gRPC opens calls lazily, so an open call says nothing about the replica.
- New streams start at the replica that delivered last (`Replicas`), shared by
  all the streams of one client.
- Errors the client expects (`expected`: by default a failed RPC) are logged at
  `failure_level`; anything else is logged with its traceback and treated as a
  failure too, since a client that stops following keeps stale state for the
  life of the proxy.

`WatchStats` counts for the proxy's metrics; one instance may be shared by
all the streams of a client. No sockets here: the opener, the sleep and the
random source are given, which is how the unit tests drive it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import grpc

from tulle.core.backoff import Backoff

M = TypeVar("M")

log = logging.getLogger("tulle.api.failover")


@dataclass(slots=True)
class WatchStats:
    """What the streams of one client did, for its metrics."""

    # Messages delivered (each one applied).
    updates: int = 0
    # Streams that delivered and have not ended yet.
    connected: int = 0
    # Streams that delivered again after a failure.
    reconnects: int = 0
    # Streams that ended or broke, connected or not.
    failures: int = 0


class StreamCounters:
    """A client's `reconnects` and `stream_failures`, read from its `stats` (a
    WatchStats): the names the proxy's metrics read of every watching client."""

    stats: WatchStats

    @property
    def reconnects(self) -> int:
        return self.stats.reconnects

    @property
    def stream_failures(self) -> int:
        return self.stats.failures


class Replicas:
    """The control-plane replicas a client may ask, by index, and which to ask first."""

    __slots__ = ("names", "preferred")

    def __init__(self, names: Sequence[str], preferred: int = 0) -> None:
        if not names:
            raise ValueError("at least one control-plane replica is needed")
        self.names = tuple(names)
        # The replica that answered last: new streams and requests try it first.
        self.preferred = preferred % len(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def after(self, index: int) -> int:
        """The replica to try when `index` failed."""
        return (index + 1) % len(self.names)

    def in_turn(self) -> list[int]:
        """Every replica once, the preferred one first (for one request tried on each)."""
        count = len(self.names)
        return [(self.preferred + offset) % count for offset in range(count)]

    def answered(self, index: int) -> None:
        self.preferred = index


# One replica, for a client whose source does its own rotation (or has none).
SINGLE = ("its source",)


def rpc_failure(error: Exception) -> str:
    """How a failed control-plane RPC reads in the log: its status and details."""
    if isinstance(error, grpc.aio.AioRpcError):
        return f"{error.code().name}: {error.details()}"
    return str(error)


async def follow(
    what: str,
    open_stream: Callable[[int], AsyncIterable[M]],
    apply: Callable[[M], None],
    *,
    backoff: Backoff,
    replicas: Replicas | None = None,
    stats: WatchStats | None = None,
    expected: tuple[type[Exception], ...] = (grpc.aio.AioRpcError,),
    reason: Callable[[Exception], str] = rpc_failure,
    failure_level: int = logging.DEBUG,
    closed: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    logger: logging.Logger = log,
) -> None:
    """Keep the stream `what` open, across failures and replicas, until cancelled or closed."""
    replicas = replicas if replicas is not None else Replicas(SINGLE)
    stats = stats if stats is not None else WatchStats()
    index = replicas.preferred
    ever_connected = False
    while not closed():
        connected = False
        try:
            async for message in open_stream(index):
                if not connected:
                    connected = True
                    stats.connected += 1
                    if ever_connected:
                        stats.reconnects += 1
                        logger.info("%s reconnected via %s", what, replicas.names[index])
                    ever_connected = True
                    replicas.answered(index)
                    backoff.reset()
                stats.updates += 1
                apply(message)
            why, level, unexpected = "ended by the server", failure_level, None
        except asyncio.CancelledError:
            if connected:
                stats.connected -= 1
            raise
        except expected as error:
            why, level, unexpected = reason(error), failure_level, None
        except Exception as error:
            # Not a failure the client knows: with its traceback, and loudly.
            why, level, unexpected = f"{type(error).__name__}: {error}", logging.WARNING, error
        if connected:
            stats.connected -= 1
        stats.failures += 1
        delay = backoff.next_delay()
        logger.log(
            level,
            "%s via %s: %s; again in %.1f s",
            what,
            replicas.names[index],
            why,
            delay,
            exc_info=unexpected,
        )
        index = replicas.after(index)
        await sleep(delay)
