"""TapHub and serve_tap without sockets: activity flag, filters, bounded queues, limits."""

from __future__ import annotations

import asyncio
import json

import pytest

from tulle.proxy.tap import TapEvent, TapFilter, TapHub, serve_tap


def _event(path: str = "/a", status: int = 200, method: str = "GET") -> TapEvent:
    return TapEvent(
        ts=1.0,
        direction="inbound",
        method=method,
        authority="books",
        path=path,
        status=status,
        latency_ms=1.5,
    )


def test_active_only_while_someone_listens() -> None:
    hub = TapHub()
    assert hub.active is False
    first = hub.subscribe()
    second = hub.subscribe()
    assert hub.active is True
    hub.unsubscribe(first)
    assert hub.active is True
    hub.unsubscribe(second)
    assert hub.active is False


def test_filters_select_events() -> None:
    hub = TapHub()
    only_5xx_items = hub.subscribe(TapFilter.from_query({"path": "/items", "status": "5xx"}))
    everything = hub.subscribe()
    hub.emit(_event("/items/1", 503))
    hub.emit(_event("/items/1", 200))
    hub.emit(_event("/other", 500))
    assert only_5xx_items.queue.qsize() == 1
    assert everything.queue.qsize() == 3


@pytest.mark.parametrize("status", ["50", "5x", "abc", "5xxx"])
def test_bad_status_filter_is_refused(status: str) -> None:
    with pytest.raises(ValueError, match="status"):
        TapFilter.from_query({"status": status})


def test_a_slow_subscriber_loses_events_and_never_blocks() -> None:
    hub = TapHub()
    slow = hub.subscribe(queue_size=3)
    for _ in range(10):
        hub.emit(_event())
    assert slow.queue.qsize() == 3
    assert slow.dropped == 7
    assert hub.emitted == 10


def test_serve_tap_streams_json_lines_until_the_limit() -> None:
    async def scenario() -> list[bytes]:
        hub = TapHub()
        written: list[bytes] = []
        task = asyncio.create_task(
            serve_tap(hub, {"limit": "3", "method": "get"}, written.append, lambda: False)
        )
        for _ in range(50):
            if hub.active:
                break
            await asyncio.sleep(0.01)
        for index in range(5):
            hub.emit(_event(f"/{index}", method="POST" if index == 1 else "GET"))
        await asyncio.wait_for(task, 2.0)
        assert hub.active is False
        return written

    written = asyncio.run(scenario())
    head, *body = written
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    lines = [json.loads(line) for line in b"".join(body).splitlines()]
    assert [line["path"] for line in lines[:3]] == ["/0", "/2", "/3"]
    assert lines[-1] == {"end": True, "sent": 3, "dropped": 0}


def test_serve_tap_stops_when_the_client_goes_and_at_the_duration() -> None:
    async def scenario() -> tuple[list[bytes], float]:
        hub = TapHub()
        written: list[bytes] = []
        closing = [False]
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.create_task(serve_tap(hub, {}, written.append, lambda: closing[0]))
        await asyncio.sleep(0.05)
        closing[0] = True
        await asyncio.wait_for(task, 2.0)
        timed = asyncio.create_task(
            serve_tap(hub, {"duration": "0.2"}, written.append, lambda: False)
        )
        await asyncio.wait_for(timed, 2.0)
        return written, loop.time() - started

    written, elapsed = asyncio.run(scenario())
    assert elapsed < 1.5
    assert written[-1] == b'{"end": true, "sent": 0, "dropped": 0}\n'


def test_serve_tap_refuses_a_bad_query() -> None:
    written: list[bytes] = []
    asyncio.run(serve_tap(TapHub(), {"limit": "-1"}, written.append, lambda: False))
    assert written[0].startswith(b"HTTP/1.1 400 Bad Request\r\n")
