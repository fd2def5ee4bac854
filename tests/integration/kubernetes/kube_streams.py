"""Reading Destination streams in tests: the endpoint set a client holds after each update."""

from __future__ import annotations

import time
from collections.abc import Callable

from support.streams import Reader

from tulle.api.proto import destination_pb2 as pb


class EndpointSet:
    """Applies Get updates as a proxy would: address -> identity."""

    def __init__(self, reader: Reader[pb.Update]) -> None:
        self.reader = reader
        self.endpoints: dict[tuple[str, int], str] = {}
        self.exists: bool | None = None

    def apply(self, update: pb.Update) -> None:
        kind = update.WhichOneof("update")
        if kind == "add":
            if update.snapshot:
                self.endpoints.clear()
            for a in update.add.addrs:
                self.endpoints[(a.addr.host, a.addr.port)] = a.identity
            self.exists = True
        elif kind == "remove":
            for r in update.remove.addrs:
                self.endpoints.pop((r.host, r.port), None)
        elif kind == "no_endpoints":
            self.endpoints.clear()
            self.exists = update.no_endpoints.exists

    async def until(
        self, check: Callable[[dict[tuple[str, int], str]], bool], what: str, timeout: float
    ) -> float:
        """Apply updates until `check` holds; returns the seconds it took."""
        started = time.monotonic()
        deadline = started + timeout
        while not check(self.endpoints):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {what} within {timeout} s; holding {self.endpoints}")
            try:
                self.apply(await self.reader.next(remaining))
            except TimeoutError:
                continue
        return time.monotonic() - started
