"""The reflector's list/watch cycle against a scripted client (no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from tulle.control.kubernetes.client import Gone, KubeError, Resource
from tulle.control.kubernetes.reflector import Reflector

PODS = Resource("", "v1", "pods")


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version}}


class ScriptedClient:
    """Lists and watches play back a script; each call is recorded."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[Any]]) -> None:
        self.lists = lists
        self.watches = watches
        self.calls: list[tuple[str, str]] = []
        self.done = asyncio.Event()

    async def list(self, resource: Resource) -> dict[str, Any]:
        self.calls.append(("list", ""))
        return self.lists.pop(0)

    async def watch(self, resource: Resource, version: str) -> AsyncIterator[dict[str, Any]]:
        self.calls.append(("watch", version))
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()  # a watch that stays open
        for item in self.watches.pop(0):
            if isinstance(item, Exception):
                raise item
            yield item


async def run_until_done(client: ScriptedClient) -> Reflector:
    changes: list[int] = []
    reflector = Reflector(client, PODS, lambda: changes.append(1))  # type: ignore[arg-type]
    task = asyncio.create_task(reflector.run())
    await asyncio.wait_for(client.done.wait(), 5)
    task.cancel()
    return reflector


def test_watch_resumes_from_the_last_version_and_relists_only_on_gone() -> None:
    client = ScriptedClient(
        lists=[
            {"metadata": {"resourceVersion": "10"}, "items": [pod("a", "9"), pod("b", "10")]},
            {"metadata": {"resourceVersion": "50"}, "items": [pod("c", "50")]},
        ],
        watches=[
            # The server ends this watch normally after two events and a bookmark.
            [
                {"type": "ADDED", "object": pod("d", "11")},
                {"type": "DELETED", "object": pod("a", "12")},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "20"}}},
            ],
            # Resumed from 20; then the version is compacted away.
            [{"type": "MODIFIED", "object": pod("b", "21")}, Gone("too old", 410)],
            # After the relist, from 50.
            [{"type": "ADDED", "object": pod("e", "51")}],
        ],
    )
    reflector = asyncio.run(run_until_done(client))
    assert client.calls == [
        ("list", ""),
        ("watch", "10"),
        ("watch", "20"),
        ("list", ""),
        ("watch", "50"),
        ("watch", "51"),
    ]
    # The relist replaced the store: b and d, missed deletions, are gone.
    assert set(reflector.store) == {("ns", "c"), ("ns", "e")}
    assert reflector.resource_version == "51"


def test_a_kind_the_server_does_not_serve_is_empty_and_synced() -> None:
    class NotServed(ScriptedClient):
        async def list(self, resource: Resource) -> dict[str, Any]:
            self.calls.append(("list", ""))
            if len(self.calls) >= 2:
                self.done.set()
            raise KubeError("404 the server could not find the requested resource", 404)

    client = NotServed([], [])

    async def scenario() -> Reflector:
        reflector = Reflector(client, PODS, lambda: None)  # type: ignore[arg-type]
        task = asyncio.create_task(reflector.run())
        await asyncio.wait_for(reflector.synced.wait(), 5)
        await asyncio.wait_for(client.done.wait(), 5)  # looked for again, with backoff
        task.cancel()
        return reflector

    reflector = asyncio.run(scenario())
    assert reflector.store == {}
