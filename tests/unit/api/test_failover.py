"""`tulle.api.failover.follow`: the control-plane clients' one watch loop, over scripted
streams, a recording sleep and a jitter-free backoff (no sockets, no real time)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from tulle.api.failover import Replicas, WatchStats, follow, rpc_failure
from tulle.core.backoff import Backoff, BackoffSpec

# No jitter: delays are exactly 1, 2, 4, 8, 8, ...
SPEC = BackoffSpec(min_s=1.0, max_s=8.0, jitter=0.0)
REPLICAS = ("a:1", "b:2", "c:3")


class Broken(Exception):
    """A failure the client expects (as a failed RPC)."""


@dataclass
class Stream:
    messages: list[str]
    # None: the server ends the stream; else raised after the messages.
    end: BaseException | None = None


@dataclass
class Script:
    """Opens the scripted streams in turn; the loop is told to stop once none is left."""

    streams: list[Stream]
    opened: list[int] = field(default_factory=list)
    applied: list[str] = field(default_factory=list)
    sleeps: list[float] = field(default_factory=list)
    # (updates, connected) as `apply` saw them, per message.
    seen: list[tuple[int, int]] = field(default_factory=list)

    def open(self, index: int) -> AsyncIterator[str]:
        self.opened.append(index)
        return self._run(self.streams.pop(0))

    async def _run(self, stream: Stream) -> AsyncIterator[str]:
        for message in stream.messages:
            yield message
        if stream.end is not None:
            raise stream.end

    def closed(self) -> bool:
        return not self.streams

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        await asyncio.sleep(0)  # a real suspension, so a runaway loop still times out


async def wait(*args: Any, **kwargs: Any) -> None:
    """`follow`, bounded in time."""
    await asyncio.wait_for(follow(*args, **kwargs), 10)


def run(
    script: Script,
    replicas: Replicas | None = None,
    stats: WatchStats | None = None,
    apply_fails_on: str = "",
) -> WatchStats:
    stats = stats if stats is not None else WatchStats()

    def apply(message: str) -> None:
        if message == apply_fails_on:
            raise RuntimeError(f"cannot apply {message}")
        script.applied.append(message)
        script.seen.append((stats.updates, stats.connected))

    coroutine = follow(
        "test stream",
        script.open,
        apply,
        backoff=Backoff(SPEC),
        replicas=replicas,
        stats=stats,
        expected=(Broken,),
        closed=script.closed,
        sleep=script.sleep,
    )
    asyncio.run(asyncio.wait_for(coroutine, 10))
    return stats


def test_moves_to_the_next_replica_after_every_failure_with_growing_backoff() -> None:
    script = Script([Stream([], Broken("down")) for _ in range(5)])
    replicas = Replicas(REPLICAS, preferred=1)
    stats = run(script, replicas)
    assert script.opened == [1, 2, 0, 1, 2]
    assert script.sleeps == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert stats == WatchStats(updates=0, connected=0, reconnects=0, failures=5)
    assert replicas.preferred == 1  # nobody delivered


def test_a_delivering_stream_resets_the_backoff_and_becomes_preferred() -> None:
    script = Script(
        [
            Stream([], Broken("down")),
            Stream([], Broken("down")),
            Stream(["one", "two"], Broken("lost")),
            Stream([], Broken("down")),
        ]
    )
    replicas = Replicas(REPLICAS)
    stats = run(script, replicas)
    assert script.opened == [0, 1, 2, 0]
    # 1 and 2 before it delivered; the min again after it broke, then growing.
    assert script.sleeps == [1.0, 2.0, 1.0, 2.0]
    assert replicas.preferred == 2
    assert script.applied == ["one", "two"]
    assert stats.failures == 4 and stats.updates == 2


def test_counts_connected_only_from_the_first_message_and_reconnects_after_that() -> None:
    script = Script(
        [
            Stream(["a"], None),  # the server ends it
            Stream([], Broken("down")),  # opened, never delivered: not connected
            Stream(["b", "c"], Broken("lost")),
        ]
    )
    stats = run(script, Replicas(REPLICAS))
    # While applying, the stream counts as connected; the update as received.
    assert script.seen == [(1, 1), (2, 1), (3, 1)]
    assert stats == WatchStats(updates=3, connected=0, reconnects=1, failures=3)


def test_streams_of_one_client_share_its_counters_and_preferred_replica() -> None:
    async def scenario() -> tuple[WatchStats, Replicas, list[int], list[int]]:
        stats, replicas = WatchStats(), Replicas(REPLICAS)
        first = Script([Stream([], Broken("down")), Stream(["x"], Broken("lost"))])
        second_opened: list[int] = []
        gate = asyncio.Event()

        async def second_stream(index: int) -> AsyncIterator[str]:
            second_opened.append(index)
            await gate.wait()
            yield "y"
            await asyncio.Event().wait()  # stays open until cancelled

        def closed() -> bool:
            return not first.streams

        await follow(
            "first",
            first.open,
            lambda m: None,
            backoff=Backoff(SPEC),
            replicas=replicas,
            stats=stats,
            expected=(Broken,),
            closed=closed,
            sleep=first.sleep,
        )
        # The first client's stream delivered from replica 1: the next starts there.
        task = asyncio.create_task(
            follow(
                "second",
                second_stream,
                lambda m: None,
                backoff=Backoff(SPEC),
                replicas=replicas,
                stats=stats,
                sleep=first.sleep,
            )
        )
        gate.set()
        for _ in range(100):
            if stats.connected:
                break
            await asyncio.sleep(0)
        connected = stats.connected
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert connected == 1
        return stats, replicas, first.opened, second_opened

    stats, replicas, first_opened, second_opened = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert first_opened == [0, 1]
    assert second_opened == [1]
    assert replicas.preferred == 1
    # Cancelled while connected: no longer counted as connected.
    assert stats == WatchStats(updates=2, connected=0, reconnects=0, failures=2)


def test_an_unexpected_error_is_logged_with_its_traceback_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = Script([Stream(["good", "bad", "never"]), Stream(["after"], Broken("lost"))])
    with caplog.at_level(logging.DEBUG, logger="tulle.api.failover"):
        stats = run(script, Replicas(REPLICAS), apply_fails_on="bad")
    assert script.applied == ["good", "after"]
    assert stats.reconnects == 1 and stats.failures == 2
    unexpected = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(unexpected) == 1 and unexpected[0].exc_info is not None
    assert "RuntimeError: cannot apply bad" in unexpected[0].getMessage()
    expected = [r for r in caplog.records if r.levelno == logging.DEBUG]
    assert [r.getMessage() for r in expected] == ["test stream via b:2: lost; again in 1.0 s"]


def test_failure_level_is_the_clients_choice(caplog: pytest.LogCaptureFixture) -> None:
    script = Script([Stream([], Broken("refused"))])
    with caplog.at_level(logging.DEBUG, logger="tulle.api.failover"):
        asyncio.run(
            wait(
                "bundle watch",
                script.open,
                lambda m: None,
                backoff=Backoff(SPEC),
                expected=(Broken,),
                reason=lambda error: f"why: {error}",
                failure_level=logging.INFO,
                closed=script.closed,
                sleep=script.sleep,
            )
        )
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.INFO, "bundle watch via its source: why: refused; again in 1.0 s")
    ]


def test_a_closed_client_opens_nothing() -> None:
    script = Script([])
    stats = run(script)
    assert script.opened == [] and stats == WatchStats()


def test_a_failed_rpc_is_expected_by_default_and_reads_as_its_status() -> None:
    error = grpc.aio.AioRpcError(
        grpc.StatusCode.UNAVAILABLE,
        grpc.aio.Metadata(),
        grpc.aio.Metadata(),
        details="connection refused",
    )
    assert rpc_failure(error) == "UNAVAILABLE: connection refused"
    assert rpc_failure(ValueError("plain")) == "plain"
    script = Script([Stream(["m"], error), Stream([], error)])
    sleeps: list[float] = []

    async def sleep(delay: float) -> None:
        sleeps.append(delay)
        await asyncio.sleep(0)

    stats = WatchStats()
    asyncio.run(
        wait(
            "rpc",
            script.open,
            lambda m: None,
            backoff=Backoff(SPEC),
            replicas=Replicas(REPLICAS),
            stats=stats,
            closed=script.closed,
            sleep=sleep,
        )
    )
    assert stats.failures == 2 and sleeps == [1.0, 2.0]


def test_replicas_in_turn_after_and_answered() -> None:
    replicas = Replicas(REPLICAS, preferred=4)
    assert replicas.preferred == 1 and len(replicas) == 3
    assert replicas.in_turn() == [1, 2, 0]
    assert [replicas.after(i) for i in range(3)] == [1, 2, 0]
    replicas.answered(2)
    assert replicas.in_turn() == [2, 0, 1]
    with pytest.raises(ValueError, match="at least one"):
        Replicas(())
