"""`tulle.net.deadline.within`: timeouts, results, errors and cancellation, without sockets.

The stall it exists for needs a real connect: tests/integration/proxy/test_connect_deadline.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tulle.net.deadline import within

TIMEOUT_S = 0.05

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def run(loop_name: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = LOOPS[loop_name]()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_deadline_that_passes_is_a_timeout_and_cancels_the_operation(loop_name: str) -> None:
    async def main() -> tuple[float, bool]:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await within(never, TIMEOUT_S)
        return time.monotonic() - started, never.cancelled()

    elapsed, cancelled = run(loop_name, main)
    assert cancelled
    assert TIMEOUT_S <= elapsed < 5  # bounded; a busy machine may add to it


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_result_and_an_error_pass_through(loop_name: str) -> None:
    async def fails() -> None:
        raise ConnectionRefusedError("refused")

    async def main() -> int:
        with pytest.raises(ConnectionRefusedError):
            await within(fails(), 1.0)
        return await within(asyncio.sleep(0, result=7), 1.0)

    assert run(loop_name, main) == 7


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_cancelling_the_caller_cancels_the_operation_not_a_timeout(loop_name: str) -> None:
    async def main() -> bool:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        caller = asyncio.ensure_future(within(never, 60.0))
        await asyncio.sleep(0)
        caller.cancel()
        with pytest.raises(asyncio.CancelledError):
            await caller
        return never.cancelled()

    assert run(loop_name, main)
