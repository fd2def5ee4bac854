"""Reflectors: keep a local copy of one resource kind with list, then resumable watches.

The cycle is client-go's: list (which gives a resourceVersion), then watch
from that version; each event updates the store and moves the version on
(bookmarks move it without a change). When the server ends a watch (its
timeout, a restart), the reflector resumes from the last version seen, so
nothing is missed and nothing is listed again. Only a 410 Gone (the version
has been compacted away) or an unknown failure leads to a new list, which
replaces the store wholesale so that deletions missed meanwhile disappear.
Nothing is ever polled: between events the reflector waits on the stream.

A kind the server does not serve (a CRD not installed yet: 404) counts as
empty, and is looked for again with backoff, so installing the CRDs later
needs no restart.

`on_change` is called synchronously after every change of the store; the
source coalesces those calls (see `source.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from tulle.control.kubernetes.client import Gone, KubeClient, KubeError, Obj, Resource
from tulle.core.backoff import Backoff, BackoffSpec

log = logging.getLogger("tulle.control.kubernetes")

Key = tuple[str, str]  # (namespace, name)

RETRY_BACKOFF = BackoffSpec(min_s=0.2, max_s=10.0)


def object_key(obj: Obj) -> Key | None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return None
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        return None
    namespace = meta.get("namespace")
    return (namespace if isinstance(namespace, str) else "", name)


class Reflector:
    def __init__(
        self,
        client: KubeClient,
        resource: Resource,
        on_change: Callable[[], None],
        *,
        name: str = "",
    ) -> None:
        self.client = client
        self.resource = resource
        self.name = name or resource.plural
        self._on_change = on_change
        self.store: dict[Key, Obj] = {}
        self.resource_version = ""
        self.synced = asyncio.Event()

    async def run(self) -> None:
        backoff = Backoff(RETRY_BACKOFF)
        while True:
            try:
                if not self.resource_version:
                    await self._list()
                backoff.reset()
                await self._watch()
            except Gone:
                log.info(
                    "%s: resourceVersion %s expired; listing again",
                    self.name,
                    self.resource_version,
                )
                self.resource_version = ""
            except KubeError as exc:
                if exc.status == 404:
                    # Not served (a CRD not installed): empty until it appears.
                    if self.store:
                        self.store.clear()
                        self._on_change()
                    self.synced.set()
                    self.resource_version = ""
                    log.debug("%s: not served by the API server yet", self.name)
                else:
                    log.warning("%s: %s", self.name, exc)
                await asyncio.sleep(backoff.next_delay())

    async def _list(self) -> None:
        body = await self.client.list(self.resource)
        items = body.get("items")
        store: dict[Key, Obj] = {}
        for item in items if isinstance(items, list) else []:
            if isinstance(item, dict) and (key := object_key(item)) is not None:
                store[key] = item
        meta = body.get("metadata")
        version = meta.get("resourceVersion") if isinstance(meta, dict) else None
        if not isinstance(version, str) or not version:
            raise KubeError(f"LIST {self.resource.path()}: no resourceVersion")
        self.store = store
        self.resource_version = version
        self._on_change()
        self.synced.set()

    async def _watch(self) -> None:
        async for event in self.client.watch(self.resource, self.resource_version):
            kind = event.get("type")
            obj = event.get("object")
            if not isinstance(obj, dict):
                continue
            meta = obj.get("metadata")
            version = meta.get("resourceVersion") if isinstance(meta, dict) else None
            if kind == "BOOKMARK":
                if isinstance(version, str) and version:
                    self.resource_version = version
                continue
            key = object_key(obj)
            if key is None:
                continue
            if kind in ("ADDED", "MODIFIED"):
                self.store[key] = obj
            elif kind == "DELETED":
                self.store.pop(key, None)
            else:
                continue
            if isinstance(version, str) and version:
                self.resource_version = version
            self._on_change()
