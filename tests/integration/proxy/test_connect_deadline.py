"""A connect that completes while the process gets no CPU is not a timeout.

With `asyncio.wait_for`, a loopback connect that the kernel completed in time
was reported as timed out whenever the event loop was starved for longer than
the timeout (a busy shared machine): the deadline's timer ran before the
socket's readiness was seen. `tulle.net.deadline.within`, used by every
upstream connect of the proxy, polls I/O once more before giving up.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

import pytest
import uvloop
from support.ports import LOOPBACK

from tulle.net.deadline import within

STALL_S = 0.2
TIMEOUT_S = 0.05
ATTEMPTS = 5

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def connects_through_stalls(loop_name: str, deadline: Callable[..., Any]) -> int:
    """Connects to a listening loopback socket, each followed by a stall of the
    loop longer than the timeout; how many succeed."""

    async def main(port: int) -> int:
        loop = asyncio.get_running_loop()
        connected = 0
        for _ in range(ATTEMPTS):
            opening = loop.create_connection(asyncio.Protocol, LOOPBACK, port)
            task = asyncio.ensure_future(deadline(opening, TIMEOUT_S))
            await asyncio.sleep(0)  # the connect is under way
            time.sleep(STALL_S)  # the process gets no CPU past the deadline
            try:
                transport, _ = await task
            except TimeoutError:
                continue
            transport.close()
            connected += 1
        return connected

    with socket.socket() as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen(ATTEMPTS * 2)
        loop = LOOPS[loop_name]()
        try:
            return loop.run_until_complete(main(listener.getsockname()[1]))
        finally:
            loop.close()


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_a_stalled_loop_does_not_fail_a_completed_connect(loop_name: str) -> None:
    assert connects_through_stalls(loop_name, within) == ATTEMPTS


@pytest.mark.parametrize("loop_name", sorted(LOOPS))
def test_asyncio_wait_for_fails_them(loop_name: str) -> None:
    """The defect, shown: every one of those connects 'timed out'."""
    assert connects_through_stalls(loop_name, asyncio.wait_for) == 0
