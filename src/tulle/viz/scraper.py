"""Scrapes every proxy's `/metrics` into the window store, every couple of seconds.

All targets of a round are read in parallel, each with a bounded timeout, so
a dead or slow proxy costs one timeout per round and delays nobody else. Its
failure is recorded (the `check` command reports it) and its earlier samples
age out of the window as usual.

`relabel`, when given, rewrites a target's samples before they are stored:
the Kubernetes source uses it to give `dst_service` its cluster name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tulle.codec.promtext import ParseError, Sample, parse
from tulle.core.scrape import ScrapeTarget
from tulle.viz.http_client import FetchError, request
from tulle.viz.window import WindowStore

log = logging.getLogger(__name__)

DEFAULT_SCRAPE_INTERVAL_S = 2.0
DEFAULT_SCRAPE_TIMEOUT_S = 1.5


class Scraper:
    def __init__(
        self,
        targets: Callable[[], list[ScrapeTarget]],
        store: WindowStore,
        *,
        interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
        timeout_s: float = DEFAULT_SCRAPE_TIMEOUT_S,
        relabel: Callable[[ScrapeTarget, list[Sample]], list[Sample]] | None = None,
    ) -> None:
        self._targets = targets
        self._relabel = relabel
        self.store = store
        self.interval_s = interval_s
        self.timeout_s = min(timeout_s, interval_s)
        self.rounds = 0

    async def scrape_one(self, target: ScrapeTarget) -> None:
        try:
            status, body = await request(target.admin, "/metrics", timeout=self.timeout_s)
            if status != 200:
                raise FetchError(f"/metrics answered {status}")
            samples = parse(body.decode(errors="replace"))
            if self._relabel is not None:
                samples = self._relabel(target, samples)
        except (FetchError, ParseError) as exc:
            self.store.failed(target, time.time(), str(exc))
            return
        self.store.ingest(target, time.time(), samples)

    async def scrape_round(self) -> None:
        targets = self._targets()
        self.store.forget(targets)
        await asyncio.gather(*(self.scrape_one(target) for target in targets))
        self.rounds += 1

    async def run(self) -> None:
        """Scrape until cancelled, on a fixed cadence."""
        loop = asyncio.get_running_loop()
        next_round = loop.time()
        while True:
            try:
                await self.scrape_round()
            except Exception:
                log.exception("scrape round failed")
            next_round += self.interval_s
            delay = next_round - loop.time()
            if delay < 0:
                # A round that overran: start the next one now, without catching up.
                next_round = loop.time()
                delay = 0
            await asyncio.sleep(delay)
