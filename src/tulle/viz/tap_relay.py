"""The control plane's tap relay: one `/api/tap` stream merged from many proxies' `/tap`.

Each selected proxy's stream is read by its own task into one bounded queue;
events are tagged with the proxy's service and instance and passed on in
arrival order. Lines are tagged `"kind": "event"`; a proxy that cannot be tapped
yields one `{"kind": "error", "error": ...}` line
instead of failing the whole relay. The relay ends when every stream ended,
when `limit` events were passed on, or when the client went away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import urlencode

from tulle.core.scrape import ScrapeTarget
from tulle.viz.http_client import FetchError, stream_lines

RELAY_QUEUE_SIZE = 2000
# What a proxy's /tap understands; anything else stays at the relay.
PROXY_TAP_KEYS = (
    "path",
    "method",
    "status",
    "authority",
    "direction",
    "dst_service",
    "limit",
    "duration",
)
_END = object()


def select_targets(targets: list[ScrapeTarget], service: str) -> list[ScrapeTarget]:
    """The proxies of `service` (every proxy when `service` is empty)."""
    return [t for t in targets if not service or t.service == service]


async def _pump(
    target: ScrapeTarget, path: str, queue: asyncio.Queue[object], headers: dict[str, str]
) -> None:
    try:
        async for line in stream_lines(target.admin, path, headers=headers):
            try:
                event: dict[str, Any] = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event.get("end"):
                continue
            event["kind"] = "event"
            event["service"] = target.service
            event["instance"] = target.instance
            await queue.put(event)
    except FetchError as exc:
        await queue.put(
            {
                "kind": "error",
                "error": str(exc),
                "service": target.service,
                "instance": target.instance,
            }
        )
    finally:
        await queue.put(_END)


async def relay(
    targets: list[ScrapeTarget], query: dict[str, str], *, token: str = ""
) -> AsyncGenerator[dict[str, Any], None]:
    """Merged events (and per-proxy error lines) from the `/tap` of every target.

    `token`: the mesh's proxy admin token, sent as a bearer credential (a
    proxy serves `/tap` to no one without it).
    """
    headers = {"authorization": f"Bearer {token}"} if token else {}
    forwarded = {key: query[key] for key in PROXY_TAP_KEYS if query.get(key)}
    path = "/tap" + (f"?{urlencode(forwarded)}" if forwarded else "")
    limit = int(query.get("limit") or 0)
    queue: asyncio.Queue[object] = asyncio.Queue(RELAY_QUEUE_SIZE)
    tasks = [asyncio.create_task(_pump(target, path, queue, headers)) for target in targets]
    running = len(tasks)
    sent = 0
    try:
        while running:
            item = await queue.get()
            if item is _END:
                running -= 1
                continue
            assert isinstance(item, dict)
            yield item
            if item.get("kind") == "event":
                sent += 1
                if limit and sent >= limit:
                    return
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def summarize_top(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Busiest (service, method, path) first: count, successes, latency extremes."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for event in events:
        if event.get("kind") == "error":
            continue
        key = (
            str(event.get("service", "")),
            str(event.get("method", "")),
            str(event.get("path", "")),
        )
        row = rows.get(key)
        if row is None:
            row = rows[key] = {
                "service": key[0],
                "method": key[1],
                "path": key[2],
                "count": 0,
                "successes": 0,
                "latency_ms": [],
            }
        row["count"] += 1
        status = int(event.get("status", 0) or 0)
        if 0 < status < 500 and not event.get("error"):
            row["successes"] += 1
        row["latency_ms"].append(float(event.get("latency_ms", 0.0) or 0.0))
    out: list[dict[str, Any]] = []
    for row in sorted(rows.values(), key=lambda r: (-r["count"], r["path"])):
        latencies = sorted(row.pop("latency_ms"))
        row["success_rate"] = round(row["successes"] / row["count"], 4)
        row["min_ms"] = round(latencies[0], 3)
        row["max_ms"] = round(latencies[-1], 3)
        row["p50_ms"] = round(latencies[len(latencies) // 2], 3)
        out.append(row)
    return out
