"""Reading a gRPC response stream in tests, one message at a time with a timeout."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable
from typing import Generic, TypeVar

STEP_TIMEOUT_S = 5.0
M = TypeVar("M")


class Reader(Generic[M]):
    """Reads a stream in a task, so that waiting with a timeout never cancels the call."""

    def __init__(self, stream: AsyncIterable[M]) -> None:
        self._queue: asyncio.Queue[M] = asyncio.Queue()
        self._task = asyncio.ensure_future(self._pump(stream))

    async def _pump(self, stream: AsyncIterable[M]) -> None:
        async for message in stream:
            self._queue.put_nowait(message)

    async def next(self, timeout: float = STEP_TIMEOUT_S) -> M:
        return await asyncio.wait_for(self._queue.get(), timeout)

    def cancel(self) -> None:
        self._task.cancel()
